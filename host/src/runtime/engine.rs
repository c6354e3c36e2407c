//! The process-wide wasmtime engine, its epoch ticker, and the compiled-component cache.

use crate::log::{self, Log};
use sha2::{Digest, Sha256};
use std::hash::{Hash, Hasher};
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;
use wasmtime::component::Component;
use wasmtime::error::Context as _;
use wasmtime::Result;
use wasmtime::{Config, Engine, OptLevel};

/// How often the epoch advances; deadlines are checked at this granularity.
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

/// Advances the engine's epoch on a background thread. A fork keeps no threads but the
/// caller's, so the lifecycle stops it before daemonizing and starts it again after.
pub struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

impl EpochTicker {
    pub fn start(engine: &Engine) -> EpochTicker {
        let engine = engine.clone();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::Builder::new()
            .name("epoch-ticker".into())
            .spawn(move || {
                while !stopped.load(Ordering::Relaxed) {
                    super::clock::tick();
                    std::thread::park_timeout(EPOCH_TICK);
                    engine.increment_epoch();
                }
            })
            .expect("spawn the epoch ticker thread");
        EpochTicker { stop, thread }
    }

    /// Stop and join the thread; it is woken, so this does not wait for a tick.
    pub fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.thread().unpark();
        let _ = self.thread.join();
        super::clock::ticker_stopped();
    }
}

/// Compile `wasm`, or load the machine code compiled by an earlier run. The cache key covers
/// the bytes and the engine's configuration, since wasmtime refuses artifacts built with a
/// different one; any cache problem falls back to compiling.
pub fn load_component(engine: &Engine, wasm: &[u8], log: &Log) -> Result<Component> {
    let Some(dir) = cache_dir(log) else {
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
    // SAFETY: `cache_dir` checked that only this user can write the directory, so it holds
    // only files this program wrote; a corrupt or foreign-version entry fails
    // deserialization's own checks.
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

/// `$XDG_CACHE_HOME/nbdbox` or `~/.cache/nbdbox`, created 0700. Used only when it belongs to
/// this user and nobody else can write it: whoever can plant a file there runs native code
/// outside the sandbox.
fn cache_dir(log: &Log) -> Option<PathBuf> {
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
    match unsafe_cache_dir(&dir) {
        None => Some(dir),
        Some(why) => {
            log::debug!(log, "not using the compiled-component cache {}: {why}", dir.display());
            None
        }
    }
}

/// Why `dir` cannot be trusted with compiled code, if it cannot.
fn unsafe_cache_dir(dir: &Path) -> Option<String> {
    let metadata = match std::fs::symlink_metadata(dir) {
        Ok(m) => m,
        Err(e) => return Some(e.to_string()),
    };
    if !metadata.is_dir() {
        return Some("it is not a directory".into());
    }
    let me = nix::unistd::geteuid().as_raw();
    if metadata.uid() != me {
        return Some(format!(
            "it belongs to uid {}, not to this user (uid {me})",
            metadata.uid()
        ));
    }
    if metadata.mode() & 0o022 != 0 {
        return Some(format!("others can write it (mode {:o})", metadata.mode() & 0o777));
    }
    None
}
