//! Transmission phase: request headers, simple replies, the structured chunks nbdkit sends
//! (OFFSET_DATA, ERROR, BLOCK_STATUS), and the normalisation of plugin extents into block
//! status descriptors.
//!
//! Header parsing and the fixed-size reply builders never allocate, since they run once per
//! request; read data and write payloads travel separately and are the caller's business.

use super::consts::{
    CMD_BLOCK_STATUS, CMD_CACHE, CMD_DISC, CMD_FLUSH, CMD_READ, CMD_TRIM, CMD_WRITE, CMD_WRITE_ZEROES, MAX_WRITE_DRAIN,
    REPLY_FLAG_DONE, REPLY_TYPE_BLOCK_STATUS, REPLY_TYPE_ERROR, REPLY_TYPE_OFFSET_DATA, REQUEST_MAGIC,
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

/// The BLOCK_STATUS descriptors nbdkit sends for a request of `count` bytes, from `runs` of
/// `(length, status)` that start at the request's offset and follow each other (the layers'
/// extents, already checked and merged). Descriptors are at most 2^32−1 bytes (longer runs
/// are split): with `req_one` only the first, capped at `count`; otherwise up to and including
/// the first descriptor that ends beyond the request (nbdkit compares strictly, so one
/// ending exactly at its end is followed by the next). Only the `base:allocation` bits go
/// on the wire.
pub fn block_status_descriptors(count: u32, req_one: bool, runs: &[(u64, u32)]) -> Vec<(u32, u32)> {
    let mut descriptors = Vec::new();
    let mut position = 0u64;
    for &(mut remaining, status) in runs {
        let status = status & (STATE_HOLE | STATE_ZERO);
        while remaining > 0 {
            let len = remaining.min(u64::from(u32::MAX));
            if req_one {
                // The minimum is at most `count`, so it fits.
                return vec![(len.min(u64::from(count)) as u32, status)];
            }
            descriptors.push((len as u32, status));
            position += len;
            remaining -= len;
            if position > u64::from(count) {
                return descriptors;
            }
        }
    }
    descriptors
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::consts::{CMD_FLAG_FUA, CMD_RESIZE};

    const GIB: u64 = 1 << 30;

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
    const MEMORY_RUNS: [(u64, u32); 2] = [(32768, 0), (1015808, 3)];

    #[test]
    fn descriptors_memory_example() {
        assert_eq!(
            block_status_descriptors(1 << 20, false, &MEMORY_RUNS),
            vec![(32768, 0), (1015808, 3)]
        );
        // Ending exactly at the request end does not stop the walk; passing it does.
        assert_eq!(
            block_status_descriptors(32768, false, &MEMORY_RUNS),
            vec![(32768, 0), (1015808, 3)]
        );
        assert_eq!(block_status_descriptors(4096, false, &MEMORY_RUNS), vec![(32768, 0)]);
    }

    #[test]
    fn descriptors_req_one() {
        assert_eq!(block_status_descriptors(4096, true, &MEMORY_RUNS), vec![(4096, 0)]);
        assert_eq!(block_status_descriptors(1 << 20, true, &MEMORY_RUNS), vec![(32768, 0)]);
    }

    #[test]
    fn descriptors_keep_only_allocation_bits() {
        assert_eq!(block_status_descriptors(1024, false, &[(1024, 3 | 4)]), vec![(1024, 3)]);
    }

    #[test]
    fn descriptors_longer_than_u32_are_split() {
        let max = u32::MAX;
        // Ends before the request end (count = 2^32−1), so the remainder follows.
        assert_eq!(
            block_status_descriptors(max, false, &[(10 * GIB, 3)]),
            vec![(max, 3), (max, 3)]
        );
        assert_eq!(
            block_status_descriptors(1 << 20, false, &[(10 * GIB, 3)]),
            vec![(max, 3)]
        );
        assert_eq!(block_status_descriptors(max, true, &[(10 * GIB, 3)]), vec![(max, 3)]);
        assert_eq!(
            block_status_descriptors(max, false, &[(4 * GIB, 0), (GIB, 3)]),
            vec![(max, 0), (1, 0)]
        );
    }
}
