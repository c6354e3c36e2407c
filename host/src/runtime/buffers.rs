//! The request buffers a guest sees as `borrow<read-buf>` / `borrow<write-buf>`.
//!
//! A buffer belongs to the connection worker that runs the request. For the length of one
//! call the store holds a raw view of it; the guest's borrow handle (rep 0) names "the
//! current buffer", so no resource table entry is created per request.

use super::bindings::nbdbox::plugin::buffers::{Host, HostReadBuf, HostWriteBuf};
use super::store::LayerCtx;
use wasmtime::component::Resource;
use wasmtime::{bail, Result};

/// Marker types named by the WIT resources.
pub struct ReadBuf;
pub struct WriteBuf;

/// A view of the current request's buffer, valid only while a call is in progress.
#[derive(Clone, Copy)]
pub(crate) struct RawBuf {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: a RawBuf is only dereferenced by the thread that runs the call it was set up for,
// while the owning buffer is borrowed by that call (see `RequestBuffers::with_*`).
unsafe impl Send for RawBuf {}

impl RawBuf {
    const EMPTY: RawBuf = RawBuf {
        ptr: std::ptr::null_mut(),
        len: 0,
    };

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
}

/// The buffers of the call in progress.
#[derive(Clone, Copy)]
pub(crate) struct RequestBuffers {
    read: RawBuf,
    write: RawBuf,
}

impl Default for RequestBuffers {
    fn default() -> Self {
        RequestBuffers {
            read: RawBuf::EMPTY,
            write: RawBuf::EMPTY,
        }
    }
}

impl RequestBuffers {
    pub(crate) fn set_read(&mut self, buf: &mut [u8]) {
        self.read = RawBuf {
            ptr: buf.as_mut_ptr(),
            len: buf.len(),
        };
    }
    pub(crate) fn set_write(&mut self, buf: &[u8]) {
        self.write = RawBuf {
            ptr: buf.as_ptr() as *mut u8,
            len: buf.len(),
        };
    }
    pub(crate) fn clear(&mut self) {
        *self = RequestBuffers::default();
    }

    /// The current read buffer's bytes [at, at+count), for host code that fills it.
    pub(crate) fn read_slice(&mut self, at: u32, count: usize) -> Result<&mut [u8]> {
        let range = self.read.range(at, count)?;
        // SAFETY: the range is inside the live buffer set by `set_read` for this call.
        Ok(unsafe { std::slice::from_raw_parts_mut(self.read.ptr.add(range.start), range.len()) })
    }

    /// The current write buffer's bytes [at, at+count).
    pub(crate) fn write_slice(&self, at: u32, count: usize) -> Result<&[u8]> {
        let range = self.write.range(at, count)?;
        // SAFETY: as above, for the buffer set by `set_write`.
        Ok(unsafe { std::slice::from_raw_parts(self.write.ptr.add(range.start), range.len()) })
    }
}

/// The handle passed to the guest for the current buffer.
pub(crate) fn current<T: 'static>() -> Resource<T> {
    Resource::new_borrow(0)
}

impl Host for LayerCtx {}

impl HostReadBuf for LayerCtx {
    fn len(&mut self, _: Resource<ReadBuf>) -> Result<u32> {
        Ok(self.buffers.read.len as u32)
    }
    fn write(&mut self, _: Resource<ReadBuf>, at: u32, data: Vec<u8>) -> Result<()> {
        self.buffers.read_slice(at, data.len())?.copy_from_slice(&data);
        Ok(())
    }
    fn zero(&mut self, _: Resource<ReadBuf>, at: u32, count: u32) -> Result<()> {
        self.buffers.read_slice(at, count as usize)?.fill(0);
        Ok(())
    }
    fn drop(&mut self, _: Resource<ReadBuf>) -> Result<()> {
        Ok(())
    }
}

impl HostWriteBuf for LayerCtx {
    fn len(&mut self, _: Resource<WriteBuf>) -> Result<u32> {
        Ok(self.buffers.write.len as u32)
    }
    fn read(&mut self, _: Resource<WriteBuf>, at: u32, count: u32) -> Result<Vec<u8>> {
        Ok(self.buffers.write_slice(at, count as usize)?.to_vec())
    }
    fn drop(&mut self, _: Resource<WriteBuf>) -> Result<()> {
        Ok(())
    }
}
