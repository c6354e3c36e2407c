//! minimal (test only): a writable RAM disk that implements only what a plugin must
//! (get_size, pread) plus pwrite and flush, so everything else is the SDK's and the host's
//! defaults: zero and FUA emulated, no trim, no extents, and no cache unless `cache=emulate`
//! makes the capabilities say the host emulates it. Every data call that reaches the plugin
//! is logged as `minimal: CALL count=C offset=O flags=F` (flush with count and offset 0), so
//! a test can see what the host turned a request into. One instance holds the disk for
//! every connection (shared state). `trap-offset=O`: a read starting at O traps, losing the
//! disk with the instance.

use std::cell::RefCell;
use std::rc::Rc;

use nbdbox_sdk::prelude::*;
use nbdbox_sdk::{info, to_usize};

#[derive(Default)]
struct Minimal {
    size: Option<u64>,
    cache_emulate: bool,
    trap_offset: Option<u64>,
    disk: Rc<RefCell<Vec<u8>>>,
}

impl Plugin for Minimal {
    const NAME: &'static str = "minimal";
    const DESCRIPTION: &'static str = "Test plugin: a RAM disk with nothing but pread, pwrite and flush";
    const MAGIC_CONFIG_KEY: Option<&'static str> = Some("size");
    const CONFIG_KEYS: &'static [Key] = &[
        Key::new("size", Kind::Size, "[size=]<SIZE>  Disk size (default 1M)."),
        Key::new(
            "cache",
            Kind::Text,
            "cache=emulate  Report cache as emulated by the host (default: no cache).",
        ),
        Key::new("trap-offset", Kind::Text, "trap-offset=O  A read starting at O traps."),
    ];
    const SHARED_STATE: bool = true;
    type Connection = MinimalConnection;

    fn config(&mut self, key: &str, value: &str) -> Result<()> {
        match key {
            "size" => self.size = Some(nbdbox_sdk::parse_size(key, value)?),
            "trap-offset" => {
                let offset = value
                    .parse()
                    .map_err(|_| error(Errno::Einval, format!("{key}: '{value}' is not a number")))?;
                self.trap_offset = Some(offset);
            }
            // cache
            _ if value == "emulate" => self.cache_emulate = true,
            _ => {
                return Err(error(
                    Errno::Einval,
                    format!("cache: unknown value '{value}' (expected emulate)"),
                ))
            }
        }
        Ok(())
    }

    fn config_complete(&mut self) -> Result<()> {
        let len = to_usize(self.size.unwrap_or(1 << 20))?;
        let mut disk = Vec::new();
        disk.try_reserve_exact(len)
            .map_err(|_| error(Errno::Enomem, format!("cannot allocate {len} bytes")))?;
        disk.resize(len, 0);
        self.disk = Rc::new(RefCell::new(disk));
        Ok(())
    }

    fn open(&self, _readonly: bool, _export_name: &str) -> Result<MinimalConnection> {
        Ok(MinimalConnection {
            disk: Rc::clone(&self.disk),
            cache_emulate: self.cache_emulate,
            trap_offset: self.trap_offset,
        })
    }
}

struct MinimalConnection {
    disk: Rc<RefCell<Vec<u8>>>,
    cache_emulate: bool,
    trap_offset: Option<u64>,
}

fn log_call(call: &str, count: u32, offset: u64, flags: CmdFlags) {
    info(&format!("{call} count={count} offset={offset} flags={flags:?}"));
}

/// The disk's bytes [offset, offset + count) as a slice range (the host keeps it in bounds).
fn range(count: u32, offset: u64) -> Result<std::ops::Range<usize>> {
    let start = to_usize(offset)?;
    Ok(start..start + count as usize)
}

#[nbdbox_sdk::connection]
impl Connection for MinimalConnection {
    fn get_size(&self) -> Result<u64> {
        Ok(self.disk.borrow().len() as u64)
    }

    fn capabilities(&self) -> Result<Capabilities> {
        let mut capabilities = Capabilities::implied(Self::IMPLEMENTS);
        if self.cache_emulate {
            capabilities.can_cache = CacheMode::Emulate;
        }
        Ok(capabilities)
    }

    fn pread(&self, dst: &ReadBuf, count: u32, offset: u64, flags: CmdFlags) -> Result<()> {
        log_call("pread", count, offset, flags);
        if self.trap_offset == Some(offset) {
            // A trap, as wasm's `unreachable`: the disk is lost with the instance.
            std::process::abort();
        }
        dst.write(0, &self.disk.borrow()[range(count, offset)?]);
        Ok(())
    }

    fn pwrite(&self, src: &WriteBuf, count: u32, offset: u64, flags: CmdFlags) -> Result<()> {
        log_call("pwrite", count, offset, flags);
        self.disk.borrow_mut()[range(count, offset)?].copy_from_slice(&src.read(0, count));
        Ok(())
    }

    fn flush(&self, flags: CmdFlags) -> Result<()> {
        log_call("flush", 0, 0, flags);
        Ok(())
    }
}

nbdbox_sdk::plugin!(Minimal);
