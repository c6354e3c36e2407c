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
//! A plugin implements two traits from the SDK, which has nbdkit's defaults for everything
//! left out (nbdkit-plugin(3)): thread model parallel, no shared state (the host may run
//! several instances, each configured alike), no exports but the default one, ...
//! * [`Plugin`]: the plugin as a whole: its name, parameters and configuration, and `open`.
//! * [`Connection`]: one value per client connection, made by `open`; the data calls
//!   (`pread`, `pwrite`, ...) are its methods. Only `get_size` and `pread` are required.
//!
//! The host checks every request before the plugin sees it (the range is inside the disk, the
//! count is non-zero, the command is one the plugin supports), so the code below needs no
//! bounds checks of its own.

use nbdbox_sdk::prelude::*;

/// The configuration: the disk size (`.0`, required) and the seed (`.1`). The SDK makes it
/// with `Default` and hands it each `key=value`. A connection needs nothing else, so here it
/// is a copy of the configuration; a plugin with per-connection state gives it its own type.
#[derive(Clone, Copy, Default)]
struct Hello(Option<u64>, u8);

impl Plugin for Hello {
    // What `--dump-plugin` and `--help` show; a bare value on the command line is the size.
    const NAME: &'static str = "hello";
    const DESCRIPTION: &'static str = "A read-only disk whose bytes are a function of their offset";
    const MAGIC_CONFIG_KEY: Option<&'static str> = Some("size");
    const CONFIG_KEYS: &'static [Key] = &[
        Key::new("size", Kind::Size, "[size=]<SIZE>  Size of the disk (required)."),
        Key::new("seed", Kind::Text, "seed=<0..255>  XORed into every byte (default 0)."),
    ];
    type Connection = Hello;

    /// Once per key given; the SDK refuses keys not declared above, naming them.
    /// `parse_size` takes nbdkit's suffixes and names the key in its error.
    fn config(&mut self, key: &str, value: &str) -> Result<()> {
        let bad_seed = || error(Errno::Einval, format!("seed: '{value}' is not a number from 0 to 255"));
        match key {
            "size" => self.0 = Some(nbdbox_sdk::parse_size(key, value)?),
            _ => self.1 = value.parse().map_err(|_| bad_seed())?,
        }
        Ok(())
    }

    /// After the last key: the size is required.
    fn config_complete(&mut self) -> Result<()> {
        let why = "you must give the disk size: [size=]<SIZE> after the plugin on the command line";
        self.0.map(drop).ok_or_else(|| error(Errno::Einval, why))
    }

    /// A client connects (`readonly` is true under `-r`; the export name is ignored).
    fn open(&self, _readonly: bool, _export_name: &str) -> Result<Hello> {
        Ok(*self)
    }
}

/// `#[nbdbox_sdk::connection]` tells the SDK which optional methods (`pwrite`, `flush`, `trim`,
/// `zero`, `extents`, `cache`) the impl defines, so that the capabilities it reports follow:
/// here none, so the disk is read-only with no flush, trim, extents or cache.
#[nbdbox_sdk::connection]
impl Connection for Hello {
    fn get_size(&self) -> Result<u64> {
        Ok(self.0.unwrap_or_default())
    }

    /// Fill the request buffer `dst` with the `n` bytes of the disk from offset `at` (at most
    /// 64 MiB; offsets stay u64, as wasm32's `usize` has only 32 bits). `as u8` wraps the
    /// sector number every 256 sectors.
    fn pread(&self, dst: &ReadBuf, n: u32, at: u64, _flags: CmdFlags) -> Result<()> {
        let bytes: Vec<u8> = (at..at + u64::from(n)).map(|o| (o / 512) as u8 ^ self.1).collect();
        dst.write(0, &bytes);
        Ok(())
    }
}

// Register the plugin: this generates the component's exports. Exactly once per plugin crate.
nbdbox_sdk::plugin!(Hello);
