//! The configuration file (`--config`): several exports served by one process, each with
//! its own stack, grants and limits; errors at startup naming the line; SIGHUP reloads
//! under load; and `--dump-config-toml`, which turns command lines into files.

use crate::support::*;
use sha2::{Digest, Sha256};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

fn sha256_hex(path: &Path) -> String {
    Sha256::digest(fs::read(path).unwrap())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The test-only `minimal` plugin (a RAM disk) as a third-party component, pinned.
fn minimal_wasm() -> (String, String) {
    let path = guest_arg("minimal");
    let digest = sha256_hex(Path::new(&path));
    (path, digest)
}

/// memory, a file by grant, and a third-party component pinned by digest under a filter.
fn three_exports(dir: &TempDir) -> String {
    let (wasm, digest) = minimal_wasm();
    format!(
        r#"default-export = "scratch"

[[export]]
name = "scratch"
description = "RAM disk"
memory-limit = "64M"
plugin = {{ name = "memory", params = {{ size = "4M" }} }}

[[export]]
name = "disk"
description = "a file, read-only"
readonly = true
memory-limit = "64M"
[export.plugin]
name = "file"
grants = {{ file = "{disk}" }}

[[export]]
name = "third"
memory-limit = "64M"
[export.plugin]
path = "{wasm}"
sha256 = "{digest}"
params = {{ size = "3M" }}
[[export.filter]]
name = "offset"
params = {{ offset = "1M" }}
"#,
        disk = dir.str("disk.img"),
    )
}

fn unix_uri(server: &Server, name: &str) -> String {
    format!("nbd+unix:///{name}?socket={}", server.sock.display())
}

/// `qemu-img convert` of export `name` into a file: its bytes.
fn read_export(server: &Server, dir: &TempDir, name: &str) -> Vec<u8> {
    let out = dir.str(&format!("{name}.out"));
    let _ = fs::remove_file(&out);
    let uri = unix_uri(server, name);
    assert_success(&run_tool(
        "qemu-img",
        &["convert", "-f", "raw", "-O", "raw", &uri, &out],
        None,
    ));
    fs::read(&out).unwrap()
}

/// `qemu-img convert -n` of a file into export `name`.
fn write_export(server: &Server, name: &str, file: &str) {
    let uri = unix_uri(server, name);
    assert_success(&run_tool(
        "qemu-img",
        &["convert", "-n", "-f", "raw", "-O", "raw", file, &uri],
        None,
    ));
}

fn listing(server: &Server) -> String {
    let uri = format!("nbd+unix://?socket={}", server.sock.display());
    assert_success(&run_tool("nbdinfo", &["--list", "--json", &uri], None))
}

#[test]
fn three_exports_served_at_once() {
    let dir = TempDir::new("cf3");
    let (_, disk_data) = disk(&dir, "disk.img", 1, 2 << 20);
    let config = dir.join("exports.toml");
    fs::write(&config, three_exports(&dir)).unwrap();
    let server = Server::start(&["--config", config.to_str().unwrap()]);

    let json = listing(&server);
    assert_eq!(export_names(&json), ["scratch", "disk", "third"], "{json}");
    assert!(json.contains("\"description\": \"RAM disk\""), "{json}");
    assert!(json.contains("\"description\": \"a file, read-only\""), "{json}");

    // Each reached by name, its own bytes.
    assert_eq!(read_export(&server, &dir, "disk"), disk_data);
    let (scratch_in, scratch_data) = disk(&dir, "scratch.in", 2, 4 << 20);
    write_export(&server, "scratch", &scratch_in);
    assert_eq!(read_export(&server, &dir, "scratch"), scratch_data);
    // The offset filter leaves 2 MiB of the plugin's 3.
    let (third_in, third_data) = disk(&dir, "third.in", 3, 2 << 20);
    write_export(&server, "third", &third_in);
    assert_eq!(read_export(&server, &dir, "third"), third_data);
    assert_eq!(
        read_export(&server, &dir, "scratch"),
        scratch_data,
        "writing one export changed another"
    );

    // "" is the default export; nbdinfo sees each export's own size and mode.
    let size = |name: &str| {
        let out = assert_success(&run_tool("nbdinfo", &["--size", &unix_uri(&server, name)], None));
        out.trim().to_owned()
    };
    assert_eq!(size(""), (4 << 20).to_string());
    assert_eq!(size("third"), (2 << 20).to_string());
    let disk_info = assert_success(&run_tool("nbdinfo", &["--json", &unix_uri(&server, "disk")], None));
    assert!(disk_info.contains("\"is_read_only\": true"), "{disk_info}");

    // A name selects a configured export and nothing else.
    let probe = dir.join("probe.py");
    fs::write(&probe, PROBE_NAMES).unwrap();
    let names = [
        "Disk",
        "disk ",
        "disk\n",
        "scratch/../disk",
        "/disk",
        "./disk",
        "disk/",
        "*",
        "nope",
    ];
    let mut c = Command::new(tool("/usr/bin/python3"));
    c.arg(&probe).arg(&server.sock).args(names);
    let out = assert_success(&run_with_timeout(c, DEFAULT_TIMEOUT));
    let refused: Vec<String> = names.iter().map(|name| format!("refused {name:?}")).collect();
    assert_eq!(out.lines().collect::<Vec<_>>(), refused);
    server.stop();
}

/// Try each name given after the socket: `refused 'NAME'` or `opened 'NAME'`.
const PROBE_NAMES: &str = r#"
import sys, nbd
for name in sys.argv[2:]:
    h = nbd.NBD()
    h.set_export_name(name)
    try:
        h.connect_unix(sys.argv[1])
        print("opened", '"%s"' % name.encode("unicode_escape").decode())
    except nbd.Error:
        print("refused", '"%s"' % name.encode("unicode_escape").decode())
"#;

#[test]
fn run_and_uri_name_the_default_export() {
    let dir = TempDir::new("cfrun");
    disk(&dir, "disk.img", 1, 1 << 20);
    let config = dir.join("exports.toml");
    fs::write(&config, three_exports(&dir)).unwrap();
    let o = run_captive(
        &["--config", config.to_str().unwrap()],
        "echo \"uri=$uri\"; echo \"exportname=$exportname\"; nbdinfo --size \"$uri\"",
    );
    let out = assert_success(&o);
    assert!(out.contains("uri=nbd+unix:///scratch?socket="), "{out}");
    assert!(out.contains("exportname=scratch\n"), "{out}");
    assert!(out.contains(&format!("\n{}\n", 4 << 20)), "{out}");
    // -e still names what $uri carries.
    let o = run_captive(
        &["--config", config.to_str().unwrap(), "-e", "disk"],
        "nbdinfo --size \"$uri\"",
    );
    assert_eq!(assert_success(&o).trim(), (1 << 20).to_string());
}

/// Start with `config` (the text) and expect exit 1 before anything listens, with a
/// message that contains `expected`.
#[track_caller]
fn refused(dir: &TempDir, config: &str, expected: &str) {
    let path = dir.join("bad.toml");
    fs::write(&path, config).unwrap();
    let o = run_captive(&["--config", path.to_str().unwrap()], "echo RAN");
    assert_exit1(&o);
    assert!(!stdout(&o).contains("RAN"), "the command ran\n{}", describe(&o));
    let message = format!("{}:{expected}", path.display());
    assert!(stderr(&o).contains(&message), "want {message:?}\n{}", describe(&o));
}

#[test]
fn startup_errors_name_the_line() {
    let dir = TempDir::new("cferr");
    disk(&dir, "disk.img", 1, 1 << 20);
    let good = three_exports(&dir);
    let (wasm, digest) = minimal_wasm();
    // The pin's export starts on line 18 (`[[export]]` of "third").
    let wrong = format!("{}{}", &digest[..63], if digest.ends_with('0') { '1' } else { '0' });
    refused(
        &dir,
        &good.replace(&digest, &wrong),
        &format!(
            "18: export 'third': plugin '{wasm}' has sha256 {digest}, but the configuration pins {wrong}: refused"
        ),
    );
    // A key the schema does not know, and a parameter no layer declares.
    refused(
        &dir,
        &good.replace("readonly = true", "readonly = true\ncolour = \"red\""),
        "13: unknown field `colour`",
    );
    refused(
        &dir,
        &good.replace("offset = \"1M\"", "ofset = \"1M\""),
        "27: filter 'offset' has no parameter 'ofset' (its parameters: offset, range)",
    );
    // A grant to a file that is not there, and a grant written as a parameter.
    refused(
        &dir,
        &good.replace("disk.img", "missing.img"),
        &format!("16: export 'disk': file={}: No such file", dir.str("missing.img")),
    );
    refused(
        &dir,
        &good.replace("grants = { file", "params = { file"),
        "16: 'file' of plugin 'file' is a grant (file): write it under grants",
    );
    // Two exports with one name.
    refused(
        &dir,
        &good.replace("name = \"third\"", "name = \"disk\""),
        "19: export 'disk' is already defined at line 9",
    );
    // A stack that serves one connection at a time cannot share a table.
    refused(
        &dir,
        &good.replace(
            "name = \"offset\"\nparams = { offset = \"1M\" }",
            "name = \"noparallel\"\nparams = { serialize = \"connections\" }",
        ),
        "18: export 'third': its layers serve one connection at a time",
    );
    // Given twice: on the command line and in the file.
    let path = dir.join("good.toml");
    fs::write(&path, &good).unwrap();
    let o = run_captive(&["--config", path.to_str().unwrap(), "--filter=retry"], "echo RAN");
    assert_exit1(&o);
    assert!(
        stderr(&o).contains("--config: --filter cannot be given with a config file"),
        "{}",
        describe(&o)
    );
}

/// A client that copies export `name` again and again until `stop` exists, reading it
/// twice per connection: both passes must be the same file, one of those it was given.
const COPY_LOOP: &str = r#"
import hashlib, os, sys, nbd
sock, name, stop = sys.argv[1:4]
allowed = {hashlib.sha256(open(p, "rb").read()).hexdigest(): os.path.basename(p) for p in sys.argv[4:]}
def copy(h):
    size, digest = h.get_size(), hashlib.sha256()
    for offset in range(0, size, 1 << 18):
        digest.update(h.pread(min(1 << 18, size - offset), offset))
    return digest.hexdigest()
while not os.path.exists(stop):
    h = nbd.NBD()
    h.set_export_name(name)
    h.connect_unix(sock)
    passes = [copy(h), copy(h)]
    h.shutdown()
    if passes[0] != passes[1] or passes[0] not in allowed:
        print("WRONG", name, passes, flush=True)
        sys.exit(1)
    print(allowed[passes[0]], flush=True)
"#;

/// A client that opens export `name`, copies it, waits for `release`, and copies it again
/// on the same connection.
const HOLD: &str = r#"
import hashlib, os, sys, time, nbd
sock, name, held, release = sys.argv[1:5]
def copy(h):
    size, digest = h.get_size(), hashlib.sha256()
    for offset in range(0, size, 1 << 18):
        digest.update(h.pread(min(1 << 18, size - offset), offset))
    return digest.hexdigest()
h = nbd.NBD()
h.set_export_name(name)
h.connect_unix(sock)
before = copy(h)
open(held, "w").close()
deadline = time.time() + 120
while not os.path.exists(release):
    if time.time() > deadline:
        sys.exit("never released")
    time.sleep(0.01)
print(before, copy(h), flush=True)
"#;

fn python(dir: &TempDir, name: &str, script: &str, args: &[String]) -> Child {
    let path = dir.join(&format!("{name}.py"));
    fs::write(&path, script).unwrap();
    Command::new(tool("/usr/bin/python3"))
        .arg(&path)
        .args(args)
        .stdin(Stdio::null())
        .stdout(fs::File::create(dir.join(&format!("{name}.out"))).unwrap())
        .stderr(fs::File::create(dir.join(&format!("{name}.err"))).unwrap())
        .spawn()
        .unwrap()
}

#[track_caller]
fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(20));
    }
}

fn lines(dir: &TempDir, name: &str) -> Vec<String> {
    let text = fs::read_to_string(dir.join(&format!("{name}.out"))).unwrap_or_default();
    text.lines().map(str::to_owned).collect()
}

fn table(exports: &[(&str, &str, &Path)]) -> String {
    exports
        .iter()
        .map(|(name, description, file)| {
            format!(
                "[[export]]\nname = \"{name}\"\ndescription = \"{description}\"\nreadonly = true\nmemory-limit = \"64M\"\n\
                 [export.plugin]\nname = \"file\"\ngrants = {{ file = \"{}\" }}\n\n",
                file.display()
            )
        })
        .collect()
}

fn hang_up(server: &Server) {
    let status = Command::new("kill")
        .args(["-HUP", &server.pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn reload_under_load() {
    let dir = TempDir::new("cfhup");
    let size = 4 << 20;
    let files: Vec<PathBuf> = ["a.img", "b1.img", "b2.img", "c.img"]
        .iter()
        .enumerate()
        .map(|(seed, name)| PathBuf::from(disk(&dir, name, seed as u64 + 1, size).0))
        .collect();
    let [a, b1, b2, c] = &files[..] else { unreachable!() };
    let config = dir.join("exports.toml");
    fs::write(&config, table(&[("a", "first", a), ("b", "second", b1)])).unwrap();
    let server = Server::start(&["--config", config.to_str().unwrap()]);
    let sock = server.sock.to_str().unwrap().to_owned();
    let stop = dir.str("stop");

    // One connection opened before the reloads, kept across them.
    let hold = python(
        &dir,
        "hold",
        HOLD,
        &[sock.clone(), "b".into(), dir.str("held"), dir.str("release")],
    );
    wait_for("the held connection", || dir.join("held").exists());
    // Four clients copying throughout.
    let allowed = |name: &str| -> Vec<String> {
        let files: Vec<&PathBuf> = if name == "a" { vec![a] } else { vec![b1, b2] };
        files.iter().map(|f| f.to_str().unwrap().to_owned()).collect()
    };
    let clients: Vec<(String, Child)> = ["a", "b", "a", "b"]
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let label = format!("copy{i}");
            let mut args = vec![sock.clone(), name.to_string(), stop.clone()];
            args.extend(allowed(name));
            (label.clone(), python(&dir, &label, COPY_LOOP, &args))
        })
        .collect();
    wait_for("every client's first copy", || {
        clients.iter().all(|(l, _)| !lines(&dir, l).is_empty())
    });

    // First change: b serves another file, c is added.
    fs::write(
        &config,
        table(&[("a", "first", a), ("b", "second", b2), ("c", "third", c)]),
    )
    .unwrap();
    hang_up(&server);
    wait_for("c to be listed", || export_names(&listing(&server)) == ["a", "b", "c"]);
    wait_for("copies of the new b", || {
        clients
            .iter()
            .filter(|(l, _)| l == "copy1" || l == "copy3")
            .all(|(l, _)| lines(&dir, l).iter().any(|line| line == "b2.img"))
    });
    assert_eq!(read_export(&server, &dir, "c"), fs::read(c).unwrap());
    assert_eq!(read_export(&server, &dir, "b"), fs::read(b2).unwrap());

    // Second change: c goes, a is described anew.
    fs::write(&config, table(&[("a", "first, again", a), ("b", "second", b2)])).unwrap();
    hang_up(&server);
    wait_for("the second table", || {
        let json = listing(&server);
        export_names(&json) == ["a", "b"] && json.contains("first, again")
    });
    let o = run_tool("nbdinfo", &["--size", &unix_uri(&server, "c")], None);
    assert!(!o.status.success(), "c is still served\n{}", describe(&o));

    // A bad file is refused, and the table it would have replaced serves on.
    let good = fs::read_to_string(&config).unwrap();
    fs::write(
        &config,
        good.replace("description = \"second\"", "description = \"second\"\nshade = 1"),
    )
    .unwrap();
    hang_up(&server);
    wait_for("the refusal in the log", || server.stderr().contains("not reloaded"));
    let log = server.stderr();
    let expected = format!("{}:13: unknown field `shade`", config.display());
    assert!(log.contains(&expected), "want {expected:?} in\n{log}");
    let json = listing(&server);
    assert_eq!(export_names(&json), ["a", "b"], "{json}");
    assert!(json.contains("first, again"), "{json}");
    assert_eq!(read_export(&server, &dir, "a"), fs::read(a).unwrap());

    // Clients copy on after all three reloads.
    let counts: Vec<usize> = clients.iter().map(|(l, _)| lines(&dir, l).len()).collect();
    wait_for("copies after the reloads", || {
        clients
            .iter()
            .zip(&counts)
            .all(|((l, _), &n)| lines(&dir, l).len() >= n + 2)
    });
    fs::write(dir.join("release"), "").unwrap();
    fs::write(&stop, "").unwrap();
    for (label, mut child) in clients {
        let status = child.wait().unwrap();
        let err = fs::read_to_string(dir.join(&format!("{label}.err"))).unwrap_or_default();
        let out = lines(&dir, &label);
        assert!(status.success(), "{label}: {status:?}\n{out:?}\n{err}");
        let wanted: &[&str] = if label == "copy0" || label == "copy2" {
            &["a.img"]
        } else {
            &["b1.img", "b2.img"]
        };
        assert!(
            out.iter().all(|line| wanted.contains(&line.as_str())),
            "{label}: {out:?}"
        );
        assert!(out.len() >= 4, "{label} copied only {} times", out.len());
    }
    let mut hold = hold;
    assert!(
        hold.wait().unwrap().success(),
        "{}",
        fs::read_to_string(dir.join("hold.err")).unwrap()
    );
    let held = lines(&dir, "hold");
    let b1_digest = sha256_hex(b1);
    assert_eq!(
        held,
        [format!("{b1_digest} {b1_digest}")],
        "the live connection changed export"
    );
    // The only errors: the bad reload, and the client asking for c once it was gone.
    let log = server.stderr();
    let errors: Vec<&str> = log
        .lines()
        .filter(|line| line.contains("error:") && !line.contains("cannot open export 'c'"))
        .collect();
    assert_eq!(errors.len(), 1, "{log}");
    server.stop();
}

#[test]
fn a_reload_keeps_what_did_not_change() {
    let dir = TempDir::new("cfkeep");
    let config = dir.join("exports.toml");
    let memory = |size: &str| {
        format!("[[export]]\nname = \"m\"\nmemory-limit = \"64M\"\nplugin = {{ name = \"memory\", params = {{ size = \"{size}\" }} }}\n")
    };
    fs::write(&config, memory("2M")).unwrap();
    let server = Server::start(&["-v", "--config", config.to_str().unwrap()]);
    let (input, data) = disk(&dir, "m.in", 9, 2 << 20);
    write_export(&server, "m", &input);
    // Adding an export leaves m's disk as it was.
    let added = format!(
        "{}\n[[export]]\nname = \"z\"\nplugin = {{ name = \"null\", params = {{ size = \"1M\" }} }}\n",
        memory("2M")
    );
    fs::write(&config, added).unwrap();
    hang_up(&server);
    wait_for("z", || export_names(&listing(&server)) == ["m", "z"]);
    assert_eq!(read_export(&server, &dir, "m"), data);
    assert!(
        server.stderr().contains("reloaded: 2 exports, 1 of them as they were"),
        "{}",
        server.stderr()
    );
    // Changing m makes a new one.
    fs::write(&config, memory("3M")).unwrap();
    hang_up(&server);
    wait_for("the new m", || export_names(&listing(&server)) == ["m"]);
    assert_eq!(read_export(&server, &dir, "m"), vec![0; 3 << 20]);
    server.stop();
}

/// Command lines of the suite written as literals: every `&[...]` of string literals in
/// tests/all/*.rs.
fn command_lines_in_the_suite() -> Vec<Vec<String>> {
    let tests = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/all");
    let mut found = Vec::new();
    for entry in fs::read_dir(&tests).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|ext| ext != "rs") {
            continue;
        }
        let source = fs::read_to_string(path).unwrap();
        let mut rest = source.as_str();
        while let Some(start) = rest.find("&[\"") {
            rest = &rest[start + 2..];
            if let Some(args) = string_literals(rest) {
                if !found.contains(&args) {
                    found.push(args);
                }
            }
        }
    }
    found
}

/// `"a", "b", ...]` as strings, or None if anything but a plain string literal is listed.
fn string_literals(text: &str) -> Option<Vec<String>> {
    let mut args = Vec::new();
    let mut chars = text.chars();
    loop {
        match chars.by_ref().find(|c| !c.is_whitespace())? {
            ']' => return Some(args),
            ',' => continue,
            '"' => {
                let mut arg = String::new();
                loop {
                    match chars.next()? {
                        '"' => break,
                        '\\' => arg.push(match chars.next()? {
                            'n' => '\n',
                            't' => '\t',
                            '0' => '\0',
                            c @ ('\\' | '"' | '\'') => c,
                            _ => return None,
                        }),
                        c => arg.push(c),
                    }
                }
                args.push(arg);
            }
            _ => return None,
        }
    }
}

#[test]
fn the_printer_round_trips_the_suites_command_lines() {
    let dir = TempDir::new("cfrt");
    let informational = [
        "--help",
        "-h",
        "--version",
        "-V",
        "--dump-plugin",
        "--dump-config",
        "--short-options",
        "--long-options",
    ];
    let (mut round_tripped, mut refused_anyway) = (Vec::new(), 0);
    for args in command_lines_in_the_suite() {
        if args.iter().any(|a| informational.contains(&a.as_str())) {
            continue;
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let printed = nbdbox(&[&["--dump-config-toml"], &args[..]].concat());
        if !printed.status.success() {
            // Only a command line that cannot be configured has no file.
            let configured = nbdbox(&[&["--dump-plugin"], &args[..]].concat());
            assert!(
                !configured.status.success(),
                "{args:?} configures, but was not printed\n{}",
                describe(&printed)
            );
            refused_anyway += 1;
            continue;
        }
        let file = dir.join("printed.toml");
        fs::write(&file, &printed.stdout).unwrap();
        let again = nbdbox(&["--config", file.to_str().unwrap(), "--dump-config-toml"]);
        assert_eq!(
            stdout(&again),
            stdout(&printed),
            "{args:?} does not round-trip\n{}",
            describe(&again)
        );
        round_tripped.push(args.join(" "));
    }
    // The scan found the suite's command lines (the arrays it also finds that are not whole
    // command lines, such as parameters added to one, are refused like any command line
    // that names no plugin).
    assert!(
        round_tripped.len() > 100,
        "{} round-tripped, {refused_anyway} refused: {round_tripped:?}",
        round_tripped.len()
    );
}

#[test]
fn printed_files_serve_what_the_command_line_served() {
    let dir = TempDir::new("cfsame");
    let (_, data) = disk(&dir, "disk.img", 5, 3 << 20);
    fs::create_dir(dir.join("conf")).unwrap();
    let minimal = guest_arg("minimal");
    let command_lines: [(&[&str], Option<&[u8]>); 4] = [
        // Relative paths (run from the temp dir): the file holds them absolute.
        (
            &[
                "-r",
                "--filter=offset",
                "--filter=readahead",
                "file",
                "disk.img",
                "offset=1M",
                "--memory-limit=64M",
            ],
            Some(&data[1 << 20..]),
        ),
        (
            &[
                "--filter=log",
                "file",
                "file=disk.img",
                "logfile=log.txt",
                "--call-timeout=5",
            ],
            Some(&data),
        ),
        (&["-t", "2", minimal.as_str(), "3M"], Some(&[0; 3 << 20])),
        (
            &[
                "--filter=truncate",
                "data",
                "0 1 2 3 @^4096 0xff*10",
                "truncate=1M",
                "round-up=64k",
            ],
            None,
        ),
    ];
    let script = "nbdinfo --json \"$uri\" | grep -v '\"uri\"'; qemu-img convert -f raw -O raw \"$uri\" out.img; sha256sum out.img";
    for (args, bytes) in command_lines {
        let mut print = Command::new(bin());
        print.current_dir(&dir.path).arg("--dump-config-toml").args(args);
        let text = assert_success(&run_with_timeout(print, DEFAULT_TIMEOUT));
        assert!(
            !text.contains("\"disk.img\"") && !text.contains("\"log.txt\""),
            "{text}"
        );
        // Written elsewhere than the command line ran: nothing in it is relative.
        let file = dir.join("conf/printed.toml");
        fs::write(&file, &text).unwrap();
        let serve = |extra: &[&str]| {
            let mut c = Command::new(bin());
            c.current_dir(&dir.path).args(["-U", "-", "--run", script]).args(extra);
            assert_success(&run_with_timeout(c, DEFAULT_TIMEOUT))
        };
        let by_command_line = serve(args);
        if let Some(bytes) = bytes {
            assert!(fs::read(dir.join("out.img")).unwrap() == bytes, "{args:?}: wrong bytes");
        }
        let by_file = serve(&["--config", file.to_str().unwrap()]);
        assert_eq!(by_file, by_command_line, "{args:?}\n{text}");
    }
}
