//! prober (test only): a filter that, before passing each client read down, makes one call
//! of its own to the layer below, chosen by `action=`, to show what the host's gate does
//! with a filter's calls (plugin.wit: they are validated and emulated exactly as a client's):
//!
//! | action         | the call, for a client read of COUNT bytes at OFFSET            |
//! |----------------|-----------------------------------------------------------------|
//! | zero           | `zero(COUNT, OFFSET, MAY_TRIM)`                                 |
//! | fua-write      | `pwrite` of COUNT bytes of 0xAB at OFFSET with FUA              |
//! | cache          | `cache(COUNT, OFFSET)`                                          |
//! | read-past-end  | `pread` of COUNT bytes at SIZE - COUNT/2, into a scratch buffer |
//! | write-past-end | `pwrite` of COUNT bytes of 0xAB at SIZE - COUNT/2               |
//! | reconfigure    | `next.config("size", "1")`: configuration while serving         |
//! | flood          | 10,000 `background.cache` requests of 512 bytes, each elsewhere |
//!
//! It logs `prober: ACTION -> ok` or `prober: ACTION -> ERRNO` and fails the client's read
//! with that error, or else serves it from the layer below.

use nbdbox_filter_sdk::info;
use nbdbox_filter_sdk::prelude::*;

#[derive(Clone, Copy)]
enum Action {
    Zero,
    FuaWrite,
    Cache,
    ReadPastEnd,
    WritePastEnd,
    Reconfigure,
    Flood,
}

impl Action {
    const ALL: [Action; 7] = [
        Action::Zero,
        Action::FuaWrite,
        Action::Cache,
        Action::ReadPastEnd,
        Action::WritePastEnd,
        Action::Reconfigure,
        Action::Flood,
    ];

    /// The `action=` value, and the name in the log.
    fn name(self) -> &'static str {
        match self {
            Action::Zero => "zero",
            Action::FuaWrite => "fua-write",
            Action::Cache => "cache",
            Action::ReadPastEnd => "read-past-end",
            Action::WritePastEnd => "write-past-end",
            Action::Reconfigure => "reconfigure",
            Action::Flood => "flood",
        }
    }

    /// Make the call for a client read of `count` bytes at `offset`.
    fn run(self, next: &Next, count: u32, offset: u64) -> Result<()> {
        let pattern = || WriteBuf::new(&vec![0xab; count as usize]);
        let straddling = || Ok::<_, Error>(next.get_size()?.saturating_sub(u64::from(count / 2)));
        match self {
            Action::Zero => next.zero(count.into(), offset, CmdFlags::MAY_TRIM),
            Action::FuaWrite => next.pwrite(&pattern(), count, offset, CmdFlags::FUA),
            Action::Cache => next.cache(count.into(), offset, CmdFlags::empty()),
            Action::ReadPastEnd => next.pread(&ReadBuf::new(count), count, straddling()?, CmdFlags::empty()),
            Action::WritePastEnd => next.pwrite(&pattern(), count, straddling()?, CmdFlags::empty()),
            Action::Reconfigure => next::config("size", "1"),
            Action::Flood => {
                let blocks = next.get_size()? / 512;
                for i in 0..10_000 {
                    next.cache_in_background(512, i % blocks * 512);
                }
                Ok(())
            }
        }
    }
}

#[derive(Default)]
struct Prober {
    action: Option<Action>,
}

impl Filter for Prober {
    const NAME: &'static str = "prober";
    const DESCRIPTION: &'static str = "Test filter: make a call of its own to the layer below before each read";
    const CONFIG_KEYS: &'static [Key] = &[Key::new(
        "action",
        Kind::Text,
        "action=zero|fua-write|cache|read-past-end|write-past-end|reconfigure|flood  The call to make (required).",
    )];
    type Connection = Action;

    fn config(&mut self, key: &str, value: &str) -> Result<()> {
        let action = Action::ALL.into_iter().find(|a| a.name() == value).ok_or_else(|| {
            error(
                Errno::Einval,
                format!(
                    "{key}: unknown value '{value}' (expected zero, fua-write, cache, read-past-end, write-past-end, reconfigure or flood)"
                ),
            )
        })?;
        self.action = Some(action);
        Ok(())
    }

    fn config_complete(&mut self) -> Result<()> {
        match self.action {
            Some(_) => Ok(()),
            None => Err(error(Errno::Einval, "prober: you must give action=<ACTION>")),
        }
    }

    fn open(&self, _next: &Next, _readonly: bool, _export_name: &str) -> Result<Action> {
        // config_complete made sure it is set.
        Ok(self.action.unwrap_or(Action::Zero))
    }
}

impl FilterConnection for Action {
    fn pread(&self, next: &Next, dst: &ReadBuf, count: u32, offset: u64, flags: CmdFlags) -> Result<()> {
        let outcome = self.run(next, count, offset);
        match &outcome {
            Ok(()) => info(&format!("{} -> ok", self.name())),
            Err(e) => info(&format!("{} -> {:?}", self.name(), e.errno)),
        }
        outcome?;
        next.pread(dst, count, offset, flags)
    }
}

nbdbox_filter_sdk::filter!(Prober);
