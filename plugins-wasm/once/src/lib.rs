//! A layer without shared state runs as several instances, each configured alike, but some
//! things must happen once per layer: emptying a log file, choosing a random seed, noting when
//! the server started. Host counters are shared by every instance of a layer; these helpers
//! build "once" on them.

use nbdbox_sdk::counter_add;

/// True for exactly one caller per layer and `name`: the first to ask.
pub fn first(name: &str) -> bool {
    counter_add(name, 1) == 1
}

/// The layer's value `name`, chosen by whichever instance asks first with `choose` (a value
/// that fits in 63 bits); every other instance gets the same.
pub fn value(name: &str, choose: impl FnOnce() -> u64) -> u64 {
    // The counter holds value + 1, so 0 means "not chosen yet".
    let stored = format!("{name} value");
    if first(&format!("{name} chosen")) {
        counter_add(&stored, (choose() & (i64::MAX as u64 >> 1)) as i64 + 1);
    }
    loop {
        match counter_add(&stored, 0) {
            0 => {
                // The first instance is choosing right now: give it a moment.
                nbdbox_sdk::sleep(1_000_000);
            }
            v => return v as u64 - 1,
        }
    }
}
