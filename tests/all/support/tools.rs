//! Where things are: the server binary under test, the guest components the build made, and
//! the client tools (with the PATH every child runs with).

use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The server binary under test (`NBDBOX_TEST_BIN` overrides it).
pub fn bin() -> PathBuf {
    match std::env::var_os("NBDBOX_TEST_BIN") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from(env!("CARGO_BIN_EXE_nbdbox")),
    }
}

/// Program name used in error messages (`nbdbox: error: ...`).
pub fn prog_name() -> String {
    bin().file_name().unwrap().to_string_lossy().into_owned()
}

/// Directory with the test-only guest components (hostile.wasm, escape.wasm).
pub fn guest_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("NBDBOX_GUEST_DIR") {
        if !p.is_empty() {
            return PathBuf::from(p);
        }
    }
    match option_env!("NBDBOX_GUEST_DIR") {
        Some(p) => PathBuf::from(p),
        None => panic!("NBDBOX_GUEST_DIR was not set at build time (host/build.rs must export it)"),
    }
}

pub fn guest(name: &str) -> PathBuf {
    let p = guest_dir().join(name);
    assert!(
        p.is_file(),
        "test guest component {} is missing (built by host/build.rs)",
        p.display()
    );
    p
}

/// `guest("NAME.wasm")` as a command-line argument (a plugin path).
pub fn guest_arg(name: &str) -> String {
    guest(&format!("{name}.wasm")).to_str().unwrap().to_owned()
}

/// `--filter=PATH` for the test component `NAME.wasm`.
pub fn filter_arg(name: &str) -> String {
    format!("--filter={}", guest_arg(name))
}

/// PATH for every child: Debian's tools first, because /usr/bin/nbdsh runs
/// whatever `python3` comes first on PATH and only Debian's has libnbd.
pub fn child_path() -> OsString {
    let mut p = OsString::from("/usr/sbin:/usr/bin:/sbin:/bin");
    if let Some(old) = std::env::var_os("PATH") {
        p.push(":");
        p.push(old);
    }
    p
}

/// Resolve a client tool or panic loudly. Absolute paths are checked as is.
pub fn tool(name: &str) -> PathBuf {
    let found = if name.contains('/') {
        let p = PathBuf::from(name);
        is_executable(&p).then_some(p)
    } else {
        std::env::split_paths(&child_path())
            .map(|d| d.join(name))
            .find(|p| is_executable(p))
    };
    let p = found.unwrap_or_else(|| {
        panic!("required tool `{name}` is not installed: install {name} (see the test suite README / CI setup)")
    });
    if name.ends_with("nbdsh") || name == "/usr/bin/python3" {
        // The libnbd Python binding must import with Debian's python.
        let ok = Command::new("/usr/bin/python3")
            .args(["-c", "import nbd"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "/usr/bin/python3 cannot `import nbd`: install python3-libnbd");
    }
    p
}

fn is_executable(p: &Path) -> bool {
    fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}
