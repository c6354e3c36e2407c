//! The clock of a call into a component: when it began and how long it has spent blocked in
//! host calls that do not count against its deadline (sleeping, waiting on the network).
//!
//! Blocked time is kept per thread: a filter's call to the layer below runs on the filter
//! call's thread, so time the plugin spends sleeping is credited to the filter above it too.

use std::cell::Cell;
use std::time::{Duration, Instant};

thread_local! {
    /// Blocked time of the calls on this thread since the outermost of them began.
    static BLOCKED: Cell<Duration> = const { Cell::new(Duration::ZERO) };
    /// How many calls are in progress on this thread (more than one under filters).
    static DEPTH: Cell<u32> = const { Cell::new(0) };
}

/// Blocked time since the outermost call on this thread began.
pub(crate) fn blocked() -> Duration {
    BLOCKED.get()
}

/// Credit `duration` spent blocked to every call in progress on this thread.
pub(crate) fn add_blocked(duration: Duration) {
    BLOCKED.set(BLOCKED.get().saturating_add(duration));
}

/// A call begins on this thread; the outermost one starts the blocked time from zero.
pub(crate) fn enter() {
    if DEPTH.get() == 0 {
        BLOCKED.set(Duration::ZERO);
    }
    DEPTH.set(DEPTH.get() + 1);
}

pub(crate) fn leave() {
    DEPTH.set(DEPTH.get().saturating_sub(1));
}

/// Why a call was cut off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CutOff {
    Deadline,
    Shutdown,
}

/// The clock of one call.
#[derive(Clone, Copy)]
pub(crate) struct CallClock {
    started: Instant,
    blocked_at_start: Duration,
}

impl CallClock {
    pub(crate) fn start() -> CallClock {
        CallClock {
            started: Instant::now(),
            blocked_at_start: blocked(),
        }
    }

    /// How long the call has run: wall time less the time it spent blocked.
    pub(crate) fn ran(&self) -> Duration {
        let blocked = blocked().saturating_sub(self.blocked_at_start);
        self.started.elapsed().saturating_sub(blocked)
    }
}
