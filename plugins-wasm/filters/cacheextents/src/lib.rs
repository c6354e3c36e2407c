//! cacheextents: accepted, and passes every call through unchanged.
//!
//! nbdkit's cacheextents filter kept the last extents answer for clients that ask for one
//! extent at a time; nbdkit removed it upstream in 1.46. nbdbox keeps the name so that
//! command lines that still pass it (KubeVirt CDI's `vddk → retry → cacheextents`) keep
//! working; caching an extents answer here would only risk serving it stale after a write.

use nbdbox_filter_sdk::prelude::*;

#[derive(Default)]
struct Cacheextents;

impl Filter for Cacheextents {
    const NAME: &'static str = "cacheextents";
    const DESCRIPTION: &'static str = "Accepted for compatibility; passes everything through";
    type Connection = ();

    fn open(&self, _next: &Next, _readonly: bool, _export_name: &str) -> Result<()> {
        Ok(())
    }
}

nbdbox_filter_sdk::filter!(Cacheextents);
