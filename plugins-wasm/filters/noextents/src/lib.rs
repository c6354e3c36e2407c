//! noextents: hide the layer below's extents, so the disk looks fully allocated (nbdkit's
//! filters/noextents/noextents.c). The host answers a layer without extents with one data
//! extent, as nbdkit's backend does.
//!
//! State: none.

use nbdbox_filter_sdk::prelude::*;

#[derive(Default)]
struct Noextents;

impl Filter for Noextents {
    const NAME: &'static str = "noextents";
    const DESCRIPTION: &'static str = "nbdkit noextents filter";
    type Connection = NoextentsConnection;

    fn open(&self, _next: &Next, _readonly: bool, _export_name: &str) -> Result<NoextentsConnection> {
        Ok(NoextentsConnection)
    }
}

struct NoextentsConnection;

impl FilterConnection for NoextentsConnection {
    fn capabilities(&self, next: &Next) -> Result<Capabilities> {
        Ok(Capabilities {
            can_extents: false,
            ..next.capabilities()?
        })
    }
}

nbdbox_filter_sdk::filter!(Noextents);
