//! The transmission phase: requests are read, validated once, run through the chain and
//! answered. With a parallel plugin several workers share the connection, so requests are
//! pipelined and replies may leave out of order; a request is read and its reply written
//! whole under the connection's read and write locks.

use super::handshake::Negotiated;
use super::ServerConfig;
use crate::chain::Context;
use crate::lifecycle::shutdown;
use crate::log;
use crate::protocol::consts::*;
use crate::protocol::transmission::{self as codec, Command, Request};
use crate::protocol::validate::{validate, ExportState};
use crate::protocol::NbdError;
use crate::runtime::bindings::ThreadModel;
use std::io::{self, IoSlice, Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

struct Connection<R, W> {
    id: u64,
    reader: Mutex<R>,
    writer: Mutex<W>,
    context: Context,
    export: ExportState,
    /// Set on DISC, EOF or a broken stream: no more requests are read.
    closing: AtomicBool,
}

/// What a request produced, besides an error.
enum Outcome {
    Done,
    /// READ: the first `count` bytes of the worker's buffer.
    Data,
    BlockStatus(Vec<(u32, u32)>),
}

pub fn run<R: Read + Send, W: Write + Send>(
    config: &ServerConfig,
    negotiated: Negotiated,
    reader: R,
    writer: W,
    id: u64,
) {
    let Negotiated {
        context,
        structured_replies,
        base_allocation,
    } = negotiated;
    let export = ExportState {
        size: context.size,
        eflags: context.eflags(structured_replies),
        structured_replies,
        base_allocation,
    };
    let workers = if context.thread_model() == ThreadModel::Parallel {
        config.threads.max(1)
    } else {
        1
    };
    let conn = Connection {
        id,
        reader: Mutex::new(reader),
        writer: Mutex::new(writer),
        context,
        export,
        closing: AtomicBool::new(false),
    };
    log::debug!(
        "connection {id}: transmission with {workers} worker(s), size {}, eflags {:#06x}",
        export.size,
        export.eflags
    );
    std::thread::scope(|scope| {
        for _ in 1..workers {
            scope.spawn(|| conn.worker());
        }
        conn.worker();
    });
}

impl<R: Read, W: Write> Connection<R, W> {
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
                Err(e) => return log::debug!("connection {}: {e}", self.id),
            };
            let result = verdict.and_then(|()| {
                self.execute(&request, &mut buf)
                    .map_err(|e| e.for_request_flags(request.flags))
            });
            if let Err(e) = self.reply(&request, result, &buf) {
                log::debug!("connection {}: writing a reply: {e}", self.id);
                return self.close();
            }
        }
    }

    /// Read the next request (and a WRITE's payload into `buf`), validated. None once the
    /// connection is closing.
    fn next_request(&self, buf: &mut Vec<u8>) -> io::Result<Option<(Request, Result<(), NbdError>)>> {
        let mut reader = self.reader.lock().unwrap_or_else(|p| p.into_inner());
        if self.closing.load(Ordering::Relaxed) {
            return Ok(None);
        }
        let next = self.read_request(&mut *reader, buf);
        if !matches!(next, Ok(Some(_))) {
            // Marked while the read lock is held, so no other worker starts reading a stream
            // that has ended or broken (it would wait forever for a client that is done).
            self.close();
        }
        next
    }

    /// One request off the wire; None at EOF or DISC (requests already read still finish).
    fn read_request(&self, reader: &mut R, buf: &mut Vec<u8>) -> io::Result<Option<(Request, Result<(), NbdError>)>> {
        let mut header = [0; codec::REQUEST_HEADER_LEN];
        if !read_exact_or_eof(reader, &mut header)? {
            return Ok(None);
        }
        let request = codec::parse_request(&header).map_err(io::Error::other)?;
        if request.command == Command::Disc {
            return Ok(None);
        }
        let mut verdict = validate(&request, &self.export);
        if verdict.is_ok() && shutdown::requested() {
            verdict = Err(NbdError::Shutdown);
        }
        if request.command == Command::Write {
            let count = request.count as usize;
            if verdict.is_ok() {
                if buf.len() < count {
                    buf.resize(count, 0);
                }
                reader.read_exact(&mut buf[..count])?;
            } else if count <= MAX_WRITE_DRAIN as usize {
                // Keep the stream in step: a refused write's payload is still on the wire.
                io::copy(&mut reader.take(count as u64), &mut io::sink())?;
            } else {
                return Err(io::Error::other(format!(
                    "refusing to drain a {count}-byte write payload"
                )));
            }
        }
        Ok(Some((request, verdict)))
    }

    fn execute(&self, request: &Request, buf: &mut Vec<u8>) -> Result<Outcome, NbdError> {
        let ctx = &self.context;
        let (offset, count, flags) = (request.offset, request.count, request.flags);
        let fua = flags & CMD_FLAG_FUA != 0;
        match request.command {
            Command::Read => {
                let count = count as usize;
                if buf.len() < count {
                    buf.resize(count, 0);
                }
                ctx.pread(&mut buf[..count], offset).map(|()| Outcome::Data)
            }
            Command::Write => ctx.pwrite(&buf[..count as usize], offset, fua).map(|()| Outcome::Done),
            Command::Flush => ctx.flush().map(|()| Outcome::Done),
            Command::Trim => ctx.trim(count, offset, fua).map(|()| Outcome::Done),
            Command::Cache => ctx.cache(count, offset).map(|()| Outcome::Done),
            Command::WriteZeroes => {
                let may_trim = flags & CMD_FLAG_NO_HOLE == 0;
                ctx.zero(count, offset, may_trim, fua, flags & CMD_FLAG_FAST_ZERO != 0)
                    .map(|()| Outcome::Done)
            }
            Command::BlockStatus => block_status(ctx, request).map(Outcome::BlockStatus),
            // Validation refuses every other command before it gets here.
            Command::Disc | Command::Other(_) => Err(NbdError::Inval),
        }
    }

    /// Send the reply, whole, under the write lock: nbdkit's reply shapes (doc §2.12).
    fn reply(&self, request: &Request, result: Result<Outcome, NbdError>, buf: &[u8]) -> io::Result<()> {
        let cookie = request.cookie;
        let structured = self.export.structured_replies;
        let mut writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let chunked = structured && matches!(request.command, Command::Read | Command::BlockStatus);
        match result {
            Ok(Outcome::Data) => {
                let data = &buf[..request.count as usize];
                if structured {
                    let header = codec::read_chunk_header(cookie, request.offset, request.count);
                    write_all_vectored(&mut *writer, &mut [IoSlice::new(&header), IoSlice::new(data)])
                } else {
                    let header = codec::simple_reply(cookie, None);
                    write_all_vectored(&mut *writer, &mut [IoSlice::new(&header), IoSlice::new(data)])
                }
            }
            Ok(Outcome::BlockStatus(descriptors)) => {
                let mut chunk = Vec::with_capacity(32 + 8 * descriptors.len());
                codec::block_status_chunk(&mut chunk, cookie, BASE_ALLOCATION_ID, &descriptors);
                writer.write_all(&chunk)
            }
            Ok(Outcome::Done) => writer.write_all(&codec::simple_reply(cookie, None)),
            Err(e) if chunked => writer.write_all(&codec::error_chunk(cookie, e)),
            Err(e) => writer.write_all(&codec::simple_reply(cookie, Some(e))),
        }?;
        writer.flush()
    }
}

fn block_status(ctx: &Context, request: &Request) -> Result<Vec<(u32, u32)>, NbdError> {
    let req_one = request.flags & CMD_FLAG_REQ_ONE != 0;
    let extents = ctx.extents(request.count, request.offset, req_one)?;
    let extents: Vec<(u64, u64, u32)> = extents
        .iter()
        .map(|e| (e.offset, e.length, extent_bits(e.flags)))
        .collect();
    codec::extents_to_descriptors(request.offset, request.count, ctx.size, req_one, &extents).map_err(|why| {
        log::error!("{}: extents: {why}", ctx.plugin_name());
        NbdError::Inval
    })
}

fn extent_bits(flags: crate::runtime::bindings::ExtentFlags) -> u32 {
    use crate::runtime::bindings::ExtentFlags;
    let mut bits = 0;
    if flags.contains(ExtentFlags::HOLE) {
        bits |= STATE_HOLE;
    }
    if flags.contains(ExtentFlags::ZERO) {
        bits |= STATE_ZERO;
    }
    bits
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
