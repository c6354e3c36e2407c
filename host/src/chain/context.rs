//! One connection's view of the export, as nbdkit's `struct context`: the plugin's handle,
//! the size and capabilities cached at open, and the emulation of what the plugin lacks.

use super::report;
use crate::protocol::consts;
use crate::protocol::NbdError;
use crate::runtime::bindings::{
    BlockSize, CacheMode, CmdFlags, Errno, Extent, FuaMode, GuestError, PluginExports, ThreadModel, ZeroMode,
};
use crate::runtime::buffers::current;
use crate::runtime::{CallError, InstanceSlot, LayerCtx};
use std::sync::{Arc, Mutex};
use wasmtime::component::ResourceAny;
use wasmtime::Store;

/// The effective capabilities of an open export, after nbdkit's rules for read-only exports
/// and server emulation.
#[derive(Clone, Copy, Debug)]
pub struct Caps {
    pub can_write: bool,
    pub can_flush: bool,
    pub is_rotational: bool,
    pub can_trim: bool,
    pub can_zero: ZeroMode,
    pub can_fast_zero: bool,
    pub can_extents: bool,
    pub can_fua: FuaMode,
    pub can_multi_conn: bool,
    pub can_cache: CacheMode,
}

/// Zeros to write when the plugin cannot zero by itself.
static ZEROES: [u8; 1 << 20] = [0; 1 << 20];

/// The plugin's connection resource, and the instance generation it belongs to.
struct Handle {
    resource: Option<ResourceAny>,
    generation: u64,
}

pub struct Context {
    slot: Arc<InstanceSlot>,
    request_lock: Option<Arc<Mutex<()>>>,
    handle: Mutex<Handle>,
    readonly: bool,
    export_name: String,
    pub size: u64,
    pub caps: Caps,
    pub block_size: Option<BlockSize>,
}

/// The buffers a call uses.
enum Buffers<'a> {
    None,
    Read(&'a mut [u8]),
    Write(&'a [u8]),
}

impl Context {
    /// nbdkit's open + get_size + can_* + block_size, cached for the connection.
    pub(super) fn open(
        slot: Arc<InstanceSlot>,
        request_lock: Option<Arc<Mutex<()>>>,
        readonly: bool,
        export_name: &str,
    ) -> Result<Context, String> {
        let mut ctx = Context {
            slot,
            request_lock,
            handle: Mutex::new(Handle {
                resource: None,
                generation: 0,
            }),
            readonly,
            export_name: export_name.to_owned(),
            size: 0,
            caps: Caps {
                can_write: false,
                can_flush: false,
                is_rotational: false,
                can_trim: false,
                can_zero: ZeroMode::None,
                can_fast_zero: false,
                can_extents: false,
                can_fua: FuaMode::None,
                can_multi_conn: false,
                can_cache: CacheMode::None,
            },
            block_size: None,
        };
        let failed = |what: &str, e: NbdError| format!("{what} failed ({e:?})");
        ctx.size = ctx
            .call(Buffers::None, |p, s, h| p.connection().call_get_size(s, h))
            .map_err(|e| failed("get-size", e))?;
        if ctx.size > i64::MAX as u64 {
            return Err(format!("plugin size {} is larger than 2^63-1", ctx.size));
        }
        let plugin_caps = ctx
            .call(Buffers::None, |p, s, h| p.connection().call_capabilities(s, h))
            .map_err(|e| failed("capabilities", e))?;
        ctx.caps = effective_caps(plugin_caps, readonly);
        let block_size = ctx
            .call(Buffers::None, |p, s, h| p.connection().call_block_size(s, h))
            .map_err(|e| failed("block-size", e))?;
        ctx.block_size = block_size.filter(|b| b.minimum != 0);
        if let Some(b) = ctx.block_size {
            check_block_size(b)?;
        }
        Ok(ctx)
    }

    pub fn plugin_name(&self) -> &str {
        self.slot.stack().name()
    }

    pub fn thread_model(&self) -> ThreadModel {
        self.slot.stack().thread_model()
    }

    /// NBD transmission flags for this export (nbdkit's rules, doc §2.11).
    pub fn eflags(&self, structured_replies: bool) -> u16 {
        let c = &self.caps;
        let mut flags = consts::FLAG_HAS_FLAGS;
        let mut set = |on: bool, flag: u16| {
            if on {
                flags |= flag
            }
        };
        set(!c.can_write, consts::FLAG_READ_ONLY);
        set(c.can_flush, consts::FLAG_SEND_FLUSH);
        set(c.can_fua != FuaMode::None, consts::FLAG_SEND_FUA);
        set(c.is_rotational, consts::FLAG_ROTATIONAL);
        set(c.can_trim, consts::FLAG_SEND_TRIM);
        set(c.can_zero != ZeroMode::None, consts::FLAG_SEND_WRITE_ZEROES);
        set(structured_replies, consts::FLAG_SEND_DF);
        set(
            c.can_multi_conn && self.thread_model() != ThreadModel::SerializeConnections,
            consts::FLAG_CAN_MULTI_CONN,
        );
        set(c.can_cache != CacheMode::None, consts::FLAG_SEND_CACHE);
        set(
            c.can_fast_zero && c.can_zero != ZeroMode::None,
            consts::FLAG_SEND_FAST_ZERO,
        );
        flags
    }

    pub fn export_description(&self) -> Option<String> {
        self.call(Buffers::None, |p, s, h| {
            p.connection().call_export_description(s, h).map(Ok)
        })
        .ok()
        .flatten()
    }

    pub fn pread(&self, buf: &mut [u8], offset: u64) -> Result<(), NbdError> {
        let count = buf.len() as u32;
        self.call(Buffers::Read(buf), |p, s, h| {
            p.connection()
                .call_pread(s, h, current(), count, offset, CmdFlags::empty())
        })
    }

    pub fn pwrite(&self, data: &[u8], offset: u64, fua: bool) -> Result<(), NbdError> {
        let count = data.len() as u32;
        let flags = self.native_fua(fua);
        self.call(Buffers::Write(data), |p, s, h| {
            p.connection().call_pwrite(s, h, current(), count, offset, flags)
        })?;
        self.emulate_fua(fua)
    }

    pub fn flush(&self) -> Result<(), NbdError> {
        self.call(Buffers::None, |p, s, h| {
            p.connection().call_flush(s, h, CmdFlags::empty())
        })
    }

    pub fn trim(&self, count: u32, offset: u64, fua: bool) -> Result<(), NbdError> {
        let flags = self.native_fua(fua);
        self.call(Buffers::None, |p, s, h| {
            p.connection().call_trim(s, h, count, offset, flags)
        })?;
        self.emulate_fua(fua)
    }

    /// WRITE_ZEROES: the plugin's zero when it has one, else (or when it answers ENOTSUP)
    /// writing zeros, unless the client asked for a fast zero.
    pub fn zero(&self, count: u32, offset: u64, may_trim: bool, fua: bool, fast_zero: bool) -> Result<(), NbdError> {
        if self.caps.can_zero == ZeroMode::Native {
            let mut flags = self.native_fua(fua);
            if may_trim {
                flags |= CmdFlags::MAY_TRIM;
            }
            if fast_zero {
                flags |= CmdFlags::FAST_ZERO;
            }
            match self.call_guest(Buffers::None, |p, s, h| {
                p.connection().call_zero(s, h, count, offset, flags)
            }) {
                Ok(()) => return self.emulate_fua(fua),
                Err(CallError::Guest(GuestError {
                    errno: Errno::Enotsup, ..
                })) if !fast_zero => {}
                Err(e) => return Err(self.fail(e)),
            }
        } else if fast_zero {
            return Err(NbdError::NotSup);
        }
        let (mut offset, end) = (offset, offset + u64::from(count));
        let chunk_fua = fua && self.caps.can_fua == FuaMode::Native;
        while offset < end {
            let n = (end - offset).min(ZEROES.len() as u64) as usize;
            let flags = if chunk_fua { CmdFlags::FUA } else { CmdFlags::empty() };
            self.call(Buffers::Write(&ZEROES[..n]), |p, s, h| {
                p.connection().call_pwrite(s, h, current(), n as u32, offset, flags)
            })?;
            offset += n as u64;
        }
        self.emulate_fua(fua)
    }

    /// BLOCK_STATUS: the plugin's extents, or one allocated extent when it has none.
    pub fn extents(&self, count: u32, offset: u64, req_one: bool) -> Result<Vec<Extent>, NbdError> {
        if !self.caps.can_extents {
            return Ok(vec![Extent {
                offset,
                length: u64::from(count),
                flags: Default::default(),
            }]);
        }
        let flags = if req_one { CmdFlags::REQ_ONE } else { CmdFlags::empty() };
        self.call(Buffers::None, |p, s, h| {
            p.connection().call_extents(s, h, count, offset, flags)
        })
    }

    /// CACHE: the plugin's cache, or reading the range and dropping the data.
    pub fn cache(&self, count: u32, offset: u64) -> Result<(), NbdError> {
        if self.caps.can_cache == CacheMode::Native {
            return self.call(Buffers::None, |p, s, h| {
                p.connection().call_cache(s, h, count, offset, CmdFlags::empty())
            });
        }
        let mut scratch = vec![0; (count as usize).min(4 << 20)];
        let (mut offset, end) = (offset, offset + u64::from(count));
        while offset < end {
            let n = (end - offset).min(scratch.len() as u64) as usize;
            self.pread(&mut scratch[..n], offset)?;
            offset += n as u64;
        }
        Ok(())
    }

    fn native_fua(&self, fua: bool) -> CmdFlags {
        if fua && self.caps.can_fua == FuaMode::Native {
            CmdFlags::FUA
        } else {
            CmdFlags::empty()
        }
    }

    /// FUA the plugin cannot do itself becomes a flush after the write (even when
    /// can-flush is false, as nbdkit does).
    fn emulate_fua(&self, fua: bool) -> Result<(), NbdError> {
        if fua && self.caps.can_fua == FuaMode::Emulate {
            self.flush()
        } else {
            Ok(())
        }
    }

    /// One call on this connection's handle, errors mapped for the client.
    fn call<R>(
        &self,
        buffers: Buffers<'_>,
        f: impl FnOnce(&PluginExports, &mut Store<LayerCtx>, ResourceAny) -> wasmtime::Result<Result<R, GuestError>>,
    ) -> Result<R, NbdError> {
        self.call_guest(buffers, f).map_err(|e| self.fail(e))
    }

    /// Log a failure and map it to an NBD error (the request's flags then decide whether
    /// ENOTSUP and EOVERFLOW reach the client as such, see `NbdError::for_request_flags`).
    fn fail(&self, e: CallError) -> NbdError {
        let error = match &e {
            CallError::Guest(g) => wire_error(g.errno),
            CallError::Trap(_) => NbdError::Io,
        };
        report(self.slot.stack(), &e);
        error
    }

    /// One call on this connection's handle: under the thread-model lock, on a live
    /// instance, reopening the handle if the instance was replaced since.
    fn call_guest<R>(
        &self,
        buffers: Buffers<'_>,
        f: impl FnOnce(&PluginExports, &mut Store<LayerCtx>, ResourceAny) -> wasmtime::Result<Result<R, GuestError>>,
    ) -> Result<R, CallError> {
        let _serial = self
            .request_lock
            .as_ref()
            .map(|l| l.lock().unwrap_or_else(|p| p.into_inner()));
        let stack = self.slot.stack();
        let mut slot = self.slot.lock();
        let generation = slot.generation;
        let instance = slot.instance(stack).map_err(CallError::Trap)?;
        let mut handle = self.handle.lock().unwrap_or_else(|p| p.into_inner());
        if handle.resource.is_none() || handle.generation != generation {
            let (readonly, name) = (self.readonly, self.export_name.as_str());
            // nbdkit's open then prepare; each filter passes them down itself.
            let resource = instance
                .call(|p, s| p.connection().call_open(s, readonly, name))
                .and_then(|r| {
                    let prepared = instance.call(|p, s| p.connection().call_prepare(s, r));
                    if prepared.is_err() {
                        let _ = instance.call(|_, s| r.resource_drop(s).map(Ok));
                    }
                    prepared.map(|()| r)
                });
            match resource {
                Ok(r) => {
                    *handle = Handle {
                        resource: Some(r),
                        generation,
                    }
                }
                Err(e) => {
                    if matches!(e, CallError::Trap(_)) {
                        slot.discard();
                    }
                    return Err(e);
                }
            }
        }
        let resource = handle.resource.expect("opened above");
        match buffers {
            Buffers::None => {}
            Buffers::Read(buf) => instance.store.data_mut().buffers.set_read(buf),
            Buffers::Write(buf) => instance.store.data_mut().buffers.set_write(buf),
        }
        let result = instance.call(|p, s| f(p, s, resource));
        if matches!(result, Err(CallError::Trap(_))) {
            handle.resource = None;
            slot.discard();
        }
        result
    }
}

impl Drop for Context {
    /// nbdkit's close: drop the plugin's connection resource if its instance still lives.
    fn drop(&mut self) {
        let handle = self.handle.get_mut().unwrap_or_else(|p| p.into_inner());
        let Some(resource) = handle.resource.take() else {
            return;
        };
        let stack = self.slot.stack().clone();
        let mut slot = self.slot.lock();
        if slot.generation != handle.generation {
            return;
        }
        if let Ok(instance) = slot.instance(&stack) {
            // nbdkit's finalize then close; a finalize failure is only worth a log line.
            let finalized = instance.call(|p, s| p.connection().call_finalize(s, resource));
            let closed = instance.call(|_, s| resource.resource_drop(s).map(Ok));
            for e in [finalized.err(), closed.err()].into_iter().flatten() {
                if matches!(e, CallError::Trap(_)) {
                    slot.discard();
                }
                report(&stack, &e);
            }
        }
    }
}

/// nbdkit's errno → NBD error mapping (doc §2.12), before the request-flag rule.
fn wire_error(errno: Errno) -> NbdError {
    match errno {
        Errno::Eperm | Errno::Erofs => NbdError::Perm,
        Errno::Eio => NbdError::Io,
        Errno::Enomem => NbdError::NoMem,
        Errno::Enospc | Errno::Efbig => NbdError::NoSpc,
        Errno::Eshutdown => NbdError::Shutdown,
        Errno::Enotsup => NbdError::NotSup,
        Errno::Eoverflow => NbdError::Overflow,
        Errno::Einval | Errno::Eacces | Errno::Enoent => NbdError::Inval,
    }
}

/// nbdkit's rules: a read-only export has no write-class capability; a plugin that cannot
/// zero gets emulation (and so a fast "no"); only filters may hide zeroing entirely.
fn effective_caps(plugin: crate::runtime::bindings::Capabilities, readonly: bool) -> Caps {
    let can_write = plugin.can_write && !readonly;
    let can_zero = match (can_write, plugin.can_zero) {
        (false, _) => ZeroMode::None,
        (true, ZeroMode::Native) => ZeroMode::Native,
        (true, _) => ZeroMode::Emulate,
    };
    Caps {
        can_write,
        can_flush: plugin.can_flush,
        is_rotational: plugin.is_rotational,
        can_trim: plugin.can_trim && can_write,
        can_zero,
        can_fast_zero: match can_zero {
            ZeroMode::None => false,
            ZeroMode::Emulate => true,
            ZeroMode::Native => plugin.can_fast_zero,
        },
        can_extents: plugin.can_extents,
        can_fua: if can_write { plugin.can_fua } else { FuaMode::None },
        can_multi_conn: plugin.can_multi_conn,
        can_cache: plugin.can_cache,
    }
}

/// nbdkit's validation of a plugin's block-size answer.
fn check_block_size(b: BlockSize) -> Result<(), String> {
    let ok = b.minimum.is_power_of_two()
        && b.minimum <= 65536
        && b.preferred.is_power_of_two()
        && (512..=32 << 20).contains(&b.preferred)
        && (b.maximum == u32::MAX || b.maximum.is_multiple_of(b.minimum))
        && b.minimum <= b.preferred
        && b.preferred <= b.maximum;
    if ok {
        Ok(())
    } else {
        Err(format!(
            "plugin block size (min {}, preferred {}, max {}) is invalid",
            b.minimum, b.preferred, b.maximum
        ))
    }
}
