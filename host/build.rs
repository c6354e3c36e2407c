//! Builds every guest component in `plugins-wasm/` for wasm32-wasip2 with a nested cargo and
//! embeds the built-in ones in the binary, so `cargo build` on a fresh clone is the only step.
//!
//! The guest crates' own manifests are the one list of components: each has a
//! `[package.metadata.nbdbox]` table with its `role` (plugin, filter, or test) and the `name`
//! users type. From it this script emits `builtin.rs` (the tables the CLI, help text and
//! runtime use) and `components.rs` (macros the test suite uses, so that a built-in without
//! a test module fails to compile).
//!
//! The nested build has its own target dir beside the outer one (`<target>/wasm-guests`), so
//! debug, release and test builds share it and it never waits on the outer build's lock.

use std::env;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

/// One guest crate, as its manifest describes it.
struct Guest {
    /// plugin, filter, or test.
    role: String,
    /// What users type (`--filter=tar`), or a test component's file stem.
    name: String,
    /// The `.wasm` file cargo writes (the crate name with `-` as `_`).
    stem: String,
    /// The crate's folder, relative to the repository.
    folder: String,
    /// A built-in's one line, from the NAME section of its README.md.
    summary: Option<String>,
}

fn main() {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest_dir.parent().unwrap();
    let guests_dir = root.join("plugins-wasm");
    println!("cargo:rerun-if-changed={}", guests_dir.display());
    println!("cargo:rerun-if-changed={}", root.join("wit").display());

    let guests = read_guests(&guests_dir);
    let out_dir = PathBuf::from(env::var("OUT_DIR").unwrap());
    let target_dir = guest_target_dir(&out_dir);
    build_guests(&guests_dir, &target_dir);
    let wasm_dir = target_dir.join("wasm32-wasip2").join("release");
    for guest in &guests {
        let path = wasm_dir.join(format!("{}.wasm", guest.stem));
        assert!(path.exists(), "guest build did not produce {}", path.display());
    }
    std::fs::write(out_dir.join("builtin.rs"), builtin_tables(&guests, &wasm_dir)).unwrap();
    std::fs::write(out_dir.join("components.rs"), test_macros(&guests)).unwrap();
    // The integration tests (a target of this package) find the test-only components here.
    println!("cargo:rustc-env=NBDBOX_GUEST_DIR={}", wasm_dir.display());
    libssl_on_demand();
}

/// Whether OpenSSL is loaded on demand (src/libssl.rs), and which libssl: the one whose
/// headers openssl-sys built against. Elsewhere the binary links OpenSSL as usual.
fn libssl_on_demand() {
    println!("cargo::rustc-check-cfg=cfg(libssl_on_demand)");
    let version = env::var("DEP_OPENSSL_VERSION_NUMBER").ok();
    let major = version.and_then(|v| u64::from_str_radix(&v, 16).ok()).map(|v| v >> 28);
    if major == Some(3) && env::var("TARGET").unwrap() == "x86_64-unknown-linux-gnu" {
        println!("cargo:rustc-cfg=libssl_on_demand");
        println!("cargo:rustc-env=NBDBOX_LIBSSL=libssl.so.3");
    }
}

/// Every member of the guest workspace that declares a role.
fn read_guests(guests_dir: &Path) -> Vec<Guest> {
    let workspace: toml::Table = read_toml(&guests_dir.join("Cargo.toml"));
    let members = workspace["workspace"]["members"]
        .as_array()
        .expect("plugins-wasm/Cargo.toml lists its members");
    let mut guests = Vec::new();
    for member in members {
        let manifest_path = guests_dir.join(member.as_str().unwrap()).join("Cargo.toml");
        let manifest = read_toml(&manifest_path);
        let package = &manifest["package"];
        let Some(meta) = package.get("metadata").and_then(|m| m.get("nbdbox")) else {
            continue;
        };
        let field = |key: &str| {
            meta.get(key)
                .and_then(|v| v.as_str())
                .unwrap_or_else(|| panic!("{}: [package.metadata.nbdbox] needs `{key}`", manifest_path.display()))
                .to_owned()
        };
        let role = field("role");
        assert!(
            ["plugin", "filter", "test"].contains(&role.as_str()),
            "{}: role must be plugin, filter or test",
            manifest_path.display()
        );
        let folder = format!("plugins-wasm/{}", member.as_str().unwrap());
        let name = field("name");
        let summary = (role != "test").then(|| readme_summary(&guests_dir.join(member.as_str().unwrap()), &name));
        guests.push(Guest {
            role,
            name,
            stem: package["name"].as_str().unwrap().replace('-', "_"),
            folder,
            summary,
        });
    }
    guests
}

/// The line under `## NAME` in a built-in's README.md (`NAME - what it does (nbdkit-...)`),
/// without the name and the reference to nbdkit's page: the one place a built-in says what
/// it is, which the top-level README's tables are generated from.
fn readme_summary(folder: &Path, name: &str) -> String {
    let path = folder.join("README.md");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: every built-in needs a README.md: {e}", path.display()));
    let line = text
        .lines()
        .skip_while(|l| l.trim() != "## NAME")
        .skip(1)
        .find(|l| !l.trim().is_empty())
        .unwrap_or_else(|| panic!("{}: no line under `## NAME`", path.display()));
    let what = line
        .split_once(" - ")
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .unwrap_or_else(|| panic!("{}: the NAME line must read `{name} - what it does`", path.display()))
        .1;
    let what = match what.rfind(" (nbdkit-") {
        Some(at) if what.ends_with(')') => &what[..at],
        _ => what,
    };
    what.trim().to_owned()
}

fn read_toml(path: &Path) -> toml::Table {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.parse().unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn builtin_tables(guests: &[Guest], wasm_dir: &Path) -> String {
    let mut code = String::new();
    for (role, table, names) in [
        ("plugin", "PLUGINS", "PLUGIN_NAMES"),
        ("filter", "FILTERS", "FILTER_NAMES"),
    ] {
        let of_role: Vec<&Guest> = guests.iter().filter(|g| g.role == role).collect();
        writeln!(
            code,
            "/// Built-in {role}s: (name, wasm bytes).\npub static {table}: &[(&str, &[u8])] = &["
        )
        .unwrap();
        for guest in &of_role {
            let path = wasm_dir.join(format!("{}.wasm", guest.stem));
            writeln!(
                code,
                "    ({:?}, include_bytes!({:?})),",
                guest.name,
                path.display().to_string()
            )
            .unwrap();
        }
        writeln!(
            code,
            "];\n/// The names of the built-in {role}s.\npub static {names}: &[&str] = &["
        )
        .unwrap();
        for guest in &of_role {
            writeln!(code, "    {:?},", guest.name).unwrap();
        }
        code.push_str("];\n");
    }
    code
}

/// `foreach_builtin!(m)` calls `m!(plugin_memory)`, `m!(filter_retry)`... for every built-in,
/// and `foreach_test_component!(m)` calls `m!(hostile)`... for every test component.
fn test_macros(guests: &[Guest]) -> String {
    let ident = |s: &str| s.replace('-', "_");
    let mut builtins = String::new();
    let mut tests = String::new();
    for guest in guests {
        if guest.role == "test" {
            writeln!(tests, "        $m!({});", ident(&guest.name)).unwrap();
        } else {
            writeln!(builtins, "        $m!({}_{});", guest.role, ident(&guest.name)).unwrap();
        }
    }
    let mut tables = String::new();
    for role in ["plugin", "filter"] {
        writeln!(tables, "| {role} | what |\n|---|---|").unwrap();
        let mut of_role: Vec<&Guest> = guests.iter().filter(|g| g.role == role).collect();
        of_role.sort_by_key(|g| g.name.to_lowercase());
        for guest in of_role {
            let summary = guest.summary.as_deref().unwrap_or_default();
            writeln!(tables, "| [`{}`]({}/README.md) | {summary} |", guest.name, guest.folder).unwrap();
        }
        tables.push('\n');
    }
    format!(
        "/// The top-level README's tables of built-in plugins and filters.\n\
         #[allow(dead_code)]\n\
         const BUILTIN_TABLES: &str = {tables:?};\n\
         /// Calls `$m!(plugin_NAME)` / `$m!(filter_NAME)` for every built-in component.\n\
         macro_rules! foreach_builtin {{\n    ($m:ident) => {{\n{builtins}    }};\n}}\n\
         /// Calls `$m!(NAME)` for every test component.\n\
         macro_rules! foreach_test_component {{\n    ($m:ident) => {{\n{tests}    }};\n}}\n"
    )
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
