//! The request buffers a guest sees as `borrow<read-buf>` / `borrow<write-buf>`.
//!
//! A request buffer belongs to the connection worker that runs the request. For the length of
//! one call the store holds a raw view of it; the guest's borrow handle with rep
//! [`CURRENT`] names "the current buffer", so no resource table entry is created per request.
//! A guest can also make its own scratch read buffer (a table entry), e.g. a filter reading
//! headers from the layer below.

use super::bindings::nbdbox::plugin::buffers::{Host, HostReadBuf, HostWriteBuf};
use super::store::LayerCtx;
use wasmtime::component::Resource;
use wasmtime::{bail, Result};

/// The WIT `read-buf`: the current request's buffer (rep [`CURRENT`]) or a guest's scratch.
pub struct ReadBuf {
    scratch: Vec<u8>,
}

/// The WIT `write-buf`: always the current request's payload.
pub struct WriteBuf;

/// The rep that names the current request's buffer; table entries never reach it.
pub(crate) const CURRENT: u32 = u32::MAX;

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
    Resource::new_borrow(CURRENT)
}

impl LayerCtx {
    /// The bytes a read-buf handle names: the request buffer or a scratch buffer.
    fn read_buf(&mut self, buf: &Resource<ReadBuf>, at: u32, count: usize) -> Result<&mut [u8]> {
        if buf.rep() == CURRENT {
            return self.buffers.read_slice(at, count);
        }
        let scratch = &mut self.table.get_mut(buf)?.scratch;
        let start = at as usize;
        match start.checked_add(count) {
            Some(end) if end <= scratch.len() => Ok(&mut scratch[start..end]),
            _ => bail!(
                "buffer access [{start}, +{count}) outside a scratch buffer of {} bytes",
                scratch.len()
            ),
        }
    }

    /// The buffers to hand to the layer below for a call naming `buf` as its destination.
    pub(crate) fn buffers_for(&mut self, buf: &Resource<ReadBuf>) -> Result<RequestBuffers> {
        let mut buffers = self.buffers;
        if buf.rep() != CURRENT {
            buffers.set_read(&mut self.table.get_mut(buf)?.scratch);
        }
        Ok(buffers)
    }
}

impl Host for LayerCtx {}

impl HostReadBuf for LayerCtx {
    fn new(&mut self, len: u32) -> Result<Resource<ReadBuf>> {
        Ok(self.table.push(ReadBuf {
            scratch: vec![0; len as usize],
        })?)
    }
    fn len(&mut self, buf: Resource<ReadBuf>) -> Result<u32> {
        if buf.rep() == CURRENT {
            return Ok(self.buffers.read.len as u32);
        }
        Ok(self.table.get(&buf)?.scratch.len() as u32)
    }
    fn read(&mut self, buf: Resource<ReadBuf>, at: u32, count: u32) -> Result<Vec<u8>> {
        Ok(self.read_buf(&buf, at, count as usize)?.to_vec())
    }
    fn write(&mut self, buf: Resource<ReadBuf>, at: u32, data: Vec<u8>) -> Result<()> {
        self.read_buf(&buf, at, data.len())?.copy_from_slice(&data);
        Ok(())
    }
    fn zero(&mut self, buf: Resource<ReadBuf>, at: u32, count: u32) -> Result<()> {
        self.read_buf(&buf, at, count as usize)?.fill(0);
        Ok(())
    }
    fn drop(&mut self, buf: Resource<ReadBuf>) -> Result<()> {
        if buf.rep() != CURRENT {
            self.table.delete(buf)?;
        }
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
