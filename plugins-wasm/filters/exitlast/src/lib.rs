//! exitlast: shut the server down when the last client disconnects (never before the first
//! one connected), as nbdkit's filters/exitlast/exitlast.c. It counts opened connections, so
//! an NBD_OPT_INFO, which opens and closes the export, counts too. The count is a host
//! counter, shared by every instance of the filter, so the filter needs no shared state.

use nbdbox_filter_sdk::prelude::*;
use nbdbox_filter_sdk::{counter_add, debug, shutdown};

/// The host counter of connections whose open succeeded and that are not closed yet.
const OPEN: &str = "open";

#[derive(Default)]
struct Exitlast;

impl Filter for Exitlast {
    const NAME: &'static str = "exitlast";
    const DESCRIPTION: &'static str = "Exit when the last client connection closes";
    type Connection = Counted;

    /// The layer below is open by now: this connection counts.
    fn open(&self, _next: &Next, _readonly: bool, _export_name: &str) -> Result<Counted> {
        counter_add(OPEN, 1);
        Ok(Counted)
    }
}

/// One counted connection; dropping it (nbdkit's close) uncounts it.
struct Counted;

impl FilterConnection for Counted {}

impl Drop for Counted {
    fn drop(&mut self) {
        if counter_add(OPEN, -1) == 0 {
            debug("last connection closed, shutting down");
            shutdown();
        }
    }
}

nbdbox_filter_sdk::filter!(Exitlast);
