//! nofilter: passes every request through unchanged (nbdkit's filters/nofilter, mostly for
//! testing the layering itself).
//!
//! State: none.

use nbdbox_filter_sdk::prelude::*;

#[derive(Default)]
struct Nofilter;

impl Filter for Nofilter {
    const NAME: &'static str = "nofilter";
    const DESCRIPTION: &'static str = "nbdkit passthrough filter";
    type Connection = ();

    fn open(&self, _next: &Next, _readonly: bool, _export_name: &str) -> Result<()> {
        Ok(())
    }
}

nbdbox_filter_sdk::filter!(Nofilter);
