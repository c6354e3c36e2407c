//! hello-plugin: a minimal nbdbox plugin, meant to be copied.
//!
//! It serves a read-only "pattern" disk: nothing is stored, every byte is computed from its
//! offset. All bytes of sector N (N = offset / 512) equal `(N mod 256) XOR seed`, so a client
//! can check any byte it reads:
//!
//! ```text
//! nbdbox ./target/wasm32-wasip2/release/hello_plugin.wasm size=1M seed=7 -U - --run 'nbdinfo $uri'
//! ```
//!
//! Parameters:
//! * `[size=]SIZE` (required; the magic key, so `hello_plugin.wasm 1M` works too): the disk size,
//!   in nbdkit's size syntax (`512`, `64k`, `1M`, `2G`...).
//! * `seed=N` (optional, 0..=255, default 0): XORed into every byte.
//!
//! A plugin implements two traits from the SDK:
//! * [`Guest`]: the plugin as a whole: metadata, configuration, startup, export list.
//! * [`GuestConnection`]: one value per client connection, created by `open`; the data calls
//!   (`pread`, `pwrite`, ...) are its methods.
//!
//! The host checks every request before the plugin sees it (the range is inside the disk, the
//! count is non-zero, the command is one the plugin advertised in `capabilities`), so the
//! callbacks below need no bounds checks of their own.

use std::cell::Cell;

use nbdbox_sdk::plugin::{Connection, Guest, GuestConnection};
use nbdbox_sdk::{
    config_key, error, unknown_key, BlockSize, Capabilities, CmdFlags, ConfigKind, Errno, Export, PluginInfo, ReadBuf,
    Result, ThreadModel,
};

/// Sector size of the pattern: all bytes of one sector are equal.
const SECTOR: u64 = 512;

/// How many bytes `pread` computes at a time (bounds the plugin's memory use per request).
const CHUNK: u32 = 64 * 1024;

// The configuration, set by `config` and read by the connections.
//
// A component runs on one thread, so a `thread_local!` with `Cell`s is all the global state needs.
// Because `describe` says `shared_state: false`, the host may create several instances of this
// component (for example one per connection) and replays the same `config` calls into each one.
thread_local! {
    static SIZE: Cell<Option<u64>> = const { Cell::new(None) };
    static SEED: Cell<u8> = const { Cell::new(0) };
}

/// The byte at `offset` of the disk.
fn pattern_byte(offset: u64, seed: u8) -> u8 {
    // Truncating to u8 is the point: the sector number wraps every 256 sectors.
    (offset / SECTOR) as u8 ^ seed
}

/// The error for any change to the disk (the server reports it to the client as EPERM).
struct Hello;

impl Guest for Hello {
    type Connection = HelloConnection;

    /// Metadata shown by `nbdbox PLUGIN --dump-plugin` and `nbdbox PLUGIN --help`.
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "hello".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "A read-only disk whose bytes are a function of their offset".into(),
            // A bare value on the command line (`hello_plugin.wasm 1M`) is given to `size`.
            magic_config_key: Some("size".into()),
            config_keys: vec![
                config_key("size", ConfigKind::Size, "[size=]<SIZE>  Size of the disk (required)."),
                config_key(
                    "seed",
                    ConfigKind::Text,
                    "seed=<0..255>  XORed into every byte (default 0).",
                ),
            ],
            // Requests may run concurrently: the plugin has no mutable state after startup.
            thread_model: ThreadModel::Parallel,
            // Nothing is kept in memory, so every connection may get its own instance.
            shared_state: false,
        }
    }

    /// Called once per `key=value` parameter, in command-line order.
    fn config(key: String, value: String) -> Result<()> {
        match key.as_str() {
            // parse_size understands nbdkit's suffixes and names the key in its error.
            "size" => SIZE.set(Some(nbdbox_sdk::parse_size(&key, &value)?)),
            "seed" => {
                let seed = value
                    .parse::<u8>()
                    .map_err(|_| error(Errno::Einval, format!("seed: '{value}' is not a number from 0 to 255")))?;
                SEED.set(seed);
            }
            // An unknown key is an error, reported as "unknown parameter 'KEY'".
            _ => return Err(unknown_key(&key)),
        }
        Ok(())
    }

    /// Called after the last `config`: check that the required parameters are there.
    fn config_complete() -> Result<()> {
        if SIZE.get().is_none() {
            return Err(error(
                Errno::Einval,
                "you must give the disk size: [size=]<SIZE> after the plugin on the command line",
            ));
        }
        Ok(())
    }

    /// Called once before the server accepts clients: nothing to prepare here.
    fn get_ready() -> Result<()> {
        Ok(())
    }

    /// An empty list means the single default export "".
    fn list_exports(_readonly: bool) -> Result<Vec<Export>> {
        Ok(Vec::new())
    }
}

/// One client connection. This plugin needs nothing per connection but the configuration.
struct HelloConnection {
    size: u64,
    seed: u8,
}

impl GuestConnection for HelloConnection {
    /// nbdkit's `open`: `readonly` is true under `-r`; the export name is ignored.
    fn open(_readonly: bool, _export_name: String) -> Result<Connection> {
        // config_complete has made sure the size is set.
        let size = SIZE.get().unwrap_or(0);
        Ok(Connection::new(HelloConnection { size, seed: SEED.get() }))
    }

    fn get_size(&self) -> Result<u64> {
        Ok(self.size)
    }

    fn export_description(&self) -> Option<String> {
        Some(format!("pattern disk, seed {}", self.seed))
    }

    /// What the disk supports. The default is a read-only disk with no flush, trim, zero,
    /// extents or cache; the data never changes, so several connections may be combined
    /// by the client (multi-conn).
    fn capabilities(&self) -> Result<Capabilities> {
        Ok(Capabilities {
            can_multi_conn: true,
            ..Capabilities::default()
        })
    }

    /// No block size constraints.
    fn block_size(&self) -> Result<Option<BlockSize>> {
        Ok(None)
    }

    /// Fill the request buffer `dst` (`count` bytes) with the disk's bytes from `offset`.
    fn pread(&self, dst: &ReadBuf, count: u32, offset: u64, _flags: CmdFlags) -> Result<()> {
        // Compute the bytes in chunks and copy each into the host's buffer at position `at`.
        // Offsets stay u64: on wasm32 `usize` has only 32 bits.
        let mut chunk = Vec::with_capacity(count.min(CHUNK) as usize);
        let mut at = 0u32;
        while at < count {
            let n = (count - at).min(CHUNK);
            let start = offset + u64::from(at);
            chunk.clear();
            chunk.extend((0..u64::from(n)).map(|i| pattern_byte(start + i, self.seed)));
            dst.write(at, &chunk);
            at += n;
        }
        Ok(())
    }

    // The remaining callbacks are never called, because `capabilities` advertises none of
    // them; they still have to exist, and `not_supported!` writes them to fail cleanly. It
    // also writes `prepare` and `finalize` (run after `open` and before close), which this
    // plugin has no use for.
    nbdbox_sdk::not_supported!(prepare, finalize, pwrite, flush, trim, zero, extents, cache);
}

// Register the plugin: this generates the component's exports. Exactly once per plugin crate.
nbdbox_sdk::export_plugin!(Hello);

#[cfg(test)]
mod tests {
    use super::pattern_byte;

    #[test]
    fn pattern() {
        assert_eq!(pattern_byte(0, 0), 0);
        assert_eq!(pattern_byte(511, 0), 0);
        assert_eq!(pattern_byte(512, 0), 1);
        assert_eq!(pattern_byte(256 * 512, 0), 0);
        assert_eq!(pattern_byte(3 * 512 + 7, 0xff), 3 ^ 0xff);
    }
}
