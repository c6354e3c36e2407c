//! info: nbdkit-info-plugin(1), a read-only disk made of information about the client and
//! the server (plugins/info/info.c). `[mode=]exportname` (default) serves the export name
//! the client asked for, `base64exportname` its base64 decoding, `address` the client's
//! address (`IP:PORT`, `[IPv6]:PORT`, or `unix`), `time`, `uptime` and `conntime` the wall
//! clock time, the time since the server got ready and since the connection opened (12
//! bytes: seconds as a 64-bit and microseconds as a 32-bit big-endian number, refreshed on
//! every read), and `version` the component's version, which is nbdbox's.

use std::time::{SystemTime, UNIX_EPOCH};

use nbdbox_sdk::prelude::*;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Mode {
    #[default]
    ExportName,
    Base64ExportName,
    Address,
    Time,
    Uptime,
    ConnTime,
    Version,
}

impl Mode {
    /// info.c's spellings, any case.
    fn parse(value: &str) -> Option<Mode> {
        let modes = [
            ("exportname", Mode::ExportName),
            ("export-name", Mode::ExportName),
            ("base64exportname", Mode::Base64ExportName),
            ("base64-export-name", Mode::Base64ExportName),
            ("address", Mode::Address),
            ("time", Mode::Time),
            ("uptime", Mode::Uptime),
            ("conntime", Mode::ConnTime),
            ("version", Mode::Version),
        ];
        modes
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(value))
            .map(|&(_, m)| m)
    }
}

/// Microseconds since the epoch.
fn now_usecs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// The 12 bytes of the time modes for `usecs` microseconds.
fn time_bytes(usecs: u64) -> [u8; 12] {
    let mut out = [0; 12];
    out[..8].copy_from_slice(&(usecs / 1_000_000).to_be_bytes());
    out[8..].copy_from_slice(&((usecs % 1_000_000) as u32).to_be_bytes());
    out
}

#[derive(Default)]
struct Info {
    mode: Mode,
    /// When the server got ready (microseconds since the epoch), the same for every instance.
    started: u64,
}

impl Plugin for Info {
    const NAME: &'static str = "info";
    const DESCRIPTION: &'static str = "Serve information about the client and the server";
    const MAGIC_CONFIG_KEY: Option<&'static str> = Some("mode");
    const CONFIG_KEYS: &'static [Key] = &[Key::new(
        "mode",
        Kind::Text,
        "[mode=]exportname|base64exportname|address|time|uptime|conntime|version  Plugin mode (default exportname).",
    )];
    type Connection = InfoDisk;

    fn config(&mut self, _key: &str, value: &str) -> Result<()> {
        self.mode = Mode::parse(value).ok_or_else(|| error(Errno::Einval, format!("unknown mode: '{value}'")))?;
        Ok(())
    }

    fn get_ready(&mut self) -> Result<()> {
        self.started = once::value("started", now_usecs);
        Ok(())
    }

    fn open(&self, _readonly: bool, export_name: &str) -> Result<InfoDisk> {
        let data = match self.mode {
            Mode::ExportName => export_name.as_bytes().to_vec(),
            Mode::Base64ExportName => {
                nbdkit_parse::base64_decode(export_name).map_err(|why| error(Errno::Einval, why))?
            }
            Mode::Address => nbdbox_sdk::peer_name()
                .ok_or_else(|| error(Errno::Einval, "the client's address is unknown (stdin/stdout?)"))?
                .into_bytes(),
            Mode::Time | Mode::Uptime | Mode::ConnTime => vec![0; 12],
            Mode::Version => env!("CARGO_PKG_VERSION").as_bytes().to_vec(),
        };
        Ok(InfoDisk {
            mode: self.mode,
            data,
            started: self.started,
            opened: now_usecs(),
        })
    }
}

struct InfoDisk {
    mode: Mode,
    data: Vec<u8>,
    started: u64,
    opened: u64,
}

#[nbdbox_sdk::connection]
impl Connection for InfoDisk {
    fn get_size(&self) -> Result<u64> {
        Ok(self.data.len() as u64)
    }

    /// Export names are the same on every connection a client makes for multi-conn; the
    /// address and the times are not.
    fn capabilities(&self) -> Result<Capabilities> {
        Ok(Capabilities {
            can_multi_conn: matches!(self.mode, Mode::ExportName | Mode::Base64ExportName | Mode::Version),
            can_cache: CacheMode::Native,
            ..Capabilities::implied(Self::IMPLEMENTS)
        })
    }

    fn pread(&self, dst: &ReadBuf, count: u32, offset: u64, _flags: CmdFlags) -> Result<()> {
        let since = match self.mode {
            Mode::Time => Some(0),
            Mode::Uptime => Some(self.started),
            Mode::ConnTime => Some(self.opened),
            _ => None,
        };
        let start = offset as usize;
        match since {
            Some(since) => {
                let bytes = time_bytes(now_usecs().saturating_sub(since));
                dst.write(0, &bytes[start..start + count as usize]);
            }
            None => dst.write(0, &self.data[start..start + count as usize]),
        }
        Ok(())
    }
}

nbdbox_sdk::plugin!(Info);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_in_any_case() {
        assert_eq!(Mode::parse("ExportName"), Some(Mode::ExportName));
        assert_eq!(Mode::parse("base64-export-name"), Some(Mode::Base64ExportName));
        assert_eq!(Mode::parse("UPTIME"), Some(Mode::Uptime));
        assert_eq!(Mode::parse("version"), Some(Mode::Version));
        assert_eq!(Mode::parse("clock"), None);
    }

    #[test]
    fn times_are_big_endian_seconds_and_microseconds() {
        assert_eq!(
            time_bytes(0x5d8f_24c7 * 1_000_000 + 0x042401),
            [0, 0, 0, 0, 0x5d, 0x8f, 0x24, 0xc7, 0, 4, 0x24, 1]
        );
    }
}
