//! fua: change how FUA (force unit access) and flush are offered and handled (nbdkit's
//! filters/fua/fua.c). `fuamode=none` (default) hides FUA; `emulate` turns FUA into a flush
//! after the request; `native` advertises the layer below's FUA as native; `force` asks FUA
//! of every write and makes flush a no-op; `pass` changes nothing; `discard` drops FUA and
//! flush (unsafe).
//!
//! State: none beyond the mode.

use nbdbox_filter_sdk::prelude::*;

#[derive(Default, Clone, Copy, PartialEq, Eq)]
enum Fua {
    #[default]
    None,
    Emulate,
    Native,
    Force,
    Pass,
    Discard,
}

impl Filter for Fua {
    const NAME: &'static str = "fua";
    const DESCRIPTION: &'static str = "nbdkit FUA filter";
    const CONFIG_KEYS: &'static [Key] = &[Key::new(
        "fuamode",
        Kind::Text,
        "Set FUA mode ('none' [default], 'emulate', 'native', 'force', 'pass', 'discard')",
    )];
    type Connection = Fua;

    fn config(&mut self, _key: &str, value: &str) -> Result<()> {
        *self = match value {
            "none" => Fua::None,
            "emulate" => Fua::Emulate,
            "native" => Fua::Native,
            "force" => Fua::Force,
            "pass" => Fua::Pass,
            "discard" => Fua::Discard,
            _ => return Err(error(Errno::Einval, format!("unknown fuamode '{value}'"))),
        };
        Ok(())
    }

    fn open(&self, _next: &Next, _readonly: bool, _export_name: &str) -> Result<Fua> {
        Ok(*self)
    }
}

impl Fua {
    /// The flags to pass below, and whether a flush must follow.
    fn flags(self, flags: CmdFlags) -> (CmdFlags, bool) {
        match self {
            Fua::Emulate if flags.contains(CmdFlags::FUA) => (flags - CmdFlags::FUA, true),
            Fua::Force => (flags | CmdFlags::FUA, false),
            Fua::Discard => (flags - CmdFlags::FUA, false),
            _ => (flags, false),
        }
    }

    fn then_flush(self, next: &Next, flush: bool) -> Result<()> {
        if flush {
            next.flush(CmdFlags::empty())?;
        }
        Ok(())
    }
}

impl FilterConnection for Fua {
    /// nbdkit refuses the connection when the layer below cannot do what the mode needs.
    fn prepare(&self, next: &Next) -> Result<()> {
        let below = next.capabilities()?;
        if !below.can_write {
            return Ok(());
        }
        match self {
            Fua::Emulate if !below.can_flush => {
                Err(error(Errno::Einval, "fuamode 'emulate' requires plugin flush support"))
            }
            Fua::Native | Fua::Force if below.can_fua == FuaMode::None => Err(error(
                Errno::Einval,
                "fuamode 'native' and 'force' require plugin fua support",
            )),
            _ => Ok(()),
        }
    }

    fn capabilities(&self, next: &Next) -> Result<Capabilities> {
        let below = next.capabilities()?;
        let can_fua = match self {
            Fua::None => FuaMode::None,
            Fua::Emulate => FuaMode::Emulate,
            Fua::Native | Fua::Force | Fua::Discard => FuaMode::Native,
            Fua::Pass => below.can_fua,
        };
        Ok(Capabilities {
            can_fua,
            can_flush: below.can_flush || *self == Fua::Discard,
            ..below
        })
    }

    fn pwrite(&self, next: &Next, src: &WriteBuf, count: u32, offset: u64, flags: CmdFlags) -> Result<()> {
        let (flags, flush) = self.flags(flags);
        next.pwrite(src, count, offset, flags)?;
        self.then_flush(next, flush)
    }

    fn trim(&self, next: &Next, count: u64, offset: u64, flags: CmdFlags) -> Result<()> {
        let (flags, flush) = self.flags(flags);
        next.trim(count, offset, flags)?;
        self.then_flush(next, flush)
    }

    fn zero(&self, next: &Next, count: u64, offset: u64, flags: CmdFlags) -> Result<()> {
        let (flags, flush) = self.flags(flags);
        next.zero(count, offset, flags)?;
        self.then_flush(next, flush)
    }

    /// With every write forced or discarded, a flush has nothing to do.
    fn flush(&self, next: &Next, flags: CmdFlags) -> Result<()> {
        match self {
            Fua::Force | Fua::Discard => Ok(()),
            _ => next.flush(flags),
        }
    }
}

nbdbox_filter_sdk::filter!(Fua);
