//! Request validation in nbdkit's exact order, so that a request breaking several rules
//! gets the same error value nbdkit would send.

use super::consts::{
    CMD_FLAG_DF, CMD_FLAG_FAST_ZERO, CMD_FLAG_FUA, CMD_FLAG_NO_HOLE, CMD_FLAG_PAYLOAD_LEN, CMD_FLAG_REQ_ONE,
    FLAG_READ_ONLY, FLAG_SEND_CACHE, FLAG_SEND_DF, FLAG_SEND_FAST_ZERO, FLAG_SEND_FLUSH, FLAG_SEND_FUA, FLAG_SEND_TRIM,
    FLAG_SEND_WRITE_ZEROES, MAX_REQUEST_SIZE,
};
use super::transmission::{Command, Framing, Request};
use super::NbdError;

/// What validation needs to know about the negotiated export.
#[derive(Debug, Clone, Copy)]
pub struct ExportState {
    pub size: u64,
    /// Transmission flags as advertised to the client.
    pub eflags: u16,
    pub framing: Framing,
    /// `base:allocation` was selected by SET_META_CONTEXT for this export.
    pub base_allocation: bool,
}

impl ExportState {
    fn advertises(&self, flag: u16) -> bool {
        self.eflags & flag != 0
    }

    fn structured_replies(&self) -> bool {
        self.framing != Framing::Simple
    }
}

/// The command flags nbdkit knows; any other bit is refused.
const KNOWN_FLAGS: u16 = CMD_FLAG_FUA | CMD_FLAG_NO_HOLE | CMD_FLAG_DF | CMD_FLAG_REQ_ONE | CMD_FLAG_FAST_ZERO;

/// Checks `req` against `export`, first failure wins:
/// 1. write-class command on a read-only export ⇒ `Perm` (before the range check);
/// 2. data commands need `count > 0` and `offset + count ≤ size` ⇒ `NoSpc` for WRITE and
///    WRITE_ZEROES, `Inval` otherwise; FLUSH needs offset and count 0; unknown commands
///    (DISC included: callers handle it first) ⇒ `Inval`;
/// 3. unknown flags, flags on the wrong command, or flags for unadvertised features ⇒ `Inval`
///    (with extended headers only a WRITE may carry a payload, announced or not);
/// 4. READ/WRITE above `MAX_REQUEST_SIZE` ⇒ `NoMem` (block sizes are advertised, not
///    enforced, as nbdkit does: the blocksize-policy filter enforces them);
/// 5. unadvertised commands, BLOCK_STATUS without structured replies or a selected
///    `base:allocation` ⇒ `Inval`.
pub fn validate(req: &Request, export: &ExportState) -> Result<(), NbdError> {
    use Command::*;
    let command = req.command;
    let writes = matches!(command, Write | Trim | WriteZeroes);
    if writes && export.advertises(FLAG_READ_ONLY) {
        return Err(NbdError::Perm);
    }

    match command {
        Read | Write | Trim | Cache | WriteZeroes | BlockStatus => {
            let in_range = req.count > 0 && req.offset.checked_add(req.count).is_some_and(|end| end <= export.size);
            if !in_range {
                // Writes report running out of space, everything else a bad argument.
                let writes_data = matches!(command, Write | WriteZeroes);
                return Err(if writes_data { NbdError::NoSpc } else { NbdError::Inval });
            }
        }
        Flush if req.offset != 0 || req.count != 0 => return Err(NbdError::Inval),
        Flush => {}
        Disc | Other(_) => return Err(NbdError::Inval),
    }

    let flag = |bit: u16| req.flags & bit != 0;
    let extended = export.framing == Framing::Extended;
    let known = if extended {
        KNOWN_FLAGS | CMD_FLAG_PAYLOAD_LEN
    } else {
        KNOWN_FLAGS
    };
    let bad_flags = req.flags & !known != 0
        || (flag(CMD_FLAG_PAYLOAD_LEN) && command != Write)
        || (flag(CMD_FLAG_NO_HOLE) && command != WriteZeroes)
        || (flag(CMD_FLAG_FAST_ZERO) && (command != WriteZeroes || !export.advertises(FLAG_SEND_FAST_ZERO)))
        || (flag(CMD_FLAG_DF) && (command != Read || !export.structured_replies() || !export.advertises(FLAG_SEND_DF)))
        || (flag(CMD_FLAG_REQ_ONE) && command != BlockStatus)
        || (flag(CMD_FLAG_FUA) && !export.advertises(FLAG_SEND_FUA));
    if bad_flags {
        return Err(NbdError::Inval);
    }

    if matches!(command, Read | Write) && req.count > u64::from(MAX_REQUEST_SIZE) {
        return Err(NbdError::NoMem);
    }

    let supported = match command {
        Flush => export.advertises(FLAG_SEND_FLUSH),
        Trim => export.advertises(FLAG_SEND_TRIM),
        WriteZeroes => export.advertises(FLAG_SEND_WRITE_ZEROES),
        Cache => export.advertises(FLAG_SEND_CACHE),
        BlockStatus => export.structured_replies() && export.base_allocation,
        _ => true,
    };
    if !supported {
        return Err(NbdError::Inval);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::consts::{CMD_FLAG_PAYLOAD_LEN, FLAG_HAS_FLAGS};
    use Command::*;
    use NbdError::*;

    /// Large enough for requests of the full 32-bit length.
    const SIZE: u64 = 8 << 30;
    /// nbdkit memory plugin after structured replies: every feature advertised.
    const ALL: u16 = 0x0ded;
    /// The same with `-r`.
    const READ_ONLY: u16 = 0x0587;

    fn export(eflags: u16) -> ExportState {
        ExportState {
            size: SIZE,
            eflags,
            framing: Framing::Structured,
            base_allocation: true,
        }
    }

    fn request(command: Command, flags: u16, offset: u64, count: u64) -> Request {
        Request {
            flags,
            command,
            cookie: 0,
            offset,
            count,
        }
    }

    #[test]
    fn memory_eflags_are_what_the_table_assumes() {
        assert_eq!(ALL & FLAG_READ_ONLY, 0);
        assert_ne!(READ_ONLY & FLAG_READ_ONLY, 0);
        assert_eq!(READ_ONLY & (FLAG_SEND_TRIM | FLAG_SEND_WRITE_ZEROES | FLAG_SEND_FUA), 0);
        assert_ne!(READ_ONLY & FLAG_SEND_CACHE, 0);
    }

    #[test]
    fn rules_and_their_order() {
        let mb64 = u64::from(MAX_REQUEST_SIZE);
        let no_sr = ExportState {
            framing: Framing::Simple,
            ..export(ALL)
        };
        let ext = ExportState {
            framing: Framing::Extended,
            ..export(ALL)
        };
        let no_context = ExportState {
            base_allocation: false,
            ..export(ALL)
        };
        let bare = export(FLAG_HAS_FLAGS);
        let tiny = ExportState {
            size: 1024,
            ..export(ALL)
        };
        // One row per rule; rustfmt would spread each row over six lines.
        #[rustfmt::skip]
        let cases: &[(&str, Request, ExportState, Result<(), NbdError>)] = &[
            // Happy paths.
            ("read", request(Read, 0, 0, 4096), export(ALL), Ok(())),
            ("read to the end", request(Read, 0, SIZE - 1, 1), export(ALL), Ok(())),
            ("write", request(Write, CMD_FLAG_FUA, 0, 4096), export(ALL), Ok(())),
            ("flush", request(Flush, 0, 0, 0), export(ALL), Ok(())),
            ("trim", request(Trim, CMD_FLAG_FUA, 0, u64::from(u32::MAX)), export(ALL), Ok(())),
            ("zero", request(WriteZeroes, CMD_FLAG_NO_HOLE | CMD_FLAG_FAST_ZERO, 0, 512), export(ALL), Ok(())),
            ("cache", request(Cache, 0, 0, u64::from(u32::MAX)), export(ALL), Ok(())),
            ("block status", request(BlockStatus, CMD_FLAG_REQ_ONE, 0, u64::from(u32::MAX)), export(ALL), Ok(())),
            ("DF read", request(Read, CMD_FLAG_DF, 0, 512), export(ALL), Ok(())),
            // 1. read-only before range.
            ("write on -r", request(Write, 0, 0, 512), export(READ_ONLY), Err(Perm)),
            ("out-of-range write on -r", request(Write, 0, SIZE, 512), export(READ_ONLY), Err(Perm)),
            ("zero-length trim on -r", request(Trim, 0, 0, 0), export(READ_ONLY), Err(Perm)),
            ("zero on -r with bad flags", request(WriteZeroes, 0x8000, 0, 0), export(READ_ONLY), Err(Perm)),
            ("read on -r", request(Read, 0, 0, 512), export(READ_ONLY), Ok(())),
            ("cache on -r", request(Cache, 0, 0, 512), export(READ_ONLY), Ok(())),
            ("flush on -r", request(Flush, 0, 0, 0), export(READ_ONLY), Ok(())),
            // 2. range.
            ("zero-length write", request(Write, 0, 0, 0), export(ALL), Err(NoSpc)),
            ("zero-length zero", request(WriteZeroes, 0, 0, 0), export(ALL), Err(NoSpc)),
            ("zero-length read", request(Read, 0, 0, 0), export(ALL), Err(Inval)),
            ("zero-length trim", request(Trim, 0, 0, 0), export(ALL), Err(Inval)),
            ("zero-length cache", request(Cache, 0, 0, 0), export(ALL), Err(Inval)),
            ("zero-length block status", request(BlockStatus, 0, 0, 0), export(ALL), Err(Inval)),
            ("write straddling the end", request(Write, 0, SIZE - 1, 2), export(ALL), Err(NoSpc)),
            ("zero past the end", request(WriteZeroes, 0, SIZE, 1), export(ALL), Err(NoSpc)),
            ("read straddling the end", request(Read, 0, SIZE - 1, 2), export(ALL), Err(Inval)),
            ("trim past the end", request(Trim, 0, SIZE, 1), export(ALL), Err(Inval)),
            ("block status past the end", request(BlockStatus, 0, SIZE, 1), export(ALL), Err(Inval)),
            ("offset+count overflows u64", request(Read, 0, u64::MAX, 2), export(ALL), Err(Inval)),
            ("write overflowing u64", request(Write, 0, u64::MAX, 2), export(ALL), Err(NoSpc)),
            ("huge read on a small disk", request(Read, 0, 0, mb64 + 1), tiny, Err(Inval)),
            ("range before flags", request(Read, 0x8000, 0, 0), export(ALL), Err(Inval)),
            ("range before advertisement", request(Trim, 0, SIZE, 1), bare, Err(Inval)),
            // 2. FLUSH and unknown commands.
            ("flush with offset", request(Flush, 0, 1, 0), export(ALL), Err(Inval)),
            ("flush with count", request(Flush, 0, 0, 1), export(ALL), Err(Inval)),
            ("resize", request(Other(8), 0, 0, 0), export(ALL), Err(Inval)),
            ("command 9", request(Other(9), 0, 0, 512), export(ALL), Err(Inval)),
            ("disc", request(Disc, 0, 0, 0), export(ALL), Err(Inval)),
            // 3. flags.
            ("unknown flag", request(Read, 1 << 5, 0, 512), export(ALL), Err(Inval)),
            ("payload-len flag", request(Write, CMD_FLAG_PAYLOAD_LEN, 0, 512), export(ALL), Err(Inval)),
            ("NO_HOLE on write", request(Write, CMD_FLAG_NO_HOLE, 0, 512), export(ALL), Err(Inval)),
            ("FAST_ZERO on trim", request(Trim, CMD_FLAG_FAST_ZERO, 0, 512), export(ALL), Err(Inval)),
            ("DF on write", request(Write, CMD_FLAG_DF, 0, 512), export(ALL), Err(Inval)),
            ("DF without SR", request(Read, CMD_FLAG_DF, 0, 512), no_sr, Err(Inval)),
            ("DF not advertised", request(Read, CMD_FLAG_DF, 0, 512), export(ALL & !FLAG_SEND_DF), Err(Inval)),
            ("REQ_ONE on read", request(Read, CMD_FLAG_REQ_ONE, 0, 512), export(ALL), Err(Inval)),
            ("FUA on read", request(Read, CMD_FLAG_FUA, 0, 512), export(ALL), Ok(())),
            ("FUA on flush", request(Flush, CMD_FLAG_FUA, 0, 0), export(ALL), Ok(())),
            ("FUA on cache", request(Cache, CMD_FLAG_FUA, 0, 512), export(ALL), Ok(())),
            ("FUA not advertised", request(Read, CMD_FLAG_FUA, 0, 512), export(READ_ONLY), Err(Inval)),
            ("FAST_ZERO not advertised", request(WriteZeroes, CMD_FLAG_FAST_ZERO, 0, 512), export(ALL & !FLAG_SEND_FAST_ZERO), Err(Inval)),
            ("NO_HOLE without trim", request(WriteZeroes, CMD_FLAG_NO_HOLE, 0, 512), export(ALL & !FLAG_SEND_TRIM), Ok(())),
            // 4. size.
            ("read of 64 MiB", request(Read, 0, 0, mb64), export(ALL), Ok(())),
            ("read of 64 MiB + 1", request(Read, 0, 0, mb64 + 1), export(ALL), Err(NoMem)),
            ("write of 64 MiB + 1", request(Write, 0, 0, mb64 + 1), export(ALL), Err(NoMem)),
            ("flags before size", request(Read, CMD_FLAG_FUA, 0, mb64 + 1), export(READ_ONLY), Err(Inval)),
            ("big zero", request(WriteZeroes, 0, 0, mb64 + 1), export(ALL), Ok(())),
            // 5. advertisement.
            ("flush not advertised", request(Flush, 0, 0, 0), bare, Err(Inval)),
            ("trim not advertised", request(Trim, 0, 0, 512), bare, Err(Inval)),
            ("zero not advertised", request(WriteZeroes, 0, 0, 512), bare, Err(Inval)),
            ("cache not advertised", request(Cache, 0, 0, 512), bare, Err(Inval)),
            ("read needs nothing", request(Read, 0, 0, 512), bare, Ok(())),
            ("write needs nothing", request(Write, 0, 0, 512), bare, Ok(())),
            ("block status without SR", request(BlockStatus, 0, 0, 512), no_sr, Err(Inval)),
            ("block status without context", request(BlockStatus, 0, 0, 512), no_context, Err(Inval)),
            // Extended headers: 64-bit lengths, payloads announced.
            ("5 GiB zero", request(WriteZeroes, 0, 0, 5 << 30), ext, Ok(())),
            ("5 GiB trim past the end", request(Trim, 0, 4 << 30, 5 << 30), ext, Err(Inval)),
            ("write with payload", request(Write, CMD_FLAG_PAYLOAD_LEN, 0, 512), ext, Ok(())),
            ("write without the payload flag", request(Write, 0, 0, 512), ext, Ok(())),
            ("read with payload", request(Read, CMD_FLAG_PAYLOAD_LEN, 0, 512), ext, Err(Inval)),
            ("read of 64 MiB + 1, extended", request(Read, 0, 0, mb64 + 1), ext, Err(NoMem)),
            ("block status of 8 GiB", request(BlockStatus, 0, 0, SIZE), ext, Ok(())),
        ];
        for (name, req, state, expected) in cases {
            assert_eq!(validate(req, state), *expected, "{name}");
        }
    }
}
