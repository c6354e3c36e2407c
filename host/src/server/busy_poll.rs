//! How long a connection's reader polls for the client's next request before it sleeps.
//!
//! A client with one request at a time sends the next one a few microseconds after it reads
//! a reply. A reader that sleeps in that gap pays for waking up again, and on a virtual
//! machine whose idle CPUs halt, that wake-up crosses the hypervisor: 4 KiB reads at queue
//! depth 1 took 24–43 µs each with the reader asleep, 19.5–21 µs with it polling.
//!
//! Polling only pays for a client that answers within the window, and costs a CPU meanwhile,
//! so the window adapts per connection the way Linux's haltpoll governor adapts its own
//! (drivers/cpuidle/governors/haltpoll.c): it grows while requests arrive soon after the
//! reader gave up polling, and shrinks when the client stays quiet for longer. However many
//! connections there are, readers poll on at most all CPUs but one.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

/// The longest a reader polls. Longer windows take more CPU from the client sharing a small
/// machine than they save (a fixed 100 µs window: 27–30 µs per request against 24 µs with
/// 30 µs).
const MAX: Duration = Duration::from_micros(40);

/// The longest wait that still counts as a quick client. A request that finds the reader
/// asleep waits for it to wake up too, so this is well above [`MAX`]: with a threshold of
/// [`MAX`] itself, the window stayed shut for half the runs of that benchmark. 200 µs is
/// haltpoll's default largest window (`guest_halt_poll_ns`).
const WORTH_POLLING: Duration = Duration::from_micros(200);

/// The window a connection first opens to, once a request comes soon after the reader slept.
const START: Duration = Duration::from_micros(10);

#[derive(Debug, Default)]
pub struct BusyPoll {
    window: Duration,
}

impl BusyPoll {
    /// Shut until requests come quickly.
    pub fn new() -> BusyPoll {
        BusyPoll::default()
    }

    /// Leave to poll, and for how long: none while the window is shut, or while every CPU but
    /// one already has a reader polling on it.
    pub fn start(&self) -> Option<Polling> {
        if self.window.is_zero() {
            return None;
        }
        let most = *MOST_POLLING.get_or_init(|| std::thread::available_parallelism().map_or(0, |n| n.get() - 1));
        POLLING
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |polling| {
                (polling < most).then_some(polling + 1)
            })
            .ok()
            .map(|_| Polling { window: self.window })
    }

    /// The reader waited `waited` for a request (polling and sleeping together).
    pub fn waited(&mut self, waited: Duration) {
        if waited <= self.window {
            // Polling caught it.
        } else if waited <= WORTH_POLLING {
            // Caught asleep, by a client quick enough for a longer window to catch.
            self.window = (self.window * 2).clamp(START, MAX);
        } else {
            // A client that pauses this long gains nothing from polling.
            self.window /= 2;
            if self.window < START {
                self.window = Duration::ZERO;
            }
        }
    }
}

/// Readers polling now, across connections. Each takes a CPU, and one is left for the clients
/// and the workers: with one CPU, nobody polls.
static POLLING: AtomicUsize = AtomicUsize::new(0);
static MOST_POLLING: OnceLock<usize> = OnceLock::new();

/// A reader's leave to poll, given back when dropped.
pub struct Polling {
    pub window: Duration,
}

impl Drop for Polling {
    fn drop(&mut self) {
        POLLING.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn us(n: u64) -> Duration {
        Duration::from_micros(n)
    }

    #[test]
    fn opens_for_a_quick_client_up_to_the_largest_window() {
        let mut poll = BusyPoll::new();
        assert_eq!(poll.window, Duration::ZERO);
        poll.waited(us(25));
        assert_eq!(poll.window, START);
        poll.waited(us(25));
        assert_eq!(poll.window, us(20));
        poll.waited(us(25));
        assert_eq!(poll.window, MAX);
        // Caught while polling: stays.
        poll.waited(us(25));
        assert_eq!(poll.window, MAX);
    }

    #[test]
    fn opens_for_a_quick_client_that_finds_the_reader_asleep() {
        let mut poll = BusyPoll::new();
        poll.waited(us(150));
        assert_eq!(poll.window, START);
        poll.waited(us(150));
        poll.waited(us(150));
        assert_eq!(poll.window, MAX);
    }

    #[test]
    fn shuts_for_a_client_that_pauses() {
        let mut poll = BusyPoll { window: MAX };
        poll.waited(Duration::from_millis(1));
        assert_eq!(poll.window, us(20));
        poll.waited(Duration::from_millis(1));
        assert_eq!(poll.window, START);
        poll.waited(Duration::from_millis(1));
        assert_eq!(poll.window, Duration::ZERO);
        poll.waited(Duration::from_secs(5));
        assert_eq!(poll.window, Duration::ZERO);
    }

    #[test]
    fn polls_on_all_cpus_but_one_at_most() {
        let cpus = std::thread::available_parallelism().unwrap().get();
        let poll = BusyPoll { window: MAX };
        let mut seats = Vec::new();
        while let Some(polling) = poll.start() {
            assert_eq!(polling.window, MAX);
            seats.push(polling);
            assert!(seats.len() < cpus, "{} readers polling on {cpus} CPUs", seats.len());
        }
        assert_eq!(seats.len(), cpus - 1);
        seats.pop();
        assert!(poll.start().is_some(), "a seat given back is free again");
        assert!(BusyPoll::new().start().is_none(), "polls with its window shut");
    }

    #[test]
    fn stays_shut_for_a_client_that_always_pauses() {
        let mut poll = BusyPoll::new();
        for _ in 0..10 {
            poll.waited(us(500));
        }
        assert_eq!(poll.window, Duration::ZERO);
    }
}
