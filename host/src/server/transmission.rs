//! The transmission phase: requests are read, validated, run through the export's layers
//! and answered. With a parallel export several workers share the connection, so requests
//! are pipelined and replies may leave out of order; a request is read and its reply
//! written whole under the connection's read and write locks (nbdkit's server/protocol.c).

use super::busy_poll::BusyPoll;
use super::handshake::Negotiated;
use super::{nbd_error, Server, Transport};
use crate::api::{Error, Flags};
use crate::backend::{Export, Opened};
use crate::log;
use crate::protocol::consts::*;
use crate::protocol::transmission::{self as codec, Command, Framing, Request};
use crate::protocol::validate::{validate, ExportState};
use crate::protocol::NbdError;
use crate::runtime::spliced::{self, Spliced};
use std::io::{self, BufReader, IoSlice, Read, Write};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The largest request buffer a worker keeps for itself.
const KEEP_WHILE_IDLE: usize = 1 << 20;

/// How long a client must be quiet for a worker to give back a larger buffer.
const IDLE_AFTER: Duration = Duration::from_millis(200);

/// How much of the stream one read may take ahead of the request being parsed: every header
/// a pipelining client has queued (a 4 KiB read costs one system call, not two), while a
/// larger payload still goes straight into the request buffer.
const INBOX_LEN: usize = 16 << 10;

struct Connection<'a> {
    id: u64,
    server: &'a Server,
    transport: &'a Transport,
    /// The read side: taken by one worker at a time, for one request with its payload.
    inbox: Mutex<Inbox<'a>>,
    write_lock: Mutex<()>,
    export: Arc<Export>,
    opened: Opened,
    state: ExportState,
    /// Set on DISC, EOF or a broken stream: no more requests are read.
    closing: AtomicBool,
    /// Buffers larger than [`KEEP_WHILE_IDLE`] between requests: the worker that reads the
    /// next request frees them when the client goes quiet.
    spare: Mutex<Vec<Vec<u8>>>,
    /// Buffers larger than [`KEEP_WHILE_IDLE`], in use or spare.
    large_buffers: AtomicUsize,
}

struct Inbox<'a> {
    stream: BufReader<&'a Transport>,
    /// How long to poll for the next request before sleeping.
    poll: BusyPoll,
}

/// What a request produced, besides an error.
enum Outcome {
    Done,
    /// READ: the first `count` bytes of the worker's buffer.
    Data,
    /// BLOCK_STATUS descriptors, framed as the connection frames them.
    BlockStatus(Vec<(u64, u32)>),
}

/// A failed request: the NBD error, and the message the layer gave with it, which structured
/// and extended error chunks carry to the client (nbdkit ≥ 1.42 sends it; qemu prints it).
struct Failure {
    error: NbdError,
    message: Option<String>,
}

impl From<NbdError> for Failure {
    fn from(error: NbdError) -> Failure {
        Failure { error, message: None }
    }
}

pub fn run(server: &Server, negotiated: Negotiated, transport: &Transport, id: u64) {
    let Negotiated {
        export,
        opened,
        framing,
        base_allocation,
        seat: _seat,
        ..
    } = negotiated;
    let state = ExportState {
        size: opened.size,
        eflags: super::eflags(&opened.caps, framing != Framing::Simple, export.thread_model()),
        framing,
        base_allocation,
    };
    let workers = export.useful_workers(server.options.threads);
    let conn = Connection {
        id,
        server,
        transport,
        inbox: Mutex::new(Inbox {
            stream: BufReader::with_capacity(INBOX_LEN, transport),
            poll: BusyPoll::new(),
        }),
        write_lock: Mutex::new(()),
        export,
        opened,
        state,
        closing: AtomicBool::new(false),
        spare: Mutex::default(),
        large_buffers: AtomicUsize::new(0),
    };
    log::debug!(
        server.log,
        "connection {id}: transmission with {workers} worker(s), size {}, eflags {:#06x}",
        state.size,
        state.eflags
    );
    let peer = Arc::new(transport.peer());
    std::thread::scope(|scope| {
        for n in 1..workers {
            let peer = peer.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("conn-{id}-{n}"))
                .spawn_scoped(scope, || {
                    crate::runtime::peer::serve_peer(peer);
                    conn.worker()
                });
            if let Err(e) = spawned {
                // The workers already running serve the connection, only with less overlap.
                log::warning!(server.log, "connection {id}: cannot start worker {n}: {e}");
                break;
            }
        }
        conn.worker();
    });
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl Connection<'_> {
    fn close(&self) {
        self.closing.store(true, Ordering::Relaxed);
    }

    fn worker(&self) {
        // Reused across requests: large per-request allocations cost page faults.
        let mut buf: Vec<u8> = Vec::new();
        loop {
            let (request, verdict) = match self.next_request(&mut buf) {
                Ok(Some(next)) => next,
                Ok(None) => return,
                Err(e) => return log::debug!(self.server.log, "connection {}: {e}", self.id),
            };
            let result = verdict.map_err(Failure::from).and_then(|()| {
                let _serial = self.export.lock_request();
                self.execute(&request, &mut buf).map_err(|e| Failure {
                    error: nbd_error(e.errno).for_request_flags(request.flags),
                    message: e.message,
                })
            });
            let spliced = match request.command {
                Command::Read => self.spliced_reply(&mut buf),
                _ => Ok(None),
            };
            let sent = spliced.and_then(|spliced| self.reply(&request, result, &buf, spliced));
            if let Err(e) = sent {
                log::debug!(self.server.log, "connection {}: writing a reply: {e}", self.id);
                return self.close();
            }
            if buf.capacity() > KEEP_WHILE_IDLE {
                lock(&self.spare).push(std::mem::take(&mut buf));
            }
        }
    }

    /// The first `len` bytes of `buf`, made large enough: with a spare buffer if there is one.
    fn sized<'b>(&self, buf: &'b mut Vec<u8>, len: usize) -> &'b mut [u8] {
        if buf.len() < len {
            if let Some(spare) = lock(&self.spare).pop() {
                *buf = spare;
            }
            if buf.len() < len {
                let was_large = buf.capacity() > KEEP_WHILE_IDLE;
                buf.resize(len, 0);
                if !was_large && buf.capacity() > KEEP_WHILE_IDLE {
                    self.large_buffers.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        &mut buf[..len]
    }

    /// Read the next request (and a WRITE's payload into `buf`), validated. None once the
    /// connection is closing.
    fn next_request(&self, buf: &mut Vec<u8>) -> io::Result<Option<(Request, Result<(), NbdError>)>> {
        let mut inbox = lock(&self.inbox);
        if self.closing.load(Ordering::Relaxed) {
            return Ok(None);
        }
        let next = self.read_request(&mut inbox, buf);
        if !matches!(next, Ok(Some(_))) {
            // Marked while the read lock is held, so no other worker starts reading a stream
            // that has ended or broken (it would wait forever for a client that is done).
            self.close();
        }
        next
    }

    /// One request off the wire; None at EOF or DISC (requests already read still finish).
    fn read_request(
        &self,
        inbox: &mut Inbox,
        buf: &mut Vec<u8>,
    ) -> io::Result<Option<(Request, Result<(), NbdError>)>> {
        let reader = &mut inbox.stream;
        let waiting_since = reader.buffer().is_empty().then(Instant::now);
        if let Some(since) = waiting_since {
            if let Some(polling) = inbox.poll.start() {
                self.transport.poll_readable(since + polling.window)?;
            }
        }
        // Large buffers are kept while requests keep coming (allocating them again costs page
        // faults), and given back once the client goes quiet: the reader waits in steps, and
        // frees those set aside meanwhile at each step.
        while self.large_buffers.load(Ordering::Relaxed) > 0
            && reader.buffer().is_empty()
            && !self.transport.wait_readable(IDLE_AFTER)?
        {
            let freed = std::mem::take(&mut *lock(&self.spare)).len();
            self.large_buffers.fetch_sub(freed, Ordering::Relaxed);
        }
        let framing = self.state.framing;
        let mut header = [0; codec::EXTENDED_REQUEST_HEADER_LEN];
        let header = &mut header[..framing.request_header_len()];
        if !read_exact_or_eof(reader, header)? {
            return Ok(None);
        }
        if let Some(since) = waiting_since {
            inbox.poll.waited(since.elapsed());
        }
        let parsed = match framing {
            Framing::Extended => codec::parse_extended_request((&*header).try_into().expect("32 bytes")),
            _ => codec::parse_request((&*header).try_into().expect("28 bytes")),
        };
        let request = parsed.map_err(io::Error::other)?;
        if request.command == Command::Disc {
            return Ok(None);
        }
        let mut verdict = validate(&request, &self.state);
        if verdict.is_ok() && self.server.shutdown.requested() {
            verdict = Err(NbdError::Shutdown);
        }
        // A refused request's payload is still on the wire: read it to keep the stream in
        // step, unless it is too large to be worth draining.
        let payload = request.payload_len(framing).map_err(io::Error::other)?;
        if verdict.is_ok() {
            reader.read_exact(self.sized(buf, payload as usize))?;
        } else {
            // A payload cut short by the end of the stream ends the connection unanswered, as
            // nbdkit's "unexpected early EOF" does.
            if io::copy(&mut reader.take(payload), &mut io::sink())? < payload {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed inside a payload",
                ));
            }
        }
        Ok(Some((request, verdict)))
    }

    /// Run a validated request through the layers, with the flags nbdkit passes for it.
    fn execute(&self, request: &Request, buf: &mut Vec<u8>) -> Result<Outcome, Error> {
        let ctx = &self.opened;
        let (offset, count) = (request.offset, request.count);
        let flag = |bit: u16| request.flags & bit != 0;
        let fua = Flags::NONE.with(Flags::FUA, flag(CMD_FLAG_FUA));
        match request.command {
            Command::Read => {
                let buf = self.sized(buf, request.count as usize);
                spliced::expect_reply(buf);
                ctx.pread(buf, offset, Flags::NONE).map(|()| Outcome::Data)
            }
            Command::Write => ctx
                .pwrite(&buf[..request.count as usize], offset, fua)
                .map(|()| Outcome::Done),
            Command::Flush => ctx.flush(Flags::NONE).map(|()| Outcome::Done),
            Command::Trim => ctx.trim(count, offset, fua).map(|()| Outcome::Done),
            Command::Cache => ctx.cache(count, offset, Flags::NONE).map(|()| Outcome::Done),
            Command::WriteZeroes => {
                let flags = fua
                    .with(Flags::MAY_TRIM, !flag(CMD_FLAG_NO_HOLE))
                    .with(Flags::FAST_ZERO, flag(CMD_FLAG_FAST_ZERO));
                ctx.zero(count, offset, flags).map(|()| Outcome::Done)
            }
            Command::BlockStatus => self.block_status(request).map(Outcome::BlockStatus),
            // Validation refuses every other command before it gets here.
            Command::Disc | Command::Other(_) => Err(Error::bare(crate::api::Errno::Inval)),
        }
    }

    fn block_status(&self, request: &Request) -> Result<Vec<(u64, u32)>, Error> {
        let req_one = request.flags & CMD_FLAG_REQ_ONE != 0;
        let flags = Flags::NONE.with(Flags::REQ_ONE, req_one);
        let extents = self.opened.extents(request.count, request.offset, flags)?;
        let runs: Vec<(u64, u32)> = extents
            .iter()
            .map(|e| {
                let hole = if e.hole { STATE_HOLE } else { 0 };
                let zero = if e.zero { STATE_ZERO } else { 0 };
                (e.length, hole | zero)
            })
            .collect();
        Ok(codec::block_status_descriptors(
            request.count,
            req_one,
            &runs,
            self.state.framing,
        ))
    }

    /// A READ reply's bytes if they wait in a pipe and can go to the socket from there; for a
    /// socket that cannot take them (TLS, stdio) they are copied into `buf` instead.
    fn spliced_reply(&self, buf: &mut [u8]) -> io::Result<Option<Spliced>> {
        match spliced::take() {
            Some(spliced) if self.transport.splice_target().is_none() => spliced.copy_into(buf).map(|()| None),
            taken => Ok(taken),
        }
    }

    /// Send the reply, whole, under the write lock: nbdkit's reply shapes (server/protocol.c),
    /// and with extended headers the 32-byte chunks that replace them all. A READ's bytes come
    /// from `buf`, or from `spliced` when they wait in a pipe.
    fn reply(
        &self,
        request: &Request,
        result: Result<Outcome, Failure>,
        buf: &[u8],
        spliced: Option<Spliced>,
    ) -> io::Result<()> {
        let (cookie, offset) = (request.cookie, request.offset);
        let framing = self.state.framing;
        let _writing = lock(&self.write_lock);
        let mut writer = self.transport;
        match result {
            Ok(Outcome::Data) => {
                let data = &buf[..request.count as usize];
                let send = |writer: &mut &Transport, header: &[u8]| match (spliced, writer.splice_target()) {
                    (Some(spliced), Some(socket)) => {
                        send_more(socket, header)?;
                        spliced.send(socket)
                    }
                    _ => write_all_vectored(writer, &mut [IoSlice::new(header), IoSlice::new(data)]),
                };
                match framing {
                    Framing::Simple => send(&mut writer, &codec::simple_reply(cookie, None)),
                    Framing::Structured => send(
                        &mut writer,
                        &codec::read_chunk_header(cookie, offset, data.len() as u32),
                    ),
                    Framing::Extended => send(
                        &mut writer,
                        &codec::extended_read_header(cookie, offset, data.len() as u64),
                    ),
                }
            }
            Ok(Outcome::BlockStatus(descriptors)) => {
                let mut chunk = Vec::with_capacity(40 + 16 * descriptors.len());
                match framing {
                    Framing::Extended => {
                        codec::block_status_ext_chunk(&mut chunk, cookie, offset, BASE_ALLOCATION_ID, &descriptors)
                    }
                    _ => codec::block_status_chunk(&mut chunk, cookie, BASE_ALLOCATION_ID, &descriptors),
                }
                writer.write_all(&chunk)
            }
            Ok(Outcome::Done) if framing == Framing::Extended => {
                writer.write_all(&codec::extended_done(cookie, offset))
            }
            Ok(Outcome::Done) => writer.write_all(&codec::simple_reply(cookie, None)),
            // Structured replies carry errors in chunks for READ and BLOCK_STATUS only, as
            // nbdkit sends them; extended headers for every command.
            Err(failure)
                if framing == Framing::Extended
                    || (framing == Framing::Structured
                        && matches!(request.command, Command::Read | Command::BlockStatus)) =>
            {
                let mut chunk = Vec::new();
                let message = failure.message.as_deref().unwrap_or_default();
                codec::error_chunk(&mut chunk, framing, cookie, offset, failure.error, message);
                writer.write_all(&chunk)
            }
            Err(failure) => writer.write_all(&codec::simple_reply(cookie, Some(failure.error))),
        }
    }
}

/// Write all of `header` to `socket`, telling TCP that the payload follows (MSG_MORE), so
/// that header and payload can leave in one segment.
fn send_more(socket: std::os::fd::BorrowedFd<'_>, mut header: &[u8]) -> io::Result<()> {
    use nix::sys::socket::{send, MsgFlags};
    use std::os::fd::AsRawFd;
    while !header.is_empty() {
        match send(
            socket.as_raw_fd(),
            header,
            MsgFlags::from_bits_retain(libc::MSG_MORE) | MsgFlags::MSG_NOSIGNAL,
        ) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => header = &header[n..],
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Fill `buf`; false on a clean EOF before its first byte.
fn read_exact_or_eof(r: &mut impl Read, buf: &mut [u8]) -> io::Result<bool> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) if filled == 0 => return Ok(false),
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed inside a request header",
                ))
            }
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// Write every byte of `slices` with as few system calls as the kernel allows. The caller's
/// slices (on its stack) are advanced in place: no allocation per reply.
fn write_all_vectored(w: &mut impl Write, mut slices: &mut [IoSlice<'_>]) -> io::Result<()> {
    while !slices.is_empty() {
        match w.write_vectored(slices) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut slices, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
