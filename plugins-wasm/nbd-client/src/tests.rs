//! The client against scripted servers: what it sends, byte for byte, and what it makes of
//! each answer (messages laid out as in the spec's tables).

use super::*;
use std::cell::RefCell;
use std::rc::Rc;

/// A server whose every byte is given up front; what the client sends is recorded.
struct Script {
    incoming: Vec<u8>,
    at: usize,
    sent: Rc<RefCell<Vec<u8>>>,
}

impl Script {
    fn new(parts: &[&[u8]]) -> (Script, Rc<RefCell<Vec<u8>>>) {
        let sent = Rc::new(RefCell::new(Vec::new()));
        let script = Script {
            incoming: parts.concat(),
            at: 0,
            sent: sent.clone(),
        };
        (script, sent)
    }

    fn take(&mut self, count: u32) -> Result<&[u8], String> {
        let end = self.at + count as usize;
        if end > self.incoming.len() {
            return Err("the server closed the connection".into());
        }
        let bytes = &self.incoming[self.at..end];
        self.at = end;
        Ok(bytes)
    }
}

impl Transport for Script {
    type Error = String;
    type ReadDst = RefCell<Vec<u8>>;
    type WriteSrc = [u8];

    fn send(&mut self, data: &[u8]) -> Result<(), String> {
        self.sent.borrow_mut().extend_from_slice(data);
        Ok(())
    }

    fn send_from(&mut self, src: &[u8], at: u32, count: u32) -> Result<(), String> {
        self.send(&src[at as usize..(at + count) as usize])
    }

    fn receive(&mut self, count: u32) -> Result<Vec<u8>, String> {
        self.take(count).map(<[u8]>::to_vec)
    }

    fn receive_into(&mut self, dst: &RefCell<Vec<u8>>, at: u32, count: u32) -> Result<(), String> {
        let bytes = self.take(count)?.to_vec();
        dst.borrow_mut()[at as usize..(at + count) as usize].copy_from_slice(&bytes);
        Ok(())
    }

    fn zero(&mut self, dst: &RefCell<Vec<u8>>, at: u32, count: u32) {
        dst.borrow_mut()[at as usize..(at + count) as usize].fill(0);
    }
}

/// NBDMAGIC, IHAVEOPT, handshake flags FIXED_NEWSTYLE | NO_ZEROES.
const GREETING: &[u8] = b"NBDMAGICIHAVEOPT\x00\x03";
/// The reply magic every option reply starts with.
const REPLY_MAGIC: &[u8] = b"\x00\x03\xe8\x89\x04\x55\x65\xa9";

fn option_reply(option: u32, reply: u32, payload: &[u8]) -> Vec<u8> {
    [
        REPLY_MAGIC,
        &option.to_be_bytes(),
        &reply.to_be_bytes(),
        &(payload.len() as u32).to_be_bytes(),
        payload,
    ]
    .concat()
}

fn simple_reply(error: u32, cookie: u64) -> Vec<u8> {
    [
        &SIMPLE_REPLY_MAGIC.to_be_bytes()[..],
        &error.to_be_bytes(),
        &cookie.to_be_bytes(),
    ]
    .concat()
}

fn chunk(flags: u16, kind: u16, cookie: u64, payload: &[u8]) -> Vec<u8> {
    [
        &STRUCTURED_REPLY_MAGIC.to_be_bytes()[..],
        &flags.to_be_bytes(),
        &kind.to_be_bytes(),
        &cookie.to_be_bytes(),
        &(payload.len() as u32).to_be_bytes(),
        payload,
    ]
    .concat()
}

/// The whole handshake of a server that agrees to everything: a 1 MiB export with flags
/// HAS_FLAGS | SEND_FLUSH | SEND_FUA | SEND_TRIM | SEND_WRITE_ZEROES | CAN_MULTI_CONN.
fn agreeable_handshake() -> Vec<u8> {
    [
        GREETING.to_vec(),
        option_reply(OPT_STRUCTURED_REPLY, REP_ACK, &[]),
        option_reply(
            OPT_SET_META_CONTEXT,
            REP_META_CONTEXT,
            b"\x00\x00\x00\x01base:allocation",
        ),
        option_reply(OPT_SET_META_CONTEXT, REP_ACK, &[]),
        // NBD_INFO_EXPORT: type 0, size 1 MiB, flags 0x016d.
        option_reply(OPT_GO, REP_INFO, b"\x00\x00\x00\x00\x00\x00\x00\x10\x00\x00\x01\x6d"),
        // NBD_INFO_BLOCK_SIZE: type 3, 1 / 4096 / 32 MiB.
        option_reply(
            OPT_GO,
            REP_INFO,
            b"\x00\x03\x00\x00\x00\x01\x00\x00\x10\x00\x02\x00\x00\x00",
        ),
        option_reply(OPT_GO, REP_INFO, b"\x00\x02a test disk"),
        option_reply(OPT_GO, REP_ACK, &[]),
    ]
    .concat()
}

/// A client past the agreeable handshake, then `replies`; and what it sent after the
/// handshake.
fn connected(replies: &[&[u8]]) -> (Client<Script>, Rc<RefCell<Vec<u8>>>) {
    let handshake = agreeable_handshake();
    let mut parts: Vec<&[u8]> = vec![&handshake];
    parts.extend_from_slice(replies);
    let (script, sent) = Script::new(&parts);
    let client = Client::connect(script, "").expect("handshake");
    sent.borrow_mut().clear();
    (client, sent)
}

#[test]
fn the_handshake_negotiates_everything_and_sends_what_the_spec_says() {
    let (script, sent) = Script::new(&[&agreeable_handshake()]);
    let client = Client::connect(script, "disk").unwrap();
    let expected: Vec<u8> = [
        // Client flags: FIXED_NEWSTYLE | NO_ZEROES.
        &b"\x00\x00\x00\x03"[..],
        b"IHAVEOPT\x00\x00\x00\x08\x00\x00\x00\x00",
        b"IHAVEOPT\x00\x00\x00\x0a\x00\x00\x00\x1f\
          \x00\x00\x00\x04disk\x00\x00\x00\x01\x00\x00\x00\x0fbase:allocation",
        b"IHAVEOPT\x00\x00\x00\x07\x00\x00\x00\x0e\
          \x00\x00\x00\x04disk\x00\x02\x00\x02\x00\x03",
    ]
    .concat();
    assert_eq!(*sent.borrow(), expected);
    let export = client.export();
    assert_eq!(export.size, 1 << 20);
    assert_eq!(export.flags, 0x016d);
    assert!(export.has(TF_SEND_TRIM) && export.has(TF_CAN_MULTI_CONN) && !export.has(TF_READ_ONLY));
    assert_eq!(
        export.block_size,
        Some(BlockSize {
            minimum: 1,
            preferred: 4096,
            maximum: 32 << 20
        })
    );
    assert_eq!(export.description.as_deref(), Some("a test disk"));
    assert!(export.structured_replies);
    assert_eq!(export.base_allocation, Some(1));
}

#[test]
fn a_server_without_structured_replies_gets_no_meta_context_request() {
    let replies = [
        GREETING.to_vec(),
        option_reply(OPT_STRUCTURED_REPLY, REP_FLAG_ERROR | 1, &[]),
        option_reply(OPT_GO, REP_INFO, b"\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\x00\x03"),
        option_reply(OPT_GO, REP_ACK, &[]),
    ]
    .concat();
    let (script, sent) = Script::new(&[&replies]);
    let client = Client::connect(script, "").unwrap();
    // Client flags, NBD_OPT_STRUCTURED_REPLY, then straight to NBD_OPT_GO.
    let expected: Vec<u8> = [
        &b"\x00\x00\x00\x03IHAVEOPT\x00\x00\x00\x08\x00\x00\x00\x00"[..],
        b"IHAVEOPT\x00\x00\x00\x07\x00\x00\x00\x0a\x00\x00\x00\x00\x00\x02\x00\x02\x00\x03",
    ]
    .concat();
    assert_eq!(*sent.borrow(), expected);
    let export = client.export();
    assert_eq!((export.size, export.flags), (0x200, 3));
    assert!(!export.structured_replies && export.base_allocation.is_none() && export.has(TF_READ_ONLY));
}

#[test]
fn refusals_name_the_export_and_the_reason() {
    let replies = [
        GREETING.to_vec(),
        option_reply(OPT_STRUCTURED_REPLY, REP_ACK, &[]),
        option_reply(OPT_SET_META_CONTEXT, REP_ACK, &[]),
        option_reply(OPT_GO, REP_FLAG_ERROR | 6, b"not here"),
    ]
    .concat();
    let (script, _) = Script::new(&[&replies]);
    match Client::connect(script, "nope") {
        Err(Error::Refused(why)) => {
            assert!(
                why.contains("'nope'") && why.contains("no such export") && why.contains("not here"),
                "{why}"
            )
        }
        other => panic!("{:?}", other.map(|c| c.export().clone())),
    }
    let (script, _) = Script::new(&[b"NBDMAGIC\x00\x00\x42\x02\x81\x86\x12\x53\x00\x00"]);
    assert!(matches!(Client::connect(script, ""), Err(Error::Refused(why)) if why.contains("oldstyle")));
    let (script, _) = Script::new(&[b"HTTP/1.1 400 Bad Request\r\n"]);
    assert!(matches!(Client::connect(script, ""), Err(Error::Protocol(_))));
}

#[test]
fn a_structured_read_places_data_and_holes() {
    let (mut client, sent) = connected(&[
        // Hole at 4100 (offset 0x1004) of 4 bytes, then data at 4096 (0x1000) of 4 bytes.
        &chunk(
            0,
            CHUNK_OFFSET_HOLE,
            1,
            b"\x00\x00\x00\x00\x00\x00\x10\x04\x00\x00\x00\x04",
        ),
        &chunk(
            REPLY_FLAG_DONE,
            CHUNK_OFFSET_DATA,
            1,
            b"\x00\x00\x00\x00\x00\x00\x10\x00abcd",
        ),
    ]);
    let dst = RefCell::new(vec![0xff; 8]);
    client.read(&dst, 8, 4096).unwrap();
    assert_eq!(*dst.borrow(), b"abcd\0\0\0\0");
    assert_eq!(
        *sent.borrow(),
        b"\x25\x60\x95\x13\x00\x00\x00\x00\
          \x00\x00\x00\x00\x00\x00\x00\x01\
          \x00\x00\x00\x00\x00\x00\x10\x00\
          \x00\x00\x00\x08"
    );
}

#[test]
fn an_error_chunk_fails_the_read_and_the_connection_goes_on() {
    // NBD_REPLY_TYPE_ERROR: error EIO (5), a 4-byte message.
    let (mut client, _) = connected(&[
        &chunk(REPLY_FLAG_DONE, CHUNK_ERROR, 1, b"\x00\x00\x00\x05\x00\x04oops"),
        &simple_reply(0, 2),
    ]);
    let dst = RefCell::new(vec![0; 512]);
    assert_eq!(
        client.read(&dst, 512, 0),
        Err(Error::Server {
            errno: Errno::Io,
            message: Some("oops".into())
        })
    );
    client.flush().unwrap();
}

#[test]
fn a_read_reply_that_leaves_a_gap_breaks_the_connection() {
    let (mut client, sent) = connected(&[&chunk(
        REPLY_FLAG_DONE,
        CHUNK_OFFSET_DATA,
        1,
        b"\x00\x00\x00\x00\x00\x00\x00\x00ab",
    )]);
    let dst = RefCell::new(vec![0; 4]);
    let first = client.read(&dst, 4, 0);
    assert!(
        matches!(&first, Err(Error::Protocol(why)) if why.contains("2 of 4")),
        "{first:?}"
    );
    sent.borrow_mut().clear();
    // Later requests fail the same way without touching the stream.
    assert_eq!(client.flush(), first);
    assert!(sent.borrow().is_empty());
}

#[test]
fn chunks_outside_the_request_or_for_another_cookie_are_refused() {
    let (mut client, _) = connected(&[&chunk(
        REPLY_FLAG_DONE,
        CHUNK_OFFSET_DATA,
        1,
        b"\x00\x00\x00\x00\x00\x00\x00\x07ab",
    )]);
    let dst = RefCell::new(vec![0; 4]);
    assert!(matches!(client.read(&dst, 4, 4), Err(Error::Protocol(why)) if why.contains("outside")));
    let (mut client, _) = connected(&[&simple_reply(0, 9)]);
    assert!(matches!(client.flush(), Err(Error::Protocol(why)) if why.contains("cookie")));
}

#[test]
fn a_write_sends_the_payload_after_its_header() {
    let (mut client, sent) = connected(&[&simple_reply(0, 1), &simple_reply(28, 2)]);
    client.write(b"hello", 5, 512, CMD_FLAG_FUA).unwrap();
    assert_eq!(
        *sent.borrow(),
        b"\x25\x60\x95\x13\x00\x01\x00\x01\
          \x00\x00\x00\x00\x00\x00\x00\x01\
          \x00\x00\x00\x00\x00\x00\x02\x00\
          \x00\x00\x00\x05hello"
    );
    // ENOSPC from the server, as an errno.
    assert_eq!(
        client.write_zeroes(5, 512, CMD_FLAG_NO_HOLE),
        Err(Error::Server {
            errno: Errno::NoSpc,
            message: None
        })
    );
}

#[test]
fn block_status_gives_the_extents_of_the_negotiated_context() {
    // Context 1: 4096 bytes allocated, then 61440 bytes hole+zero.
    let (mut client, sent) = connected(&[&chunk(
        REPLY_FLAG_DONE,
        CHUNK_BLOCK_STATUS,
        1,
        b"\x00\x00\x00\x01\x00\x00\x10\x00\x00\x00\x00\x00\x00\x00\xf0\x00\x00\x00\x00\x03",
    )]);
    let extents = client.block_status(65536, 0, 0).unwrap();
    assert_eq!(
        extents,
        vec![
            Extent { length: 4096, flags: 0 },
            Extent {
                length: 61440,
                flags: STATE_HOLE | STATE_ZERO
            }
        ]
    );
    assert_eq!(&sent.borrow()[6..8], b"\x00\x07");
    let (mut client, _) = connected(&[&chunk(
        REPLY_FLAG_DONE,
        CHUNK_BLOCK_STATUS,
        1,
        b"\x00\x00\x00\x02\x00\x00\x10\x00\x00\x00\x00\x00",
    )]);
    assert!(matches!(client.block_status(4096, 0, 0), Err(Error::Protocol(_))));
}

#[test]
fn a_simple_read_reply_carries_the_data() {
    let handshake = [
        GREETING.to_vec(),
        option_reply(OPT_STRUCTURED_REPLY, REP_FLAG_ERROR | 1, &[]),
        option_reply(OPT_GO, REP_INFO, b"\x00\x00\x00\x00\x00\x00\x00\x10\x00\x00\x00\x01"),
        option_reply(OPT_GO, REP_ACK, &[]),
        simple_reply(0, 1),
        b"data".to_vec(),
        // A structured reply when none was negotiated is a protocol error.
        chunk(REPLY_FLAG_DONE, CHUNK_NONE, 2, &[]),
    ]
    .concat();
    let (script, _) = Script::new(&[&handshake]);
    let mut client = Client::connect(script, "").unwrap();
    let dst = RefCell::new(vec![0; 4]);
    client.read(&dst, 4, 0).unwrap();
    assert_eq!(*dst.borrow(), b"data");
    assert!(matches!(client.flush(), Err(Error::Protocol(_))));
}

#[test]
fn a_server_that_hangs_up_fails_every_later_request() {
    let (mut client, _) = connected(&[]);
    let failed = client.flush();
    assert_eq!(failed, Err(Error::Transport("the server closed the connection".into())));
    assert_eq!(client.trim(1, 0, 0), failed);
}

#[test]
fn unknown_errors_read_as_einval() {
    assert_eq!(Errno::from_wire(EOVERFLOW), Errno::Overflow);
    assert_eq!(Errno::from_wire(ESHUTDOWN), Errno::Shutdown);
    assert_eq!(Errno::from_wire(2), Errno::Inval);
}

#[test]
fn listing_reads_every_server_reply_and_aborts() {
    let replies = [
        GREETING.to_vec(),
        option_reply(OPT_LIST, REP_SERVER, b"\x00\x00\x00\x01a"),
        option_reply(OPT_LIST, REP_SERVER, b"\x00\x00\x00\x01bthe b disk"),
        option_reply(OPT_LIST, REP_ACK, &[]),
    ]
    .concat();
    let (script, sent) = Script::new(&[&replies]);
    let listed = list_exports(script).unwrap();
    assert_eq!(
        listed,
        vec![
            Listed {
                name: "a".into(),
                description: None
            },
            Listed {
                name: "b".into(),
                description: Some("the b disk".into())
            }
        ]
    );
    assert!(sent.borrow().ends_with(b"IHAVEOPT\x00\x00\x00\x02\x00\x00\x00\x00"));
}
