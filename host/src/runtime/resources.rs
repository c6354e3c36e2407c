//! The host-side representations of the WIT resources a component holds: request buffers,
//! granted files and directories, and the next layer's connections. A leaf: these are plain
//! values; the host interface implementations in `host/` give them behaviour.
//!
//! A request buffer belongs to the connection worker that runs the request. For the length
//! of one call the store holds a raw view of it ([`RequestBuffers`]), set and cleared by
//! `Instance::call` and nothing else; the guest's borrow handle with rep [`CURRENT`] names
//! "the current buffer", so no resource table entry is made per request. A component can
//! also make buffers of its own (table entries), e.g. a filter reading headers from the
//! layer below.

use super::below::BelowConnection;
use std::fs::File;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use wasmtime::{bail, Result};

/// The rep that names the current request's buffer; table entries never reach it.
pub(crate) const CURRENT: u32 = u32::MAX;

/// The WIT `read-buf`: the current request's buffer (rep [`CURRENT`]) or a component's own.
pub struct ReadBuf {
    pub(crate) bytes: Vec<u8>,
}

/// The WIT `write-buf`: the current request's payload (rep [`CURRENT`]) or a component's own.
pub struct WriteBuf {
    pub(crate) bytes: Vec<u8>,
}

/// A file opened for a config key of kind `file`, or beneath a granted directory.
pub struct GrantedFile {
    pub(crate) file: Arc<File>,
    pub(crate) writable: bool,
}

/// A directory opened for a config key of kind `directory` (an `O_PATH` descriptor).
pub struct GrantedDirectory {
    pub(crate) dir: Arc<OwnedFd>,
    pub(crate) writable: bool,
}

/// A granted HTTP origin, as a component opened it.
pub struct HttpOrigin(pub(crate) super::network::Origin);

/// A stream to a granted endpoint.
pub struct NetStream(pub(crate) super::network::Stream);

/// A connection of the layer below, as the filter above holds it; dropping it closes it.
pub struct NextConnection(pub(crate) Arc<dyn BelowConnection>);

/// The bytes a call lends the component, for the length of that call.
pub enum CallBuffers<'a> {
    None,
    Read(&'a mut [u8]),
    Write(&'a [u8]),
}

impl CallBuffers<'_> {
    pub(crate) fn raw(&mut self) -> RequestBuffers {
        match self {
            CallBuffers::None => RequestBuffers::EMPTY,
            CallBuffers::Read(buf) => RequestBuffers {
                read: RawBuf::of(buf),
                write: RawBuf::EMPTY,
            },
            CallBuffers::Write(buf) => RequestBuffers {
                read: RawBuf::EMPTY,
                write: RawBuf {
                    ptr: buf.as_ptr().cast_mut(),
                    len: buf.len(),
                },
            },
        }
    }
}

/// A view of a buffer lent to the call in progress.
#[derive(Clone, Copy)]
pub(crate) struct RawBuf {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: a RawBuf is dereferenced only by the thread running the call it was lent to, while
// that call's `CallBuffers` borrow keeps the bytes alive (see `Instance::call`).
unsafe impl Send for RawBuf {}

impl RawBuf {
    const EMPTY: RawBuf = RawBuf {
        ptr: std::ptr::null_mut(),
        len: 0,
    };

    pub(crate) fn of(buf: &mut [u8]) -> RawBuf {
        RawBuf {
            ptr: buf.as_mut_ptr(),
            len: buf.len(),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn as_mut_ptr(&self) -> *mut u8 {
        self.ptr
    }

    fn range(&self, at: u32, count: usize) -> Result<std::ops::Range<usize>> {
        let start = at as usize;
        match start.checked_add(count) {
            Some(end) if end <= self.len && !self.ptr.is_null() => Ok(start..end),
            _ => bail!(
                "buffer access [{start}, +{count}) outside the request buffer of {} bytes",
                self.len
            ),
        }
    }

    /// Bytes [at, at + count) for writing.
    ///
    /// SAFETY: the caller runs inside the call the buffer was lent to, and holds no other
    /// slice of it.
    pub(crate) unsafe fn slice_mut<'a>(&self, at: u32, count: usize) -> Result<&'a mut [u8]> {
        let range = self.range(at, count)?;
        // SAFETY: in range of a live buffer, per the caller's promise.
        Ok(unsafe { std::slice::from_raw_parts_mut(self.ptr.add(range.start), range.len()) })
    }

    /// Bytes [at, at + count) for reading. SAFETY: as [`RawBuf::slice_mut`].
    pub(crate) unsafe fn slice<'a>(&self, at: u32, count: usize) -> Result<&'a [u8]> {
        let range = self.range(at, count)?;
        // SAFETY: in range of a live buffer, per the caller's promise.
        Ok(unsafe { std::slice::from_raw_parts(self.ptr.add(range.start), range.len()) })
    }
}

/// The buffers of the call in progress; empty between calls.
#[derive(Clone, Copy)]
pub(crate) struct RequestBuffers {
    pub(crate) read: RawBuf,
    pub(crate) write: RawBuf,
}

impl RequestBuffers {
    pub(crate) const EMPTY: RequestBuffers = RequestBuffers {
        read: RawBuf::EMPTY,
        write: RawBuf::EMPTY,
    };
}
