//! The process-wide wasmtime engine, its epoch ticker, and the compiled-component cache.

use sha2::{Digest, Sha256};
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::time::Duration;
use wasmtime::component::Component;
use wasmtime::error::Context as _;
use wasmtime::Result;
use wasmtime::{Config, Engine, OptLevel};

/// How often the epoch advances; call deadlines are counted in these ticks.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

pub fn new_engine() -> Result<Engine> {
    let mut config = Config::new();
    // Deadlines by epoch: one ticker thread, near-zero cost per call (fuel costs ~5%).
    config.epoch_interruption(true);
    config.cranelift_opt_level(OptLevel::Speed);
    // A bounded guest stack: deep recursion traps instead of exhausting the host's.
    config.max_wasm_stack(1 << 20);
    Engine::new(&config).context("creating the WebAssembly engine")
}

/// Advance the engine's epoch forever on a background thread. Started only once the
/// process has daemonized: a fork keeps no threads but the caller's.
pub fn start_epoch_ticker(engine: &Engine) {
    let engine = engine.clone();
    std::thread::Builder::new()
        .name("epoch-ticker".into())
        .spawn(move || loop {
            std::thread::sleep(EPOCH_TICK);
            engine.increment_epoch();
        })
        .expect("spawn the epoch ticker thread");
}

/// Compile `wasm`, or load the machine code compiled by an earlier run. The cache key covers
/// the bytes and the engine's configuration, since wasmtime refuses artifacts built with a
/// different one; any cache problem falls back to compiling.
pub fn load_component(engine: &Engine, wasm: &[u8]) -> Result<Component> {
    let Some(dir) = cache_dir() else {
        return Component::new(engine, wasm);
    };
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    let digest = Sha256::new()
        .chain_update(wasm)
        .chain_update(hasher.finish().to_le_bytes())
        .finalize();
    let hex: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
    let path = dir.join(format!("{hex}.cwasm"));
    // SAFETY: the cache directory is private to this user (0700) and holds only files this
    // program wrote; a corrupt or foreign-version entry fails deserialization's own checks.
    if let Ok(component) = unsafe { Component::deserialize_file(engine, &path) } {
        return Ok(component);
    }
    let component = Component::new(engine, wasm)?;
    if let Ok(bytes) = component.serialize() {
        let tmp = dir.join(format!("{hex}.{}.tmp", std::process::id()));
        if std::fs::write(&tmp, bytes)
            .and_then(|()| std::fs::rename(&tmp, &path))
            .is_err()
        {
            let _ = std::fs::remove_file(&tmp);
        }
    }
    Ok(component)
}

/// `$XDG_CACHE_HOME/nbdbox` or `~/.cache/nbdbox`, created 0700; None if unusable.
fn cache_dir() -> Option<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))?;
    let dir = base.join("nbdbox");
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .ok()?;
    Some(dir)
}
