//! The one log line per attempt that escape and grant-probe write, so that a test reads both
//! the same way: `WHAT: refused (WHY)` or `WHAT: SUCCEEDED` (tagged with the component's name
//! by the host).

use std::fmt::Display;

/// Log the outcome of trying `what`.
pub fn report<T>(what: &str, outcome: Result<T, impl Display>) {
    nbdbox_sdk::info(&match outcome {
        Ok(_) => format!("{what}: SUCCEEDED"),
        Err(why) => format!("{what}: refused ({why})"),
    });
}
