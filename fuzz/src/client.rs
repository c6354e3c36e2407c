//! An NBD client's bytes, written from the protocol specification (doc/proto.md in the NBD
//! project) rather than from nbdbox's codec, so that the codec target can check one against
//! the other.

pub const IHAVEOPT: u64 = 0x4948_4156_454f_5054;
pub const REQUEST_MAGIC: u32 = 0x2560_9513;
pub const EXTENDED_REQUEST_MAGIC: u32 = 0x21e4_1c71;

pub const CLIENT_FIXED_NEWSTYLE: u32 = 1 << 0;
pub const CLIENT_NO_ZEROES: u32 = 1 << 1;

pub const OPT_EXPORT_NAME: u32 = 1;
pub const OPT_ABORT: u32 = 2;
pub const OPT_LIST: u32 = 3;
pub const OPT_STARTTLS: u32 = 5;
pub const OPT_INFO: u32 = 6;
pub const OPT_GO: u32 = 7;
pub const OPT_STRUCTURED_REPLY: u32 = 8;
pub const OPT_LIST_META_CONTEXT: u32 = 9;
pub const OPT_SET_META_CONTEXT: u32 = 10;
pub const OPT_EXTENDED_HEADERS: u32 = 11;

pub const INFO_EXPORT: u16 = 0;
pub const INFO_NAME: u16 = 1;
pub const INFO_DESCRIPTION: u16 = 2;
pub const INFO_BLOCK_SIZE: u16 = 3;

pub const CMD_READ: u16 = 0;
pub const CMD_WRITE: u16 = 1;
pub const CMD_DISC: u16 = 2;
pub const CMD_FLUSH: u16 = 3;
pub const CMD_TRIM: u16 = 4;
pub const CMD_CACHE: u16 = 5;
pub const CMD_WRITE_ZEROES: u16 = 6;
pub const CMD_BLOCK_STATUS: u16 = 7;

pub const FLAG_FUA: u16 = 1 << 0;
pub const FLAG_NO_HOLE: u16 = 1 << 1;
pub const FLAG_DF: u16 = 1 << 2;
pub const FLAG_REQ_ONE: u16 = 1 << 3;
pub const FLAG_FAST_ZERO: u16 = 1 << 4;
/// Extended headers only: the request's length is that of a payload that follows.
pub const FLAG_PAYLOAD_LEN: u16 = 1 << 5;

/// `IHAVEOPT · option · length · payload`.
pub fn option(option: u32, payload: &[u8]) -> Vec<u8> {
    let length = u32::try_from(payload.len()).expect("option payload fits its length field");
    [
        &IHAVEOPT.to_be_bytes()[..],
        &option.to_be_bytes(),
        &length.to_be_bytes(),
        payload,
    ]
    .concat()
}

/// A 32-bit length, then the bytes.
fn length_prefixed(out: &mut Vec<u8>, bytes: &[u8]) {
    let length = u32::try_from(bytes.len()).expect("string fits its length field");
    out.extend_from_slice(&length.to_be_bytes());
    out.extend_from_slice(bytes);
}

/// Payload of OPT_INFO and OPT_GO: `name_len · name · n(16) · n × info(16)`.
pub fn info_payload(name: &[u8], infos: &[u16]) -> Vec<u8> {
    let mut out = Vec::new();
    length_prefixed(&mut out, name);
    let count = u16::try_from(infos.len()).expect("info count fits 16 bits");
    out.extend_from_slice(&count.to_be_bytes());
    for info in infos {
        out.extend_from_slice(&info.to_be_bytes());
    }
    out
}

/// Payload of OPT_LIST_META_CONTEXT and OPT_SET_META_CONTEXT:
/// `name_len · name · n(32) · n × (len · query)`.
pub fn meta_payload(name: &[u8], queries: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    length_prefixed(&mut out, name);
    let count = u32::try_from(queries.len()).expect("query count fits 32 bits");
    out.extend_from_slice(&count.to_be_bytes());
    for query in queries {
        length_prefixed(&mut out, query);
    }
    out
}

/// A compact request header: `magic · flags · type · cookie · offset · length`.
pub fn request(flags: u16, command: u16, cookie: u64, offset: u64, count: u32) -> [u8; 28] {
    let mut out = [0; 28];
    out[..4].copy_from_slice(&REQUEST_MAGIC.to_be_bytes());
    out[4..6].copy_from_slice(&flags.to_be_bytes());
    out[6..8].copy_from_slice(&command.to_be_bytes());
    out[8..16].copy_from_slice(&cookie.to_be_bytes());
    out[16..24].copy_from_slice(&offset.to_be_bytes());
    out[24..].copy_from_slice(&count.to_be_bytes());
    out
}

/// An extended request header (after OPT_EXTENDED_HEADERS): the compact fields with a
/// 64-bit length.
pub fn extended_request(flags: u16, command: u16, cookie: u64, offset: u64, count: u64) -> [u8; 32] {
    let mut out = [0; 32];
    out[..4].copy_from_slice(&EXTENDED_REQUEST_MAGIC.to_be_bytes());
    out[4..6].copy_from_slice(&flags.to_be_bytes());
    out[6..8].copy_from_slice(&command.to_be_bytes());
    out[8..16].copy_from_slice(&cookie.to_be_bytes());
    out[16..24].copy_from_slice(&offset.to_be_bytes());
    out[24..].copy_from_slice(&count.to_be_bytes());
    out
}

/// Everything a client sends in one session, built in order.
pub struct Session {
    bytes: Vec<u8>,
    cookie: u64,
}

impl Session {
    /// Starts with the client flags that answer the server's greeting.
    pub fn new(client_flags: u32) -> Session {
        Session {
            bytes: client_flags.to_be_bytes().to_vec(),
            cookie: 0,
        }
    }

    pub fn option(mut self, number: u32, payload: &[u8]) -> Session {
        self.bytes.extend_from_slice(&option(number, payload));
        self
    }

    /// A request with the next cookie; a WRITE's payload is `payload`.
    pub fn request(mut self, flags: u16, command: u16, offset: u64, count: u32, payload: &[u8]) -> Session {
        self.cookie += 1;
        self.bytes
            .extend_from_slice(&request(flags, command, self.cookie, offset, count));
        self.bytes.extend_from_slice(payload);
        self
    }

    /// An extended request with the next cookie, then `payload`.
    pub fn extended_request(mut self, flags: u16, command: u16, offset: u64, count: u64, payload: &[u8]) -> Session {
        self.cookie += 1;
        self.bytes
            .extend_from_slice(&extended_request(flags, command, self.cookie, offset, count));
        self.bytes.extend_from_slice(payload);
        self
    }

    /// Bytes sent as they are (a broken message, say).
    pub fn raw(mut self, bytes: &[u8]) -> Session {
        self.bytes.extend_from_slice(bytes);
        self
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }
}
