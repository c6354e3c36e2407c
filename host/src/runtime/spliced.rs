//! Zero-copy READ replies from granted files. When a plugin fills a read reply's whole buffer
//! from a granted file (`file.read-into`), the host splices the bytes from the file into a
//! pipe instead of copying them into the buffer, and the reply writer splices them from the
//! pipe to the socket: page-cache pages travel by reference, and the copies into and out of
//! the request buffer are gone.
//!
//! The buffer the bytes belong in is then stale. Anything that looks at it through the
//! `buffers` interface (a filter checking or changing the data, the plugin patching it)
//! first has the pipe's bytes copied in ([`materialize`]), so every layer sees what a copy
//! would have given it. The splice into the pipes happens inside `read-into`, so a failing
//! read fails there, as a copying one does; only a range that fits a thread's pipes whole
//! is spliced, and anything else, or any error, falls back to copying.
//!
//! State is per thread: a request runs on the worker thread that read it, and the layers
//! call each other on that thread.

use std::cell::RefCell;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Pipes the process keeps at once: two descriptors each, and they count against the
/// user's pipe-buffer allowance (fs.pipe-user-pages-soft). Threads past this copy.
const MAX_PIPES: usize = 64;

/// Pipes one thread chains for one reply: 4 MiB at the usual 1 MiB a pipe, which covers
/// nbdcopy's 256 KiB and qemu-img's 2 MiB reads.
const PIPES_PER_THREAD: usize = 4;

/// What one pipe asks to hold: fs.pipe-max-size's default. An unprivileged process may get
/// less, and then more pipes or copying.
const PIPE_BYTES: i32 = 1 << 20;

/// Below this a READ is copied: two splices and a pipe cost more than copying a few pages
/// (server CPU per byte read, nbdcopy at 32 KiB requests: copying 10–20% less; at 64 KiB,
/// splicing 40–60% less).
const SPLICE_FROM: usize = 64 << 10;

/// A pipe holds page references, one slot per page or part of a page.
const PAGE: usize = 4096;

static PIPES: AtomicUsize = AtomicUsize::new(0);

struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    slots: usize,
}

impl Pipe {
    fn open() -> Option<Pipe> {
        if PIPES.fetch_add(1, Ordering::Relaxed) >= MAX_PIPES {
            PIPES.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        let Ok((read, write)) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC) else {
            PIPES.fetch_sub(1, Ordering::Relaxed);
            return None;
        };
        // SAFETY: fcntl on a descriptor this function owns.
        unsafe { libc::fcntl(write.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_BYTES) };
        // SAFETY: as above.
        let bytes = unsafe { libc::fcntl(write.as_raw_fd(), libc::F_GETPIPE_SZ) };
        let slots = usize::try_from(bytes).unwrap_or(0) / PAGE;
        Some(Pipe { read, write, slots })
    }

    /// How much of a range starting at file offset `offset` fits: whole slots, the first one
    /// from `offset`'s place in its page.
    fn fits(&self, offset: u64) -> usize {
        (self.slots * PAGE).saturating_sub((offset % PAGE as u64) as usize)
    }
}

impl Drop for Pipe {
    fn drop(&mut self) {
        PIPES.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The reply buffer a worker registered, and whether its bytes are in the pipes.
#[derive(Default)]
struct Slot {
    pipes: Vec<Pipe>,
    /// Address and length of the READ buffer whose reply is being made.
    reply: Option<(usize, usize)>,
    /// The reply buffer's bytes are in the pipes (in order, each filled as
    /// [`Slot::shares`] says), not in the buffer.
    in_pipes: bool,
    /// The file offset the bytes in the pipes came from: it decides each pipe's share.
    from: u64,
}

impl Slot {
    /// Open pipes until they can hold `count` bytes from file offset `offset`; false when a
    /// thread's pipes cannot.
    fn open_for(&mut self, count: usize, offset: u64) -> bool {
        while self.shares(count, offset).map(|(_, share)| share).sum::<usize>() < count {
            match (self.pipes.len() < PIPES_PER_THREAD).then(Pipe::open).flatten() {
                Some(pipe) => self.pipes.push(pipe),
                None => return false,
            }
        }
        true
    }

    /// Each pipe with its share of `len` bytes from file offset `from`, in order.
    fn shares(&self, len: usize, from: u64) -> impl Iterator<Item = (&Pipe, usize)> {
        let (mut left, mut at) = (len, from);
        self.pipes.iter().map_while(move |pipe| {
            let share = pipe.fits(at).min(left);
            (share > 0).then(|| {
                left -= share;
                at += share as u64;
                (pipe, share)
            })
        })
    }

    /// Throw away the pipes and whatever they hold.
    fn discard(&mut self) {
        self.pipes.clear();
        self.in_pipes = false;
    }

    /// Copy the bytes waiting in the pipes into the registered reply buffer.
    fn copy_in(&mut self) -> io::Result<()> {
        match self.reply {
            Some((ptr, len)) if self.in_pipes => {
                // SAFETY: bytes wait in the pipes only between `defer`, inside the READ, and
                // `take` after it, on this thread: the worker's buffer is alive and lent to
                // the call in progress.
                let buf = unsafe { std::slice::from_raw_parts_mut(ptr as *mut u8, len) };
                copy_out(self, buf)
            }
            _ => Ok(()),
        }
    }
}

thread_local! {
    static SLOT: RefCell<Slot> = RefCell::default();
}

/// A READ is about to fill `buf`: its bytes may be spliced until [`take`].
pub fn expect_reply(buf: &[u8]) {
    SLOT.with_borrow_mut(|slot| {
        debug_assert!(!slot.in_pipes, "a spliced reply was never taken");
        slot.reply = Some((buf.as_ptr() as usize, buf.len()));
    });
}

/// Splice `buf`'s bytes from `offset` of `file` into the pipes instead of reading them into
/// it, if `buf` is the whole registered reply buffer. False when it is not, or the range does
/// not fit, or the file will not splice: the caller reads instead.
pub(crate) fn defer(file: &File, buf: &[u8], offset: u64) -> bool {
    SLOT.with_borrow_mut(|slot| {
        let count = buf.len();
        if slot.reply != Some((buf.as_ptr() as usize, count)) || count < SPLICE_FROM {
            return false;
        }
        if !slot.open_for(count, offset) {
            return false;
        }
        // The pipes are empty here: bytes put in them before were copied in or sent.
        let filled = slot.shares(count, offset).try_fold(offset, |at, (pipe, share)| {
            fill(file.as_fd(), pipe, share, at).map(|()| at + share as u64)
        });
        if filled.is_err() {
            // Whatever reached the pipes goes with them; the caller's read reports the error
            // the file really has.
            slot.discard();
            return false;
        }
        slot.in_pipes = true;
        slot.from = offset;
        true
    })
}

fn fill(file: BorrowedFd<'_>, pipe: &Pipe, count: usize, offset: u64) -> io::Result<()> {
    let mut off = i64::try_from(offset).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let mut left = count;
    while left > 0 {
        // Non-blocking on the pipe: a range that does not fit fails instead of waiting for a
        // reader that is this very thread.
        let flags = nix::fcntl::SpliceFFlags::SPLICE_F_NONBLOCK;
        let n = nix::fcntl::splice(file, Some(&mut off), pipe.write.as_fd(), None, left, flags)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        left -= n;
    }
    Ok(())
}

/// If the buffer at `ptr` (of `len` bytes) is a reply buffer whose bytes wait in the pipes,
/// copy them in: someone is about to read or change it.
pub(crate) fn materialize(ptr: *mut u8, len: usize) -> io::Result<()> {
    SLOT.with_borrow_mut(|slot| {
        if slot.reply != Some((ptr as usize, len)) {
            return Ok(());
        }
        slot.copy_in()
    })
}

/// Move the bytes waiting in the pipes into `buf`.
fn copy_out(slot: &mut Slot, buf: &mut [u8]) -> io::Result<()> {
    slot.in_pipes = false;
    let mut rest = &mut buf[..];
    let mut done = Ok(());
    for (pipe, share) in slot.shares(rest.len(), slot.from) {
        let (part, after) = rest.split_at_mut(share);
        rest = after;
        done = drain(pipe, part);
        if done.is_err() {
            break;
        }
    }
    if done.is_err() {
        slot.discard();
    }
    done
}

/// Copy any bytes waiting in the pipes into the reply buffer, letting go of the file's
/// pages: the component is about to ask the kernel to drop them from its cache (the file
/// plugin's cache=none), which it cannot do while a pipe holds them.
pub(crate) fn settle() -> io::Result<()> {
    SLOT.with_borrow_mut(Slot::copy_in)
}

fn drain(pipe: &Pipe, mut buf: &mut [u8]) -> io::Result<()> {
    while !buf.is_empty() {
        match nix::unistd::read(pipe.read.as_raw_fd(), buf) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => buf = &mut buf[n..],
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// The READ is done: its bytes, if they wait in the pipes, for the reply to send or copy.
/// The registration ends here; a reply that does not send them (the READ failed) drops them
/// with the [`Spliced`].
pub fn take() -> Option<Spliced> {
    SLOT.with_borrow_mut(|slot| {
        let (_, len) = slot.reply.take()?;
        // Built only when kept: dropping one here would borrow the slot again.
        slot.in_pipes.then(|| Spliced { len })
    })
}

/// A READ reply's bytes, waiting in this thread's pipes.
#[must_use = "dropping it throws the reply's bytes away"]
pub struct Spliced {
    len: usize,
}

impl Spliced {
    /// Move the bytes to `out`, a socket the reply header has just been written to.
    pub fn send(self, out: BorrowedFd<'_>) -> io::Result<()> {
        SLOT.with_borrow_mut(|slot| {
            slot.in_pipes = false;
            let mut done = Ok(());
            for (pipe, share) in slot.shares(self.len, slot.from) {
                done = pour(pipe, share, out);
                if done.is_err() {
                    break;
                }
            }
            if done.is_err() {
                // Part of the bytes may still be in them.
                slot.discard();
            }
            done
        })
    }

    /// Copy the bytes into `buf`, the reply's buffer, for a transport that cannot splice.
    pub fn copy_into(self, buf: &mut [u8]) -> io::Result<()> {
        SLOT.with_borrow_mut(|slot| copy_out(slot, &mut buf[..self.len]))
    }
}

/// A reply that did not send its bytes (the READ failed, or its header could not be
/// written): they go with the pipes, so the next READ starts with empty ones.
impl Drop for Spliced {
    fn drop(&mut self) {
        SLOT.with_borrow_mut(|slot| {
            if slot.in_pipes {
                slot.discard();
            }
        });
    }
}

/// Splice `count` bytes from `pipe` to `out`.
fn pour(pipe: &Pipe, mut count: usize, out: BorrowedFd<'_>) -> io::Result<()> {
    while count > 0 {
        let flags = nix::fcntl::SpliceFFlags::SPLICE_F_MOVE;
        match nix::fcntl::splice(pipe.read.as_fd(), None, out, None, count, flags) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => count -= n,
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
