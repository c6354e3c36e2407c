//! Extended headers (NBD_OPT_EXTENDED_HEADERS): 32-byte requests with 64-bit lengths and
//! 32-byte reply chunks. nbdkit 1.32 has none, so qemu-nbd is the reference for what a
//! conforming reply looks like, and qemu 10 (which negotiates them first) the client.

use crate::support::nbd::*;
use crate::support::*;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

const OPT_EXTENDED_HEADERS: u32 = 11;
const REP_ERR_EXT_HEADER_REQD: u32 = 0x8000_000a;
const EXTENDED_REQUEST_MAGIC: u32 = 0x21e4_1c71;
const EXTENDED_REPLY_MAGIC: u32 = 0x6e8a_278c;
const REPLY_TYPE_NONE: u16 = 0;
const REPLY_TYPE_OFFSET_DATA: u16 = 1;
const REPLY_TYPE_BLOCK_STATUS_EXT: u16 = 6;
const REPLY_TYPE_ERROR: u16 = 0x8001;
const GIB: u64 = 1 << 30;

/// A client speaking extended headers over a raw socket.
struct Extended {
    s: UnixStream,
    /// The id the server gave base:allocation (servers choose their own).
    context_id: u32,
}

/// One reply chunk: its header fields and payload.
#[derive(Debug, PartialEq, Eq)]
struct Chunk {
    flags: u16,
    typ: u16,
    cookie: u64,
    offset: u64,
    payload: Vec<u8>,
}

fn option(s: &mut UnixStream, opt: u32, payload: &[u8]) -> Vec<(u32, Vec<u8>)> {
    let mut b = Vec::new();
    b.extend_from_slice(&IHAVEOPT.to_be_bytes());
    b.extend_from_slice(&opt.to_be_bytes());
    b.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    b.extend_from_slice(payload);
    s.write_all(&b).unwrap();
    let mut replies = Vec::new();
    loop {
        let mut h = [0; 20];
        s.read_exact(&mut h).unwrap();
        let typ = be32_of(&h[12..]);
        let mut data = vec![0; be32_of(&h[16..]) as usize];
        s.read_exact(&mut data).unwrap();
        replies.push((typ, data));
        if typ != REP_INFO && typ != REP_META_CONTEXT {
            return replies;
        }
    }
}

impl Extended {
    /// Greeting, EXTENDED_HEADERS, base:allocation, GO "".
    fn connect(sock: &Path) -> Extended {
        let mut s = UnixStream::connect(sock).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let mut greeting = [0; 18];
        s.read_exact(&mut greeting).unwrap();
        s.write_all(&(CFLAG_FIXED_NEWSTYLE | CFLAG_NO_ZEROES).to_be_bytes())
            .unwrap();
        assert_eq!(option(&mut s, OPT_EXTENDED_HEADERS, &[]), [(REP_ACK, vec![])]);
        let meta = option(&mut s, OPT_SET_META_CONTEXT, &meta_payload("", &["base:allocation"]));
        assert_eq!(meta.last().unwrap().0, REP_ACK, "{meta:?}");
        let context_id = be32_of(&meta[0].1);
        assert_eq!(
            option(&mut s, OPT_GO, &info_payload("", &[])).last().unwrap().0,
            REP_ACK
        );
        Extended { s, context_id }
    }

    fn send(&mut self, flags: u16, command: u16, cookie: u64, offset: u64, count: u64, payload: &[u8]) {
        let mut b = Vec::new();
        b.extend_from_slice(&EXTENDED_REQUEST_MAGIC.to_be_bytes());
        b.extend_from_slice(&flags.to_be_bytes());
        b.extend_from_slice(&command.to_be_bytes());
        b.extend_from_slice(&cookie.to_be_bytes());
        b.extend_from_slice(&offset.to_be_bytes());
        b.extend_from_slice(&count.to_be_bytes());
        b.extend_from_slice(payload);
        self.s.write_all(&b).unwrap();
    }

    fn chunk(&mut self) -> Chunk {
        let mut h = [0; 32];
        self.s.read_exact(&mut h).unwrap();
        assert_eq!(be32_of(&h), EXTENDED_REPLY_MAGIC, "an extended reply: {h:02x?}");
        let mut payload = vec![0; be64_of(&h[24..]) as usize];
        self.s.read_exact(&mut payload).unwrap();
        Chunk {
            flags: be16_of(&h[4..]),
            typ: be16_of(&h[6..]),
            cookie: be64_of(&h[8..]),
            offset: be64_of(&h[16..]),
            payload,
        }
    }

    /// A request and its one (final) chunk.
    fn request(&mut self, flags: u16, command: u16, offset: u64, count: u64, payload: &[u8]) -> Chunk {
        self.send(flags, command, 7, offset, count, payload);
        let chunk = self.chunk();
        assert_eq!(chunk.flags & 1, 1, "one chunk, marked done: {chunk:?}");
        assert_eq!(chunk.cookie, 7);
        chunk
    }
}

/// The replies to the same session of requests, as bytes a test can compare across servers
/// (the context id, each server's own choice, checked and then zeroed).
fn session(sock: &Path) -> Vec<Chunk> {
    let mut c = Extended::connect(sock);
    let mut replies = vec![
        c.request(0, CMD_READ, 4096, 512, &[]),
        c.request(CMD_FLAG_PAYLOAD_LEN, CMD_WRITE, 8192, 512, &[0xab; 512]),
        c.request(0, CMD_WRITE, 16384, 512, &[0xcd; 512]),
        c.request(0, CMD_READ, 8192, 512, &[]),
        c.request(0, CMD_FLUSH, 0, 0, &[]),
        c.request(0, CMD_WRITE_ZEROES, 0, 4096, &[]),
        c.request(CMD_FLAG_REQ_ONE, CMD_BLOCK_STATUS, 0, 4096, &[]),
    ];
    let status = &mut replies[6].payload;
    assert_eq!(be32_of(status), c.context_id);
    status[..4].fill(0);
    replies
}

#[test]
fn replies_are_framed_as_qemu_nbd_frames_them() {
    let dir = TempDir::new("ehqemu");
    let image = dir.join("disk.img");
    fs::write(&image, pattern(3, 1 << 20)).unwrap();
    let reference = dir.join("reference.img");
    fs::copy(&image, &reference).unwrap();
    let qemu = NbdUpstream::qemu(&dir, "qemu", &reference, "raw", &[]);
    let theirs = session(&qemu.sock);
    let srv = Server::start(&["file", image.to_str().unwrap()]);
    let ours = session(&srv.sock);
    assert_eq!(ours, theirs);
    assert_eq!(ours[0].typ, REPLY_TYPE_OFFSET_DATA);
    assert_eq!(ours[0].payload[8..], pattern(3, 1 << 20)[4096..4608]);
    assert_eq!(ours[3].payload[8..], [0xab; 512]);
    assert!([1, 2, 4, 5].iter().all(|&i| ours[i].typ == REPLY_TYPE_NONE));
    assert_eq!(ours[6].typ, REPLY_TYPE_BLOCK_STATUS_EXT);
    assert_eq!(
        fs::read(&image).unwrap(),
        fs::read(&reference).unwrap(),
        "the disks differ"
    );
}

#[test]
fn sixty_four_bit_requests_reach_the_plugin_whole() {
    let dir = TempDir::new("ehbig");
    let log = dir.join("requests.log");
    let srv = Server::start(&["--filter=log", "memory", "8G", &format!("logfile={}", log.display())]);
    let mut c = Extended::connect(&srv.sock);
    assert_eq!(
        c.request(0, CMD_WRITE, 5 * GIB, 4096, &[0x55; 4096]).typ,
        REPLY_TYPE_NONE
    );
    // One 5 GiB write-zeroes, and a block status that covers 6 GiB in one 64-bit descriptor.
    assert_eq!(c.request(0, CMD_WRITE_ZEROES, 0, 5 * GIB, &[]).typ, REPLY_TYPE_NONE);
    let status = c.request(0, CMD_BLOCK_STATUS, 0, 6 * GIB, &[]);
    assert_eq!(status.typ, REPLY_TYPE_BLOCK_STATUS_EXT);
    let p = &status.payload;
    assert_eq!(
        (be32_of(&p[0..]), be32_of(&p[4..])),
        (1, 3),
        "context 1, three descriptors"
    );
    assert_eq!(
        (be64_of(&p[8..]), be64_of(&p[16..])),
        (5 * GIB, 3),
        "hole and zero up to 5 GiB"
    );
    // The memory plugin allocates in pages of 32 KiB.
    assert_eq!((be64_of(&p[24..]), be64_of(&p[32..])), (32768, 0), "the data written");
    // A 6 GiB trim past the end, and a read with a payload, are refused with EINVAL.
    let past = c.request(0, CMD_TRIM, 4 * GIB, 6 * GIB, &[]);
    assert_eq!((past.typ, be32_of(&past.payload)), (REPLY_TYPE_ERROR, 22));
    let read = c.request(CMD_FLAG_PAYLOAD_LEN, CMD_READ, 0, 8, &[1; 8]);
    assert_eq!((read.typ, be32_of(&read.payload)), (REPLY_TYPE_ERROR, 22));
    // The stream is still in step.
    assert_eq!(c.request(0, CMD_READ, 5 * GIB, 8, &[]).payload[8..], [0x55; 8]);
    let logged = fs::read_to_string(&log).unwrap();
    assert!(
        logged.contains("Zero id=") && logged.contains("count=0x140000000"),
        "{logged}"
    );
}

#[test]
fn qemu_zeroes_five_gib_in_one_request() {
    let dir = TempDir::new("ehqemuio");
    let log = dir.join("requests.log");
    let script = "qemu-io -f raw -c 'write -P 0x11 4G 64k' -c 'write -z -n 0 5G' -c 'read -P 0 4G 64k' \"$nbd\"";
    let o = run_captive(
        &["--filter=log", "memory", "8G", &format!("logfile={}", log.display())],
        script,
    );
    assert!(!stdout(&o).contains("failed"), "{}", describe(&o));
    assert_success(&o);
    let logged = fs::read_to_string(&log).unwrap();
    assert!(logged.contains("count=0x140000000"), "{logged}");
}

#[test]
fn extended_headers_rule_out_what_they_replace() {
    let srv = Server::start(&["memory", "1M"]);
    let mut s = UnixStream::connect(&srv.sock).unwrap();
    let mut greeting = [0; 18];
    s.read_exact(&mut greeting).unwrap();
    s.write_all(&(CFLAG_FIXED_NEWSTYLE | CFLAG_NO_ZEROES).to_be_bytes())
        .unwrap();
    assert_eq!(
        option(&mut s, OPT_EXTENDED_HEADERS, &[1]).last().unwrap().0,
        REP_ERR_INVALID
    );
    assert_eq!(option(&mut s, OPT_EXTENDED_HEADERS, &[]).last().unwrap().0, REP_ACK);
    let sr = option(&mut s, OPT_STRUCTURED_REPLY, &[]);
    assert_eq!(sr.last().unwrap().0, REP_ERR_EXT_HEADER_REQD);
    // EXPORT_NAME cannot refuse: the client is let go.
    let mut b = Vec::new();
    b.extend_from_slice(&IHAVEOPT.to_be_bytes());
    b.extend_from_slice(&OPT_EXPORT_NAME.to_be_bytes());
    b.extend_from_slice(&0u32.to_be_bytes());
    s.write_all(&b).unwrap();
    let mut rest = Vec::new();
    assert_eq!(s.read_to_end(&mut rest).unwrap(), 0);
    // Without the option, compact headers work as before.
    let mut c = RawClient::open(&srv.sock, true, true);
    assert_eq!(c.read(0, 512), Ok(vec![0; 512]));
}

#[test]
fn the_layers_error_message_travels_in_the_error_chunk() {
    let srv = Server::start(&[
        "--filter=error",
        "memory",
        "1M",
        "error-pread=EIO",
        "error-pread-rate=1",
    ]);
    let mut c = Extended::connect(&srv.sock);
    let failed = c.request(0, CMD_READ, 0, 512, &[]);
    assert_eq!((failed.typ, be32_of(&failed.payload)), (REPLY_TYPE_ERROR, 5));
    let len = be16_of(&failed.payload[4..]) as usize;
    let message = String::from_utf8(failed.payload[6..6 + len].to_vec()).unwrap();
    assert!(message.contains("injecting EIO error into pread"), "{message:?}");
    // Structured replies (without extended headers) carry it for READ too.
    let mut raw = RawClient::open(&srv.sock, true, false);
    raw.send_request(0, CMD_READ, 0, 512, &[]);
    let reply = raw.next_reply();
    assert_eq!(reply.error, 5);
    let payload = &reply.chunks.last().unwrap().payload;
    assert!(
        String::from_utf8_lossy(&payload[6..]).contains("injecting EIO"),
        "{reply:?}"
    );
}
