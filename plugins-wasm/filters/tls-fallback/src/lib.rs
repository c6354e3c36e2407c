//! tls-fallback: plaintext clients get a 512-byte read-only export holding a message, TLS
//! clients the layers below (nbdkit's filters/tls-fallback/tls-fallback.c,
//! nbdkit-tls-fallback-filter(1)). `tlsreadme=MESSAGE` replaces the message: its first 512
//! bytes, padded with NULs, as nbdkit's strncpy into a 512-byte buffer gives.
//!
//! A plaintext client never reaches the layers below: its open does not open them, it lists
//! only the export "", which the default export stands for, and whatever name it asks for
//! gets the message. The export is read-only with every capability off and no description,
//! so nothing of the plugin shows. The filter refuses to serve a stack below it that
//! serializes connections, where a plaintext client that stays connected would lock out
//! everyone else.
//!
//! State: none beyond the message.

use nbdbox_filter_sdk::prelude::*;
use nbdbox_filter_sdk::{is_tls, to_usize};

/// The size of the export a plaintext client sees, and of the message buffer.
const SIZE: usize = 512;

const DEFAULT_MESSAGE: &str = "This NBD server requires TLS authentication before it will serve useful data.\n";

struct TlsFallback {
    message: [u8; SIZE],
}

/// `text` cut to `SIZE` bytes, NUL-padded.
fn message(text: &str) -> [u8; SIZE] {
    let mut message = [0; SIZE];
    let len = text.len().min(SIZE);
    message[..len].copy_from_slice(&text.as_bytes()[..len]);
    message
}

impl Default for TlsFallback {
    fn default() -> TlsFallback {
        TlsFallback {
            message: message(DEFAULT_MESSAGE),
        }
    }
}

impl Filter for TlsFallback {
    const NAME: &'static str = "tls-fallback";
    const DESCRIPTION: &'static str = "nbdkit tls-fallback filter";
    const CONFIG_KEYS: &'static [Key] = &[Key::new(
        "tlsreadme",
        Kind::Text,
        "Alternative contents for the plaintext dummy export",
    )];
    type Connection = Fallback;

    fn config(&mut self, _key: &str, value: &str) -> Result<()> {
        self.message = message(value);
        Ok(())
    }

    fn get_ready(&mut self) -> Result<()> {
        if next::get_thread_model() == ThreadModel::SerializeConnections {
            return Err(error(
                Errno::Einval,
                "the tls-fallback filter requires parallel connection support",
            ));
        }
        Ok(())
    }

    fn list_exports(&self, readonly: bool) -> Result<Vec<Export>> {
        if !is_tls() {
            return Ok(vec![Export {
                name: String::new(),
                description: None,
            }]);
        }
        next::list_exports(readonly)
    }

    fn default_export(&self, readonly: bool) -> Option<String> {
        is_tls().then(|| next::default_export(readonly)).flatten()
    }

    fn opens_next(&self, _readonly: bool, _export_name: &str) -> bool {
        is_tls()
    }

    fn open(&self, _next: &Next, _readonly: bool, _export_name: &str) -> Result<Fallback> {
        Ok(if is_tls() {
            Fallback::Tls
        } else {
            Fallback::Plaintext(Box::new(self.message))
        })
    }
}

/// One connection: TLS passes everything below; plaintext is served the message.
enum Fallback {
    Tls,
    Plaintext(Box<[u8; SIZE]>),
}

impl FilterConnection for Fallback {
    fn get_size(&self, next: &Next) -> Result<u64> {
        match self {
            Fallback::Tls => next.get_size(),
            Fallback::Plaintext(_) => Ok(SIZE as u64),
        }
    }

    fn export_description(&self, next: &Next) -> Option<String> {
        match self {
            Fallback::Tls => next.export_description(),
            Fallback::Plaintext(_) => None,
        }
    }

    fn capabilities(&self, next: &Next) -> Result<Capabilities> {
        match self {
            Fallback::Tls => next.capabilities(),
            Fallback::Plaintext(_) => Ok(Capabilities {
                can_write: false,
                can_flush: false,
                is_rotational: false,
                can_trim: false,
                can_zero: ZeroMode::None,
                can_fast_zero: false,
                can_extents: false,
                can_fua: FuaMode::None,
                can_multi_conn: false,
                can_cache: CacheMode::None,
            }),
        }
    }

    fn block_size(&self, next: &Next) -> Result<Option<BlockSize>> {
        match self {
            Fallback::Tls => next.block_size(),
            Fallback::Plaintext(_) => Ok(None),
        }
    }

    /// The host has checked the request against the 512-byte size.
    fn pread(&self, next: &Next, dst: &ReadBuf, count: u32, offset: u64, flags: CmdFlags) -> Result<()> {
        match self {
            Fallback::Tls => next.pread(dst, count, offset, flags),
            Fallback::Plaintext(message) => {
                let start = to_usize(offset)?;
                dst.write(0, &message[start..start + count as usize]);
                Ok(())
            }
        }
    }
}

nbdbox_filter_sdk::filter!(TlsFallback);
