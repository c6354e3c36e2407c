//! A minimal raw NBD client, for what real clients cannot send or check (handshake details,
//! malformed requests, reply framing).
//!
//! The raw client is written from the protocol description only and keeps its
//! own constants: the suite must not share code with the server it tests.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

pub mod nbd {
    pub const NBDMAGIC: u64 = 0x4e42_444d_4147_4943;
    pub const IHAVEOPT: u64 = 0x4948_4156_454f_5054;
    pub const REP_MAGIC: u64 = 0x0003_e889_0455_65a9;
    pub const REQUEST_MAGIC: u32 = 0x2560_9513;
    pub const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;
    pub const STRUCTURED_REPLY_MAGIC: u32 = 0x668e_33ef;

    pub const FLAG_FIXED_NEWSTYLE: u16 = 1;
    pub const FLAG_NO_ZEROES: u16 = 2;
    pub const CFLAG_FIXED_NEWSTYLE: u32 = 1;
    pub const CFLAG_NO_ZEROES: u32 = 2;

    pub const OPT_EXPORT_NAME: u32 = 1;
    pub const OPT_ABORT: u32 = 2;
    pub const OPT_LIST: u32 = 3;
    pub const OPT_STARTTLS: u32 = 5;
    pub const OPT_INFO: u32 = 6;
    pub const OPT_GO: u32 = 7;
    pub const OPT_STRUCTURED_REPLY: u32 = 8;
    pub const OPT_LIST_META_CONTEXT: u32 = 9;
    pub const OPT_SET_META_CONTEXT: u32 = 10;

    pub const REP_ACK: u32 = 1;
    pub const REP_SERVER: u32 = 2;
    pub const REP_INFO: u32 = 3;
    pub const REP_META_CONTEXT: u32 = 4;
    pub const REP_ERR_UNSUP: u32 = 0x8000_0001;
    pub const REP_ERR_POLICY: u32 = 0x8000_0002;
    pub const REP_ERR_INVALID: u32 = 0x8000_0003;
    pub const REP_ERR_TLS_REQD: u32 = 0x8000_0005;
    pub const REP_ERR_UNKNOWN: u32 = 0x8000_0006;

    pub const INFO_EXPORT: u16 = 0;
    pub const INFO_NAME: u16 = 1;
    pub const INFO_DESCRIPTION: u16 = 2;
    pub const INFO_BLOCK_SIZE: u16 = 3;

    pub const TF_HAS_FLAGS: u16 = 0x0001;
    pub const TF_READ_ONLY: u16 = 0x0002;
    pub const TF_SEND_DF: u16 = 0x0080;

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
    pub const CMD_FLAG_DF: u16 = 1 << 2;
    pub const CMD_FLAG_REQ_ONE: u16 = 1 << 3;
    pub const CMD_FLAG_PAYLOAD_LEN: u16 = 1 << 5;
    pub const CMD_FLAG_FAST_ZERO: u16 = 1 << 4;

    pub const REPLY_FLAG_DONE: u16 = 1;
    pub const CHUNK_NONE: u16 = 0;
    pub const CHUNK_OFFSET_DATA: u16 = 1;
    pub const CHUNK_OFFSET_HOLE: u16 = 2;
    pub const CHUNK_BLOCK_STATUS: u16 = 5;
    pub const CHUNK_ERROR: u16 = 32769;
    pub const CHUNK_ERROR_OFFSET: u16 = 32770;

    pub const EPERM: u32 = 1;
    pub const EIO: u32 = 5;
    pub const ENOMEM: u32 = 12;
    pub const EINVAL: u32 = 22;
    pub const ENOSPC: u32 = 28;
}

use nbd::*;

#[derive(Debug, Clone)]
pub struct OptReply {
    pub opt: u32,
    pub typ: u32,
    pub data: Vec<u8>,
}

impl OptReply {
    pub fn is_final(&self) -> bool {
        self.typ == REP_ACK || self.typ & 0x8000_0000 != 0
    }
}

#[derive(Debug, Clone)]
pub struct Chunk {
    pub flags: u16,
    pub typ: u16,
    pub payload: Vec<u8>,
}

/// One complete reply to one request.
#[derive(Debug, Clone, Default)]
pub struct Reply {
    pub cookie: u64,
    /// True if this was a simple reply.
    pub simple: bool,
    /// NBD error (0 = success). For structured replies: from the error chunk.
    pub error: u32,
    /// READ data (assembled from OFFSET_DATA / OFFSET_HOLE chunks).
    pub data: Vec<u8>,
    pub chunks: Vec<Chunk>,
}

#[derive(Debug, Clone, Copy)]
struct Pending {
    typ: u16,
    offset: u64,
    len: u32,
}

pub struct RawClient {
    pub s: UnixStream,
    pub gflags: u16,
    pub sr: bool,
    pub size: u64,
    pub eflags: u16,
    next_cookie: u64,
    pending: HashMap<u64, Pending>,
    partial: HashMap<u64, Reply>,
}

fn be16(b: &[u8]) -> u16 {
    u16::from_be_bytes(b[..2].try_into().unwrap())
}
fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes(b[..4].try_into().unwrap())
}
fn be64(b: &[u8]) -> u64 {
    u64::from_be_bytes(b[..8].try_into().unwrap())
}

impl RawClient {
    /// Connect and read the 18-byte greeting (checked).
    pub fn connect(path: &Path) -> RawClient {
        let mut c = RawClient::connect_no_greeting(path);
        let g = c.read_n(18);
        assert_eq!(be64(&g[0..]), NBDMAGIC, "greeting must start with NBDMAGIC: {g:02x?}");
        assert_eq!(
            be64(&g[8..]),
            IHAVEOPT,
            "greeting must be newstyle (IHAVEOPT): {g:02x?}"
        );
        c.gflags = be16(&g[16..]);
        c
    }

    pub fn connect_no_greeting(path: &Path) -> RawClient {
        let s = UnixStream::connect(path).unwrap_or_else(|e| panic!("connect {}: {e}", path.display()));
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        s.set_write_timeout(Some(Duration::from_secs(60))).unwrap();
        RawClient {
            s,
            gflags: 0,
            sr: false,
            size: 0,
            eflags: 0,
            next_cookie: 1,
            pending: HashMap::new(),
            partial: HashMap::new(),
        }
    }

    /// Greeting + client flags FIXED_NEWSTYLE|NO_ZEROES.
    pub fn connect_fixed(path: &Path) -> RawClient {
        let mut c = RawClient::connect(path);
        assert_eq!(c.gflags, FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES);
        c.send_cflags(CFLAG_FIXED_NEWSTYLE | CFLAG_NO_ZEROES);
        c
    }

    /// Ready for transmission: optional structured replies and
    /// base:allocation, then GO "".
    pub fn open(path: &Path, sr: bool, meta: bool) -> RawClient {
        let mut c = RawClient::connect_fixed(path);
        if sr {
            let r = c.option(OPT_STRUCTURED_REPLY, &[]);
            assert_eq!(r.last().unwrap().typ, REP_ACK, "STRUCTURED_REPLY refused: {r:?}");
            c.sr = true;
        }
        if meta {
            let r = c.option(OPT_SET_META_CONTEXT, &meta_payload("", &["base:allocation"]));
            assert_eq!(r.last().unwrap().typ, REP_ACK, "SET_META_CONTEXT refused: {r:?}");
        }
        c.go("", &[]).expect("GO failed");
        c
    }

    pub fn write_raw(&mut self, b: &[u8]) {
        self.s.write_all(b).expect("write to server");
    }

    pub fn try_read_n(&mut self, n: usize) -> io::Result<Vec<u8>> {
        let mut v = vec![0u8; n];
        self.s.read_exact(&mut v)?;
        Ok(v)
    }

    #[track_caller]
    pub fn read_n(&mut self, n: usize) -> Vec<u8> {
        self.try_read_n(n)
            .unwrap_or_else(|e| panic!("reading {n} bytes from server: {e}"))
    }

    /// True if the server closes the connection (EOF or reset) within `d`.
    pub fn closed_within(&mut self, d: Duration) -> bool {
        self.s.set_read_timeout(Some(d)).unwrap();
        let deadline = Instant::now() + d;
        let mut buf = [0u8; 4096];
        loop {
            match self.s.read(&mut buf) {
                Ok(0) => return true,
                Ok(_) => {
                    if Instant::now() >= deadline {
                        return false;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return true,
                Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return true,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::TimedOut => return false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => panic!("unexpected read error: {e}"),
            }
        }
    }

    pub fn send_cflags(&mut self, f: u32) {
        self.write_raw(&f.to_be_bytes());
    }

    pub fn send_option(&mut self, opt: u32, data: &[u8]) {
        let mut b = Vec::with_capacity(16 + data.len());
        b.extend_from_slice(&IHAVEOPT.to_be_bytes());
        b.extend_from_slice(&opt.to_be_bytes());
        b.extend_from_slice(&(data.len() as u32).to_be_bytes());
        b.extend_from_slice(data);
        self.write_raw(&b);
    }

    pub fn read_opt_reply(&mut self) -> OptReply {
        let h = self.read_n(20);
        assert_eq!(be64(&h), REP_MAGIC, "bad option reply magic: {h:02x?}");
        let opt = be32(&h[8..]);
        let typ = be32(&h[12..]);
        let len = be32(&h[16..]) as usize;
        assert!(len <= 1 << 20, "absurd option reply length {len}");
        let data = self.read_n(len);
        OptReply { opt, typ, data }
    }

    /// Send an option and collect replies up to the final ACK/error.
    pub fn option(&mut self, opt: u32, data: &[u8]) -> Vec<OptReply> {
        self.send_option(opt, data);
        let mut v = Vec::new();
        loop {
            let r = self.read_opt_reply();
            assert_eq!(r.opt, opt, "option reply echoes another option: {r:?}");
            let fin = r.is_final();
            v.push(r);
            if fin {
                return v;
            }
            assert!(v.len() < 10_000, "endless option replies");
        }
    }

    /// INFO or GO; returns all replies. On success also records size/eflags.
    pub fn info_or_go(&mut self, opt: u32, name: &str, infos: &[u16]) -> Vec<OptReply> {
        let r = self.option(opt, &info_payload(name, infos));
        if r.last().unwrap().typ == REP_ACK {
            let ex: Vec<_> = r
                .iter()
                .filter(|x| x.typ == REP_INFO && be16(&x.data) == INFO_EXPORT)
                .collect();
            assert_eq!(ex.len(), 1, "exactly one NBD_INFO_EXPORT expected before ACK: {r:?}");
            assert_eq!(ex[0].data.len(), 12, "NBD_INFO_EXPORT must be 12 bytes");
            self.size = be64(&ex[0].data[2..]);
            self.eflags = be16(&ex[0].data[10..]);
        }
        r
    }

    /// GO; Err(reply type) on failure.
    pub fn go(&mut self, name: &str, infos: &[u16]) -> Result<Vec<OptReply>, u32> {
        let r = self.info_or_go(OPT_GO, name, infos);
        let last = r.last().unwrap().typ;
        if last == REP_ACK {
            Ok(r)
        } else {
            Err(last)
        }
    }

    // ------------------------------ transmission ----------------------------

    pub fn send_request(&mut self, flags: u16, typ: u16, offset: u64, len: u32, payload: &[u8]) -> u64 {
        let cookie = self.next_cookie;
        self.next_cookie += 1;
        self.send_request_cookie(cookie, flags, typ, offset, len, payload);
        cookie
    }

    pub fn send_request_cookie(&mut self, cookie: u64, flags: u16, typ: u16, offset: u64, len: u32, payload: &[u8]) {
        let mut b = Vec::with_capacity(28 + payload.len());
        b.extend_from_slice(&REQUEST_MAGIC.to_be_bytes());
        b.extend_from_slice(&flags.to_be_bytes());
        b.extend_from_slice(&typ.to_be_bytes());
        b.extend_from_slice(&cookie.to_be_bytes());
        b.extend_from_slice(&offset.to_be_bytes());
        b.extend_from_slice(&len.to_be_bytes());
        self.write_raw(&b);
        if !payload.is_empty() {
            self.write_raw(payload);
        }
        if typ != CMD_DISC {
            self.pending.insert(cookie, Pending { typ, offset, len });
        }
    }

    /// Read messages until some request's reply is complete.
    pub fn next_reply(&mut self) -> Reply {
        loop {
            let m = self.read_n(4);
            match be32(&m) {
                SIMPLE_REPLY_MAGIC => {
                    let h = self.read_n(12);
                    let error = be32(&h);
                    let cookie = be64(&h[4..]);
                    let p = self
                        .pending
                        .remove(&cookie)
                        .unwrap_or_else(|| panic!("simple reply for unknown cookie {cookie}"));
                    assert!(
                        !self.partial.contains_key(&cookie),
                        "simple reply after structured chunks"
                    );
                    let mut data = Vec::new();
                    if p.typ == CMD_READ && error == 0 {
                        assert!(
                            !self.sr,
                            "READ must not get a simple reply once structured replies are on"
                        );
                        data = self.read_n(p.len as usize);
                    }
                    return Reply {
                        cookie,
                        simple: true,
                        error,
                        data,
                        chunks: vec![],
                    };
                }
                STRUCTURED_REPLY_MAGIC => {
                    assert!(self.sr, "structured reply chunk without structured replies negotiated");
                    let h = self.read_n(16);
                    let flags = be16(&h);
                    let typ = be16(&h[2..]);
                    let cookie = be64(&h[4..]);
                    let len = be32(&h[12..]) as usize;
                    let payload = self.read_n(len);
                    let p = *self
                        .pending
                        .get(&cookie)
                        .unwrap_or_else(|| panic!("chunk for unknown cookie {cookie}"));
                    let rep = self.partial.entry(cookie).or_insert_with(|| Reply {
                        cookie,
                        simple: false,
                        error: 0,
                        data: if p.typ == CMD_READ {
                            vec![0u8; p.len as usize]
                        } else {
                            Vec::new()
                        },
                        chunks: vec![],
                    });
                    match typ {
                        CHUNK_OFFSET_DATA => {
                            assert!(payload.len() >= 9, "short OFFSET_DATA");
                            let off = be64(&payload);
                            let d = &payload[8..];
                            assert!(
                                off >= p.offset && off + d.len() as u64 <= p.offset + p.len as u64,
                                "OFFSET_DATA outside the request"
                            );
                            let s = (off - p.offset) as usize;
                            rep.data[s..s + d.len()].copy_from_slice(d);
                        }
                        CHUNK_OFFSET_HOLE => {
                            assert_eq!(payload.len(), 12, "OFFSET_HOLE length");
                            let off = be64(&payload);
                            let n = be32(&payload[8..]) as u64;
                            assert!(off >= p.offset && off + n <= p.offset + p.len as u64);
                        }
                        CHUNK_ERROR | CHUNK_ERROR_OFFSET => {
                            assert!(payload.len() >= 6, "short error chunk");
                            let e = be32(&payload);
                            let ml = be16(&payload[4..]) as usize;
                            assert!(6 + ml <= payload.len(), "error chunk message overruns");
                            assert_ne!(e, 0, "error chunk with error 0");
                            if rep.error == 0 {
                                rep.error = e;
                            }
                        }
                        CHUNK_NONE => assert!(payload.is_empty()),
                        CHUNK_BLOCK_STATUS => {}
                        t => panic!("unknown chunk type {t}"),
                    }
                    rep.chunks.push(Chunk { flags, typ, payload });
                    if flags & REPLY_FLAG_DONE != 0 {
                        self.pending.remove(&cookie);
                        let mut r = self.partial.remove(&cookie).unwrap();
                        if r.error != 0 {
                            r.data.clear();
                        }
                        return r;
                    }
                }
                other => panic!("bad reply magic {other:#x}"),
            }
        }
    }

    /// Send one request and wait for its reply.
    pub fn request(&mut self, flags: u16, typ: u16, offset: u64, len: u32, payload: &[u8]) -> Reply {
        let c = self.send_request(flags, typ, offset, len, payload);
        let r = self.next_reply();
        assert_eq!(r.cookie, c, "reply cookie mismatch");
        r
    }

    pub fn read(&mut self, offset: u64, len: u32) -> Result<Vec<u8>, u32> {
        self.read_flags(offset, len, 0)
    }

    pub fn read_flags(&mut self, offset: u64, len: u32, flags: u16) -> Result<Vec<u8>, u32> {
        let r = self.request(flags, CMD_READ, offset, len, &[]);
        if r.error != 0 {
            Err(r.error)
        } else {
            assert_eq!(r.data.len(), len as usize);
            Ok(r.data)
        }
    }

    pub fn write(&mut self, offset: u64, data: &[u8]) -> u32 {
        self.request(0, CMD_WRITE, offset, data.len() as u32, data).error
    }

    /// A payload-free command; returns the NBD error.
    pub fn cmd(&mut self, typ: u16, flags: u16, offset: u64, len: u32) -> u32 {
        self.request(flags, typ, offset, len, &[]).error
    }

    /// BLOCK_STATUS: Ok((context id, descriptors)).
    pub fn block_status(&mut self, offset: u64, len: u32, flags: u16) -> Result<(u32, Vec<(u32, u32)>), u32> {
        let r = self.request(flags, CMD_BLOCK_STATUS, offset, len, &[]);
        if r.error != 0 {
            return Err(r.error);
        }
        let bs: Vec<_> = r.chunks.iter().filter(|c| c.typ == CHUNK_BLOCK_STATUS).collect();
        assert_eq!(bs.len(), 1, "one BLOCK_STATUS chunk expected: {:?}", r.chunks);
        let p = &bs[0].payload;
        assert!(
            p.len() >= 12 && (p.len() - 4) % 8 == 0,
            "bad BLOCK_STATUS payload length {}",
            p.len()
        );
        let id = be32(p);
        let d = p[4..].chunks(8).map(|x| (be32(x), be32(&x[4..]))).collect();
        Ok((id, d))
    }

    pub fn disconnect(mut self) {
        self.send_request(0, CMD_DISC, 0, 0, &[]);
        let _ = self.s.shutdown(std::net::Shutdown::Write);
    }
}

/// Payload of INFO/GO: name_len, name, n_infos, infos.
pub fn info_payload(name: &str, infos: &[u16]) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&(name.len() as u32).to_be_bytes());
    b.extend_from_slice(name.as_bytes());
    b.extend_from_slice(&(infos.len() as u16).to_be_bytes());
    for i in infos {
        b.extend_from_slice(&i.to_be_bytes());
    }
    b
}

/// Payload of LIST_META_CONTEXT / SET_META_CONTEXT.
pub fn meta_payload(name: &str, queries: &[&str]) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&(name.len() as u32).to_be_bytes());
    b.extend_from_slice(name.as_bytes());
    b.extend_from_slice(&(queries.len() as u32).to_be_bytes());
    for q in queries {
        b.extend_from_slice(&(q.len() as u32).to_be_bytes());
        b.extend_from_slice(q.as_bytes());
    }
    b
}

pub fn be16_of(b: &[u8]) -> u16 {
    be16(b)
}
pub fn be32_of(b: &[u8]) -> u32 {
    be32(b)
}
pub fn be64_of(b: &[u8]) -> u64 {
    be64(b)
}
