//! Builds every guest component in `plugins-wasm/` for wasm32-wasip2 with a nested cargo and
//! embeds the built-in ones in the binary, so `cargo build` on a fresh clone is the only step.
//!
//! The nested build has its own target dir beside the outer one (`<target>/wasm-guests`), so
//! debug, release and test builds share it and it never waits on the outer build's lock.

use std::env;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Components embedded in the binary and used by name (`nbdbox memory 1G`, `--filter=retry`).
/// (name on the command line, crate output); plugin and filter names may coincide (`tar`).
const BUILTIN_PLUGINS: &[(&str, &str)] = &[
    ("memory", "memory"),
    ("example1", "example1"),
    ("file", "file"),
    ("tar", "tar"),
];
const BUILTIN_FILTERS: &[(&str, &str)] = &[
    ("readahead", "readahead"),
    ("retry", "retry"),
    ("exitlast", "exitlast"),
    ("tar", "tar_filter"),
];
/// Components built for the test suite only; tests load them by path.
const TEST_COMPONENTS: &[&str] = &["hostile", "escape", "recorder", "faulty", "passthrough", "grant_probe"];

fn main() {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest_dir.parent().unwrap();
    let guests = root.join("plugins-wasm");
    for watched in [
        "Cargo.toml",
        "Cargo.lock",
        "sdk",
        "filter-sdk",
        "tar-format",
        "plugins",
        "filters",
        "test-plugins",
    ] {
        println!("cargo:rerun-if-changed={}", guests.join(watched).display());
    }
    println!("cargo:rerun-if-changed={}", root.join("wit").display());

    let out_dir = PathBuf::from(env::var("OUT_DIR").unwrap());
    let target_dir = guest_target_dir(&out_dir);
    build_guests(&guests, &target_dir);

    let wasm_dir = target_dir.join("wasm32-wasip2").join("release");
    let mut code = String::new();
    for (table, builtins) in [("PLUGINS", BUILTIN_PLUGINS), ("FILTERS", BUILTIN_FILTERS)] {
        writeln!(
            code,
            "/// Built-in components: (name, wasm bytes).\npub static {table}: &[(&str, &[u8])] = &["
        )
        .unwrap();
        for (name, stem) in builtins {
            let path = wasm_dir.join(format!("{stem}.wasm"));
            assert!(path.exists(), "guest build did not produce {}", path.display());
            writeln!(
                code,
                "    ({name:?}, include_bytes!({:?})),",
                path.display().to_string()
            )
            .unwrap();
        }
        code.push_str("];\n");
    }
    std::fs::write(out_dir.join("builtin.rs"), code).unwrap();
    for name in TEST_COMPONENTS {
        assert!(
            wasm_dir.join(format!("{name}.wasm")).exists(),
            "guest build did not produce {name}.wasm"
        );
    }
    // The integration tests (a target of this package) find the test-only components here.
    println!("cargo:rustc-env=NBDBOX_GUEST_DIR={}", wasm_dir.display());
}

/// `<target>/wasm-guests`, found by walking up from OUT_DIR (`<target>/<profile>/build/<pkg>/out`).
fn guest_target_dir(out_dir: &Path) -> PathBuf {
    let target = out_dir.ancestors().nth(4).expect("OUT_DIR has the usual depth");
    target.join("wasm-guests")
}

fn build_guests(guests: &Path, target_dir: &Path) {
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args([
        "build",
        "--release",
        "--locked",
        "--target",
        "wasm32-wasip2",
        "--manifest-path",
    ])
    .arg(guests.join("Cargo.toml"))
    .arg("--target-dir")
    .arg(target_dir);
    // The outer build's flags, target and wrappers must not leak into the guest build.
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTC_WRAPPER",
        "CARGO_PRIMARY_PACKAGE",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd.status().expect("run cargo for the guest components");
    if !status.success() {
        let target_missing = Command::new("rustc")
            .args(["--print", "sysroot"])
            .output()
            .ok()
            .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
            .is_some_and(|sysroot| !sysroot.join("lib/rustlib/wasm32-wasip2").exists());
        if target_missing {
            panic!("the wasm32-wasip2 target is not installed; run: rustup target add wasm32-wasip2");
        }
        panic!(
            "building the guest components in {} failed (see above)",
            guests.display()
        );
    }
}
