//! Driving real clients from the tests: nbdsh snippets, shell scripts, other local tools and
//! Debian's nbdkit as the reference; reading what they report; checking on processes.

use super::process::{run_with_timeout, shell_quote, DEFAULT_TIMEOUT};
use super::temp::TempDir;
use super::tools::{child_path, tool};
use std::fs;
use std::process::{Command, Output, Stdio};

/// Shell fragment running a Python snippet with nbdsh against `$uri` (handle
/// `h`). The snippet is stored in `dir` so it needs no shell quoting.
pub fn nbdsh(dir: &TempDir, name: &str, py: &str) -> String {
    nbdsh_uri(dir, name, "$uri", py)
}

/// Like [`nbdsh`] with an explicit URI (a shell word, expanded by /bin/sh).
pub fn nbdsh_uri(dir: &TempDir, name: &str, uri: &str, py: &str) -> String {
    let nbdsh = tool("/usr/bin/nbdsh");
    let f = dir.join(&format!("{name}.py"));
    fs::write(&f, py).unwrap();
    format!(
        "{} -u \"{uri}\" -c \"$(cat {})\"",
        nbdsh.display(),
        shell_quote(f.to_str().unwrap())
    )
}

/// `nbdkit -U - ARGS... --run SCRIPT` (Debian's nbdkit, the reference).
pub fn nbdkit_captive(args: &[&str], script: &str) -> Output {
    let mut c = Command::new(tool("nbdkit"));
    c.args(["-U", "-"]).args(args).args(["--run", script]);
    run_with_timeout(c, DEFAULT_TIMEOUT)
}

/// Run a local program (tar, cmp...) and return its output.
pub fn run_tool(name: &str, args: &[&str], cwd: Option<&std::path::Path>) -> Output {
    let mut c = Command::new(tool(name));
    c.args(args);
    if let Some(d) = cwd {
        c.current_dir(d);
    }
    run_with_timeout(c, DEFAULT_TIMEOUT)
}

/// Export names from `nbdinfo --list --json` output, in listed order.
pub fn export_names(json: &str) -> Vec<String> {
    let key = "\"export-name\":";
    let mut v = Vec::new();
    let mut rest = json;
    while let Some(i) = rest.find(key) {
        rest = rest[i + key.len()..].trim_start();
        assert!(rest.starts_with('"'), "unexpected JSON near {rest:.40}");
        let end = rest[1..].find('"').expect("unterminated string") + 1;
        v.push(rest[1..end].to_owned());
        rest = &rest[end + 1..];
    }
    v
}

/// `/bin/sh -c SCRIPT` with the tools' PATH and its output discarded (for background
/// clients; `run_with_timeout` captures the output of the ones it runs).
pub fn shell(script: &str) -> Command {
    let mut c = Command::new("/bin/sh");
    c.arg("-c")
        .arg(script)
        .env("PATH", child_path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    c
}

/// True if a live (non-zombie) process has this pid.
pub fn pid_alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat.rsplit(')').next().unwrap_or("").trim_start();
            !state.starts_with('Z') && !state.starts_with('X')
        }
        Err(_) => false,
    }
}
