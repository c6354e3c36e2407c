//! delay: nbdkit-delay-filter(1), making requests slow (filters/delay/delay.c). Each delay is
//! `SECS` or `NNms`; `rdelay`/`delay-read` for reads, `delay-write`, `delay-zero`,
//! `delay-trim`, `delay-extents`, `delay-cache`, `wdelay` for writes, zeroes and trims at
//! once, `delay-open` and `delay-close` for connecting and disconnecting, and
//! `delay-fast-zero=false` to fail a delayed fast zero at once with ENOTSUP instead of
//! waiting. Waits go through the host's sleep, which does not count against the call's
//! deadline and ends early when the server shuts down.

use nbdbox_filter_sdk::prelude::*;

/// Milliseconds per call, as delay.c keeps them.
#[derive(Clone, Copy)]
struct Delays {
    read: u32,
    write: u32,
    zero: u32,
    trim: u32,
    extents: u32,
    cache: u32,
    open: u32,
    close: u32,
    /// Whether a fast zero waits like any other zero (default) or fails at once.
    fast_zero: bool,
}

impl Default for Delays {
    fn default() -> Self {
        Delays {
            read: 0,
            write: 0,
            zero: 0,
            trim: 0,
            extents: 0,
            cache: 0,
            open: 0,
            close: 0,
            fast_zero: true,
        }
    }
}

/// delay.c's parse_delay: `NNms` milliseconds (sscanf's `%u` of the number before it), else
/// whole seconds (nbdkit_parse_unsigned) that must fit in an unsigned int as milliseconds.
fn parse_delay(key: &str, value: &str) -> Result<u32> {
    if value.len() > 2 && value.ends_with("ms") {
        let scanned = nbdkit_parse::scan_decimal(value);
        if scanned.len == 0 {
            return Err(error(
                Errno::Einval,
                format!("cannot parse {key} in milliseconds parameter: {value}"),
            ));
        }
        // %u stores the number modulo 2^32, a '-' included.
        let wide = scanned.magnitude.unwrap_or(u64::MAX);
        let ms = if scanned.negative { wide.wrapping_neg() } else { wide };
        return Ok(ms as u32);
    }
    let seconds = nbdkit_parse::parse_unsigned(key, value).map_err(|why| error(Errno::Einval, why))?;
    seconds
        .checked_mul(1000)
        .ok_or_else(|| error(Errno::Einval, format!("seconds parameter {key} is too large: {value}")))
}

/// Wait `ms` milliseconds; ESHUTDOWN when the server shuts down meanwhile (nbdkit_nanosleep).
fn delay(ms: u32) -> Result<()> {
    if ms > 0 && !nbdbox_filter_sdk::sleep(u64::from(ms) * 1_000_000) {
        return Err(error(Errno::Eshutdown, "interrupted: the server is shutting down"));
    }
    Ok(())
}

const fn key(name: &'static str, help: &'static str) -> Key {
    Key::new(name, Kind::Text, help)
}

#[derive(Default)]
struct Delay {
    delays: Delays,
}

impl Filter for Delay {
    const NAME: &'static str = "delay";
    const DESCRIPTION: &'static str = "Delay requests, to simulate a slow or remote server";
    const CONFIG_KEYS: &'static [Key] = &[
        key("rdelay", "rdelay=<NN>[ms]  Read delay in seconds/milliseconds."),
        key("delay-read", "delay-read=<NN>[ms]  Read delay in seconds/milliseconds."),
        key("delay-reads", ""),
        key(
            "delay-write",
            "delay-write=<NN>[ms]  Write delay in seconds/milliseconds.",
        ),
        key("delay-writes", ""),
        key("delay-zero", "delay-zero=<NN>[ms]  Zero delay in seconds/milliseconds."),
        key("delay-zeroes", ""),
        key("delay-trim", "delay-trim=<NN>[ms]  Trim delay in seconds/milliseconds."),
        key("delay-trims", ""),
        key("delay-discard", ""),
        key("delay-discards", ""),
        key(
            "delay-extents",
            "delay-extents=<NN>[ms]  Extents delay in seconds/milliseconds.",
        ),
        key("delay-extent", ""),
        key(
            "delay-cache",
            "delay-cache=<NN>[ms]  Cache delay in seconds/milliseconds.",
        ),
        key("wdelay", "wdelay=<NN>[ms]  Write, zero and trim delay in secs/msecs."),
        Key::new(
            "delay-fast-zero",
            Kind::Bool,
            "delay-fast-zero=<BOOL>  Delay fast zero requests (default true).",
        ),
        key("delay-open", "delay-open=<NN>[ms]  Open delay in seconds/milliseconds."),
        key(
            "delay-close",
            "delay-close=<NN>[ms]  Close delay in seconds/milliseconds.",
        ),
    ];
    type Connection = Delayed;

    fn config(&mut self, key: &str, value: &str) -> Result<()> {
        let d = &mut self.delays;
        match key {
            "delay-fast-zero" => d.fast_zero = nbdbox_filter_sdk::parse_bool(key, value)?,
            "rdelay" | "delay-read" | "delay-reads" => d.read = parse_delay(key, value)?,
            // Historically wdelay sets every write-like delay.
            "wdelay" => {
                d.write = parse_delay(key, value)?;
                d.zero = d.write;
                d.trim = d.write;
            }
            "delay-write" | "delay-writes" => d.write = parse_delay(key, value)?,
            "delay-zero" | "delay-zeroes" => d.zero = parse_delay(key, value)?,
            "delay-trim" | "delay-trims" | "delay-discard" | "delay-discards" => d.trim = parse_delay(key, value)?,
            "delay-extent" | "delay-extents" => d.extents = parse_delay(key, value)?,
            "delay-cache" => d.cache = parse_delay(key, value)?,
            "delay-open" => d.open = parse_delay(key, value)?,
            _ => d.close = parse_delay(key, value)?,
        }
        Ok(())
    }

    /// The delay comes before the layer below is opened, as in delay.c.
    fn open_next(&self, readonly: bool, export_name: &str) -> Result<next::Connection> {
        delay(self.delays.open)?;
        next::Connection::open(readonly, export_name)
    }

    fn open(&self, _next: &Next, _readonly: bool, _export_name: &str) -> Result<Delayed> {
        Ok(Delayed { delays: self.delays })
    }
}

struct Delayed {
    delays: Delays,
}

impl Delayed {
    /// A fast zero this filter answers itself: delayed zeroes, fast zeroes not waited for.
    fn refuses_fast_zero(&self) -> bool {
        self.delays.zero > 0 && !self.delays.fast_zero
    }
}

impl FilterConnection for Delayed {
    /// Before the layers below finalize, so that a client that disconnects politely waits.
    /// A shutdown cuts the wait short; the finalize goes on regardless.
    fn finalize(&self, _next: &Next) -> Result<()> {
        let _ = delay(self.delays.close);
        Ok(())
    }

    fn capabilities(&self, next: &Next) -> Result<Capabilities> {
        let below = next.capabilities()?;
        Ok(Capabilities {
            can_fast_zero: self.refuses_fast_zero() || below.can_fast_zero,
            ..below
        })
    }

    fn pread(&self, next: &Next, dst: &ReadBuf, count: u32, offset: u64, flags: CmdFlags) -> Result<()> {
        delay(self.delays.read)?;
        next.pread(dst, count, offset, flags)
    }

    fn pwrite(&self, next: &Next, src: &WriteBuf, count: u32, offset: u64, flags: CmdFlags) -> Result<()> {
        delay(self.delays.write)?;
        next.pwrite(src, count, offset, flags)
    }

    fn zero(&self, next: &Next, count: u64, offset: u64, flags: CmdFlags) -> Result<()> {
        if flags.contains(CmdFlags::FAST_ZERO) && self.refuses_fast_zero() {
            return Err(errno(Errno::Enotsup));
        }
        delay(self.delays.zero)?;
        next.zero(count, offset, flags)
    }

    fn trim(&self, next: &Next, count: u64, offset: u64, flags: CmdFlags) -> Result<()> {
        delay(self.delays.trim)?;
        next.trim(count, offset, flags)
    }

    fn extents(&self, next: &Next, count: u64, offset: u64, flags: CmdFlags) -> Result<Vec<Extent>> {
        delay(self.delays.extents)?;
        next.extents(count, offset, flags)
    }

    fn cache(&self, next: &Next, count: u64, offset: u64, flags: CmdFlags) -> Result<()> {
        delay(self.delays.cache)?;
        next.cache(count, offset, flags)
    }
}

nbdbox_filter_sdk::filter!(Delay);

#[cfg(test)]
mod tests {
    use super::parse_delay;

    #[test]
    fn delays_parse_as_delay_c() {
        assert_eq!(parse_delay("rdelay", "100ms").unwrap(), 100);
        assert_eq!(parse_delay("rdelay", "2").unwrap(), 2000);
        assert_eq!(parse_delay("rdelay", "0x10").unwrap(), 16000);
        assert_eq!(parse_delay("rdelay", "0x10ms").unwrap(), 0);
        assert!(parse_delay("rdelay", "5msx").is_err());
        assert!(parse_delay("rdelay", "ms").is_err());
        assert!(parse_delay("rdelay", "xms").is_err());
        assert!(parse_delay("rdelay", "4294968").is_err());
        assert_eq!(parse_delay("rdelay", "4294967").unwrap(), 4_294_967_000);
    }
}
