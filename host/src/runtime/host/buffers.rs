//! The `buffers` interface: the current request's buffers (rep `CURRENT`), and buffers a
//! component makes for itself. A component's own buffers live in host memory, so they are
//! capped at the protocol's largest request, allocated fallibly, and counted against the
//! instance's memory limit.

use crate::protocol::consts::MAX_REQUEST_SIZE;
use crate::runtime::bindings::nbdbox::plugin::buffers::{Host, HostReadBuf, HostWriteBuf};
use crate::runtime::resources::{RawBuf, ReadBuf, WriteBuf, CURRENT};
use crate::runtime::state::StoreData;
use bytes::Bytes;
use wasmtime::component::{Linker, Resource, WasmList};
use wasmtime::{bail, Result, StoreContextMut};

/// A zeroed vector of `len` bytes, or a trap if the allocation fails.
pub(super) fn allocate(len: usize) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    if bytes.try_reserve_exact(len).is_err() {
        bail!("cannot allocate a buffer of {len} bytes");
    }
    bytes.resize(len, 0);
    Ok(bytes)
}

/// A copy of `bytes` for the component, or a trap if the allocation fails.
pub(super) fn copy_out(bytes: &[u8]) -> Result<Vec<u8>> {
    let mut copy = Vec::new();
    if copy.try_reserve_exact(bytes.len()).is_err() {
        bail!("cannot allocate {} bytes", bytes.len());
    }
    copy.extend_from_slice(bytes);
    Ok(copy)
}

fn check_len(len: usize) -> Result<()> {
    if len > MAX_REQUEST_SIZE as usize {
        bail!("a buffer of {len} bytes is larger than the largest request ({MAX_REQUEST_SIZE} bytes)");
    }
    Ok(())
}

/// The bytes `buf` names, as a raw view: the current request's read buffer or the component's
/// own. Valid for the host call in progress (the table entry cannot go away during it). A
/// reply buffer whose bytes wait in a pipe gets them first.
pub(super) fn read_target(data: &mut StoreData, buf: &Resource<ReadBuf>) -> Result<RawBuf> {
    if buf.rep() == CURRENT {
        let raw = data.buffers.read;
        crate::runtime::spliced::materialize(raw.as_mut_ptr(), raw.len())?;
        return Ok(raw);
    }
    Ok(RawBuf::of(&mut data.table.get_mut(buf)?.bytes))
}

/// The bytes `buf` names, like [`read_target`].
pub(super) fn write_source(data: &mut StoreData, buf: &Resource<WriteBuf>) -> Result<RawBuf> {
    if buf.rep() == CURRENT {
        return Ok(data.buffers.write);
    }
    Ok(RawBuf::of(&mut data.table.get_mut(buf)?.bytes))
}

/// Redefines the calls that move a request's bytes across the boundary, so that they go
/// between the guest's linear memory and the host buffer in one copy: the generated bindings
/// pass a `Vec` (one allocation and one more copy per call, and above 128 KiB an mmap).
/// `read-buf.write` copies out of the guest's list in place; `read-buf.read` and
/// `write-buf.read` hand wasmtime a view of the host buffer to lower. The generated methods
/// below stay as the traits require and are never reached once this runs after
/// `add_to_linker`.
pub(super) fn link_copy_free(linker: &mut Linker<StoreData>) -> Result<()> {
    linker.allow_shadowing(true);
    let (minor, patch) = crate::runtime::bindings::WIT_VERSION;
    let mut buffers = linker.instance(&format!("nbdbox:plugin/buffers@0.{minor}.{patch}"))?;
    buffers.func_wrap(
        "[method]read-buf.write",
        |mut store: StoreContextMut<'_, StoreData>, (buf, at, data): (Resource<ReadBuf>, u32, WasmList<u8>)| {
            let raw = read_target(store.data_mut(), &buf)?;
            let bytes = data.as_le_slice(&store);
            // SAFETY: as in `read`; the source is guest memory, never a host buffer.
            unsafe { raw.slice_mut(at, bytes.len())? }.copy_from_slice(bytes);
            Ok(())
        },
    )?;
    buffers.func_wrap(
        "[method]read-buf.read",
        |mut store: StoreContextMut<'_, StoreData>, (buf, at, count): (Resource<ReadBuf>, u32, u32)| {
            let raw = read_target(store.data_mut(), &buf)?;
            // SAFETY: as in `read`.
            Ok((Lent::view(unsafe { raw.slice(at, count as usize)? }),))
        },
    )?;
    buffers.func_wrap(
        "[method]write-buf.read",
        |mut store: StoreContextMut<'_, StoreData>, (buf, at, count): (Resource<WriteBuf>, u32, u32)| {
            let raw = write_source(store.data_mut(), &buf)?;
            // SAFETY: as in `read`.
            Ok((Lent::view(unsafe { raw.slice(at, count as usize)? }),))
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

/// Host bytes lent to wasmtime for the result of one host call: it lowers them into the
/// list the guest receives and drops the view before the call returns, while the buffer is
/// still lent to the call, or owned by the instance's table. The guest cannot change that
/// table during the lowering: its `realloc` runs with the canonical ABI's may-leave flag
/// clear, so wasmtime traps any import or resource drop from inside it.
struct Lent {
    ptr: *const u8,
    len: usize,
}

// SAFETY: a view is created and dropped on the thread running the host call.
unsafe impl Send for Lent {}

impl Lent {
    fn view(bytes: &[u8]) -> Bytes {
        Bytes::from_owner(Lent {
            ptr: bytes.as_ptr(),
            len: bytes.len(),
        })
    }
}

impl AsRef<[u8]> for Lent {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: see the type's documentation.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

impl Host for StoreData {}

impl HostReadBuf for StoreData {
    fn new(&mut self, len: u32) -> Result<Resource<ReadBuf>> {
        check_len(len as usize)?;
        self.hold_host_bytes(u64::from(len))?;
        let bytes = allocate(len as usize)?;
        Ok(self.table.push(ReadBuf { bytes })?)
    }

    fn len(&mut self, buf: Resource<ReadBuf>) -> Result<u32> {
        Ok(read_target(self, &buf)?.len() as u32)
    }

    fn read(&mut self, buf: Resource<ReadBuf>, at: u32, count: u32) -> Result<Vec<u8>> {
        let raw = read_target(self, &buf)?;
        // SAFETY: a view of a buffer lent to this call or owned by this instance's table.
        copy_out(unsafe { raw.slice(at, count as usize)? })
    }

    fn write(&mut self, buf: Resource<ReadBuf>, at: u32, data: Vec<u8>) -> Result<()> {
        let raw = read_target(self, &buf)?;
        // SAFETY: as in `read`.
        unsafe { raw.slice_mut(at, data.len())? }.copy_from_slice(&data);
        Ok(())
    }

    fn zero(&mut self, buf: Resource<ReadBuf>, at: u32, count: u32) -> Result<()> {
        let raw = read_target(self, &buf)?;
        // SAFETY: as in `read`.
        unsafe { raw.slice_mut(at, count as usize)? }.fill(0);
        Ok(())
    }

    fn drop(&mut self, buf: Resource<ReadBuf>) -> Result<()> {
        if buf.rep() != CURRENT {
            let freed = self.table.delete(buf)?.bytes.len();
            self.release_host_bytes(freed as u64);
        }
        Ok(())
    }
}

impl HostWriteBuf for StoreData {
    fn new(&mut self, data: Vec<u8>) -> Result<Resource<WriteBuf>> {
        check_len(data.len())?;
        self.hold_host_bytes(data.len() as u64)?;
        Ok(self.table.push(WriteBuf { bytes: data })?)
    }

    fn len(&mut self, buf: Resource<WriteBuf>) -> Result<u32> {
        Ok(write_source(self, &buf)?.len() as u32)
    }

    fn read(&mut self, buf: Resource<WriteBuf>, at: u32, count: u32) -> Result<Vec<u8>> {
        let raw = write_source(self, &buf)?;
        // SAFETY: a view of a buffer lent to this call or owned by this instance's table.
        copy_out(unsafe { raw.slice(at, count as usize)? })
    }

    fn drop(&mut self, buf: Resource<WriteBuf>) -> Result<()> {
        if buf.rep() != CURRENT {
            let freed = self.table.delete(buf)?.bytes.len();
            self.release_host_bytes(freed as u64);
        }
        Ok(())
    }
}
