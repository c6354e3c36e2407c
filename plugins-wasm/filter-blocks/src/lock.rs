//! A mutex over every instance of a layer, made of a host counter (`counter_add` is atomic
//! and shared by all instances). For the rare paths that must not interleave across
//! connections, like nbdkit's global read-modify-write lock in filters/blocksize and
//! filters/cow: a pooled layer has no memory that all its instances share.

use nbdbox_filter_sdk::{counter_add, sleep, warning};

/// How long to wait before deciding the holder is gone: an instance that trapped while it
/// held the lock never releases it.
const STALE_AFTER_NS: u64 = 5_000_000_000;
const POLL_NS: u64 = 50_000;

pub struct CounterLock {
    name: &'static str,
}

/// Held until dropped.
pub struct CounterGuard {
    name: &'static str,
}

impl CounterLock {
    pub const fn new(name: &'static str) -> CounterLock {
        CounterLock { name }
    }

    pub fn lock(&self) -> CounterGuard {
        let mut waited = 0;
        while counter_add(self.name, 1) != 1 {
            counter_add(self.name, -1);
            if waited >= STALE_AFTER_NS {
                warning(&format!("lock '{}' held for over 5 s; taking it over", self.name));
                // Whatever the count is, make it one holder: us.
                let now = counter_add(self.name, 1);
                counter_add(self.name, 1 - now);
                break;
            }
            if !sleep(POLL_NS) {
                // Shutting down: go on without waiting, still counted so the guard balances.
                counter_add(self.name, 1);
                break;
            }
            waited += POLL_NS;
        }
        CounterGuard { name: self.name }
    }
}

impl Drop for CounterGuard {
    fn drop(&mut self) {
        counter_add(self.name, -1);
    }
}
