//! The pure wire codec (`nbdbox::protocol`): no input may make it panic, and what it parses
//! must agree with an independent encoder (`nbdbox_fuzz::client`) and with the rules of the
//! NBD protocol as nbdkit applies them.
//!
//! The first byte of an input picks the property, the rest is its material: raw bytes for
//! the parsers, and numbers and strings read from them for the builders.

#![no_main]

use nbdbox::protocol::consts::*;
use nbdbox::protocol::handshake::{self, InvalidOption, MetaRequest};
use nbdbox::protocol::transmission::{self, Command, Framing, Request};
use nbdbox::protocol::validate::{validate, ExportState};
use nbdbox::protocol::{NbdError, ProtocolError};
use nbdbox_fuzz::client;

nbdbox_fuzz::fuzz_target!(|data| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    match which % 8 {
        0 => option_header(rest),
        1 => info_request(rest),
        2 => meta_request(rest),
        3 => export_name(rest),
        4 => request_header(rest),
        5 => transmission_replies(&mut Bytes(rest)),
        6 => option_replies(&mut Bytes(rest)),
        _ => block_status(&mut Bytes(rest)),
    }
});

/// Reads numbers and strings off the input; past its end, zeros.
struct Bytes<'a>(&'a [u8]);

impl<'a> Bytes<'a> {
    fn array<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0; N];
        let n = N.min(self.0.len());
        out[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        out
    }
    fn u8(&mut self) -> u8 {
        self.array::<1>()[0]
    }
    fn u16(&mut self) -> u16 {
        u16::from_be_bytes(self.array())
    }
    fn u32(&mut self) -> u32 {
        u32::from_be_bytes(self.array())
    }
    fn u64(&mut self) -> u64 {
        u64::from_be_bytes(self.array())
    }
    /// A string of up to 255 bytes (not necessarily a valid one for the wire).
    fn string(&mut self) -> String {
        let len = usize::from(self.u8()).min(self.0.len());
        let (taken, rest) = self.0.split_at(len);
        self.0 = rest;
        String::from_utf8_lossy(taken).into_owned()
    }
    fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.0)
    }
}

fn be_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap())
}

fn be_u64(bytes: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(bytes[at..at + 8].try_into().unwrap())
}

/// The wire rules for an export name or a meta-context query.
fn valid_string(bytes: &[u8]) -> bool {
    bytes.len() <= MAX_STRING && !bytes.contains(&0) && std::str::from_utf8(bytes).is_ok()
}

/// Option headers and client flags: accepted exactly when the magic and the length limit
/// hold, and then re-encoded byte for byte.
fn option_header(input: &[u8]) {
    let header: [u8; handshake::OPTION_HEADER_LEN] = Bytes(input).array();
    let magic = u64::from_be_bytes(header[..8].try_into().unwrap());
    let length = be_u32(&header, 12);
    match handshake::parse_option_header(&header) {
        Ok(parsed) => {
            // The client's header for an empty payload, with the parsed length in its place.
            let mut encoded = client::option(parsed.option, &[]);
            encoded[12..].copy_from_slice(&parsed.length.to_be_bytes());
            assert_eq!(encoded, header, "{parsed:?}");
        }
        Err(ProtocolError::BadOptionMagic(m)) => assert!(m == magic && magic != IHAVEOPT),
        Err(ProtocolError::OptionTooLong { length: l, .. }) => {
            assert!(magic == IHAVEOPT && l == length && length > MAX_OPTION_LEN)
        }
        Err(e) => panic!("unexpected error {e:?}"),
    }
    let client_flags = be_u32(&header, 0);
    let offered = u16::from_be_bytes([header[4], header[5]]);
    let fits = client_flags & !u32::from(offered) == 0;
    assert_eq!(handshake::check_client_flags(client_flags, offered).is_ok(), fits);
}

/// INFO/GO payloads: accepted exactly when well formed, and then re-encoded byte for byte.
fn info_request(payload: &[u8]) {
    let well_formed = payload.len() >= 6 && {
        let name_len = be_u32(payload, 0) as usize;
        name_len <= payload.len() - 6 && {
            let count = usize::from(u16::from_be_bytes([payload[4 + name_len], payload[5 + name_len]]));
            payload.len() == 6 + name_len + 2 * count && valid_string(&payload[4..4 + name_len])
        }
    };
    match handshake::parse_info_request(payload) {
        Ok(request) => {
            assert!(well_formed);
            assert_eq!(
                client::info_payload(request.name.as_bytes(), &request.info_types),
                payload
            );
        }
        Err(InvalidOption(why)) => assert!(!well_formed, "{why}"),
    }
}

/// Meta-context payloads: the parsed counts are consistent, survive a round trip through a
/// payload with the same queries, and give the replies nbdkit's rules call for.
fn meta_request(payload: &[u8]) {
    let Ok(request) = handshake::parse_meta_request(payload) else {
        return;
    };
    let name_len = be_u32(payload, 0) as usize;
    assert_eq!(request.export.as_bytes(), &payload[4..4 + name_len]);
    assert!(request.base_allocation + request.base_namespace <= request.queries);
    // Every query takes at least its 4-byte length.
    assert!(request.queries <= payload.len() / 4);
    let others = request.queries - request.base_allocation - request.base_namespace;
    let queries: Vec<&[u8]> = std::iter::repeat_n(BASE_ALLOCATION.as_bytes(), request.base_allocation)
        .chain(std::iter::repeat_n(
            BASE_NAMESPACE_QUERY.as_bytes(),
            request.base_namespace,
        ))
        .chain(std::iter::repeat_n(&b"qemu:dirty-bitmap:x"[..], others))
        .collect();
    let encoded = client::meta_payload(request.export.as_bytes(), &queries);
    assert_eq!(handshake::parse_meta_request(&encoded).as_ref(), Ok(&request));
    meta_match(&request);
}

fn meta_match(request: &MetaRequest<'_>) {
    let list = handshake::match_meta_queries(request, false);
    let set = handshake::match_meta_queries(request, true);
    assert_eq!(list.context_id, LIST_CONTEXT_ID);
    assert!(!list.selects_base_allocation);
    let listed = if request.queries == 0 {
        1
    } else {
        request.base_allocation + request.base_namespace
    };
    assert_eq!(list.replies, listed);
    assert_eq!(set.context_id, BASE_ALLOCATION_ID);
    assert_eq!(set.replies, request.base_allocation);
    assert_eq!(set.selects_base_allocation, request.base_allocation > 0);
}

/// EXPORT_NAME takes the whole payload as the name.
fn export_name(payload: &[u8]) {
    match handshake::parse_export_name(payload) {
        Ok(name) => {
            assert!(valid_string(payload));
            assert_eq!(name.as_bytes(), payload);
        }
        Err(ProtocolError::BadExportName(_)) => assert!(!valid_string(payload)),
        Err(e) => panic!("unexpected error {e:?}"),
    }
}

/// Request headers, compact or extended (the first byte picks the framing), round-trip;
/// validation, run against an export described by the rest of the input, never accepts what
/// the protocol forbids.
fn request_header(input: &[u8]) {
    let mut bytes = Bytes(input);
    let framing = FRAMINGS[usize::from(bytes.u8()) % FRAMINGS.len()];
    let (parsed, encodes_back) = if framing == Framing::Extended {
        let header: [u8; transmission::EXTENDED_REQUEST_HEADER_LEN] = bytes.array();
        let parsed = transmission::parse_extended_request(&header);
        let encodes_back = parsed
            .as_ref()
            .is_ok_and(|r| client::extended_request(r.flags, r.command.wire(), r.cookie, r.offset, r.count) == header);
        (parsed, encodes_back)
    } else {
        let header: [u8; transmission::REQUEST_HEADER_LEN] = bytes.array();
        let parsed = transmission::parse_request(&header);
        let encodes_back = parsed.as_ref().is_ok_and(|r| {
            let count = u32::try_from(r.count).expect("a compact header's length is 32 bits");
            client::request(r.flags, r.command.wire(), r.cookie, r.offset, count) == header
        });
        (parsed, encodes_back)
    };
    let request = match parsed {
        Ok(request) => request,
        Err(ProtocolError::BadRequestMagic { found, expected }) => {
            let wanted = match framing {
                Framing::Extended => EXTENDED_REQUEST_MAGIC,
                _ => REQUEST_MAGIC,
            };
            assert_eq!(expected, wanted);
            assert_ne!(found, expected);
            return;
        }
        Err(e) => panic!("unexpected error {e:?}"),
    };
    assert!(encodes_back, "{request:?} does not encode back to its header");
    assert_eq!(Command::from_wire(request.command.wire()), request.command);
    // A WRITE's data follows its header; with extended headers, so does any payload the
    // PAYLOAD_LEN flag announces.
    let announced = framing == Framing::Extended && request.flags & CMD_FLAG_PAYLOAD_LEN != 0;
    let has_payload = request.command == Command::Write || announced;
    let drainable = request.count <= u64::from(MAX_WRITE_DRAIN);
    match request.payload_len(framing) {
        Ok(len) if has_payload => assert!(len == request.count && drainable),
        Ok(len) => assert_eq!(len, 0),
        Err(ProtocolError::WriteTooLarge(len)) => assert!(has_payload && len == request.count && !drainable),
        Err(e) => panic!("unexpected error {e:?}"),
    }
    let export = ExportState {
        framing,
        base_allocation: bytes.u8() & 1 != 0,
        size: bytes.u64(),
        eflags: bytes.u16(),
    };
    validation(&request, &export);
}

fn validation(request: &Request, export: &ExportState) {
    use Command::*;
    let result = validate(request, export);
    let flag = |bit| request.flags & bit != 0;
    let advertised = |bit| export.eflags & bit != 0;
    let writes = matches!(request.command, Write | Trim | WriteZeroes);
    let structured = export.framing != Framing::Simple;
    let in_range = request.count > 0
        && request
            .offset
            .checked_add(request.count)
            .is_some_and(|end| end <= export.size);
    let max_data = u64::from(MAX_REQUEST_SIZE);
    match result {
        Ok(()) => {
            assert!(!(writes && advertised(FLAG_READ_ONLY)));
            match request.command {
                Flush => assert!(request.offset == 0 && request.count == 0),
                Disc | Other(_) => panic!("{:?} accepted", request.command),
                _ => assert!(in_range),
            }
            let known = CMD_FLAG_FUA | CMD_FLAG_NO_HOLE | CMD_FLAG_DF | CMD_FLAG_REQ_ONE | CMD_FLAG_FAST_ZERO;
            assert_eq!(request.flags & !(known | CMD_FLAG_PAYLOAD_LEN), 0);
            let extended = export.framing == Framing::Extended;
            assert!(!flag(CMD_FLAG_PAYLOAD_LEN) || (extended && request.command == Write));
            assert!(!flag(CMD_FLAG_FUA) || advertised(FLAG_SEND_FUA));
            assert!(!flag(CMD_FLAG_DF) || (request.command == Read && structured && advertised(FLAG_SEND_DF)));
            assert!(!flag(CMD_FLAG_REQ_ONE) || request.command == BlockStatus);
            assert!(!flag(CMD_FLAG_NO_HOLE) || request.command == WriteZeroes);
            assert!(!flag(CMD_FLAG_FAST_ZERO) || (request.command == WriteZeroes && advertised(FLAG_SEND_FAST_ZERO)));
            if matches!(request.command, Read | Write) {
                assert!(request.count <= max_data);
            }
            let needs = match request.command {
                Flush => FLAG_SEND_FLUSH,
                Trim => FLAG_SEND_TRIM,
                WriteZeroes => FLAG_SEND_WRITE_ZEROES,
                Cache => FLAG_SEND_CACHE,
                _ => 0,
            };
            assert!(needs == 0 || advertised(needs));
            if request.command == BlockStatus {
                assert!(structured && export.base_allocation);
            }
        }
        Err(NbdError::Perm) => assert!(writes && advertised(FLAG_READ_ONLY)),
        Err(NbdError::NoSpc) => assert!(matches!(request.command, Write | WriteZeroes) && !in_range),
        Err(NbdError::NoMem) => assert!(matches!(request.command, Read | Write) && request.count > max_data),
        Err(NbdError::Inval) => {}
        Err(e) => panic!("validation answered {e:?}"),
    }
}

const FRAMINGS: [Framing; 3] = [Framing::Simple, Framing::Structured, Framing::Extended];

const ERRORS: [NbdError; 8] = [
    NbdError::Perm,
    NbdError::Io,
    NbdError::NoMem,
    NbdError::Inval,
    NbdError::NoSpc,
    NbdError::Overflow,
    NbdError::NotSup,
    NbdError::Shutdown,
];

/// Simple replies, and structured and extended chunks, decode to what they were built from;
/// an ERROR chunk's message is the longest prefix of the one given that is an NBD string.
fn transmission_replies(bytes: &mut Bytes<'_>) {
    let cookie = bytes.u64();
    let error = ERRORS[usize::from(bytes.u8()) % ERRORS.len()];
    let request_flags = bytes.u16();
    let sent = error.for_request_flags(request_flags);
    match error {
        NbdError::NotSup if request_flags & CMD_FLAG_FAST_ZERO == 0 => assert_eq!(sent, NbdError::Inval),
        NbdError::Overflow if request_flags & CMD_FLAG_DF == 0 => assert_eq!(sent, NbdError::Inval),
        _ => assert_eq!(sent, error),
    }

    let simple = transmission::simple_reply(cookie, Some(error));
    assert_eq!(be_u32(&simple, 0), SIMPLE_REPLY_MAGIC);
    assert_eq!(be_u32(&simple, 4), error.wire());
    assert_eq!(simple[8..], cookie.to_be_bytes());
    assert_eq!(be_u32(&transmission::simple_reply(cookie, None), 4), 0);

    let (flags, chunk_type, length) = (bytes.u16(), bytes.u16(), bytes.u32());
    let header = transmission::chunk_header(cookie, flags, chunk_type, length);
    assert_chunk(&header, cookie, flags, chunk_type, u64::from(length), None);
    let (offset, length) = (bytes.u64(), bytes.u64());
    let header = transmission::extended_chunk_header(cookie, flags, chunk_type, offset, length);
    assert_chunk(&header, cookie, flags, chunk_type, length, Some(offset));
    let done = transmission::extended_done(cookie, offset);
    assert_chunk(&done, cookie, REPLY_FLAG_DONE, REPLY_TYPE_NONE, 0, Some(offset));

    let data_len = bytes.u32() % (MAX_REQUEST_SIZE + 1);
    let length = 8 + u64::from(data_len);
    let read = transmission::read_chunk_header(cookie, offset, data_len);
    assert_chunk(&read, cookie, REPLY_FLAG_DONE, REPLY_TYPE_OFFSET_DATA, length, None);
    assert_eq!(read[20..], offset.to_be_bytes());
    let read = transmission::extended_read_header(cookie, offset, u64::from(data_len));
    assert_chunk(
        &read,
        cookie,
        REPLY_FLAG_DONE,
        REPLY_TYPE_OFFSET_DATA,
        length,
        Some(offset),
    );
    assert_eq!(read[32..], offset.to_be_bytes());

    let framing = FRAMINGS[usize::from(bytes.u8()) % FRAMINGS.len()];
    let message = String::from_utf8_lossy(bytes.rest()).into_owned();
    let mut chunk = vec![];
    transmission::error_chunk(&mut chunk, framing, cookie, offset, error, &message);
    let (header_len, chunk_offset) = match framing {
        Framing::Extended => (transmission::EXTENDED_CHUNK_HEADER_LEN, Some(offset)),
        _ => (transmission::CHUNK_HEADER_LEN, None),
    };
    let length = (chunk.len() - header_len) as u64;
    assert_chunk(&chunk, cookie, REPLY_FLAG_DONE, REPLY_TYPE_ERROR, length, chunk_offset);
    let mut payload = Bytes(&chunk[header_len..]);
    assert_eq!(payload.u32(), error.wire());
    let announced = usize::from(payload.u16());
    let sent_message = payload.rest();
    assert_eq!(announced, sent_message.len());
    // The longest prefix that is an NBD string: up to a NUL, at most 4096 bytes, whole
    // characters (of at most 4 bytes).
    let before_nul = message.split('\0').next().unwrap_or_default();
    assert!(before_nul.as_bytes().starts_with(sent_message));
    assert!(std::str::from_utf8(sent_message).is_ok());
    assert!(sent_message.len() <= MAX_STRING);
    assert!(sent_message.len() == before_nul.len() || sent_message.len() + 4 > MAX_STRING);
}

/// A chunk header: magic · flags · type · cookie · length (32 bits), or with extended
/// headers magic · flags · type · cookie · offset · length (64 bits).
fn assert_chunk(chunk: &[u8], cookie: u64, flags: u16, chunk_type: u16, length: u64, offset: Option<u64>) {
    assert_eq!(chunk[4..6], flags.to_be_bytes());
    assert_eq!(chunk[6..8], chunk_type.to_be_bytes());
    assert_eq!(be_u64(chunk, 8), cookie);
    match offset {
        None => {
            assert_eq!(be_u32(chunk, 0), STRUCTURED_REPLY_MAGIC);
            assert_eq!(u64::from(be_u32(chunk, 16)), length);
        }
        Some(offset) => {
            assert_eq!(be_u32(chunk, 0), EXTENDED_REPLY_MAGIC);
            assert_eq!(be_u64(chunk, 16), offset);
            assert_eq!(be_u64(chunk, 24), length);
        }
    }
}

/// Option replies and their payloads decode to what they were built from.
fn option_replies(bytes: &mut Bytes<'_>) {
    let (option, reply_type) = (bytes.u32(), bytes.u32());
    let (size, eflags) = (bytes.u64(), bytes.u16());
    let name = bytes.string();
    let description = bytes.string();
    let payload = bytes.rest();

    let mut out = vec![0xaa];
    handshake::option_reply(&mut out, option, reply_type, payload);
    assert_eq!(out[0], 0xaa);
    assert_eq!(out[1..9], REP_MAGIC.to_be_bytes());
    assert_eq!(be_u32(&out, 9), option);
    assert_eq!(be_u32(&out, 13), reply_type);
    assert_eq!(be_u32(&out, 17) as usize, payload.len());
    assert_eq!(&out[21..], payload);

    let server = handshake::rep_server_payload(&name, Some(&description));
    assert_eq!(be_u32(&server, 0) as usize, name.len());
    assert_eq!(&server[4..], [name.as_bytes(), description.as_bytes()].concat());
    assert_eq!(handshake::rep_server_payload(&name, None).len(), 4 + name.len());

    let export = handshake::info_export_payload(size, eflags);
    assert_eq!(export[..2], INFO_EXPORT.to_be_bytes());
    assert_eq!(export[2..10], size.to_be_bytes());
    assert_eq!(export[10..], eflags.to_be_bytes());
    for (info, built) in [
        (INFO_NAME, handshake::info_name_payload(&name)),
        (INFO_DESCRIPTION, handshake::info_description_payload(&description)),
    ] {
        assert_eq!(built[..2], info.to_be_bytes());
        assert_eq!(
            &built[2..],
            if info == INFO_NAME { &name } else { &description }.as_bytes()
        );
    }
    let (min, preferred, max) = (size as u32, (size >> 32) as u32, option);
    let block = handshake::info_block_size_payload(min, preferred, max);
    assert_eq!(block[..2], INFO_BLOCK_SIZE.to_be_bytes());
    assert_eq!(
        [be_u32(&block, 2), be_u32(&block, 6), be_u32(&block, 10)],
        [min, preferred, max]
    );

    let context = handshake::meta_context_payload(reply_type, &name);
    assert_eq!(be_u32(&context, 0), reply_type);
    assert_eq!(&context[4..], name.as_bytes());

    for no_zeroes in [false, true] {
        let mut reply = vec![];
        handshake::export_name_reply(&mut reply, size, eflags, no_zeroes);
        assert_eq!(reply[..8], size.to_be_bytes());
        assert_eq!(reply[8..10], eflags.to_be_bytes());
        let padding = if no_zeroes { 0 } else { EXPORT_NAME_PADDING };
        assert_eq!(reply.len(), 10 + padding);
        assert!(reply[10..].iter().all(|&b| b == 0));
    }

    let greeting = handshake::greeting(eflags);
    assert_eq!(greeting[..8], NBDMAGIC.to_be_bytes());
    assert_eq!(greeting[8..16], IHAVEOPT.to_be_bytes());
    assert_eq!(greeting[16..], eflags.to_be_bytes());
    let old = handshake::oldstyle_greeting(size, eflags);
    assert_eq!(old[..8], NBDMAGIC.to_be_bytes());
    assert_eq!(old[8..16], OLD_VERSION.to_be_bytes());
    assert_eq!(old[16..24], size.to_be_bytes());
    assert_eq!(old[24..28], u32::from(eflags).to_be_bytes());
    assert!(old[28..].iter().all(|&b| b == 0));
}

/// Block-status descriptors are a prefix of the runs (split at 2^32−1 unless the headers
/// are extended) that stops at the first descriptor ending past the request, with only the
/// allocation bits; the chunk carrying them decodes to them. The runs describe the export
/// from the request's offset on, so together they are shorter than 2^64 (the layers' extents
/// are checked against the export's size before they get here).
fn block_status(bytes: &mut Bytes<'_>) {
    let framing = FRAMINGS[usize::from(bytes.u8()) % FRAMINGS.len()];
    let extended = framing == Framing::Extended;
    let count = if extended { bytes.u64() } else { u64::from(bytes.u32()) };
    let req_one = bytes.u8() & 1 != 0;
    let (cookie, offset, context_id) = (bytes.u64(), bytes.u64(), bytes.u32());
    let mut runs = Vec::new();
    let mut total = 0u64;
    while !bytes.0.is_empty() && runs.len() < 64 {
        let (len, status) = (bytes.u64(), bytes.u32());
        let Some(sum) = total.checked_add(len) else {
            break;
        };
        total = sum;
        runs.push((len, status));
    }
    let descriptors = transmission::block_status_descriptors(count, req_one, &runs, framing);

    // The runs as descriptors could at most be, split into pieces a descriptor can hold.
    let longest = if extended { u64::MAX } else { u64::from(u32::MAX) };
    let mut pieces = Vec::new();
    for &(mut len, status) in &runs {
        while len > 0 && pieces.len() <= descriptors.len() {
            let piece = len.min(longest);
            pieces.push((piece, status & (STATE_HOLE | STATE_ZERO)));
            len -= piece;
        }
    }
    if req_one {
        assert!(descriptors.len() <= 1);
        if let (Some(&(len, status)), Some(&(piece, piece_status))) = (descriptors.first(), pieces.first()) {
            assert_eq!((len, status), (piece.min(count), piece_status));
        } else {
            assert!(descriptors.is_empty() && pieces.is_empty());
        }
    } else {
        assert_eq!(descriptors[..], pieces[..descriptors.len()]);
        // Stops right after the first descriptor that ends past the request.
        let mut end = 0u64;
        for (i, &(len, _)) in descriptors.iter().enumerate() {
            assert!(end <= count, "descriptor {i} starts past the request");
            end += len;
        }
        assert!(end > count || descriptors.len() == pieces.len());
    }

    let mut out = vec![];
    if extended {
        transmission::block_status_ext_chunk(&mut out, cookie, offset, context_id, &descriptors);
        let length = 8 + 16 * descriptors.len() as u64;
        assert_chunk(
            &out,
            cookie,
            REPLY_FLAG_DONE,
            REPLY_TYPE_BLOCK_STATUS_EXT,
            length,
            Some(offset),
        );
        assert_eq!(be_u32(&out, 32), context_id);
        assert_eq!(be_u32(&out, 36) as usize, descriptors.len());
        for (i, &(len, status)) in descriptors.iter().enumerate() {
            let decoded = [be_u64(&out, 40 + 16 * i), be_u64(&out, 48 + 16 * i)];
            assert_eq!(decoded, [len, u64::from(status)]);
        }
        assert_eq!(out.len() as u64, 32 + length);
    } else {
        transmission::block_status_chunk(&mut out, cookie, context_id, &descriptors);
        let length = 4 + 8 * descriptors.len() as u64;
        assert_chunk(&out, cookie, REPLY_FLAG_DONE, REPLY_TYPE_BLOCK_STATUS, length, None);
        assert_eq!(be_u32(&out, 20), context_id);
        for (i, &(len, status)) in descriptors.iter().enumerate() {
            let decoded = [be_u32(&out, 24 + 8 * i), be_u32(&out, 28 + 8 * i)];
            assert_eq!(decoded.map(u64::from), [len, u64::from(status)]);
        }
        assert_eq!(out.len() as u64, 20 + length);
    }
}
