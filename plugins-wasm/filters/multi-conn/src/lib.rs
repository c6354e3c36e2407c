//! multi-conn: advertise NBD_FLAG_CAN_MULTI_CONN and keep its promise (nbdkit's
//! filters/multi-conn/multi-conn.c). `multi-conn-mode=emulate` replicates a client's flush
//! (or FUA) to every open connection of the layer below, so that after it any connection
//! reads what any other wrote; `plugin` leaves multi-conn to the layer below; `disable`
//! never advertises it; `unsafe` always does, without emulating; `auto` (default) is
//! disable under serialize_connections, plugin when the layer below has multi-conn, emulate
//! otherwise. `multi-conn-track-dirty=connection|fast|off` skips flushes that have nothing
//! to do; `multi-conn-exportname=true` replicates only among connections to the same export.
//!
//! State: shared. A flush on one connection must reach every other connection's layer
//! below, so one instance holds all of them: each connection takes its layer below out of
//! the SDK's `Next` at prepare and keeps it in a member list the instance shares.

use nbdbox_filter_sdk::debug;
use nbdbox_filter_sdk::parse_bool;
use nbdbox_filter_sdk::prelude::*;
use std::cell::{Cell, RefCell};
use std::rc::{Rc, Weak};

#[derive(Default, Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    #[default]
    Auto,
    Emulate,
    Plugin,
    Unsafe,
    Disable,
}

#[derive(Default, Clone, Copy, PartialEq, Eq)]
enum TrackDirty {
    #[default]
    Connection,
    Fast,
    Off,
}

#[derive(Default, Clone, Copy)]
struct Settings {
    mode: Mode,
    track: TrackDirty,
    by_export_name: bool,
}

/// What the connections share.
#[derive(Default)]
struct Shared {
    members: RefCell<Vec<Weak<Member>>>,
    /// multi-conn-track-dirty=fast: anything written since the last flush, anywhere.
    dirty: Cell<bool>,
}

#[derive(Default)]
struct MultiConn {
    settings: Settings,
    shared: Rc<Shared>,
}

impl Filter for MultiConn {
    const NAME: &'static str = "multi-conn";
    const DESCRIPTION: &'static str = "nbdkit multi-conn filter";
    const CONFIG_KEYS: &'static [Key] = &[
        Key::new(
            "multi-conn-mode",
            Kind::Text,
            "'auto' (default), 'emulate', 'plugin', 'unsafe' or 'disable'",
        ),
        Key::new(
            "multi-conn-track-dirty",
            Kind::Text,
            "'connection' (default), 'fast' or 'off'",
        ),
        Key::new(
            "multi-conn-exportname",
            Kind::Bool,
            "true to limit emulation per export name (default false)",
        ),
    ];
    const SHARED_STATE: bool = true;
    type Connection = MultiConnConnection;

    fn config(&mut self, key: &str, value: &str) -> Result<()> {
        let unknown = || error(Errno::Einval, format!("unknown {key} '{value}'"));
        match key {
            "multi-conn-mode" => {
                self.settings.mode = match value {
                    "auto" => Mode::Auto,
                    "emulate" => Mode::Emulate,
                    "plugin" => Mode::Plugin,
                    "unsafe" => Mode::Unsafe,
                    "disable" => Mode::Disable,
                    _ => return Err(unknown()),
                }
            }
            "multi-conn-track-dirty" => {
                self.settings.track = match value {
                    "connection" | "conn" => TrackDirty::Connection,
                    "fast" => TrackDirty::Fast,
                    "off" => TrackDirty::Off,
                    _ => return Err(unknown()),
                }
            }
            _ => self.settings.by_export_name = parse_bool(key, value)?,
        }
        Ok(())
    }

    fn open(&self, _next: &Next, _readonly: bool, export_name: &str) -> Result<MultiConnConnection> {
        Ok(MultiConnConnection {
            settings: self.settings,
            shared: self.shared.clone(),
            export_name: export_name.into(),
            mode: Cell::new(self.settings.mode),
            member: RefCell::new(None),
        })
    }
}

/// One connection's layer below, as the others see it.
struct Member {
    below: next::Connection,
    export_name: String,
    /// Written (or read, so maybe caching stale data) since its last flush.
    dirty: Cell<bool>,
}

impl Member {
    fn flush(&self) -> Result<()> {
        self.dirty.set(false);
        self.below.flush(CmdFlags::empty())
    }
}

struct MultiConnConnection {
    settings: Settings,
    shared: Rc<Shared>,
    export_name: String,
    /// The mode in force, auto resolved at prepare.
    mode: Cell<Mode>,
    member: RefCell<Option<Rc<Member>>>,
}

impl MultiConnConnection {
    fn member(&self) -> Result<Rc<Member>> {
        self.member
            .borrow()
            .clone()
            .ok_or_else(|| error(Errno::Eio, "multi-conn: the layer below is not open"))
    }

    /// The members a flush of this connection must reach.
    fn flush_scope(&self, own: &Rc<Member>) -> Vec<Rc<Member>> {
        if self.mode.get() != Mode::Emulate {
            return vec![own.clone()];
        }
        self.shared
            .members
            .borrow()
            .iter()
            .filter_map(Weak::upgrade)
            .filter(|m| !self.settings.by_export_name || m.export_name == self.export_name)
            .collect()
    }

    fn mark_dirty(&self, member: &Member) {
        member.dirty.set(true);
        self.shared.dirty.set(true);
    }

    /// A client flush (or the flush after a FUA request in emulate mode).
    fn flush_all(&self) -> Result<()> {
        let own = self.member()?;
        match self.settings.track {
            TrackDirty::Fast if !self.shared.dirty.get() => return Ok(()),
            TrackDirty::Fast => self.shared.dirty.set(false),
            _ => {}
        }
        for member in self.flush_scope(&own) {
            if self.settings.track != TrackDirty::Connection || member.dirty.get() {
                member.flush()?;
            }
        }
        Ok(())
    }

    /// Run a write-like request: FUA becomes a flush of every connection in emulate mode.
    fn write(&self, flags: CmdFlags, op: impl FnOnce(&next::Connection, CmdFlags) -> Result<()>) -> Result<()> {
        let member = self.member()?;
        self.mark_dirty(&member);
        if self.mode.get() == Mode::Emulate && flags.contains(CmdFlags::FUA) {
            op(&member.below, flags - CmdFlags::FUA)?;
            return self.flush_all();
        }
        op(&member.below, flags)
    }
}

impl FilterConnection for MultiConnConnection {
    /// Resolve the mode, then take the layer below out of `Next` so that other connections
    /// can flush it; every later call uses the member instead.
    fn prepare(&self, next: &Next) -> Result<()> {
        let below = next.capabilities()?;
        let mode = match self.settings.mode {
            Mode::Auto if next::get_thread_model() == ThreadModel::SerializeConnections => Mode::Disable,
            Mode::Auto if below.can_multi_conn => Mode::Plugin,
            Mode::Auto => Mode::Emulate,
            mode => mode,
        };
        if mode == Mode::Emulate && below.can_write && !below.can_flush {
            return Err(error(
                Errno::Einval,
                "multi-conn-mode=emulate needs a layer below that can flush",
            ));
        }
        debug(&format!("multi-conn: mode {mode:?}"));
        self.mode.set(mode);
        let Some(below) = next.replace(None) else {
            return Err(error(Errno::Eio, "multi-conn: the layer below is not open"));
        };
        let member = Rc::new(Member {
            below,
            export_name: self.export_name.clone(),
            dirty: Cell::new(false),
        });
        let mut members = self.shared.members.borrow_mut();
        members.retain(|m| m.strong_count() > 0);
        members.push(Rc::downgrade(&member));
        *self.member.borrow_mut() = Some(member);
        Ok(())
    }

    fn finalize(&self, _next: &Next) -> Result<()> {
        self.member()?.below.finalize()
    }

    fn get_size(&self, _next: &Next) -> Result<u64> {
        self.member()?.below.get_size()
    }

    fn export_description(&self, _next: &Next) -> Option<String> {
        self.member().ok()?.below.export_description()
    }

    fn capabilities(&self, _next: &Next) -> Result<Capabilities> {
        let below = self.member()?.below.capabilities()?;
        let mode = self.mode.get();
        Ok(Capabilities {
            can_multi_conn: match mode {
                Mode::Emulate | Mode::Unsafe => true,
                Mode::Disable => false,
                _ => below.can_multi_conn,
            },
            can_fua: match mode {
                Mode::Emulate if below.can_write => FuaMode::Emulate,
                _ => below.can_fua,
            },
            ..below
        })
    }

    fn block_size(&self, _next: &Next) -> Result<Option<BlockSize>> {
        self.member()?.below.block_size()
    }

    fn pread(&self, _next: &Next, dst: &ReadBuf, count: u32, offset: u64, flags: CmdFlags) -> Result<()> {
        let member = self.member()?;
        // What this connection reads it may cache: a flush elsewhere must reach it.
        member.dirty.set(true);
        member.below.pread(dst, count, offset, flags)
    }

    fn pwrite(&self, _next: &Next, src: &WriteBuf, count: u32, offset: u64, flags: CmdFlags) -> Result<()> {
        self.write(flags, |below, flags| below.pwrite(src, count, offset, flags))
    }

    fn trim(&self, _next: &Next, count: u64, offset: u64, flags: CmdFlags) -> Result<()> {
        self.write(flags, |below, flags| below.trim(count, offset, flags))
    }

    fn zero(&self, _next: &Next, count: u64, offset: u64, flags: CmdFlags) -> Result<()> {
        self.write(flags, |below, flags| below.zero(count, offset, flags))
    }

    fn flush(&self, _next: &Next, _flags: CmdFlags) -> Result<()> {
        self.flush_all()
    }

    fn extents(&self, _next: &Next, count: u64, offset: u64, flags: CmdFlags) -> Result<Vec<Extent>> {
        self.member()?.below.extents(count, offset, flags)
    }

    fn cache(&self, _next: &Next, count: u64, offset: u64, flags: CmdFlags) -> Result<()> {
        self.member()?.below.cache(count, offset, flags)
    }
}

nbdbox_filter_sdk::filter!(MultiConn);
