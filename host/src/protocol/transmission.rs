//! Transmission phase: request headers (compact, and the 32-byte extended ones), simple
//! replies, the structured chunks nbdkit sends (OFFSET_DATA, ERROR, BLOCK_STATUS), their
//! extended-header forms (NONE, BLOCK_STATUS_EXT), and the normalisation of plugin extents
//! into block status descriptors.
//!
//! Header parsing and the fixed-size reply builders never allocate, since they run once per
//! request; read data and write payloads travel separately and are the caller's business.

use super::consts::{
    CMD_BLOCK_STATUS, CMD_CACHE, CMD_DISC, CMD_FLAG_PAYLOAD_LEN, CMD_FLUSH, CMD_READ, CMD_TRIM, CMD_WRITE,
    CMD_WRITE_ZEROES, EXTENDED_REPLY_MAGIC, EXTENDED_REQUEST_MAGIC, MAX_STRING, MAX_WRITE_DRAIN, REPLY_FLAG_DONE,
    REPLY_TYPE_BLOCK_STATUS, REPLY_TYPE_BLOCK_STATUS_EXT, REPLY_TYPE_ERROR, REPLY_TYPE_NONE, REPLY_TYPE_OFFSET_DATA,
    REQUEST_MAGIC, SIMPLE_REPLY_MAGIC, STATE_HOLE, STATE_ZERO, STRUCTURED_REPLY_MAGIC,
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

/// How a connection frames requests and replies: what the client negotiated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// 28-byte requests, simple replies only.
    Simple,
    /// NBD_OPT_STRUCTURED_REPLY: structured chunks for READ and BLOCK_STATUS.
    Structured,
    /// NBD_OPT_EXTENDED_HEADERS: 32-byte requests with 64-bit lengths, every reply a
    /// 32-byte chunk.
    Extended,
}

impl Framing {
    pub fn request_header_len(self) -> usize {
        match self {
            Framing::Extended => EXTENDED_REQUEST_HEADER_LEN,
            _ => REQUEST_HEADER_LEN,
        }
    }
}

/// A parsed request header, compact or extended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    pub flags: u16,
    pub command: Command,
    /// Opaque to the server; echoed back byte for byte (big-endian in, big-endian out).
    pub cookie: u64,
    pub offset: u64,
    /// 32 bits in a compact header, 64 in an extended one.
    pub count: u64,
}

impl Request {
    /// Bytes following the header that must be read, whether or not the request is valid, so
    /// the stream stays in sync: a WRITE's data, and with extended headers whatever else
    /// NBD_CMD_FLAG_PAYLOAD_LEN announces (qemu sends WRITE without the flag). A payload too
    /// large to discard ends the connection.
    pub fn payload_len(&self, framing: Framing) -> Result<u64, ProtocolError> {
        let announced = framing == Framing::Extended && self.flags & CMD_FLAG_PAYLOAD_LEN != 0;
        let has_payload = self.command == Command::Write || announced;
        match has_payload {
            true if self.count > u64::from(MAX_WRITE_DRAIN) => Err(ProtocolError::WriteTooLarge(self.count)),
            true => Ok(self.count),
            false => Ok(0),
        }
    }
}

/// Checks the magic; everything else is checked by `validate`.
pub fn parse_request(b: &[u8; REQUEST_HEADER_LEN]) -> Result<Request, ProtocolError> {
    parse_header(b, REQUEST_MAGIC, u64::from(u32_at(b, 24)))
}

pub const EXTENDED_REQUEST_HEADER_LEN: usize = 32;

/// An extended request header (after NBD_OPT_EXTENDED_HEADERS): the compact fields with a
/// 64-bit length.
pub fn parse_extended_request(b: &[u8; EXTENDED_REQUEST_HEADER_LEN]) -> Result<Request, ProtocolError> {
    parse_header(b, EXTENDED_REQUEST_MAGIC, u64_at(b, 24))
}

/// The fields both header forms share, which lie at the same places.
fn parse_header(b: &[u8], expected_magic: u32, count: u64) -> Result<Request, ProtocolError> {
    let magic = u32_at(b, 0);
    if magic != expected_magic {
        return Err(ProtocolError::BadRequestMagic {
            found: magic,
            expected: expected_magic,
        });
    }
    Ok(Request {
        flags: u16_at(b, 4),
        command: Command::from_wire(u16_at(b, 6)),
        cookie: u64_at(b, 8),
        offset: u64_at(b, 16),
        count,
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
/// An NBD_REPLY_TYPE_ERROR chunk, with the error's message for a human (nbdkit ≥ 1.42 sends
/// the plugin's), held to an NBD string: at most 4096 bytes, no NUL.
pub fn error_chunk(out: &mut Vec<u8>, framing: Framing, cookie: u64, offset: u64, error: NbdError, message: &str) {
    let message = nbd_string(message);
    let length = 4 + 2 + message.len();
    match framing {
        Framing::Extended => out.extend_from_slice(&extended_chunk_header(
            cookie,
            REPLY_FLAG_DONE,
            REPLY_TYPE_ERROR,
            offset,
            length as u64,
        )),
        _ => out.extend_from_slice(&chunk_header(
            cookie,
            REPLY_FLAG_DONE,
            REPLY_TYPE_ERROR,
            len_u32(length),
        )),
    }
    out.extend_from_slice(&error.wire().to_be_bytes());
    out.extend_from_slice(&(message.len() as u16).to_be_bytes());
    out.extend_from_slice(message.as_bytes());
}

/// The longest prefix of `text` that is an NBD string: no NUL, at most 4096 bytes, whole
/// characters.
fn nbd_string(text: &str) -> &str {
    let text = text.split('\0').next().unwrap_or_default();
    if text.len() <= MAX_STRING {
        return text;
    }
    let mut end = MAX_STRING;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

pub const EXTENDED_CHUNK_HEADER_LEN: usize = 32;

/// The 32-byte chunk header of extended headers; `offset` is the request's.
pub fn extended_chunk_header(
    cookie: u64,
    flags: u16,
    chunk_type: u16,
    offset: u64,
    length: u64,
) -> [u8; EXTENDED_CHUNK_HEADER_LEN] {
    concat(&[
        &EXTENDED_REPLY_MAGIC.to_be_bytes(),
        &flags.to_be_bytes(),
        &chunk_type.to_be_bytes(),
        &cookie.to_be_bytes(),
        &offset.to_be_bytes(),
        &length.to_be_bytes(),
    ])
}

/// Success without data, under extended headers (which have no simple replies).
pub fn extended_done(cookie: u64, offset: u64) -> [u8; EXTENDED_CHUNK_HEADER_LEN] {
    extended_chunk_header(cookie, REPLY_FLAG_DONE, REPLY_TYPE_NONE, offset, 0)
}

/// The header of a READ's whole data in one OFFSET_DATA chunk, under extended headers.
pub fn extended_read_header(cookie: u64, offset: u64, data_len: u64) -> [u8; 40] {
    let header = extended_chunk_header(cookie, REPLY_FLAG_DONE, REPLY_TYPE_OFFSET_DATA, offset, 8 + data_len);
    concat(&[&header, &offset.to_be_bytes()])
}

/// NBD_REPLY_TYPE_BLOCK_STATUS_EXT: 64-bit lengths and flags (base:allocation keeps the upper
/// 32 bits of the flags zero).
pub fn block_status_ext_chunk(
    out: &mut Vec<u8>,
    cookie: u64,
    offset: u64,
    context_id: u32,
    descriptors: &[(u64, u32)],
) {
    let length = 8 + 16 * descriptors.len();
    out.reserve(EXTENDED_CHUNK_HEADER_LEN + length);
    out.extend_from_slice(&extended_chunk_header(
        cookie,
        REPLY_FLAG_DONE,
        REPLY_TYPE_BLOCK_STATUS_EXT,
        offset,
        length as u64,
    ));
    out.extend_from_slice(&context_id.to_be_bytes());
    out.extend_from_slice(&len_u32(descriptors.len()).to_be_bytes());
    for &(len, flags) in descriptors {
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&u64::from(flags).to_be_bytes());
    }
}

/// A BLOCK_STATUS chunk (DONE) for context id with (length, flags) descriptors, appended to out.
/// Descriptors from [`block_status_descriptors`] with `Framing::Structured`, whose lengths
/// fit 32 bits.
pub fn block_status_chunk(out: &mut Vec<u8>, cookie: u64, context_id: u32, descriptors: &[(u64, u32)]) {
    let length = len_u32(4 + 8 * descriptors.len());
    out.reserve(CHUNK_HEADER_LEN + length as usize);
    out.extend_from_slice(&chunk_header(cookie, REPLY_FLAG_DONE, REPLY_TYPE_BLOCK_STATUS, length));
    out.extend_from_slice(&context_id.to_be_bytes());
    for &(len, flags) in descriptors {
        let len = u32::try_from(len).expect("compact descriptors are split at 2^32-1");
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&flags.to_be_bytes());
    }
}

/// The BLOCK_STATUS descriptors nbdkit sends for a request of `count` bytes, from `runs` of
/// `(length, status)` that start at the request's offset and follow each other (the layers'
/// extents, already checked and merged). In a compact reply descriptors are at most 2^32−1
/// bytes (longer runs are split); with extended headers they are 64-bit. With `req_one`
/// only the first, capped at `count`; otherwise up to and including the first descriptor
/// that ends beyond the request (nbdkit compares strictly, so one ending exactly at its end
/// is followed by the next). Only the `base:allocation` bits go on the wire.
pub fn block_status_descriptors(count: u64, req_one: bool, runs: &[(u64, u32)], framing: Framing) -> Vec<(u64, u32)> {
    let longest = match framing {
        Framing::Extended => u64::MAX,
        _ => u64::from(u32::MAX),
    };
    let mut descriptors = Vec::new();
    let mut position = 0u64;
    for &(mut remaining, status) in runs {
        let status = status & (STATE_HOLE | STATE_ZERO);
        while remaining > 0 {
            let len = remaining.min(longest);
            if req_one {
                return vec![(len.min(count), status)];
            }
            descriptors.push((len, status));
            position += len;
            remaining -= len;
            if position > count {
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
    const S: Framing = Framing::Structured;

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
        assert_eq!(request.payload_len(S), Ok(512));
    }

    #[test]
    fn request_bad_magic() {
        let header = b"\x25\x60\x95\x14\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\
                       \x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00";
        assert_eq!(
            parse_request(header),
            Err(ProtocolError::BadRequestMagic {
                found: 0x2560_9514,
                expected: REQUEST_MAGIC
            })
        );
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
        assert_eq!(request(Command::Read, 1 << 20).payload_len(S), Ok(0));
        assert_eq!(
            request(Command::Write, u64::from(MAX_WRITE_DRAIN)).payload_len(S),
            Ok(u64::from(MAX_WRITE_DRAIN))
        );
        assert_eq!(
            request(Command::Write, u64::from(MAX_WRITE_DRAIN) + 1).payload_len(S),
            Err(ProtocolError::WriteTooLarge(u64::from(MAX_WRITE_DRAIN) + 1))
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
        let mut out = vec![];
        error_chunk(&mut out, S, 3, 0, NbdError::Inval, "");
        assert_eq!(
            out,
            b"\x66\x8e\x33\xef\x00\x01\x80\x01\x00\x00\x00\x00\x00\x00\x00\x03\
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
            block_status_descriptors(1 << 20, false, &MEMORY_RUNS, S),
            vec![(32768, 0), (1015808, 3)]
        );
        // Ending exactly at the request end does not stop the walk; passing it does.
        assert_eq!(
            block_status_descriptors(32768, false, &MEMORY_RUNS, S),
            vec![(32768, 0), (1015808, 3)]
        );
        assert_eq!(block_status_descriptors(4096, false, &MEMORY_RUNS, S), vec![(32768, 0)]);
    }

    #[test]
    fn descriptors_req_one() {
        assert_eq!(block_status_descriptors(4096, true, &MEMORY_RUNS, S), vec![(4096, 0)]);
        assert_eq!(
            block_status_descriptors(1 << 20, true, &MEMORY_RUNS, S),
            vec![(32768, 0)]
        );
    }

    #[test]
    fn descriptors_keep_only_allocation_bits() {
        assert_eq!(
            block_status_descriptors(1024, false, &[(1024, 3 | 4)], S),
            vec![(1024, 3)]
        );
    }

    #[test]
    fn descriptors_longer_than_u32_are_split() {
        let max = u64::from(u32::MAX);
        // Ends before the request end (count = 2^32−1), so the remainder follows.
        assert_eq!(
            block_status_descriptors(max, false, &[(10 * GIB, 3)], S),
            vec![(max, 3), (max, 3)]
        );
        assert_eq!(
            block_status_descriptors(1 << 20, false, &[(10 * GIB, 3)], S),
            vec![(max, 3)]
        );
        assert_eq!(block_status_descriptors(max, true, &[(10 * GIB, 3)], S), vec![(max, 3)]);
        assert_eq!(
            block_status_descriptors(max, false, &[(4 * GIB, 0), (GIB, 3)], S),
            vec![(max, 0), (1, 0)]
        );
    }

    #[test]
    fn extended_descriptors_are_not_split() {
        let x = Framing::Extended;
        assert_eq!(
            block_status_descriptors(5 * GIB, false, &[(10 * GIB, 3)], x),
            vec![(10 * GIB, 3)]
        );
        assert_eq!(
            block_status_descriptors(5 * GIB, true, &[(10 * GIB, 3)], x),
            vec![(5 * GIB, 3)]
        );
    }

    #[test]
    fn extended_request_bytes() {
        let header = b"\x21\xe4\x1c\x71\x00\x20\x00\x01\x01\x02\x03\x04\x05\x06\x07\x08\
                       \x00\x00\x00\x00\x00\x00\x10\x00\x00\x00\x00\x01\x40\x00\x00\x00";
        let request = parse_extended_request(header).unwrap();
        assert_eq!(
            request,
            Request {
                flags: CMD_FLAG_PAYLOAD_LEN,
                command: Command::Write,
                cookie: 0x0102_0304_0506_0708,
                offset: 4096,
                count: 5 * GIB,
            }
        );
        // Announced as payload, 5 GiB is more than is ever drained.
        assert_eq!(
            request.payload_len(Framing::Extended),
            Err(ProtocolError::WriteTooLarge(5 * GIB))
        );
        let zeroes = Request {
            flags: 0,
            command: Command::WriteZeroes,
            ..request
        };
        assert_eq!(zeroes.payload_len(Framing::Extended), Ok(0));
        let mut compact = *header;
        compact[0] = 0x25;
        assert!(parse_extended_request(&compact).is_err());
    }

    #[test]
    fn extended_reply_bytes() {
        assert_eq!(
            extended_done(9, 0x1000),
            *b"\x6e\x8a\x27\x8c\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x09\
               \x00\x00\x00\x00\x00\x00\x10\x00\x00\x00\x00\x00\x00\x00\x00\x00"
        );
        let mut out = vec![];
        block_status_ext_chunk(&mut out, 4, 0, 1, &[(5 * GIB, 3)]);
        assert_eq!(
            out,
            b"\x6e\x8a\x27\x8c\x00\x01\x00\x06\x00\x00\x00\x00\x00\x00\x00\x04\
              \x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x18\
              \x00\x00\x00\x01\x00\x00\x00\x01\
              \x00\x00\x00\x01\x40\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x03"
        );
        let read = extended_read_header(2, 0x200, 512);
        assert_eq!(
            &read[24..40],
            b"\x00\x00\x00\x00\x00\x00\x02\x08\x00\x00\x00\x00\x00\x00\x02\x00"
        );
    }

    #[test]
    fn error_messages_are_nbd_strings() {
        let mut out = vec![];
        error_chunk(
            &mut out,
            Framing::Structured,
            3,
            0,
            NbdError::Io,
            "disk on fire\0hidden",
        );
        assert_eq!(&out[16..20], b"\x00\x00\x00\x12");
        assert_eq!(&out[20..], b"\x00\x00\x00\x05\x00\x0cdisk on fire");
        let long = "é".repeat(3000);
        let mut out = vec![];
        error_chunk(&mut out, Framing::Extended, 3, 7, NbdError::Io, &long);
        let message_len = u16::from_be_bytes([out[36], out[37]]) as usize;
        assert_eq!(message_len, 4096);
        assert_eq!(out.len(), 32 + 6 + 4096);
    }
}
