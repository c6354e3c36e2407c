//! nozero: change how zero requests are offered and handled (nbdkit's
//! filters/nozero/nozero.c). `zeromode=none` (default) hides zero, `emulate` writes zeroes
//! through the layer below's pwrite, `notrim` passes zeroes on without the may-trim flag,
//! `plugin` passes them on unchanged. `fastzeromode=default|none|slow|ignore` says whether
//! fast zero is advertised and what a fast zero request does.
//!
//! State: none beyond the modes.

use nbdbox_filter_sdk::prelude::*;

#[derive(Default, Clone, Copy, PartialEq, Eq)]
enum ZeroHandling {
    #[default]
    None,
    Emulate,
    NoTrim,
    Plugin,
}

#[derive(Default, Clone, Copy, PartialEq, Eq)]
enum FastZero {
    #[default]
    Default,
    None,
    Slow,
    Ignore,
}

#[derive(Default, Clone, Copy)]
struct Nozero {
    zero: ZeroHandling,
    fast: FastZero,
}

/// The largest write used to emulate a zero (nbdkit's MAX_WRITE).
const MAX_WRITE: u64 = 64 << 20;

impl Filter for Nozero {
    const NAME: &'static str = "nozero";
    const DESCRIPTION: &'static str = "nbdkit nozero filter";
    const CONFIG_KEYS: &'static [Key] = &[
        Key::new(
            "zeromode",
            Kind::Text,
            "Set zero mode ('none' [default], 'emulate', 'notrim', 'plugin')",
        ),
        Key::new(
            "fastzeromode",
            Kind::Text,
            "Set fast zero mode ('default', 'none', 'slow', 'ignore')",
        ),
    ];
    type Connection = Nozero;

    fn config(&mut self, key: &str, value: &str) -> Result<()> {
        let unknown = || error(Errno::Einval, format!("unknown {key} '{value}'"));
        if key == "zeromode" {
            self.zero = match value {
                "none" => ZeroHandling::None,
                "emulate" => ZeroHandling::Emulate,
                "notrim" => ZeroHandling::NoTrim,
                "plugin" => ZeroHandling::Plugin,
                _ => return Err(unknown()),
            };
        } else {
            self.fast = match value {
                "default" => FastZero::Default,
                "none" => FastZero::None,
                "slow" => FastZero::Slow,
                "ignore" => FastZero::Ignore,
                _ => return Err(unknown()),
            };
        }
        Ok(())
    }

    fn open(&self, _next: &Next, _readonly: bool, _export_name: &str) -> Result<Nozero> {
        Ok(*self)
    }
}

impl Nozero {
    /// Fast zeroes that fail at once: slow mode, or the default with emulation.
    fn refuses_fast(&self) -> bool {
        self.fast == FastZero::Slow || (self.fast == FastZero::Default && self.zero == ZeroHandling::Emulate)
    }
}

impl FilterConnection for Nozero {
    /// notrim and plugin pass zeroes on, so the layer below must have them.
    fn prepare(&self, next: &Next) -> Result<()> {
        let passes_on = matches!(self.zero, ZeroHandling::NoTrim | ZeroHandling::Plugin);
        let caps = next.capabilities()?;
        if passes_on && caps.can_write && caps.can_zero == ZeroMode::None {
            return Err(error(
                Errno::Einval,
                "zeromode 'notrim' and 'plugin' need a layer below that can zero",
            ));
        }
        Ok(())
    }

    fn capabilities(&self, next: &Next) -> Result<Capabilities> {
        let below = next.capabilities()?;
        let can_zero = match self.zero {
            ZeroHandling::None => ZeroMode::None,
            ZeroHandling::Emulate => ZeroMode::Emulate,
            _ => below.can_zero,
        };
        let can_fast_zero = match self.fast {
            _ if self.zero == ZeroHandling::None => false,
            FastZero::None => false,
            FastZero::Slow | FastZero::Ignore => true,
            FastZero::Default => self.zero == ZeroHandling::Emulate || below.can_fast_zero,
        };
        Ok(Capabilities {
            can_zero,
            can_fast_zero,
            ..below
        })
    }

    fn zero(&self, next: &Next, count: u64, offset: u64, flags: CmdFlags) -> Result<()> {
        let mut flags = flags;
        if flags.contains(CmdFlags::FAST_ZERO) {
            // Emulated zeroes are writes, never fast (nbdkit's backend refuses them itself,
            // whatever fastzeromode says).
            if self.refuses_fast() || self.zero == ZeroHandling::Emulate {
                return Err(errno(Errno::Enotsup));
            }
            if self.fast == FastZero::Ignore {
                flags -= CmdFlags::FAST_ZERO;
            }
        }
        match self.zero {
            ZeroHandling::NoTrim => next.zero(count, offset, flags - CmdFlags::MAY_TRIM),
            ZeroHandling::Emulate => {
                let zeroes = vec![0; count.min(MAX_WRITE) as usize];
                let mut at = offset;
                while at < offset + count {
                    let n = (offset + count - at).min(MAX_WRITE) as usize;
                    let buf = WriteBuf::new(&zeroes[..n]);
                    next.pwrite(&buf, n as u32, at, flags & CmdFlags::FUA)?;
                    at += n as u64;
                }
                Ok(())
            }
            _ => next.zero(count, offset, flags),
        }
    }
}

nbdbox_filter_sdk::filter!(Nozero);
