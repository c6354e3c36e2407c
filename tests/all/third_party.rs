//! Third-party components loaded by path: the out-of-tree example in
//! `examples/hello-plugin` (built here with cargo, as a user would), one
//! built for another WIT version, and the sandbox's refusal to link a
//! component that imports WASI filesystem/sockets.

use crate::support::*;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

/// The repository root (the host package lives in `host/`).
fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// Build examples/hello-plugin once per test run (its own target dir under
/// cargo's per-test scratch dir, so reruns are incremental) and return the .wasm.
fn hello_wasm() -> &'static Path {
    static WASM: OnceLock<PathBuf> = OnceLock::new();
    WASM.get_or_init(|| {
        let manifest = repo_root().join("examples/hello-plugin/Cargo.toml");
        let target = Path::new(env!("CARGO_TARGET_TMPDIR")).join("hello-plugin");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut c = Command::new(cargo);
        c.args(["build", "--release", "--locked", "--target", "wasm32-wasip2"])
            .arg("--manifest-path")
            .arg(&manifest)
            .arg("--target-dir")
            .arg(&target);
        let o = run_with_timeout(c, Duration::from_secs(900));
        assert!(
            o.status.success(),
            "building examples/hello-plugin failed\n{}",
            describe(&o)
        );
        let wasm = target.join("wasm32-wasip2/release/hello_plugin.wasm");
        assert!(wasm.is_file(), "{} was not built", wasm.display());
        wasm
    })
}

fn hello() -> &'static str {
    hello_wasm().to_str().unwrap()
}

/// Python for nbdsh: the expected byte at `off` for `seed` (sector number XOR seed).
const EXPECT_PY: &str =
    "def want(off, n, seed):\n    return bytes((((off + i) // 512) & 0xff) ^ seed for i in range(n))\n";

#[test]
fn hello_plugin_serves_its_pattern() {
    let dir = TempDir::new("hello");
    let py = format!(
        "{EXPECT_PY}
assert h.get_size() == 1048576, h.get_size()
assert h.is_read_only()
for off, n in [(0, 4096), (511, 2), (130560, 1024), (1048576 - 700, 700)]:
    got = h.pread(n, off)
    assert got == want(off, n, 7), (off, got[:16])
print('HELLO-OK')
"
    );
    let o = run_captive(&[hello(), "size=1M", "seed=7"], &nbdsh(&dir, "p", &py));
    assert!(assert_success(&o).contains("HELLO-OK"), "{}", describe(&o));

    // The magic key: a bare value is the size; seed defaults to 0.
    let py = format!(
        "{EXPECT_PY}
assert h.get_size() == 65536 * 512, h.get_size()
assert h.pread(1024, 256 * 512 - 512) == want(256 * 512 - 512, 1024, 0)
print('MAGIC-OK')
"
    );
    let o = run_captive(&[hello(), "32M"], &nbdsh(&dir, "m", &py));
    assert!(assert_success(&o).contains("MAGIC-OK"), "{}", describe(&o));

    // A bad parameter is refused with exit 1, naming it.
    let o = run_captive(&[hello(), "size=1M", "seed=300"], "echo RAN");
    assert_exit1(&o);
    assert!(stderr(&o).contains("seed"), "{}", describe(&o));
    let o = run_captive(&[hello()], "echo RAN");
    assert_exit1(&o);
    assert!(stderr(&o).contains("size"), "{}", describe(&o));
}

#[test]
fn hello_plugin_dump_and_help() {
    let o = nbdbox(&[hello(), "--dump-plugin"]);
    let out = assert_success(&o);
    assert!(
        out.lines().any(|l| l == "name=hello"),
        "--dump-plugin must print name=hello\n{}",
        describe(&o)
    );
    assert!(out.lines().any(|l| l == "magic_config_key=size"), "{out}");
    assert!(out.lines().any(|l| l == "thread_model=parallel"), "{out}");

    let o = nbdbox(&[hello(), "--help"]);
    let out = assert_success(&o);
    for needle in ["hello", "size=", "seed="] {
        assert!(
            out.contains(needle),
            "`nbdbox PATH --help` should mention {needle}\n{}",
            describe(&o)
        );
    }
}

/// The WIT package version this checkout's `wit/` declares (e.g. "0.2.1").
fn wit_version() -> String {
    let wit = fs::read_to_string(repo_root().join("wit/worlds.wit")).unwrap();
    let line = wit
        .lines()
        .find(|l| l.trim_start().starts_with("package nbdbox:plugin@"))
        .expect("no package line in wit/worlds.wit");
    line.trim()
        .trim_start_matches("package nbdbox:plugin@")
        .trim_end_matches(';')
        .to_owned()
}

/// hello_plugin.wasm with its exported interface renamed to `version` (of the same length,
/// so the binary stays well-formed): what a plugin built against that version of the WIT
/// looks like to the host.
fn hello_built_for(dir: &TempDir, version: &str) -> String {
    let (ours, to) = (
        format!("nbdbox:plugin/plugin@{}", wit_version()),
        format!("nbdbox:plugin/plugin@{version}"),
    );
    hello_with(dir, &ours, &to, &format!("built-for-{version}.wasm"))
}

/// hello_plugin.wasm with every `from` replaced by `to` (of the same length).
fn hello_with(dir: &TempDir, from: &str, to: &str, name: &str) -> String {
    assert_eq!(from.len(), to.len(), "{to} must have the length of {from}");
    let wasm = fs::read(hello_wasm()).unwrap();
    let (mut patched, mut n) = (Vec::with_capacity(wasm.len()), 0);
    let mut i = 0;
    while i < wasm.len() {
        if wasm[i..].starts_with(from.as_bytes()) {
            patched.extend_from_slice(to.as_bytes());
            i += from.len();
            n += 1;
        } else {
            patched.push(wasm[i]);
            i += 1;
        }
    }
    assert!(n > 0, "{from} not found in hello_plugin.wasm");
    let p = dir.str(name);
    fs::write(&p, patched).unwrap();
    p
}

#[test]
fn a_component_built_for_an_older_patch_is_served() {
    // wit/VERSIONING.md: a patch release only adds, so a plugin built for 0.M.p loads on a
    // host of 0.M.q for every q >= p. Every interface it imports and exports is renamed.
    let ours = wit_version();
    let (prefix, patch) = ours.rsplit_once('.').unwrap();
    let patch: u64 = patch.parse().unwrap();
    assert!(patch > 0, "no older patch of {ours} to test");
    let older = format!("{prefix}.{}", patch - 1);
    let dir = TempDir::new("wit-older");
    let p = hello_with(&dir, &format!("@{ours}"), &format!("@{older}"), "older.wasm");
    let o = run_captive(&[&p, "size=1M"], "nbdinfo --size \"$uri\"");
    assert_eq!(stdout(&o).trim(), "1048576", "{}", describe(&o));
}

#[test]
fn component_for_another_wit_version_is_refused() {
    // wit/VERSIONING.md: another minor is refused, and so is a newer patch of ours (it may
    // import functions this host lacks); both versions are named.
    let ours = wit_version();
    let parts: Vec<u64> = ours.split('.').map(|p| p.parse().unwrap()).collect();
    let same_length = |candidates: [String; 3]| {
        candidates
            .into_iter()
            .find(|v| v.len() == ours.len() && *v != ours)
            .expect("no same-length version")
    };
    let other_minor = same_length([
        format!("{}.{}.{}", parts[0], parts[1] + 1, parts[2]),
        format!("{}.{}.{}", parts[0], parts[1].saturating_sub(1), parts[2]),
        format!("{}.{}.{}", parts[0] + 1, parts[1], parts[2]),
    ]);
    let newer_patch = same_length([
        format!("{}.{}.{}", parts[0], parts[1], parts[2] + 1),
        format!("{}.{}.{}", parts[0], parts[1], parts[2] + 2),
        format!("{}.{}.9", parts[0], parts[1]),
    ]);
    let dir = TempDir::new("wit");
    for other in [other_minor, newer_patch] {
        let p = hello_built_for(&dir, &other);
        let o = run_captive(&[&p, "size=1M"], "echo RAN");
        assert_exit1(&o);
        assert!(!stdout(&o).contains("RAN"), "{}", describe(&o));
        let err = stderr(&o);
        for v in [format!("nbdbox:plugin@{other}"), format!("nbdbox:plugin@{ours}")] {
            assert!(
                err.contains(&v),
                "the refusal must name both versions (missing {v})\n{}",
                describe(&o)
            );
        }
        assert_exit1(&nbdbox(&[&p, "--dump-plugin"]));
    }
}

#[test]
fn every_wasi_reach_out_is_refused_at_run_time() {
    // escape.wasm uses std::fs, std::net, std::env and stdin: it imports wasi:filesystem,
    // wasi:sockets and the rest. The host links every WASI interface with nothing granted,
    // so it loads (as components of other toolchains must), and each attempt is refused.
    let w = guest("escape.wasm");
    let ws = w.to_str().unwrap();
    let probes = [
        "read /etc/passwd",
        "list /",
        "create a file in /tmp",
        "read the environment variable HOME",
        "connect to 127.0.0.1:22",
        "connect to 127.0.0.1:10809",
        "resolve localhost",
        "read stdin",
    ];
    let o = run_captive(&["-v", ws, "64k"], "nbdinfo --size \"$uri\"");
    let out = assert_success(&o);
    assert_eq!(out.trim(), "65536", "the server stayed up and serves\n{}", describe(&o));
    let err = stderr(&o);
    assert!(!err.contains("SUCCEEDED"), "a reach-out got through\n{}", describe(&o));
    for probe in probes {
        assert!(
            err.contains(&format!("escape: {probe}: refused")),
            "no refusal logged for `{probe}`\n{}",
            describe(&o)
        );
    }
    assert!(
        !Path::new("/tmp/nbdbox-escape").exists(),
        "escape created a file on the host"
    );
}
