//! What a session's replies must look like, judged from what the client sent: a client's
//! reading of the server's byte stream (the NBD protocol, doc/proto.md in the NBD project).
//!
//! The server may hang up whenever the client broke the protocol, and a fuzzed client does
//! all the time, so an early end of the replies is accepted wherever the server could have
//! had a reason. What is checked: the greeting; every option reply names the option asked
//! and the client reads each option's replies to its final one; every transmission reply is
//! well formed and answers a request the client sent, once; a READ's data is as long as the
//! request; and every request the server could have read whole is answered before it hangs
//! up.

use nbdbox_fuzz::client::*;

const NBDMAGIC: u64 = 0x4e42_444d_4147_4943;
const REP_MAGIC: u64 = 0x0003_e889_0455_65a9;
const REP_ACK: u32 = 1;
/// Error replies have the top bit set.
const REP_ERR: u32 = 1 << 31;
const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;
const STRUCTURED_REPLY_MAGIC: u32 = 0x668e_33ef;
const EXTENDED_REPLY_MAGIC: u32 = 0x6e8a_278c;
const REPLY_FLAG_DONE: u16 = 1;
const REPLY_TYPE_OFFSET_DATA: u16 = 1;
/// The largest WRITE payload the server reads (and discards) rather than hang up on.
const MAX_WRITE_DRAIN: u32 = 128 << 20;
/// The handshake flags the server offers with default options.
const OFFERED: u16 = 3;
/// The export name reply's padding, left out with NO_ZEROES.
const EXPORT_NAME_PADDING: usize = 124;

/// Bytes read in order; `None` once they run out.
struct Stream<'a>(&'a [u8]);

impl<'a> Stream<'a> {
    fn take(&mut self, len: usize) -> Option<&'a [u8]> {
        let (taken, rest) = self.0.split_at_checked(len)?;
        self.0 = rest;
        Some(taken)
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes(b.try_into().unwrap()))
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4).map(|b| u32::from_be_bytes(b.try_into().unwrap()))
    }
    fn u64(&mut self) -> Option<u64> {
        self.take(8).map(|b| u64::from_be_bytes(b.try_into().unwrap()))
    }
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// How requests and replies are framed, as the client negotiated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Framing {
    Simple,
    /// OPT_STRUCTURED_REPLY: READ and BLOCK_STATUS may be answered in chunks.
    Structured,
    /// OPT_EXTENDED_HEADERS: 32-byte requests, and every reply a 32-byte-header chunk.
    Extended,
}

/// A request the client sent.
struct Sent {
    command: u16,
    cookie: u64,
    offset: u64,
    count: u64,
    answered: bool,
    /// The server read it whole, so it owes an answer before it hangs up.
    must_answer: bool,
}

/// Panics with what is wrong if `replies` cannot be the server's answer to `input`.
pub fn check(input: &[u8], replies: &[u8]) {
    let mut client = Stream(input);
    let mut server = Stream(replies);
    let greeting = server
        .take(18)
        .unwrap_or_else(|| panic!("no greeting: the server sent {:02x?}", server.0));
    assert_eq!(greeting[..8], NBDMAGIC.to_be_bytes(), "greeting magic");
    assert_eq!(greeting[8..16], IHAVEOPT.to_be_bytes(), "greeting: newstyle");
    assert_eq!(greeting[16..], OFFERED.to_be_bytes(), "greeting flags");
    let Some(flags) = client.u32() else {
        return assert_ended(&server, "the client sent no flags");
    };
    if flags & !u32::from(OFFERED) != 0 {
        return assert_ended(&server, "the client flags are unknown");
    }
    let Some(framing) = handshake(&mut client, &mut server, flags & CLIENT_NO_ZEROES != 0) else {
        return;
    };
    transmission(&mut client, &mut server, framing);
}

fn assert_ended(server: &Stream<'_>, why: &str) {
    assert!(
        server.is_empty(),
        "{why}, yet the server sent {} more bytes",
        server.0.len()
    );
}

/// Option haggling; `Some(framing)` once the client is in transmission, `None` if the
/// session ended before.
fn handshake(client: &mut Stream<'_>, server: &mut Stream<'_>, no_zeroes: bool) -> Option<Framing> {
    let mut framing = Framing::Simple;
    loop {
        // An option the server could not read whole ends the session, as does anything the
        // server found fatal; either way the replies stop here.
        let magic = client.u64()?;
        let option = client.u32()?;
        let length = client.u32()?;
        if magic != IHAVEOPT {
            return None;
        }
        let payload = client.take(length as usize)?;
        if server.is_empty() {
            return None;
        }
        if option == OPT_EXPORT_NAME {
            // It cannot be refused, so a client with extended headers is let go instead.
            if framing == Framing::Extended {
                assert_ended(server, "EXPORT_NAME after EXTENDED_HEADERS");
                return None;
            }
            let reply_len = 10 + if no_zeroes { 0 } else { EXPORT_NAME_PADDING };
            server.take(reply_len).expect("a whole EXPORT_NAME reply");
            return Some(framing);
        }
        let last = loop {
            let (reply_magic, reply_option, reply_type, reply_len) = (
                server.u64().expect("an option reply header"),
                server.u32().expect("an option reply header"),
                server.u32().expect("an option reply header"),
                server.u32().expect("an option reply header"),
            );
            assert_eq!(reply_magic, REP_MAGIC, "option reply magic");
            assert_eq!(reply_option, option, "the option reply names another option");
            server.take(reply_len as usize).expect("the option reply's payload");
            if reply_type == REP_ACK || reply_type & REP_ERR != 0 {
                break reply_type;
            }
        };
        match (option, last) {
            // An ABORT the server refused (from a client without fixed newstyle, which may
            // send nothing but EXPORT_NAME) ends nothing, as in nbdkit.
            (OPT_ABORT, REP_ACK) => {
                assert_ended(server, "the client aborted");
                return None;
            }
            (OPT_GO, REP_ACK) => return Some(framing),
            (OPT_STRUCTURED_REPLY, REP_ACK) => {
                assert!(payload.is_empty(), "STRUCTURED_REPLY with data was accepted");
                assert_ne!(
                    framing,
                    Framing::Extended,
                    "STRUCTURED_REPLY accepted after EXTENDED_HEADERS"
                );
                framing = Framing::Structured;
            }
            (OPT_EXTENDED_HEADERS, REP_ACK) => {
                assert!(payload.is_empty(), "EXTENDED_HEADERS with data was accepted");
                framing = Framing::Extended;
            }
            _ => {}
        }
    }
}

fn transmission(client: &mut Stream<'_>, server: &mut Stream<'_>, framing: Framing) {
    let extended = framing == Framing::Extended;
    let mut sent = Vec::new();
    // Requests as the server reads them, up to whatever ends its reading.
    while let Some(header) = client.take(if extended { 32 } else { 28 }) {
        let mut header = Stream(header);
        let (magic, flags, command, cookie, offset) = (
            header.u32().unwrap(),
            header.u16().unwrap(),
            header.u16().unwrap(),
            header.u64().unwrap(),
            header.u64().unwrap(),
        );
        let count = if extended {
            header.u64().unwrap()
        } else {
            u64::from(header.u32().unwrap())
        };
        let expected_magic = if extended {
            EXTENDED_REQUEST_MAGIC
        } else {
            REQUEST_MAGIC
        };
        if magic != expected_magic || command == CMD_DISC {
            break;
        }
        // A WRITE's data follows, and with extended headers any payload PAYLOAD_LEN announces.
        let has_payload = command == CMD_WRITE || (extended && flags & FLAG_PAYLOAD_LEN != 0);
        if has_payload && count > u64::from(MAX_WRITE_DRAIN) {
            break;
        }
        // A payload cut short by the end of the input: the server may answer the request (a
        // refused one's payload is drained up to the end of the stream) or hang up.
        let whole = !has_payload || client.take(count as usize).is_some();
        sent.push(Sent {
            command,
            cookie,
            offset,
            count,
            answered: false,
            must_answer: whole,
        });
        if !whole {
            break;
        }
    }
    // Replies say which request they answer only by cookie: with a cookie in use twice,
    // which request a reply answers (and so how long it is) is ambiguous.
    let mut cookies: Vec<u64> = sent.iter().map(|s| s.cookie).collect();
    cookies.sort_unstable();
    if cookies.windows(2).any(|w| w[0] == w[1]) {
        return;
    }
    while !server.is_empty() {
        let magic = server.u32().expect("a reply magic");
        match (magic, framing) {
            (SIMPLE_REPLY_MAGIC, Framing::Simple | Framing::Structured) => {
                let error = server.u32().expect("a simple reply");
                let cookie = server.u64().expect("a simple reply");
                let request = answer(&mut sent, cookie);
                if request.command == CMD_READ && error == 0 {
                    server.take(request.count as usize).expect("the READ's data");
                }
            }
            (STRUCTURED_REPLY_MAGIC, Framing::Structured) | (EXTENDED_REPLY_MAGIC, Framing::Extended) => {
                let flags = server.u16().expect("a chunk header");
                let chunk_type = server.u16().expect("a chunk header");
                let cookie = server.u64().expect("a chunk header");
                let chunk_offset = if extended {
                    Some(server.u64().expect("a chunk header"))
                } else {
                    None
                };
                let length = if extended {
                    server.u64().expect("a chunk header")
                } else {
                    u64::from(server.u32().expect("a chunk header"))
                };
                let payload = server.take(length as usize).expect("the chunk's payload");
                let request = if flags & REPLY_FLAG_DONE != 0 {
                    answer(&mut sent, cookie)
                } else {
                    sent.iter()
                        .find(|s| s.cookie == cookie && !s.answered)
                        .unwrap_or_else(|| panic!("a chunk for cookie {cookie}, which has no request waiting"))
                };
                if let Some(chunk_offset) = chunk_offset {
                    assert_eq!(chunk_offset, request.offset, "an extended chunk names another offset");
                }
                if chunk_type == REPLY_TYPE_OFFSET_DATA {
                    assert_eq!(request.command, CMD_READ, "data for a request that is not a READ");
                    let mut payload = Stream(payload);
                    let offset = payload.u64().expect("an OFFSET_DATA offset");
                    let end = offset + payload.0.len() as u64;
                    assert!(
                        offset >= request.offset && end <= request.offset + request.count,
                        "READ data outside the request"
                    );
                }
            }
            (other, framing) => panic!("reply magic {other:#010x} with {framing:?} framing"),
        }
    }
    let unanswered: Vec<u64> = sent
        .iter()
        .filter(|s| s.must_answer && !s.answered)
        .map(|s| s.cookie)
        .collect();
    assert!(unanswered.is_empty(), "requests never answered: cookies {unanswered:?}");
}

/// Marks the request with `cookie` answered.
fn answer(sent: &mut [Sent], cookie: u64) -> &Sent {
    let request = sent
        .iter_mut()
        .find(|s| s.cookie == cookie)
        .unwrap_or_else(|| panic!("a reply for cookie {cookie}, which no request had"));
    assert!(!request.answered, "a second final reply for cookie {cookie}");
    request.answered = true;
    request
}
