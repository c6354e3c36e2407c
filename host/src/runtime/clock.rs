//! The clock of a call into a component: when it began and how long it has spent blocked in
//! host calls that do not count against its deadline (sleeping, waiting on the network).
//!
//! Blocked time is kept per thread: a filter's call to the layer below runs on the filter
//! call's thread, so time the plugin spends sleeping is credited to the filter above it too.
//!
//! A call's start is read from the time the epoch ticker left at its last tick, not from the
//! system clock: a `clock_gettime` per call is a measurable part of what a filter layer costs
//! per request, and a start up to one tick early only brings a deadline, checked every few
//! ticks anyway, forward by that tick.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The time of the epoch ticker's last tick, in nanoseconds since [`origin`]; zero while no
/// ticker runs (around a fork), when a call's start reads the system clock instead.
static TICKED: AtomicU64 = AtomicU64::new(0);

fn origin() -> Instant {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    *ORIGIN.get_or_init(Instant::now)
}

/// Nanoseconds since [`origin`], never zero.
fn now() -> u64 {
    u64::try_from(origin().elapsed().as_nanos()).unwrap_or(u64::MAX).max(1)
}

/// The epoch ticker ticked: calls that start from now on count from here.
pub(crate) fn tick() {
    TICKED.store(now(), Ordering::Relaxed);
}

/// The epoch ticker stopped: calls read the system clock until it ticks again.
pub(crate) fn ticker_stopped() {
    TICKED.store(0, Ordering::Relaxed);
}

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
    /// Nanoseconds since [`origin`].
    started: u64,
    blocked_at_start: Duration,
}

impl CallClock {
    pub(crate) fn start() -> CallClock {
        let ticked = TICKED.load(Ordering::Relaxed);
        CallClock {
            started: if ticked == 0 { now() } else { ticked },
            blocked_at_start: blocked(),
        }
    }

    /// How long the call has run: wall time less the time it spent blocked.
    pub(crate) fn ran(&self) -> Duration {
        let blocked = blocked().saturating_sub(self.blocked_at_start);
        Duration::from_nanos(now().saturating_sub(self.started)).saturating_sub(blocked)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::thread::sleep;

    // One test: the ticked time is process-wide.
    #[test]
    fn a_call_counts_from_the_last_tick_or_the_system_clock_when_none_ticks() {
        tick();
        let clock = CallClock::start();
        let real = Instant::now();
        sleep(Duration::from_millis(20));
        let elapsed = real.elapsed();
        assert!(clock.ran() >= elapsed, "a start from a tick is never late");

        // A tick from before the ticker stopped must not date a later call back.
        tick();
        ticker_stopped();
        sleep(Duration::from_millis(50));
        let clock = CallClock::start();
        assert!(clock.ran() < Duration::from_millis(50), "ran {:?}", clock.ran());
    }
}
