//! The two kinds of failure the codec reports: an [`NbdError`] goes back to the client in a
//! reply and the connection carries on; a [`ProtocolError`] means the peer broke the
//! protocol and the connection must be closed.

use super::consts;

/// An error value sent to the client in a simple reply or an ERROR chunk.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NbdError {
    /// Write, trim or zero on a read-only export (nbdkit also maps EROFS here).
    Perm = consts::EPERM,
    /// The plugin failed to do the I/O.
    Io = consts::EIO,
    /// READ or WRITE longer than `MAX_REQUEST_SIZE`.
    NoMem = consts::ENOMEM,
    /// Malformed or unsupported request, out-of-range read; also any unmapped failure.
    Inval = consts::EINVAL,
    /// WRITE or WRITE_ZEROES out of range or out of space (EDQUOT/EFBIG map here).
    NoSpc = consts::ENOSPC,
    /// Too large for a DF read; only sent when the request had DF.
    Overflow = consts::EOVERFLOW,
    /// A FAST_ZERO request that cannot be fast; only sent when the request had FAST_ZERO.
    NotSup = consts::ENOTSUP,
    /// The server is shutting down; the client must disconnect.
    Shutdown = consts::ESHUTDOWN,
}

impl NbdError {
    /// The value on the wire.
    pub fn wire(self) -> u32 {
        self as u32
    }

    /// The error as nbdkit sends it for a request with `request_flags`: ENOTSUP survives only
    /// with FAST_ZERO and EOVERFLOW only with DF, otherwise both become EINVAL (the spec
    /// reserves them for those cases).
    pub fn for_request_flags(self, request_flags: u16) -> NbdError {
        match self {
            NbdError::NotSup if request_flags & consts::CMD_FLAG_FAST_ZERO == 0 => NbdError::Inval,
            NbdError::Overflow if request_flags & consts::CMD_FLAG_DF == 0 => NbdError::Inval,
            other => other,
        }
    }
}

/// The peer sent something that ends the connection.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProtocolError {
    #[error("client flags {client:#x} contain bits the server did not offer ({offered:#x})")]
    UnknownClientFlags { client: u32, offered: u16 },
    #[error("option header has magic {0:#018x} instead of IHAVEOPT")]
    BadOptionMagic(u64),
    #[error("option {option} has length {length}, above the limit of {limit}", limit = consts::MAX_OPTION_LEN)]
    OptionTooLong { option: u32, length: u32 },
    #[error("more than {limit} options without choosing an export", limit = consts::MAX_OPTIONS)]
    TooManyOptions,
    #[error("NBD_OPT_EXPORT_NAME: {0}")]
    BadExportName(&'static str),
    #[error("request header has magic {found:#010x} instead of {expected:#010x}")]
    BadRequestMagic { found: u32, expected: u32 },
    #[error("write payload of {0} bytes is too large to discard (limit {limit})", limit = consts::MAX_WRITE_DRAIN)]
    WriteTooLarge(u64),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_values_match_the_spec() {
        let expected = [
            (NbdError::Perm, 1),
            (NbdError::Io, 5),
            (NbdError::NoMem, 12),
            (NbdError::Inval, 22),
            (NbdError::NoSpc, 28),
            (NbdError::Overflow, 75),
            (NbdError::NotSup, 95),
            (NbdError::Shutdown, 108),
        ];
        for (error, wire) in expected {
            assert_eq!(error.wire(), wire, "{error:?}");
        }
    }

    #[test]
    fn notsup_and_overflow_need_their_flags() {
        use consts::{CMD_FLAG_DF, CMD_FLAG_FAST_ZERO, CMD_FLAG_FUA};
        assert_eq!(NbdError::NotSup.for_request_flags(CMD_FLAG_FUA), NbdError::Inval);
        assert_eq!(NbdError::NotSup.for_request_flags(CMD_FLAG_FAST_ZERO), NbdError::NotSup);
        assert_eq!(NbdError::Overflow.for_request_flags(0), NbdError::Inval);
        assert_eq!(NbdError::Overflow.for_request_flags(CMD_FLAG_DF), NbdError::Overflow);
        assert_eq!(NbdError::Io.for_request_flags(0), NbdError::Io);
    }

    #[test]
    fn messages_carry_the_offending_values() {
        let message = ProtocolError::BadRequestMagic {
            found: 0x1234_5678,
            expected: consts::REQUEST_MAGIC,
        }
        .to_string();
        assert!(
            message.contains("0x12345678") && message.contains("0x25609513"),
            "{message}"
        );
        let message = ProtocolError::OptionTooLong {
            option: 7,
            length: 1 << 30,
        }
        .to_string();
        assert!(message.contains("1073741824"), "{message}");
    }
}
