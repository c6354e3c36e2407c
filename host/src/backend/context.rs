//! One open context of a layer (nbdkit's `struct context`) and the gate every call into it
//! passes, whether it comes from the client or from the filter above (nbdkit's
//! server/backend.c): the request is checked against this layer's own size and capabilities,
//! cached per context, and refused with EINVAL (EROFS for writes to a read-only context)
//! before the component sees it. At the plugin end the gate also emulates what the plugin
//! lacks, as nbdkit's server/plugins.c does: zero by writing zeroes, FUA by a flush; and at
//! every layer, cache by reading.
//!
//! A context of a pooled layer runs on "lanes": an instance with this context open in it.
//! A request takes an idle lane; when every lane is busy and the export is parallel, the
//! context opens another lane (another instance, opened and prepared the same way), up to
//! `-t`. So a plugin waiting on the network holds up only its own request. A context of a
//! shared layer is a handle in the shared instance, whose lock every call takes.
//!
//! Locks are taken top down: a lane's, then inside the call the layer below's.

use super::layer::{Layer, Report, Use};
use super::rules;
use crate::api::{BlockSize, Caps, Errno, Error, Extent, Flags, Support};
use crate::log;
use crate::runtime::below::BelowConnection;
use crate::runtime::{CallError, Handle, Instance};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

/// Zeroes the host writes when a plugin cannot zero by itself.
static ZEROES: [u8; 1 << 20] = [0; 1 << 20];

/// The largest read the host makes to emulate a cache request.
const CACHE_CHUNK: u64 = 4 << 20;

/// The context open in one instance of a pooled layer, which it owns.
struct Lane {
    instance: Instance,
    handle: Handle,
}

/// Where a context is open.
enum Home {
    /// A shared layer: a handle in its one instance.
    Shared(Handle),
    /// A pooled layer: up to the layer's `max_lanes` lanes, filled in order; a slot empties
    /// when its instance traps, and the next request opens a fresh lane there.
    Pooled {
        lanes: Box<[Mutex<Option<Lane>>]>,
        /// Where a request that finds every lane busy waits, round robin.
        next_wait: AtomicUsize,
    },
}

pub struct Context {
    layer: Arc<Layer>,
    readonly: bool,
    export_name: String,
    home: Home,
    prepared: AtomicBool,
    size: OnceLock<u64>,
    caps: OnceLock<Caps>,
    block_size: OnceLock<Option<BlockSize>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Context {
    /// nbdkit's open: the context is opened in a first instance now, so an open that fails
    /// fails here.
    pub(super) fn open(layer: Arc<Layer>, readonly: bool, export_name: &str) -> Result<Arc<Context>, Error> {
        let mut context = Context {
            layer,
            readonly,
            export_name: export_name.to_owned(),
            home: Home::Pooled {
                lanes: Box::new([]),
                next_wait: AtomicUsize::new(0),
            },
            prepared: AtomicBool::new(false),
            size: OnceLock::new(),
            caps: OnceLock::new(),
            block_size: OnceLock::new(),
        };
        context.home = if context.layer.is_shared() {
            let opened = context.layer.on_shared(|instance| context.open_in(instance));
            Home::Shared(context.layer.outcome("open", Report::Log, opened)?)
        } else {
            let first = context.open_lane()?;
            let lanes = (0..context.layer.max_lanes().max(1))
                .map(|_| Mutex::new(None))
                .collect();
            let home = Home::Pooled {
                lanes,
                next_wait: AtomicUsize::new(0),
            };
            if let Home::Pooled { lanes, .. } = &home {
                *lock(&lanes[0]) = Some(first);
            }
            home
        };
        Ok(Arc::new(context))
    }

    pub fn layer(&self) -> &Layer {
        &self.layer
    }

    /// nbdkit's open, and prepare too if the context is prepared by now.
    fn open_in(&self, instance: &mut Instance) -> Result<Handle, CallError> {
        let handle = instance.open(self.readonly, &self.export_name)?;
        if self.prepared.load(Ordering::SeqCst) {
            if let Err(e) = instance.prepare(handle) {
                let _ = instance.close(handle);
                return Err(e);
            }
        }
        Ok(handle)
    }

    /// Open this context in an instance taken from the pool.
    fn open_lane(&self) -> Result<Lane, Error> {
        let mut instance = self.layer.take_instance(Use::Keep)?;
        match self.open_in(&mut instance) {
            Ok(handle) => Ok(Lane { instance, handle }),
            Err(e) => {
                if !matches!(e, CallError::Trap(_)) {
                    self.layer.give_back(instance);
                }
                Err(self.layer.failure("open", Report::Log, e))
            }
        }
    }

    /// A lane to run one call on: an idle one, a new one if the export allows another, or
    /// the next busy one to wait for.
    fn lane<'a>(
        &self,
        lanes: &'a [Mutex<Option<Lane>>],
        next_wait: &AtomicUsize,
    ) -> Result<MutexGuard<'a, Option<Lane>>, Error> {
        let mut lane = match lanes.iter().find_map(|slot| slot.try_lock().ok()) {
            Some(lane) => lane,
            None => lock(&lanes[next_wait.fetch_add(1, Ordering::Relaxed) % lanes.len()]),
        };
        if lane.is_some() {
            return Ok(lane);
        }
        log::debug!(
            self.layer.log(),
            "{}: opening export '{}' in another instance",
            self.layer.name(),
            self.export_name
        );
        match self.open_lane() {
            Ok(opened) => {
                *lane = Some(opened);
                Ok(lane)
            }
            Err(e) => {
                // Another lane only lets requests overlap: when it cannot be opened (the
                // memory budget is spent, say), wait for one that is open instead.
                drop(lane);
                lanes.iter().map(lock).find(|lane| lane.is_some()).ok_or(e)
            }
        }
    }

    /// Run `f` on the lane in `slot`. A trapped lane is emptied: its instance is gone, and
    /// the next call opens a new one there.
    fn run_on<R>(
        slot: &mut Option<Lane>,
        f: impl FnOnce(&mut Instance, Handle) -> Result<R, CallError>,
    ) -> Result<R, CallError> {
        let lane = slot.as_mut().expect("a lane to run on");
        let result = f(&mut lane.instance, lane.handle);
        if matches!(result, Err(CallError::Trap(_))) {
            *slot = None;
        }
        result
    }

    /// Run one call, its failure logged (or returned) as `report` says.
    fn call_reporting<R>(
        &self,
        what: &str,
        report: Report,
        f: impl FnOnce(&mut Instance, Handle) -> Result<R, CallError>,
    ) -> Result<R, Error> {
        let result = match &self.home {
            Home::Shared(handle) => self.layer.on_shared(|instance| f(instance, *handle)),
            Home::Pooled { lanes, next_wait } => Self::run_on(&mut *self.lane(lanes, next_wait)?, f),
        };
        self.layer.outcome(what, report, result)
    }

    fn call<R>(&self, what: &str, f: impl FnOnce(&mut Instance, Handle) -> Result<R, CallError>) -> Result<R, Error> {
        self.call_reporting(what, Report::Log, f)
    }

    /// A call that concerns the context as a whole: in every instance it is open in.
    fn each_lane(&self, what: &str, f: impl Fn(&mut Instance, Handle) -> Result<(), CallError>) -> Result<(), Error> {
        let Home::Pooled { lanes, .. } = &self.home else {
            return self.call(what, f);
        };
        for slot in lanes.iter() {
            let mut slot = lock(slot);
            if slot.is_none() {
                continue;
            }
            let result = Self::run_on(&mut slot, &f);
            drop(slot);
            self.layer.outcome(what, Report::Log, result)?;
        }
        Ok(())
    }

    pub fn prepare(&self) -> Result<(), Error> {
        self.each_lane("prepare", |i, h| i.prepare(h))?;
        self.prepared.store(true, Ordering::SeqCst);
        Ok(())
    }

    pub fn finalize(&self) -> Result<(), Error> {
        self.each_lane("finalize", |i, h| i.finalize(h))
    }

    /// The layer's size, asked once per context.
    pub fn size(&self) -> Result<u64, Error> {
        if let Some(&size) = self.size.get() {
            return Ok(size);
        }
        let size = self.call("get-size", |i, h| i.get_size(h))?;
        if size > i64::MAX as u64 {
            let why = format!("{}: size {size} is larger than 2^63-1", self.layer.name());
            log::error!(self.layer.log(), "{why}");
            return Err(Error::new(Errno::Io, why));
        }
        Ok(*self.size.get_or_init(|| size))
    }

    /// The layer's capabilities for this context (read-only and emulation applied), asked
    /// once per context.
    pub fn caps(&self) -> Result<Caps, Error> {
        if let Some(&caps) = self.caps.get() {
            return Ok(caps);
        }
        let raw = self.call("capabilities", |i, h| i.capabilities(h))?;
        let caps = rules::effective_caps(raw, self.readonly, self.layer.is_plugin());
        Ok(*self.caps.get_or_init(|| caps))
    }

    pub fn block_size(&self) -> Result<Option<BlockSize>, Error> {
        if let Some(&b) = self.block_size.get() {
            return Ok(b);
        }
        let answer = self.call("block-size", |i, h| i.block_size(h))?;
        let b = match answer.map(rules::check_block_size).transpose() {
            Ok(b) => b.flatten(),
            Err(why) => {
                let why = format!("{}: {why}", self.layer.name());
                log::error!(self.layer.log(), "{why}");
                return Err(Error::new(Errno::Io, why));
            }
        };
        Ok(*self.block_size.get_or_init(|| b))
    }

    pub fn export_description(&self) -> Option<String> {
        self.call("export-description", |i, h| i.export_description(h))
            .ok()
            .flatten()
            .map(rules::bounded_description)
    }

    /// A call the gate refuses before the layer sees it. Only a filter's own calls get here
    /// (the protocol refuses a client's first, without a log line); the filter gets the
    /// message, and the operator sees it with -v.
    fn refuse(&self, errno: Errno, why: String) -> Error {
        let why = format!("{}: {why}", self.layer.name());
        log::debug!(self.layer.log(), "refused: {why}");
        Error::new(errno, why)
    }

    /// nbdkit's backend_valid_range: a non-empty range inside this layer's size.
    fn check_range(&self, what: &str, count: u64, offset: u64) -> Result<(), Error> {
        let size = self.size()?;
        let in_range = count > 0 && offset.checked_add(count).is_some_and(|end| end <= size);
        if !in_range {
            return Err(self.refuse(
                Errno::Inval,
                format!("{what} of {count} bytes at {offset} is outside its size of {size}"),
            ));
        }
        Ok(())
    }

    fn check_flags(&self, what: &str, flags: Flags, allowed: Flags) -> Result<(), Error> {
        if !flags.within(allowed) {
            return Err(self.refuse(Errno::Inval, format!("{what} with flags {flags:?} it does not take")));
        }
        Ok(())
    }

    fn unsupported(&self, what: &str) -> Error {
        self.refuse(Errno::Inval, format!("{what} is not supported by this layer"))
    }

    /// FUA is allowed only where the layer advertised it; at the plugin, FUA it only
    /// emulates becomes a flush after the call.
    fn fua(&self, caps: &Caps, flags: Flags, what: &str) -> Result<(Flags, bool), Error> {
        if !flags.contains(Flags::FUA) {
            return Ok((flags, false));
        }
        if caps.can_fua == Support::None {
            return Err(self.unsupported(&format!("{what} with FUA")));
        }
        let emulate = self.layer.is_plugin() && caps.can_fua == Support::Emulate;
        Ok(if emulate {
            (flags.without(Flags::FUA), true)
        } else {
            (flags, false)
        })
    }

    /// The flush that emulates FUA, even when the plugin cannot flush (as nbdkit does).
    fn emulated_fua(&self, emulate: bool) -> Result<(), Error> {
        if emulate {
            self.call("flush", |i, h| i.flush(h, Flags::NONE))?;
        }
        Ok(())
    }

    fn writable(&self, caps: &Caps, what: &str) -> Result<(), Error> {
        if !caps.can_write {
            return Err(self.refuse(Errno::RoFs, format!("{what} on a read-only connection")));
        }
        Ok(())
    }

    pub fn pread(&self, buf: &mut [u8], offset: u64, flags: Flags) -> Result<(), Error> {
        self.check_flags("pread", flags, Flags::NONE)?;
        self.check_range("pread", buf.len() as u64, offset)?;
        self.call("pread", |i, h| i.pread(h, buf, offset, flags))
    }

    pub fn pwrite(&self, buf: &[u8], offset: u64, flags: Flags) -> Result<(), Error> {
        let caps = self.caps()?;
        self.writable(&caps, "pwrite")?;
        self.check_flags("pwrite", flags, Flags::FUA)?;
        let (flags, emulate_fua) = self.fua(&caps, flags, "pwrite")?;
        self.check_range("pwrite", buf.len() as u64, offset)?;
        self.call("pwrite", |i, h| i.pwrite(h, buf, offset, flags))?;
        self.emulated_fua(emulate_fua)
    }

    pub fn flush(&self, flags: Flags) -> Result<(), Error> {
        self.check_flags("flush", flags, Flags::NONE)?;
        if !self.caps()?.can_flush {
            return Err(self.unsupported("flush"));
        }
        self.call("flush", |i, h| i.flush(h, flags))
    }

    pub fn trim(&self, count: u64, offset: u64, flags: Flags) -> Result<(), Error> {
        let caps = self.caps()?;
        self.writable(&caps, "trim")?;
        if !caps.can_trim {
            return Err(self.unsupported("trim"));
        }
        self.check_flags("trim", flags, Flags::FUA)?;
        let (flags, emulate_fua) = self.fua(&caps, flags, "trim")?;
        self.check_range("trim", count, offset)?;
        self.call("trim", |i, h| i.trim(h, count, offset, flags))?;
        self.emulated_fua(emulate_fua)
    }

    pub fn zero(&self, count: u64, offset: u64, flags: Flags) -> Result<(), Error> {
        let caps = self.caps()?;
        self.writable(&caps, "zero")?;
        if caps.can_zero == Support::None {
            return Err(self.unsupported("zero"));
        }
        self.check_flags("zero", flags, Flags::MAY_TRIM | Flags::FUA | Flags::FAST_ZERO)?;
        let fast = flags.contains(Flags::FAST_ZERO);
        if fast && !caps.can_fast_zero {
            return Err(self.unsupported("fast zero"));
        }
        let (flags, emulate_fua) = self.fua(&caps, flags, "zero")?;
        self.check_range("zero", count, offset)?;
        if !self.layer.is_plugin() {
            return self.call("zero", |i, h| i.zero(h, count, offset, flags));
        }
        // nbdkit's plugin_zero: the plugin's own zero when it has one; when it has none, or
        // answers ENOTSUP, writing zeroes, unless the client asked for a fast zero.
        if caps.can_zero == Support::Native {
            match self.call_reporting("zero", Report::Return, |i, h| i.zero(h, count, offset, flags)) {
                Ok(()) => return self.emulated_fua(emulate_fua),
                Err(e) if e.errno == Errno::NotSup && !fast => {}
                Err(e) => {
                    if let Some(message) = &e.message {
                        log::error!(self.layer.log(), "{}: {}", self.layer.name(), log::sanitize(message));
                    }
                    return Err(e);
                }
            }
        } else if fast {
            return Err(Error::bare(Errno::NotSup));
        }
        let chunk_flags = flags.without(Flags::MAY_TRIM);
        let (mut at, end) = (offset, offset + count);
        while at < end {
            let n = (end - at).min(ZEROES.len() as u64) as usize;
            self.call("pwrite", |i, h| i.pwrite(h, &ZEROES[..n], at, chunk_flags))?;
            at += n as u64;
        }
        self.emulated_fua(emulate_fua)
    }

    pub fn extents(&self, count: u64, offset: u64, flags: Flags) -> Result<Vec<Extent>, Error> {
        self.check_flags("extents", flags, Flags::REQ_ONE)?;
        self.check_range("extents", count, offset)?;
        if !self.caps()?.can_extents {
            // nbdkit's backend_extents: one allocated extent when the layer has none.
            return Ok(vec![Extent {
                offset,
                length: count,
                hole: false,
                zero: false,
            }]);
        }
        let extents = self.call("extents", |i, h| i.extents(h, count, offset, flags))?;
        rules::normalize_extents(offset, self.size()?, &extents).map_err(|why| {
            let why = format!("{}: extents: {why}", self.layer.name());
            log::error!(self.layer.log(), "{why}");
            Error::new(Errno::Inval, why)
        })
    }

    pub fn cache(&self, count: u64, offset: u64, flags: Flags) -> Result<(), Error> {
        self.check_flags("cache", flags, Flags::NONE)?;
        let caps = self.caps()?;
        if caps.can_cache == Support::None {
            return Err(self.unsupported("cache"));
        }
        self.check_range("cache", count, offset)?;
        if caps.can_cache == Support::Native {
            return self.call("cache", |i, h| i.cache(h, count, offset, flags));
        }
        // nbdkit's backend_cache emulation: read the range and drop the data.
        let mut scratch = vec![0; count.min(CACHE_CHUNK) as usize];
        let (mut at, end) = (offset, offset + count);
        while at < end {
            let n = (end - at).min(scratch.len() as u64) as usize;
            self.pread(&mut scratch[..n], at, Flags::NONE)?;
            at += n as u64;
        }
        Ok(())
    }
}

impl Drop for Context {
    /// nbdkit's close, in every instance the context is open in; pooled instances go back.
    fn drop(&mut self) {
        match &mut self.home {
            Home::Shared(handle) => {
                let handle = *handle;
                let closed = self.layer.on_shared(|instance| instance.close(handle));
                let _ = self.layer.outcome("close", Report::Log, closed);
            }
            Home::Pooled { lanes, .. } => {
                for slot in lanes.iter_mut() {
                    let Some(mut lane) = slot.get_mut().unwrap_or_else(|p| p.into_inner()).take() else {
                        continue;
                    };
                    let closed = lane.instance.close(lane.handle);
                    if closed.is_ok() {
                        self.layer.give_back(lane.instance);
                    }
                    let _ = self.layer.outcome("close", Report::Log, closed);
                }
            }
        }
    }
}

impl BelowConnection for Context {
    fn prepare(&self) -> Result<(), Error> {
        Context::prepare(self)
    }
    fn finalize(&self) -> Result<(), Error> {
        Context::finalize(self)
    }
    fn get_size(&self) -> Result<u64, Error> {
        self.size()
    }
    fn export_description(&self) -> Option<String> {
        Context::export_description(self)
    }
    fn capabilities(&self) -> Result<Caps, Error> {
        self.caps()
    }
    fn block_size(&self) -> Result<Option<BlockSize>, Error> {
        Context::block_size(self)
    }
    fn pread(&self, buf: &mut [u8], offset: u64, flags: Flags) -> Result<(), Error> {
        Context::pread(self, buf, offset, flags)
    }
    fn pwrite(&self, buf: &[u8], offset: u64, flags: Flags) -> Result<(), Error> {
        Context::pwrite(self, buf, offset, flags)
    }
    fn flush(&self, flags: Flags) -> Result<(), Error> {
        Context::flush(self, flags)
    }
    fn trim(&self, count: u64, offset: u64, flags: Flags) -> Result<(), Error> {
        Context::trim(self, count, offset, flags)
    }
    fn zero(&self, count: u64, offset: u64, flags: Flags) -> Result<(), Error> {
        Context::zero(self, count, offset, flags)
    }
    fn extents(&self, count: u64, offset: u64, flags: Flags) -> Result<Vec<Extent>, Error> {
        Context::extents(self, count, offset, flags)
    }
    fn cache(&self, count: u64, offset: u64, flags: Flags) -> Result<(), Error> {
        Context::cache(self, count, offset, flags)
    }
}
