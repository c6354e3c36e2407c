//! Links the fuzz targets against libFuzzer's runtime (which brings `main`), taken prebuilt
//! from Debian's libclang-rt-14-dev: building it from source with the libfuzzer-sys crate
//! would turn on cc's `parallel` feature for every build script, and so rebuild wasmtime
//! rather than reuse the root build's. run.sh installs the package and names the archive.

use std::path::PathBuf;

const ARCHIVE_VAR: &str = "NBDBOX_LIBFUZZER";
const DEFAULT_ARCHIVE: &str = "/usr/lib/llvm-14/lib/clang/14.0.6/lib/linux/libclang_rt.fuzzer-x86_64.a";

fn main() {
    println!("cargo:rerun-if-env-changed={ARCHIVE_VAR}");
    let archive = PathBuf::from(std::env::var(ARCHIVE_VAR).unwrap_or_else(|_| DEFAULT_ARCHIVE.into()));
    assert!(
        archive.is_file(),
        "no libFuzzer runtime at {} (apt-get install libclang-rt-14-dev, or set {ARCHIVE_VAR})",
        archive.display()
    );
    println!("cargo:rerun-if-changed={}", archive.display());
    for bin in ["fuzz-codec", "fuzz-server"] {
        println!("cargo:rustc-link-arg-bin={bin}={}", archive.display());
        // libFuzzer is C++ built against libstdc++.
        println!("cargo:rustc-link-arg-bin={bin}=-lstdc++");
    }
}
