//! Transmission phase: request headers, simple replies, the structured chunks nbdkit sends
//! (OFFSET_DATA, ERROR, BLOCK_STATUS), and the normalisation of plugin extents into block
//! status descriptors.
//!
//! Header parsing and the fixed-size reply builders never allocate, since they run once per
//! request; read data and write payloads travel separately and are the caller's business.

use super::consts::{
    CMD_BLOCK_STATUS, CMD_CACHE, CMD_DISC, CMD_FLUSH, CMD_READ, CMD_TRIM, CMD_WRITE, CMD_WRITE_ZEROES, MAX_EXTENTS,
    MAX_WRITE_DRAIN, REPLY_FLAG_DONE, REPLY_TYPE_BLOCK_STATUS, REPLY_TYPE_ERROR, REPLY_TYPE_OFFSET_DATA, REQUEST_MAGIC,
    SIMPLE_REPLY_MAGIC, STATE_HOLE, STATE_ZERO, STRUCTURED_REPLY_MAGIC,
};
use super::wire::{concat, len_u32, u16_at, u32_at, u64_at};
use super::{NbdError, ProtocolError};

/// magic(32) · flags(16) · type(16) · cookie(64) · offset(64) · length(32).
pub const REQUEST_HEADER_LEN: usize = 28;

/// A request's command; numbers nbdkit does not know (RESIZE included) stay `Other`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Read,
    Write,
    Disc,
    Flush,
    Trim,
    Cache,
    WriteZeroes,
    BlockStatus,
    Other(u16),
}

impl Command {
    pub fn from_wire(value: u16) -> Command {
        match value {
            CMD_READ => Command::Read,
            CMD_WRITE => Command::Write,
            CMD_DISC => Command::Disc,
            CMD_FLUSH => Command::Flush,
            CMD_TRIM => Command::Trim,
            CMD_CACHE => Command::Cache,
            CMD_WRITE_ZEROES => Command::WriteZeroes,
            CMD_BLOCK_STATUS => Command::BlockStatus,
            other => Command::Other(other),
        }
    }

    pub fn wire(self) -> u16 {
        match self {
            Command::Read => CMD_READ,
            Command::Write => CMD_WRITE,
            Command::Disc => CMD_DISC,
            Command::Flush => CMD_FLUSH,
            Command::Trim => CMD_TRIM,
            Command::Cache => CMD_CACHE,
            Command::WriteZeroes => CMD_WRITE_ZEROES,
            Command::BlockStatus => CMD_BLOCK_STATUS,
            Command::Other(value) => value,
        }
    }
}

/// A parsed compact request header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    pub flags: u16,
    pub command: Command,
    /// Opaque to the server; echoed back byte for byte (big-endian in, big-endian out).
    pub cookie: u64,
    pub offset: u64,
    pub count: u32,
}

impl Request {
    /// Bytes following the header that must be read (WRITE only), whether or not the request
    /// is valid, so the stream stays in sync. A payload too large to discard ends the
    /// connection.
    pub fn payload_len(&self) -> Result<u32, ProtocolError> {
        match self.command {
            Command::Write if self.count > MAX_WRITE_DRAIN => Err(ProtocolError::WriteTooLarge(self.count)),
            Command::Write => Ok(self.count),
            _ => Ok(0),
        }
    }
}

/// Checks the magic; everything else is checked by `validate`.
pub fn parse_request(b: &[u8; REQUEST_HEADER_LEN]) -> Result<Request, ProtocolError> {
    let magic = u32_at(b, 0);
    if magic != REQUEST_MAGIC {
        return Err(ProtocolError::BadRequestMagic(magic));
    }
    Ok(Request {
        flags: u16_at(b, 4),
        command: Command::from_wire(u16_at(b, 6)),
        cookie: u64_at(b, 8),
        offset: u64_at(b, 16),
        count: u32_at(b, 24),
    })
}

/// magic(32) · error(32) · cookie(64); READ data follows on success.
pub const SIMPLE_REPLY_LEN: usize = 16;

pub fn simple_reply(cookie: u64, error: Option<NbdError>) -> [u8; SIMPLE_REPLY_LEN] {
    let error = error.map_or(0, NbdError::wire);
    concat(&[
        &SIMPLE_REPLY_MAGIC.to_be_bytes(),
        &error.to_be_bytes(),
        &cookie.to_be_bytes(),
    ])
}

/// magic(32) · flags(16) · type(16) · cookie(64) · payload length(32).
pub const CHUNK_HEADER_LEN: usize = 20;

/// Header of one structured reply chunk whose payload is `length` bytes.
pub fn chunk_header(cookie: u64, flags: u16, chunk_type: u16, length: u32) -> [u8; CHUNK_HEADER_LEN] {
    concat(&[
        &STRUCTURED_REPLY_MAGIC.to_be_bytes(),
        &flags.to_be_bytes(),
        &chunk_type.to_be_bytes(),
        &cookie.to_be_bytes(),
        &length.to_be_bytes(),
    ])
}

/// Chunk header plus offset of the single OFFSET_DATA chunk (DONE) that carries a whole
/// successful READ of `data_len` bytes at `offset`; the data follows. `data_len` is at most
/// `MAX_REQUEST_SIZE`, so the payload length (data plus offset) cannot overflow.
pub fn read_chunk_header(cookie: u64, offset: u64, data_len: u32) -> [u8; 28] {
    let header = chunk_header(cookie, REPLY_FLAG_DONE, REPLY_TYPE_OFFSET_DATA, 8 + data_len);
    concat(&[&header, &offset.to_be_bytes()])
}

/// A structured ERROR chunk (type 32769, DONE), message length 0 as nbdkit sends.
pub fn error_chunk(cookie: u64, error: NbdError) -> [u8; 26] {
    let header = chunk_header(cookie, REPLY_FLAG_DONE, REPLY_TYPE_ERROR, 4 + 2);
    concat(&[&header, &error.wire().to_be_bytes(), &0u16.to_be_bytes()])
}

/// A BLOCK_STATUS chunk (DONE) for context id with (length, flags) descriptors, appended to out.
pub fn block_status_chunk(out: &mut Vec<u8>, cookie: u64, context_id: u32, descriptors: &[(u32, u32)]) {
    let length = len_u32(4 + 8 * descriptors.len());
    out.reserve(CHUNK_HEADER_LEN + length as usize);
    out.extend_from_slice(&chunk_header(cookie, REPLY_FLAG_DONE, REPLY_TYPE_BLOCK_STATUS, length));
    out.extend_from_slice(&context_id.to_be_bytes());
    for (len, flags) in descriptors {
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&flags.to_be_bytes());
    }
}

/// Turns the extents a plugin returned into the descriptors nbdkit would send.
///
/// Input: `(offset, length, flags)` in ascending, contiguous order. The first pass applies
/// nbdkit's extent-list rules for the range `[offset, export_size)`: zero-length extents
/// and those wholly before `offset` are dropped, the first kept one is trimmed to start at
/// `offset` (it must not start after it), everything is clipped to `export_size`, only the
/// `base:allocation` flag bits are kept, and neighbours with equal flags merge. The second
/// pass emits descriptors of at most 2^32−1 bytes (longer runs are split): with `req_one`
/// only the first, capped at `count`; otherwise up to and including the first descriptor
/// that ends beyond `offset + count` (nbdkit compares strictly, so one ending exactly there
/// is followed by the next).
pub fn extents_to_descriptors(
    offset: u64,
    count: u32,
    export_size: u64,
    req_one: bool,
    extents: &[(u64, u64, u32)],
) -> Result<Vec<(u32, u32)>, &'static str> {
    let runs = merged_runs(offset, export_size, extents)?;
    let Some(&(first_len, first_flags)) = runs.first() else {
        return Err("plugin must return at least one extent");
    };
    if req_one {
        // The minimum is at most `count`, so it fits.
        return Ok(vec![(first_len.min(u64::from(count)) as u32, first_flags)]);
    }
    let request_end = offset + u64::from(count);
    let mut descriptors = Vec::new();
    let mut position = offset;
    for (mut remaining, flags) in runs {
        while remaining > 0 {
            let len = remaining.min(u64::from(u32::MAX));
            descriptors.push((len as u32, flags));
            position += len;
            remaining -= len;
            if position > request_end {
                return Ok(descriptors);
            }
        }
    }
    Ok(descriptors)
}

/// First pass of [`extents_to_descriptors`]: `(length, flags)` runs starting at `offset`.
fn merged_runs(offset: u64, export_size: u64, extents: &[(u64, u64, u32)]) -> Result<Vec<(u64, u32)>, &'static str> {
    let mut runs: Vec<(u64, u32)> = Vec::new();
    let mut expected_start = None;
    for &(start, len, flags) in extents {
        if expected_start.is_some_and(|expected| expected != start) {
            return Err("extents must be ascending and contiguous");
        }
        let end = start.checked_add(len).ok_or("extent ends beyond 2^64")?;
        expected_start = Some(end);
        // Like nbdkit, a full list silently ignores the rest but still checks contiguity.
        if len == 0 || start >= export_size || runs.len() >= MAX_EXTENTS {
            continue;
        }
        let end = end.min(export_size);
        let start = if runs.is_empty() {
            if end <= offset {
                continue;
            }
            if start > offset {
                return Err("first extent starts after the requested offset");
            }
            offset
        } else {
            start
        };
        let flags = flags & (STATE_HOLE | STATE_ZERO);
        match runs.last_mut() {
            Some((run_len, run_flags)) if *run_flags == flags => *run_len += end - start,
            _ => runs.push((end - start, flags)),
        }
    }
    Ok(runs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::consts::{CMD_FLAG_FUA, CMD_RESIZE};

    const GIB: u64 = 1 << 30;

    type Extents<'a> = &'a [(u64, u64, u32)];

    #[test]
    fn request_good() {
        let header = b"\x25\x60\x95\x13\x00\x01\x00\x01\x01\x02\x03\x04\x05\x06\x07\x08\
                       \x00\x00\x00\x00\x00\x00\x10\x00\x00\x00\x02\x00";
        let request = parse_request(header).unwrap();
        assert_eq!(
            request,
            Request {
                flags: CMD_FLAG_FUA,
                command: Command::Write,
                cookie: 0x0102_0304_0506_0708,
                offset: 4096,
                count: 512,
            }
        );
        assert_eq!(request.payload_len(), Ok(512));
    }

    #[test]
    fn request_bad_magic() {
        let header = b"\x25\x60\x95\x14\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\
                       \x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00";
        assert_eq!(parse_request(header), Err(ProtocolError::BadRequestMagic(0x2560_9514)));
    }

    #[test]
    fn commands_round_trip() {
        for value in 0..=9 {
            assert_eq!(Command::from_wire(value).wire(), value);
        }
        assert_eq!(Command::from_wire(CMD_RESIZE), Command::Other(8));
        assert_eq!(Command::from_wire(7), Command::BlockStatus);
    }

    #[test]
    fn payload_only_for_writes() {
        let request = |command, count| Request {
            flags: 0,
            command,
            cookie: 0,
            offset: 0,
            count,
        };
        assert_eq!(request(Command::Read, 1 << 20).payload_len(), Ok(0));
        assert_eq!(
            request(Command::Write, MAX_WRITE_DRAIN).payload_len(),
            Ok(MAX_WRITE_DRAIN)
        );
        assert_eq!(
            request(Command::Write, MAX_WRITE_DRAIN + 1).payload_len(),
            Err(ProtocolError::WriteTooLarge(MAX_WRITE_DRAIN + 1))
        );
    }

    #[test]
    fn simple_reply_bytes() {
        assert_eq!(
            simple_reply(0x0102_0304_0506_0708, None),
            *b"\x67\x44\x66\x98\x00\x00\x00\x00\x01\x02\x03\x04\x05\x06\x07\x08"
        );
        assert_eq!(
            simple_reply(1, Some(NbdError::NoSpc)),
            *b"\x67\x44\x66\x98\x00\x00\x00\x1c\x00\x00\x00\x00\x00\x00\x00\x01"
        );
    }

    #[test]
    fn read_chunk_header_bytes() {
        assert_eq!(
            read_chunk_header(2, 0x1000, 512),
            *b"\x66\x8e\x33\xef\x00\x01\x00\x01\x00\x00\x00\x00\x00\x00\x00\x02\
               \x00\x00\x02\x08\x00\x00\x00\x00\x00\x00\x10\x00"
        );
    }

    #[test]
    fn error_chunk_bytes() {
        assert_eq!(
            error_chunk(3, NbdError::Inval),
            *b"\x66\x8e\x33\xef\x00\x01\x80\x01\x00\x00\x00\x00\x00\x00\x00\x03\
               \x00\x00\x00\x06\x00\x00\x00\x16\x00\x00"
        );
    }

    #[test]
    fn block_status_chunk_bytes() {
        let mut out = vec![];
        block_status_chunk(&mut out, 4, 1, &[(32768, 0), (1015808, 3)]);
        assert_eq!(
            out,
            b"\x66\x8e\x33\xef\x00\x01\x00\x05\x00\x00\x00\x00\x00\x00\x00\x04\
              \x00\x00\x00\x14\x00\x00\x00\x01\
              \x00\x00\x80\x00\x00\x00\x00\x00\x00\x0f\x80\x00\x00\x00\x00\x03"
        );
    }

    /// The memory plugin's answer for a 1 MiB disk with 4 bytes written at 0.
    const MEMORY_EXTENTS: [(u64, u64, u32); 2] = [(0, 32768, 0), (32768, 1015808, 3)];

    #[test]
    fn extents_memory_example() {
        let descriptors = extents_to_descriptors(0, 1 << 20, 1 << 20, false, &MEMORY_EXTENTS);
        assert_eq!(descriptors, Ok(vec![(32768, 0), (1015808, 3)]));
        // Ending exactly at the request end does not stop the walk; passing it does.
        assert_eq!(
            extents_to_descriptors(0, 32768, 1 << 20, false, &MEMORY_EXTENTS),
            Ok(vec![(32768, 0), (1015808, 3)])
        );
        assert_eq!(
            extents_to_descriptors(0, 4096, 1 << 20, false, &MEMORY_EXTENTS),
            Ok(vec![(32768, 0)])
        );
    }

    #[test]
    fn extents_req_one() {
        assert_eq!(
            extents_to_descriptors(0, 4096, 1 << 20, true, &MEMORY_EXTENTS),
            Ok(vec![(4096, 0)])
        );
        assert_eq!(
            extents_to_descriptors(0, 1 << 20, 1 << 20, true, &MEMORY_EXTENTS),
            Ok(vec![(32768, 0)])
        );
    }

    #[test]
    fn extents_trimmed_to_offset_and_export() {
        let extents = [(0, 0, 0), (0, 512, 3), (512, 1024, 0), (1536, 4096, 2), (5632, 512, 1)];
        // Wholly-before extent dropped, first kept trimmed, tail clipped to the export.
        assert_eq!(
            extents_to_descriptors(1024, 1024, 3000, false, &extents),
            Ok(vec![(512, 0), (1464, 2)])
        );
    }

    #[test]
    fn extents_merge_equal_flags_after_masking() {
        let extents = [
            (0, 512, 3),
            (512, 512, 3 | 4),
            (1024, 512, 0),
            (1536, 0, 3),
            (1536, 512, 0),
        ];
        assert_eq!(
            extents_to_descriptors(0, 2048, 2048, false, &extents),
            Ok(vec![(1024, 3), (1024, 0)])
        );
    }

    #[test]
    fn extents_errors() {
        let cases: [(Extents, &str); 5] = [
            (&[], "at least one"),
            (&[(0, 512, 0)], "at least one"),
            (&[(512, 1024, 0), (2048, 512, 3)], "contiguous"),
            (&[(1024, 1024, 0), (512, 512, 3)], "contiguous"),
            (&[(1536, 1024, 0)], "starts after"),
        ];
        for (extents, reason) in cases {
            let message = extents_to_descriptors(1024, 512, 4096, false, extents).unwrap_err();
            assert!(message.contains(reason), "{extents:?}: {message}");
        }
        let overflow = [(0, u64::MAX, 0), (u64::MAX, 2, 0)];
        assert!(extents_to_descriptors(0, 1, 4096, false, &overflow).is_err());
    }

    #[test]
    fn extents_longer_than_u32_are_split() {
        let max = u32::MAX;
        let extents = [(0, 10 * GIB, 3)];
        // Ends before the request end (count = 2^32−1), so the remainder follows.
        assert_eq!(
            extents_to_descriptors(0, max, 10 * GIB, false, &extents),
            Ok(vec![(max, 3), (max, 3)])
        );
        assert_eq!(
            extents_to_descriptors(0, 1 << 20, 10 * GIB, false, &extents),
            Ok(vec![(max, 3)])
        );
        assert_eq!(
            extents_to_descriptors(0, max, 10 * GIB, true, &extents),
            Ok(vec![(max, 3)])
        );
        let extents = [(0, 5 * GIB, 0), (5 * GIB, GIB, 3)];
        assert_eq!(
            extents_to_descriptors(GIB, max, 6 * GIB, false, &extents),
            Ok(vec![(max, 0), (1, 0)])
        );
    }
}
