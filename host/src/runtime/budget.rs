//! The process-wide memory budget: the bytes all component instances together may hold
//! (linear memories, tables, and host buffers kept for them), whatever each one's own
//! `--memory-limit`. Without it the cap multiplies with connections, since a layer without
//! shared state runs an instance per connection.
//!
//! Two rules use it. Growth: an instance that would take the process past the budget fails to
//! grow, exactly as at its own limit. Admission: a new instance is made only while the budget
//! still has room for one more at its full limit, so a client whose connection would need one
//! is refused at GO with a message, and the instances already serving keep their headroom.

use std::sync::atomic::{AtomicU64, Ordering};

pub struct MemoryBudget {
    total: u64,
    used: AtomicU64,
}

impl MemoryBudget {
    pub fn new(total: u64) -> MemoryBudget {
        MemoryBudget {
            total,
            used: AtomicU64::new(0),
        }
    }

    /// The default: three quarters of the memory this process may use, the smaller of the
    /// machine's physical memory and its cgroup's `memory.max`.
    pub fn default_total() -> u64 {
        let physical = physical_memory().unwrap_or(4 << 30);
        let available = cgroup_memory_max().map_or(physical, |max| max.min(physical));
        available / 4 * 3
    }

    pub fn total(&self) -> u64 {
        self.total
    }

    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// Take `bytes` from the budget, or nothing if they do not fit.
    pub(crate) fn take(&self, bytes: u64) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|&after| after <= self.total)
            })
            .is_ok()
    }

    pub(crate) fn give_back(&self, bytes: u64) {
        let _ = self.used.fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
            Some(used.saturating_sub(bytes))
        });
    }

    /// Whether an instance that holds `held` bytes (0 for a new one) could grow to `limit`
    /// beside what the others hold.
    pub(crate) fn has_room_for(&self, limit: u64, held: u64) -> bool {
        self.used().saturating_sub(held).saturating_add(limit) <= self.total
    }
}

fn physical_memory() -> Option<u64> {
    let pages = nix::unistd::sysconf(nix::unistd::SysconfVar::_PHYS_PAGES).ok()??;
    let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE).ok()??;
    u64::try_from(pages).ok()?.checked_mul(u64::try_from(page).ok()?)
}

/// cgroup v2's limit for this process's group ("max" means none).
fn cgroup_memory_max() -> Option<u64> {
    let membership = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let group = membership.lines().find_map(|line| line.strip_prefix("0::"))?;
    let path = format!("/sys/fs/cgroup{}/memory.max", group.trim_end_matches('/'));
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn taking_stops_at_the_total() {
        let budget = MemoryBudget::new(100);
        assert!(budget.take(60));
        assert!(!budget.take(41));
        assert!(budget.take(40));
        assert!(!budget.has_room_for(1, 0));
        assert!(budget.has_room_for(60, 60));
        budget.give_back(50);
        assert!(budget.has_room_for(50, 0));
        assert!(!budget.has_room_for(51, 0));
        budget.give_back(1000);
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn the_default_is_a_part_of_the_machine() {
        let total = MemoryBudget::default_total();
        assert!(total > 0 && total < physical_memory().unwrap());
    }
}
