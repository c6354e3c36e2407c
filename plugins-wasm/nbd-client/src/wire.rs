//! The NBD protocol's numbers and message layouts, as a client sends and reads them (the
//! spec: doc/proto.md of NetworkBlockDevice/nbd). Everything is big-endian.

/// "NBDMAGIC", the first eight bytes a server sends.
pub const NBDMAGIC: u64 = 0x4e42_444d_4147_4943;
/// "IHAVEOPT": the server speaks newstyle; also the magic of every option request.
pub const IHAVEOPT: u64 = 0x4948_4156_454f_5054;
/// What an oldstyle server sends instead of IHAVEOPT.
pub const OLDSTYLE_MAGIC: u64 = 0x0000_4202_8186_1253;
pub const OPTION_REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;
pub const REQUEST_MAGIC: u32 = 0x2560_9513;
pub const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;
pub const STRUCTURED_REPLY_MAGIC: u32 = 0x668e_33ef;

/// Handshake flags the server sends, and the client flags that answer them.
pub const FLAG_FIXED_NEWSTYLE: u16 = 1 << 0;
pub const FLAG_NO_ZEROES: u16 = 1 << 1;
pub const CLIENT_FIXED_NEWSTYLE: u32 = 1 << 0;
pub const CLIENT_NO_ZEROES: u32 = 1 << 1;

pub const OPT_ABORT: u32 = 2;
pub const OPT_LIST: u32 = 3;
pub const OPT_GO: u32 = 7;
pub const OPT_STRUCTURED_REPLY: u32 = 8;
pub const OPT_SET_META_CONTEXT: u32 = 10;

pub const REP_ACK: u32 = 1;
pub const REP_SERVER: u32 = 2;
pub const REP_INFO: u32 = 3;
pub const REP_META_CONTEXT: u32 = 4;
/// Set in every error reply type.
pub const REP_FLAG_ERROR: u32 = 1 << 31;

pub const INFO_EXPORT: u16 = 0;
pub const INFO_DESCRIPTION: u16 = 2;
pub const INFO_BLOCK_SIZE: u16 = 3;

/// Transmission flags (NBD_FLAG_*), sent with the export's size.
pub const TF_HAS_FLAGS: u16 = 1 << 0;
pub const TF_READ_ONLY: u16 = 1 << 1;
pub const TF_SEND_FLUSH: u16 = 1 << 2;
pub const TF_SEND_FUA: u16 = 1 << 3;
pub const TF_ROTATIONAL: u16 = 1 << 4;
pub const TF_SEND_TRIM: u16 = 1 << 5;
pub const TF_SEND_WRITE_ZEROES: u16 = 1 << 6;
pub const TF_CAN_MULTI_CONN: u16 = 1 << 8;
pub const TF_SEND_CACHE: u16 = 1 << 10;
pub const TF_SEND_FAST_ZERO: u16 = 1 << 11;

pub const CMD_READ: u16 = 0;
pub const CMD_WRITE: u16 = 1;
pub const CMD_DISC: u16 = 2;
pub const CMD_FLUSH: u16 = 3;
pub const CMD_TRIM: u16 = 4;
pub const CMD_CACHE: u16 = 5;
pub const CMD_WRITE_ZEROES: u16 = 6;
pub const CMD_BLOCK_STATUS: u16 = 7;

pub const CMD_FLAG_FUA: u16 = 1 << 0;
pub const CMD_FLAG_NO_HOLE: u16 = 1 << 1;
pub const CMD_FLAG_REQ_ONE: u16 = 1 << 3;
pub const CMD_FLAG_FAST_ZERO: u16 = 1 << 4;

pub const REPLY_FLAG_DONE: u16 = 1 << 0;
pub const CHUNK_NONE: u16 = 0;
pub const CHUNK_OFFSET_DATA: u16 = 1;
pub const CHUNK_OFFSET_HOLE: u16 = 2;
pub const CHUNK_BLOCK_STATUS: u16 = 5;
pub const CHUNK_ERROR: u16 = (1 << 15) + 1;
pub const CHUNK_ERROR_OFFSET: u16 = (1 << 15) + 2;
/// Set in every error chunk type, known or not.
pub const CHUNK_FLAG_ERROR: u16 = 1 << 15;

/// The error values on the wire (they are Linux's errno values).
pub const EPERM: u32 = 1;
pub const EIO: u32 = 5;
pub const ENOMEM: u32 = 12;
pub const EINVAL: u32 = 22;
pub const ENOSPC: u32 = 28;
pub const EOVERFLOW: u32 = 75;
pub const ENOTSUP: u32 = 95;
pub const ESHUTDOWN: u32 = 108;

/// The metadata context of allocation status, and its two status bits.
pub const BASE_ALLOCATION: &str = "base:allocation";
pub const STATE_HOLE: u32 = 1 << 0;
pub const STATE_ZERO: u32 = 1 << 1;

/// Size of a request header, of a simple reply, and of a structured reply's header.
pub const REQUEST_LEN: usize = 28;
pub const SIMPLE_REPLY_LEN: usize = 16;
pub const OPTION_REPLY_LEN: usize = 20;

/// An option request: IHAVEOPT, the option, the length of its data, the data.
pub fn option(option: u32, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + data.len());
    out.extend_from_slice(&IHAVEOPT.to_be_bytes());
    out.extend_from_slice(&option.to_be_bytes());
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(data);
    out
}

/// A string as option data carries it: its length (32 bits), then its bytes.
fn push_string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// NBD_OPT_GO's data: the export name and the information asked for.
pub fn go_data(export_name: &str, infos: &[u16]) -> Vec<u8> {
    let mut out = Vec::new();
    push_string(&mut out, export_name);
    out.extend_from_slice(&(infos.len() as u16).to_be_bytes());
    for info in infos {
        out.extend_from_slice(&info.to_be_bytes());
    }
    out
}

/// NBD_OPT_SET_META_CONTEXT's data: the export name and the contexts asked for.
pub fn meta_context_data(export_name: &str, queries: &[&str]) -> Vec<u8> {
    let mut out = Vec::new();
    push_string(&mut out, export_name);
    out.extend_from_slice(&(queries.len() as u32).to_be_bytes());
    for query in queries {
        push_string(&mut out, query);
    }
    out
}

/// A request header; a write's payload follows it.
pub fn request(flags: u16, command: u16, cookie: u64, offset: u64, length: u32) -> [u8; REQUEST_LEN] {
    let mut out = [0; REQUEST_LEN];
    out[0..4].copy_from_slice(&REQUEST_MAGIC.to_be_bytes());
    out[4..6].copy_from_slice(&flags.to_be_bytes());
    out[6..8].copy_from_slice(&command.to_be_bytes());
    out[8..16].copy_from_slice(&cookie.to_be_bytes());
    out[16..24].copy_from_slice(&offset.to_be_bytes());
    out[24..28].copy_from_slice(&length.to_be_bytes());
    out
}

/// Big-endian fields read in order from a message; `None` when it is too short.
pub struct Fields<'a> {
    rest: &'a [u8],
}

impl<'a> Fields<'a> {
    pub fn new(bytes: &'a [u8]) -> Fields<'a> {
        Fields { rest: bytes }
    }

    pub fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.rest.len() < n {
            return None;
        }
        let (head, rest) = self.rest.split_at(n);
        self.rest = rest;
        Some(head)
    }

    pub fn u16(&mut self) -> Option<u16> {
        self.bytes(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }

    pub fn u32(&mut self) -> Option<u32> {
        self.bytes(4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub fn u64(&mut self) -> Option<u64> {
        self.bytes(8)
            .map(|b| u64::from_be_bytes(b.try_into().expect("eight bytes")))
    }

    /// Everything not read yet.
    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.rest)
    }
}

/// The name of an option reply's error type, for messages.
pub fn reply_error_name(reply: u32) -> String {
    let name = match reply & !REP_FLAG_ERROR {
        1 => "unsupported option (NBD_REP_ERR_UNSUP)",
        2 => "forbidden by policy (NBD_REP_ERR_POLICY)",
        3 => "invalid option (NBD_REP_ERR_INVALID)",
        4 => "not supported on this platform (NBD_REP_ERR_PLATFORM)",
        5 => "TLS is required (NBD_REP_ERR_TLS_REQD)",
        6 => "no such export (NBD_REP_ERR_UNKNOWN)",
        7 => "the server is shutting down (NBD_REP_ERR_SHUTDOWN)",
        8 => "block size negotiation is required (NBD_REP_ERR_BLOCK_SIZE_REQD)",
        9 => "request too big (NBD_REP_ERR_TOO_BIG)",
        _ => return format!("error reply {reply:#x}"),
    };
    name.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_option_request_as_the_spec_lays_it_out() {
        assert_eq!(
            option(OPT_STRUCTURED_REPLY, &[]),
            b"IHAVEOPT\x00\x00\x00\x08\x00\x00\x00\x00".to_vec()
        );
        assert_eq!(
            option(OPT_GO, &go_data("disk", &[INFO_DESCRIPTION, INFO_BLOCK_SIZE])),
            b"IHAVEOPT\x00\x00\x00\x07\x00\x00\x00\x0e\
              \x00\x00\x00\x04disk\x00\x02\x00\x02\x00\x03"
                .to_vec()
        );
        assert_eq!(
            meta_context_data("", &[BASE_ALLOCATION]),
            b"\x00\x00\x00\x00\x00\x00\x00\x01\x00\x00\x00\x0fbase:allocation".to_vec()
        );
    }

    #[test]
    fn a_request_header() {
        let header = request(CMD_FLAG_FUA, CMD_WRITE, 7, 0x1_0000_0200, 4096);
        assert_eq!(
            header.to_vec(),
            b"\x25\x60\x95\x13\x00\x01\x00\x01\
              \x00\x00\x00\x00\x00\x00\x00\x07\
              \x00\x00\x00\x01\x00\x00\x02\x00\
              \x00\x00\x10\x00"
                .to_vec()
        );
    }

    #[test]
    fn magics_spell_what_the_spec_says() {
        assert_eq!(&NBDMAGIC.to_be_bytes(), b"NBDMAGIC");
        assert_eq!(&IHAVEOPT.to_be_bytes(), b"IHAVEOPT");
    }

    #[test]
    fn fields_stop_at_the_end() {
        let mut fields = Fields::new(b"\x00\x01\x00\x00\x00\x02\x03");
        assert_eq!(fields.u16(), Some(1));
        assert_eq!(fields.u32(), Some(2));
        assert_eq!(fields.u16(), None);
        assert_eq!(fields.rest(), b"\x03");
    }
}
