//! limit: refuse clients beyond `limit=N` connected at once (default 1; 0 means no limit),
//! as nbdkit's filters/limit/limit.c: a new client is refused at preconnect, before the
//! greeting, while N are open. The count is a host counter, shared by every instance.
//!
//! State: the counter, in the host; nothing in the component.

use nbdbox_filter_sdk::prelude::*;
use nbdbox_filter_sdk::{counter_add, log_error};

const OPEN: &str = "open";

#[derive(Clone, Copy)]
struct Limit {
    limit: i64,
}

impl Default for Limit {
    fn default() -> Self {
        Limit { limit: 1 }
    }
}

impl Filter for Limit {
    const NAME: &'static str = "limit";
    const DESCRIPTION: &'static str = "nbdkit limit filter";
    const CONFIG_KEYS: &'static [Key] = &[Key::new(
        "limit",
        Kind::Text,
        "Maximum number of connected clients (default 1, 0 = unlimited)",
    )];
    type Connection = Counted;

    fn config(&mut self, _key: &str, value: &str) -> Result<()> {
        self.limit = value
            .parse::<u32>()
            .map_err(|_| error(Errno::Einval, format!("limit: could not parse number: {value}")))?
            .into();
        Ok(())
    }

    fn preconnect(&self, readonly: bool) -> Result<()> {
        next::preconnect(readonly)?;
        if self.limit > 0 && counter_add(OPEN, 0) >= self.limit {
            log_error("limit: too many clients connected, connection rejected");
            return Err(error(Errno::Eperm, "too many clients connected"));
        }
        Ok(())
    }

    fn open(&self, _next: &Next, _readonly: bool, _export_name: &str) -> Result<Counted> {
        counter_add(OPEN, 1);
        Ok(Counted)
    }
}

/// One open connection; dropping it (close) uncounts it.
struct Counted;

impl FilterConnection for Counted {}

impl Drop for Counted {
    fn drop(&mut self) {
        counter_add(OPEN, -1);
    }
}

nbdbox_filter_sdk::filter!(Limit);
