//! sleepy (test and benchmark only): a read-only disk of zeros (`[size=]SIZE`, default 1G)
//! whose every read first waits `delay-ms=MS` milliseconds (default 1) in the host's sleep:
//! the benchmark's model of a plugin waiting on the network, where requests overlap only if
//! the host lets them (thread model parallel, no shared state). Its cache is native and waits
//! `cache-delay-ms=MS` (default 0): a prefetch that takes time.

use nbdbox_sdk::prelude::*;

#[derive(Default)]
struct Sleepy {
    size: Option<u64>,
    delay_ms: Option<u64>,
    cache_delay_ms: u64,
}

impl Plugin for Sleepy {
    const NAME: &'static str = "sleepy";
    const DESCRIPTION: &'static str = "Test plugin: a disk of zeros whose reads wait first";
    const MAGIC_CONFIG_KEY: Option<&'static str> = Some("size");
    const CONFIG_KEYS: &'static [Key] = &[
        Key::new("size", Kind::Size, "[size=]<SIZE>  Disk size (default 1G)."),
        Key::new(
            "delay-ms",
            Kind::Text,
            "delay-ms=<MS>  How long each read waits (default 1).",
        ),
        Key::new(
            "cache-delay-ms",
            Kind::Text,
            "cache-delay-ms=<MS>  How long each cache request waits (default 0).",
        ),
    ];
    type Connection = SleepyConnection;

    fn config(&mut self, key: &str, value: &str) -> Result<()> {
        if key == "size" {
            self.size = Some(nbdbox_sdk::parse_size(key, value)?);
        } else {
            let ms = value.parse().map_err(|_| {
                error(
                    Errno::Einval,
                    format!("{key}: '{value}' is not a number of milliseconds"),
                )
            })?;
            if key == "cache-delay-ms" {
                self.cache_delay_ms = ms;
            } else {
                self.delay_ms = Some(ms);
            }
        }
        Ok(())
    }

    fn open(&self, _readonly: bool, _export_name: &str) -> Result<SleepyConnection> {
        Ok(SleepyConnection {
            size: self.size.unwrap_or(1 << 30),
            delay_ns: self.delay_ms.unwrap_or(1).saturating_mul(1_000_000),
            cache_delay_ns: self.cache_delay_ms.saturating_mul(1_000_000),
        })
    }
}

struct SleepyConnection {
    size: u64,
    delay_ns: u64,
    cache_delay_ns: u64,
}

#[nbdbox_sdk::connection]
impl Connection for SleepyConnection {
    fn get_size(&self) -> Result<u64> {
        Ok(self.size)
    }

    fn pread(&self, dst: &ReadBuf, count: u32, _offset: u64, _flags: CmdFlags) -> Result<()> {
        if !nbdbox_sdk::sleep(self.delay_ns) {
            return Err(error(Errno::Eshutdown, "sleepy: the wait was cut short"));
        }
        dst.zero(0, count);
        Ok(())
    }

    fn cache(&self, _count: u64, _offset: u64, _flags: CmdFlags) -> Result<()> {
        if !nbdbox_sdk::sleep(self.cache_delay_ns) {
            return Err(error(Errno::Eshutdown, "sleepy: the wait was cut short"));
        }
        Ok(())
    }
}

nbdbox_sdk::plugin!(Sleepy);
