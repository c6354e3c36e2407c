//! exitlast: shut the server down when the last client disconnects (never before the first
//! one connected). Counts opened connections as nbdkit does, so an NBD_OPT_INFO, which opens
//! and closes the export, counts too. Declares shared state so one instance sees every
//! connection of the server.

use nbdbox_filter_sdk::filter::{Connection, Guest, GuestConnection};
use nbdbox_filter_sdk::{forward, forward_globals, next, PluginInfo, Result, ThreadModel};
use std::cell::Cell;

thread_local! {
    static OPEN: Cell<u64> = const { Cell::new(0) };
}

struct Exitlast;

struct ExitlastConnection {
    next: next::Connection,
}

impl Guest for Exitlast {
    type Connection = ExitlastConnection;

    fn describe() -> PluginInfo {
        PluginInfo {
            name: "exitlast".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Exit when the last client connection closes".into(),
            magic_config_key: None,
            config_keys: Vec::new(),
            thread_model: ThreadModel::Parallel,
            shared_state: true,
        }
    }

    forward_globals!(config, config_complete, get_ready, list_exports);
}

impl ExitlastConnection {
    fn next(&self) -> &next::Connection {
        &self.next
    }
}

impl GuestConnection for ExitlastConnection {
    fn open(readonly: bool, export_name: String) -> Result<Connection> {
        let next = next::Connection::open(readonly, &export_name)?;
        OPEN.with(|open| open.set(open.get() + 1));
        Ok(Connection::new(ExitlastConnection { next }))
    }

    forward!(next; prepare, finalize, get_size, export_description, capabilities, block_size,
        pread, pwrite, flush, trim, zero, extents, cache);
}

impl Drop for ExitlastConnection {
    fn drop(&mut self) {
        let left = OPEN.with(|open| {
            open.set(open.get().saturating_sub(1));
            open.get()
        });
        if left == 0 {
            nbdbox_filter_sdk::debug("last connection closed, shutting down");
            nbdbox_filter_sdk::shutdown();
        }
    }
}

nbdbox_filter_sdk::export_filter!(Exitlast);
