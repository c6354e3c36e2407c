//! Handshake phase: the greeting, client flags, option headers and payloads, and every
//! option reply the server sends, following what nbdkit does during option haggling.
//!
//! Parsers borrow from the payload the caller read. Builders that produce a fixed-size
//! message return an array; the rest either return a fresh `Vec` (payloads, to be passed to
//! [`option_reply`]) or append to the caller's output buffer (whole messages).

use super::consts::{
    BASE_ALLOCATION, BASE_ALLOCATION_ID, BASE_NAMESPACE_QUERY, EXPORT_NAME_PADDING, IHAVEOPT, INFO_BLOCK_SIZE,
    INFO_DESCRIPTION, INFO_EXPORT, INFO_NAME, LIST_CONTEXT_ID, MAX_OPTION_LEN, MAX_STRING, NBDMAGIC, OLD_VERSION,
    REP_MAGIC,
};
use super::wire::{concat, len_u32, u16_at, u32_at, u64_at, Cursor};
use super::ProtocolError;

/// Server greeting of the newstyle handshake.
pub const GREETING_LEN: usize = 18;

/// `NBDMAGIC`, `IHAVEOPT`, then the handshake flags offered.
pub fn greeting(handshake_flags: u16) -> [u8; GREETING_LEN] {
    concat(&[
        &NBDMAGIC.to_be_bytes(),
        &IHAVEOPT.to_be_bytes(),
        &handshake_flags.to_be_bytes(),
    ])
}

/// Whole oldstyle handshake (`nbdkit -o`): there is no negotiation, so it carries the export.
pub const OLDSTYLE_GREETING_LEN: usize = 152;

/// `NBDMAGIC`, the oldstyle version, size, a zero 16-bit global flags word, eflags, padding.
pub fn oldstyle_greeting(size: u64, eflags: u16) -> [u8; OLDSTYLE_GREETING_LEN] {
    concat(&[
        &NBDMAGIC.to_be_bytes(),
        &OLD_VERSION.to_be_bytes(),
        &size.to_be_bytes(),
        &0u16.to_be_bytes(),
        &eflags.to_be_bytes(),
        &[0; EXPORT_NAME_PADDING],
    ])
}

/// Client flags may only echo bits the server offered; anything else ends the connection.
pub fn check_client_flags(client_flags: u32, offered: u16) -> Result<(), ProtocolError> {
    if client_flags & !u32::from(offered) != 0 {
        return Err(ProtocolError::UnknownClientFlags {
            client: client_flags,
            offered,
        });
    }
    Ok(())
}

/// `IHAVEOPT`, option number, payload length.
pub const OPTION_HEADER_LEN: usize = 16;

/// A client option header; `length` payload bytes follow it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptionHeader {
    pub option: u32,
    pub length: u32,
}

/// Checks the `IHAVEOPT` prefix and the payload limit. Either failure ends the connection
/// (a transmission request sent too early also lands here, as in nbdkit).
pub fn parse_option_header(b: &[u8; OPTION_HEADER_LEN]) -> Result<OptionHeader, ProtocolError> {
    let magic = u64_at(b, 0);
    if magic != IHAVEOPT {
        return Err(ProtocolError::BadOptionMagic(magic));
    }
    let header = OptionHeader {
        option: u32_at(b, 8),
        length: u32_at(b, 12),
    };
    if header.length > MAX_OPTION_LEN {
        return Err(ProtocolError::OptionTooLong {
            option: header.option,
            length: header.length,
        });
    }
    Ok(header)
}

/// A non-fatal problem with an option's payload: answered with NBD_REP_ERR_INVALID + message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidOption(pub &'static str);

/// Messages for a string field that breaks the wire rules, worded per field.
struct StringRules {
    too_long: &'static str,
    has_nul: &'static str,
    not_utf8: &'static str,
}

const EXPORT_NAME_RULES: StringRules = StringRules {
    too_long: "export name is longer than 4096 bytes",
    has_nul: "export name contains a NUL byte",
    not_utf8: "export name is not valid UTF-8",
};

const QUERY_RULES: StringRules = StringRules {
    too_long: "meta context query is longer than 4096 bytes",
    has_nul: "meta context query contains a NUL byte",
    not_utf8: "meta context query is not valid UTF-8",
};

impl StringRules {
    fn check<'a>(&self, bytes: &'a [u8]) -> Result<&'a str, &'static str> {
        if bytes.len() > MAX_STRING {
            return Err(self.too_long);
        }
        // nbdkit stores strings NUL-terminated, so an embedded NUL would truncate them.
        if bytes.contains(&0) {
            return Err(self.has_nul);
        }
        std::str::from_utf8(bytes).map_err(|_| self.not_utf8)
    }
}

/// Payload of `OPT_INFO` and `OPT_GO`.
#[derive(Debug, PartialEq, Eq)]
pub struct InfoRequest<'a> {
    pub name: &'a str,
    /// `INFO_*` items asked for, in request order (unknown ones included).
    pub info_types: Vec<u16>,
}

/// Parses `name_len(32) · name · n(16) · n × info_type(16)` with nbdkit's checks, which
/// demand an exact length.
pub fn parse_info_request(payload: &[u8]) -> Result<InfoRequest<'_>, InvalidOption> {
    const FIXED_LEN: usize = 4 + 2;
    if payload.len() < FIXED_LEN {
        return Err(InvalidOption("payload is shorter than 6 bytes"));
    }
    let name_len = u32_at(payload, 0) as usize;
    if name_len > payload.len() - FIXED_LEN {
        return Err(InvalidOption("export name overruns the payload"));
    }
    let count_at = 4 + name_len;
    let info_count = usize::from(u16_at(payload, count_at));
    if payload.len() != FIXED_LEN + name_len + 2 * info_count {
        return Err(InvalidOption(
            "payload length does not match the number of info requests",
        ));
    }
    let name = EXPORT_NAME_RULES.check(&payload[4..count_at]).map_err(InvalidOption)?;
    let info_types = payload[count_at + 2..]
        .chunks_exact(2)
        .map(|item| u16_at(item, 0))
        .collect();
    Ok(InfoRequest { name, info_types })
}

/// Payload of `OPT_LIST_META_CONTEXT` and `OPT_SET_META_CONTEXT`. The queries are only
/// counted, never kept: nbdbox knows one context, and a payload of millions of queries must
/// not cost more than the payload itself.
#[derive(Debug, PartialEq, Eq)]
pub struct MetaRequest<'a> {
    pub export: &'a str,
    pub queries: usize,
    /// Queries that are exactly `base:allocation`.
    pub base_allocation: usize,
    /// Queries that are exactly `base:` (the whole namespace, for LIST).
    pub base_namespace: usize,
}

/// Parses `name_len(32) · name · n(32) · n × (len(32) · query)`. Like nbdkit, bytes after
/// the last query are ignored.
pub fn parse_meta_request(payload: &[u8]) -> Result<MetaRequest<'_>, InvalidOption> {
    if payload.len() < 4 + 4 {
        return Err(InvalidOption("payload is shorter than 8 bytes"));
    }
    const OVERRUN: &str = "a length overruns the payload";
    let mut cursor = Cursor::new(payload);
    let name = cursor.length_prefixed().ok_or(InvalidOption(OVERRUN))?;
    let export = EXPORT_NAME_RULES.check(name).map_err(InvalidOption)?;
    let queries = cursor.u32().ok_or(InvalidOption(OVERRUN))? as usize;
    let mut request = MetaRequest {
        export,
        queries,
        base_allocation: 0,
        base_namespace: 0,
    };
    for _ in 0..queries {
        let query = cursor.length_prefixed().ok_or(InvalidOption(OVERRUN))?;
        match QUERY_RULES.check(query).map_err(InvalidOption)? {
            BASE_ALLOCATION => request.base_allocation += 1,
            BASE_NAMESPACE_QUERY => request.base_namespace += 1,
            _ => {}
        }
    }
    Ok(request)
}

/// NBD_OPT_EXPORT_NAME: the whole payload is the name; a bad one ends the connection
/// because this option has no way to report errors.
pub fn parse_export_name(payload: &[u8]) -> Result<&str, ProtocolError> {
    EXPORT_NAME_RULES.check(payload).map_err(ProtocolError::BadExportName)
}

/// Append one fixed-newstyle option reply (magic, option, type, length, payload).
pub fn option_reply(out: &mut Vec<u8>, option: u32, reply_type: u32, payload: &[u8]) {
    out.extend_from_slice(&REP_MAGIC.to_be_bytes());
    out.extend_from_slice(&option.to_be_bytes());
    out.extend_from_slice(&reply_type.to_be_bytes());
    out.extend_from_slice(&len_u32(payload.len()).to_be_bytes());
    out.extend_from_slice(payload);
}

/// `REP_SERVER` payload: `name_len(32) · name · description` (the description has no
/// length of its own; it runs to the end of the reply).
pub fn rep_server_payload(name: &str, description: Option<&str>) -> Vec<u8> {
    let description = description.unwrap_or_default();
    let mut payload = Vec::with_capacity(4 + name.len() + description.len());
    payload.extend_from_slice(&len_u32(name.len()).to_be_bytes());
    payload.extend_from_slice(name.as_bytes());
    payload.extend_from_slice(description.as_bytes());
    payload
}

/// `REP_INFO` payload of `INFO_EXPORT`: size and transmission flags.
pub fn info_export_payload(size: u64, eflags: u16) -> [u8; 12] {
    concat(&[&INFO_EXPORT.to_be_bytes(), &size.to_be_bytes(), &eflags.to_be_bytes()])
}

/// `REP_INFO` payload of `INFO_NAME`: the canonical export name (may be empty).
pub fn info_name_payload(name: &str) -> Vec<u8> {
    info_text_payload(INFO_NAME, name)
}

/// `REP_INFO` payload of `INFO_DESCRIPTION`.
pub fn info_description_payload(desc: &str) -> Vec<u8> {
    info_text_payload(INFO_DESCRIPTION, desc)
}

fn info_text_payload(info_type: u16, text: &str) -> Vec<u8> {
    [&info_type.to_be_bytes(), text.as_bytes()].concat()
}

/// `REP_INFO` payload of `INFO_BLOCK_SIZE`: minimum, preferred and maximum payload size.
pub fn info_block_size_payload(min: u32, preferred: u32, max: u32) -> [u8; 14] {
    concat(&[
        &INFO_BLOCK_SIZE.to_be_bytes(),
        &min.to_be_bytes(),
        &preferred.to_be_bytes(),
        &max.to_be_bytes(),
    ])
}

/// `REP_META_CONTEXT` payload: context id, then the name to the end of the reply.
pub fn meta_context_payload(id: u32, name: &str) -> Vec<u8> {
    [&id.to_be_bytes(), name.as_bytes()].concat()
}

/// Reply to NBD_OPT_EXPORT_NAME: size, eflags, and 124 zero bytes unless no_zeroes.
pub fn export_name_reply(out: &mut Vec<u8>, size: u64, eflags: u16, no_zeroes: bool) {
    out.extend_from_slice(&size.to_be_bytes());
    out.extend_from_slice(&eflags.to_be_bytes());
    if !no_zeroes {
        out.resize(out.len() + EXPORT_NAME_PADDING, 0);
    }
}

/// What to answer to a meta-context LIST or SET: `replies` × `REP_META_CONTEXT` naming
/// `base:allocation` with `context_id`, then `REP_ACK`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetaMatch {
    /// nbdkit answers each matching query, so a repeated query is answered repeatedly.
    pub replies: usize,
    pub context_id: u32,
    /// A SET that matched selects `base:allocation`; a SET that did not clears it.
    pub selects_base_allocation: bool,
}

/// nbdkit's rules: LIST with no queries, or with `base:`, lists `base:allocation`; the exact
/// name `base:allocation` matches for LIST and SET; every other query is ignored.
/// LIST replies use id 0, SET replies `BASE_ALLOCATION_ID`.
pub fn match_meta_queries(request: &MetaRequest<'_>, set: bool) -> MetaMatch {
    let replies = match (set, request.queries) {
        (false, 0) => 1,
        (false, _) => request.base_allocation + request.base_namespace,
        (true, _) => request.base_allocation,
    };
    MetaMatch {
        replies,
        context_id: if set { BASE_ALLOCATION_ID } else { LIST_CONTEXT_ID },
        selects_base_allocation: set && replies > 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::consts::{OPT_GO, OPT_LIST, REP_ACK, REP_SERVER};

    const GREETING: [u8; 18] = *b"NBDMAGICIHAVEOPT\x00\x03";

    #[test]
    fn greeting_bytes() {
        assert_eq!(greeting(3), GREETING);
        assert_eq!(&greeting(1)[16..], b"\x00\x01");
    }

    #[test]
    fn oldstyle_greeting_bytes() {
        let bytes = oldstyle_greeting(0x10_0000, 0x0d6d);
        assert_eq!(&bytes[..8], b"NBDMAGIC");
        assert_eq!(&bytes[8..16], b"\x00\x00\x42\x02\x81\x86\x12\x53");
        assert_eq!(&bytes[16..24], b"\x00\x00\x00\x00\x00\x10\x00\x00");
        assert_eq!(&bytes[24..28], b"\x00\x00\x0d\x6d");
        assert!(bytes[28..].iter().all(|&b| b == 0));
    }

    #[test]
    fn client_flags_must_be_offered() {
        assert_eq!(check_client_flags(0, 3), Ok(()));
        assert_eq!(check_client_flags(3, 3), Ok(()));
        assert_eq!(check_client_flags(1, 3), Ok(()));
        // NO_ZEROES echoed although the handshake mask withheld it.
        assert_eq!(
            check_client_flags(3, 1),
            Err(ProtocolError::UnknownClientFlags { client: 3, offered: 1 })
        );
        assert!(check_client_flags(7, 3).is_err());
    }

    #[test]
    fn option_header_good() {
        let header = parse_option_header(b"IHAVEOPT\x00\x00\x00\x07\x00\x00\x00\x0c").unwrap();
        assert_eq!(
            header,
            OptionHeader {
                option: OPT_GO,
                length: 12
            }
        );
        let limit = parse_option_header(b"IHAVEOPT\x00\x00\x00\x03\x04\x00\x00\x00").unwrap();
        assert_eq!(limit.length, MAX_OPTION_LEN);
    }

    #[test]
    fn option_header_bad_magic() {
        // A transmission request sent during haggling.
        let err = parse_option_header(b"\x25\x60\x95\x13\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01").unwrap_err();
        assert_eq!(err, ProtocolError::BadOptionMagic(0x2560_9513_0000_0000));
    }

    #[test]
    fn option_header_too_long() {
        let err = parse_option_header(b"IHAVEOPT\x00\x00\x00\x07\x04\x00\x00\x01").unwrap_err();
        assert_eq!(
            err,
            ProtocolError::OptionTooLong {
                option: 7,
                length: MAX_OPTION_LEN + 1
            }
        );
    }

    #[test]
    fn info_request_good() {
        let request = parse_info_request(b"\x00\x00\x00\x04disk\x00\x02\x00\x01\x00\x03").unwrap();
        assert_eq!(
            request,
            InfoRequest {
                name: "disk",
                info_types: vec![1, 3]
            }
        );
        let default = parse_info_request(b"\x00\x00\x00\x00\x00\x00").unwrap();
        assert_eq!(
            default,
            InfoRequest {
                name: "",
                info_types: vec![]
            }
        );
    }

    #[test]
    fn info_request_malformed() {
        let cases: [(&[u8], &str); 6] = [
            (b"\x00\x00\x00\x00\x00", "shorter"),
            (b"\x00\x00\x00\x05disk\x00", "overruns"),
            (b"\xff\xff\xff\xff\x00\x00", "overruns"),
            (b"\x00\x00\x00\x04disk\x00\x01\x00\x01\xff", "does not match"),
            (b"\x00\x00\x00\x04disk\x00\x02\x00\x01", "does not match"),
            (b"\x00\x00\x00\x04di\x00k\x00\x00", "NUL"),
        ];
        for (payload, reason) in cases {
            let InvalidOption(message) = parse_info_request(payload).unwrap_err();
            assert!(message.contains(reason), "{payload:?}: {message}");
        }
        let InvalidOption(message) = parse_info_request(b"\x00\x00\x00\x01\xff\x00\x00").unwrap_err();
        assert!(message.contains("UTF-8"), "{message}");
    }

    #[test]
    fn info_request_name_limit() {
        let payload = |len: usize| {
            let mut p = len_u32(len).to_be_bytes().to_vec();
            p.resize(4 + len, b'a');
            p.extend_from_slice(b"\x00\x00");
            p
        };
        assert_eq!(parse_info_request(&payload(4096)).unwrap().name.len(), 4096);
        let InvalidOption(message) = parse_info_request(&payload(4097)).unwrap_err();
        assert!(message.contains("longer than 4096"), "{message}");
    }

    #[test]
    fn meta_request_good() {
        let payload = b"\x00\x00\x00\x00\x00\x00\x00\x02\x00\x00\x00\x0fbase:allocation\x00\x00\x00\x05qemu:";
        let request = parse_meta_request(payload).unwrap();
        assert_eq!(
            request,
            MetaRequest {
                export: "",
                queries: 2,
                base_allocation: 1,
                base_namespace: 0,
            }
        );
        let none = parse_meta_request(b"\x00\x00\x00\x01a\x00\x00\x00\x00").unwrap();
        assert_eq!(
            none,
            MetaRequest {
                export: "a",
                queries: 0,
                base_allocation: 0,
                base_namespace: 0,
            }
        );
        // Trailing bytes after the last query are ignored, as nbdkit does.
        let trailing = parse_meta_request(b"\x00\x00\x00\x00\x00\x00\x00\x00junk").unwrap();
        assert_eq!(trailing.queries, 0);
    }

    #[test]
    fn meta_request_malformed() {
        let cases: [(&[u8], &str); 6] = [
            (b"\x00\x00\x00\x00\x00\x00\x00", "shorter"),
            (b"\x00\x00\x00\x09disk\x00\x00\x00", "overruns"),
            (b"\x00\x00\x00\x00\x00\x00\x00\x02\x00\x00\x00\x01a", "overruns"),
            (b"\x00\x00\x00\x00\x00\x00\x00\x01\x00\x00\x00\x05base", "overruns"),
            (
                b"\x00\x00\x00\x00\x00\x00\x00\x01\x00\x00\x00\x02a\x00",
                "query contains a NUL",
            ),
            (b"\x00\x00\x00\x02a\x00\x00\x00\x00\x00", "export name contains a NUL"),
        ];
        for (payload, reason) in cases {
            let InvalidOption(message) = parse_meta_request(payload).unwrap_err();
            assert!(message.contains(reason), "{payload:?}: {message}");
        }
    }

    #[test]
    fn meta_request_hostile_count_does_not_preallocate() {
        let InvalidOption(message) = parse_meta_request(b"\x00\x00\x00\x00\xff\xff\xff\xff").unwrap_err();
        assert!(message.contains("overruns"));
    }

    #[test]
    fn export_name() {
        assert_eq!(parse_export_name(b""), Ok(""));
        assert_eq!(parse_export_name(b"disk"), Ok("disk"));
        assert!(matches!(
            parse_export_name(b"a\x00"),
            Err(ProtocolError::BadExportName(_))
        ));
        assert!(matches!(
            parse_export_name(b"\xc3"),
            Err(ProtocolError::BadExportName(_))
        ));
        assert!(parse_export_name(&[b'a'; 4097]).is_err());
    }

    #[test]
    fn option_reply_bytes() {
        let mut out = vec![];
        option_reply(&mut out, OPT_GO, REP_ACK, &[]);
        option_reply(&mut out, OPT_LIST, REP_SERVER, b"xy");
        assert_eq!(
            out,
            b"\x00\x03\xe8\x89\x04\x55\x65\xa9\x00\x00\x00\x07\x00\x00\x00\x01\x00\x00\x00\x00\
              \x00\x03\xe8\x89\x04\x55\x65\xa9\x00\x00\x00\x03\x00\x00\x00\x02\x00\x00\x00\x02xy"
        );
    }

    #[test]
    fn rep_server_payload_bytes() {
        assert_eq!(rep_server_payload("", None), b"\x00\x00\x00\x00");
        assert_eq!(
            rep_server_payload("disk", Some("a disk")),
            b"\x00\x00\x00\x04diska disk"
        );
    }

    #[test]
    fn info_payload_bytes() {
        assert_eq!(
            info_export_payload(0x10_0000, 0x0ded),
            *b"\x00\x00\x00\x00\x00\x00\x00\x10\x00\x00\x0d\xed"
        );
        assert_eq!(info_name_payload(""), b"\x00\x01");
        assert_eq!(info_name_payload("disk"), b"\x00\x01disk");
        assert_eq!(info_description_payload("d"), b"\x00\x02d");
        assert_eq!(
            info_block_size_payload(1, 4096, 0x0200_0000),
            *b"\x00\x03\x00\x00\x00\x01\x00\x00\x10\x00\x02\x00\x00\x00"
        );
    }

    #[test]
    fn meta_context_payload_bytes() {
        assert_eq!(
            meta_context_payload(1, "base:allocation"),
            b"\x00\x00\x00\x01base:allocation"
        );
    }

    #[test]
    fn export_name_reply_bytes() {
        let mut short = vec![];
        export_name_reply(&mut short, 0x10_0000, 0x0d6d, true);
        assert_eq!(short, b"\x00\x00\x00\x00\x00\x10\x00\x00\x0d\x6d");
        let mut padded = vec![0xaa];
        export_name_reply(&mut padded, 0x10_0000, 0x0d6d, false);
        assert_eq!(padded.len(), 1 + 134);
        assert_eq!(&padded[1..11], &short[..]);
        assert!(padded[11..].iter().all(|&b| b == 0));
    }

    /// A request with `queries`, counted as the parser counts them.
    fn request<'a>(queries: &[&str]) -> MetaRequest<'a> {
        MetaRequest {
            export: "",
            queries: queries.len(),
            base_allocation: queries.iter().filter(|&&q| q == BASE_ALLOCATION).count(),
            base_namespace: queries.iter().filter(|&&q| q == BASE_NAMESPACE_QUERY).count(),
        }
    }

    #[test]
    fn meta_query_matching() {
        let list = |queries: &[&str]| match_meta_queries(&request(queries), false);
        let set = |queries: &[&str]| match_meta_queries(&request(queries), true);
        let listed = |replies| MetaMatch {
            replies,
            context_id: 0,
            selects_base_allocation: false,
        };
        assert_eq!(list(&[]), listed(1));
        assert_eq!(list(&["base:"]), listed(1));
        assert_eq!(list(&["base:allocation"]), listed(1));
        assert_eq!(list(&["base:allocation", "base:"]), listed(2));
        assert_eq!(list(&["qemu:dirty-bitmap:x", "base:foo", "base"]), listed(0));
        assert_eq!(
            set(&[]),
            MetaMatch {
                replies: 0,
                context_id: 1,
                selects_base_allocation: false
            }
        );
        assert_eq!(set(&["base:"]).replies, 0);
        assert_eq!(
            set(&["x-foo:bar", "base:allocation"]),
            MetaMatch {
                replies: 1,
                context_id: 1,
                selects_base_allocation: true
            }
        );
    }
}
