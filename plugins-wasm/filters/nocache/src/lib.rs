//! nocache: change how NBD_CMD_CACHE is offered (nbdkit's filters/nocache/nocache.c):
//! `cachemode=none` (default) does not advertise it, `emulate` advertises it and the host
//! emulates it by reading through this layer, `nop` accepts it and does nothing.
//!
//! State: none beyond the mode.

use nbdbox_filter_sdk::prelude::*;

#[derive(Default, Clone, Copy, PartialEq, Eq)]
enum Nocache {
    #[default]
    None,
    Emulate,
    Nop,
}

impl Filter for Nocache {
    const NAME: &'static str = "nocache";
    const DESCRIPTION: &'static str = "nbdkit nocache filter";
    const CONFIG_KEYS: &'static [Key] = &[Key::new(
        "cachemode",
        Kind::Text,
        "Set caching mode ('none' [default], 'emulate', 'nop')",
    )];
    type Connection = Nocache;

    fn config(&mut self, _key: &str, value: &str) -> Result<()> {
        *self = match value {
            "none" => Nocache::None,
            "emulate" => Nocache::Emulate,
            "nop" => Nocache::Nop,
            _ => return Err(error(Errno::Einval, format!("unknown cachemode '{value}'"))),
        };
        Ok(())
    }

    fn open(&self, _next: &Next, _readonly: bool, _export_name: &str) -> Result<Nocache> {
        Ok(*self)
    }
}

impl FilterConnection for Nocache {
    fn capabilities(&self, next: &Next) -> Result<Capabilities> {
        let can_cache = match self {
            Nocache::None => CacheMode::None,
            Nocache::Emulate => CacheMode::Emulate,
            Nocache::Nop => CacheMode::Native,
        };
        Ok(Capabilities {
            can_cache,
            ..next.capabilities()?
        })
    }

    /// Only reached in nop mode: the host emulates for emulate, refuses for none.
    fn cache(&self, _next: &Next, _count: u64, _offset: u64, _flags: CmdFlags) -> Result<()> {
        Ok(())
    }
}

nbdbox_filter_sdk::filter!(Nocache);
