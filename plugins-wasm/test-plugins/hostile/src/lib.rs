//! hostile: a test plugin that misbehaves on purpose, to check that the host survives a
//! component that traps, spins, eats memory, floods the log or lies about its exports. Not
//! shipped.
//!
//! It is a zero-filled disk (1 MiB unless `size=` says otherwise; writes are accepted and
//! dropped). A read *starting* at one of these offsets misbehaves; every other read returns
//! zeros:
//!
//! | offset | behaviour                                                              |
//! |--------|------------------------------------------------------------------------|
//! | 4096   | traps (`unreachable`)                                                  |
//! | 8192   | loops forever                                                          |
//! | 12288  | allocates 16 MiB blocks without bound until memory runs out            |
//! | 16384  | writes 512 bytes straddling the end of the read buffer                 |
//! | 20480  | calls `host.sleep(0)` forever                                          |
//! | 24576  | computes for a millisecond and sleeps 1 ns, forever                    |
//! | 28672  | sleeps `u64::MAX` ns, then loops forever                               |
//! | 32768  | makes 32 MiB host read buffers and keeps them, without bound           |
//! | 36864  | grows its memory in 4 MiB blocks until refused, keeps it, reads zeros  |
//! | 40960  | forges a log line (and one on stderr), then logs 100,000 × 4 KiB     |
//!
//! `hang=STAGE` spins forever in that configuration call: `config` (this very call),
//! `config-complete` or `get-ready`. `exports=broken` lists, besides `good`, names the NBD
//! protocol cannot carry (one with NUL, one of 5000 bytes) and a 100 KB description;
//! and every export's description is 100 KB; `exports=million` lists a million exports.

use std::hint::black_box;
use std::sync::Mutex;

use nbdbox_sdk::prelude::*;
use nbdbox_sdk::{debug, log_error, sleep};

pub const TRAP_AT: u64 = 4096;
pub const SPIN_AT: u64 = 8192;
pub const HOG_AT: u64 = 12288;
pub const OVERRUN_AT: u64 = 16384;
pub const SLEEP_ZERO_AT: u64 = 20480;
pub const SLEEP_AND_COMPUTE_AT: u64 = 24576;
pub const SLEEP_FOREVER_AT: u64 = 28672;
pub const HOST_HOARD_AT: u64 = 32768;
pub const KEEP_MEMORY_AT: u64 = 36864;
pub const LOG_FLOOD_AT: u64 = 40960;
pub const OVERREAD_AT: u64 = 45056;

/// Where the memory hogs keep their blocks, so the allocations stay live.
static HOARD: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());
static HOST_HOARD: Mutex<Vec<ReadBuf>> = Mutex::new(Vec::new());

#[derive(Default)]
struct Hostile {
    size: Option<u64>,
    hang: Option<String>,
    exports: Option<String>,
}

fn spin() -> ! {
    let mut n: u64 = 0;
    loop {
        n = black_box(n.wrapping_add(1));
    }
}

/// Spin for about a millisecond of computation.
fn compute_a_while() {
    let mut n: u64 = 0;
    for _ in 0..1_000_000 {
        n = black_box(n.wrapping_add(1));
    }
}

fn export(name: String, description: Option<String>) -> Export {
    Export { name, description }
}

impl Plugin for Hostile {
    const NAME: &'static str = "hostile";
    const DESCRIPTION: &'static str = "Test plugin: misbehaves on reads at chosen offsets";
    const MAGIC_CONFIG_KEY: Option<&'static str> = Some("size");
    const CONFIG_KEYS: &'static [Key] = &[
        Key::new("size", Kind::Size, "[size=]<SIZE>  Disk size (default 1M)."),
        Key::new(
            "hang",
            Kind::Text,
            "hang=STAGE  Spin in config, config-complete or get-ready.",
        ),
        Key::new(
            "exports",
            Kind::Text,
            "exports=broken|million  What list-exports returns.",
        ),
    ];
    type Connection = HostileConnection;

    fn config(&mut self, key: &str, value: &str) -> Result<()> {
        match key {
            "hang" if value == "config" => spin(),
            "hang" => self.hang = Some(value.to_owned()),
            "exports" => self.exports = Some(value.to_owned()),
            _ => self.size = Some(nbdbox_sdk::parse_size(key, value)?),
        }
        Ok(())
    }

    fn config_complete(&mut self) -> Result<()> {
        if self.hang.as_deref() == Some("config-complete") {
            spin()
        }
        Ok(())
    }

    fn get_ready(&mut self) -> Result<()> {
        if self.hang.as_deref() == Some("get-ready") {
            spin()
        }
        Ok(())
    }

    fn list_exports(&self, _readonly: bool) -> Result<Vec<Export>> {
        let good = || export("good".into(), Some("a fine export".into()));
        Ok(match self.exports.as_deref() {
            Some("broken") => vec![
                good(),
                export("nul\0inside".into(), None),
                export("n".repeat(5000), None),
                export("described".into(), Some("d".repeat(100_000))),
            ],
            Some("million") => (0..1_000_000).map(|i| export(format!("e{i}"), None)).collect(),
            _ => vec![good()],
        })
    }

    fn open(&self, _readonly: bool, _export_name: &str) -> Result<HostileConnection> {
        Ok(HostileConnection {
            size: self.size.unwrap_or(1 << 20),
            broken_exports: self.exports.as_deref() == Some("broken"),
        })
    }
}

struct HostileConnection {
    size: u64,
    /// `exports=broken`: the export's description is 100 KB too.
    broken_exports: bool,
}

#[nbdbox_sdk::connection]
impl Connection for HostileConnection {
    fn get_size(&self) -> Result<u64> {
        Ok(self.size)
    }

    fn export_description(&self) -> Option<String> {
        self.broken_exports.then(|| "d".repeat(100_000))
    }

    /// Writes and flushes are accepted (and dropped); zero is the host's, by writing; cache is
    /// the host's, by reading.
    fn capabilities(&self) -> Result<Capabilities> {
        Ok(Capabilities {
            can_fast_zero: false,
            can_cache: CacheMode::Emulate,
            ..Capabilities::implied(Self::IMPLEMENTS)
        })
    }

    fn pread(&self, dst: &ReadBuf, count: u32, offset: u64, _flags: CmdFlags) -> Result<()> {
        match offset {
            TRAP_AT => {
                debug("trapping");
                // A trap, as wasm's `unreachable`.
                std::process::abort()
            }
            SPIN_AT => {
                debug("spinning forever");
                spin()
            }
            SLEEP_ZERO_AT => loop {
                sleep(0);
            },
            SLEEP_AND_COMPUTE_AT => loop {
                compute_a_while();
                sleep(1);
            },
            SLEEP_FOREVER_AT => {
                sleep(u64::MAX);
                spin()
            }
            HOST_HOARD_AT => {
                let mut hoard = HOST_HOARD.lock().unwrap_or_else(|e| e.into_inner());
                loop {
                    hoard.push(ReadBuf::new(32 << 20));
                }
            }
            KEEP_MEMORY_AT => {
                let mut hoard = HOARD.lock().unwrap_or_else(|e| e.into_inner());
                loop {
                    let mut block = Vec::new();
                    if block.try_reserve_exact(4 << 20).is_err() {
                        break;
                    }
                    block.resize(4 << 20, 0xa5);
                    hoard.push(black_box(block));
                }
                dst.zero(0, count);
                Ok(())
            }
            LOG_FLOOD_AT => {
                log_error("flood ahead\nnbdbox: error: forged line\x1b[2J");
                eprintln!("on stderr\x1b[2J");
                let line = "x".repeat(4096);
                for _ in 0..100_000 {
                    log_error(&line);
                }
                dst.zero(0, count);
                Ok(())
            }
            HOG_AT => {
                debug("allocating memory without bound");
                let mut hoard = HOARD.lock().unwrap_or_else(|e| e.into_inner());
                loop {
                    hoard.push(black_box(vec![0xa5u8; 16 << 20]));
                }
            }
            OVERRUN_AT => {
                debug("writing past the end of the read buffer");
                let len = dst.len();
                dst.write(len.saturating_sub(256), &[0xee; 512]);
                Ok(())
            }
            OVERREAD_AT => {
                debug("reading past the end of the read buffer");
                let len = dst.len();
                black_box(dst.read(len.saturating_sub(256), 512));
                Ok(())
            }
            _ => {
                dst.zero(0, count);
                Ok(())
            }
        }
    }

    fn pwrite(&self, src: &WriteBuf, _count: u32, offset: u64, _flags: CmdFlags) -> Result<()> {
        if offset == OVERREAD_AT {
            debug("reading past the end of the write buffer");
            black_box(src.read(src.len().saturating_sub(256), 512));
        }
        Ok(())
    }

    fn flush(&self, _flags: CmdFlags) -> Result<()> {
        Ok(())
    }
}

nbdbox_sdk::plugin!(Hostile);
