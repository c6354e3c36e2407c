//! passthrough (test and benchmark only): a filter that changes nothing. Stacking it measures
//! what a filter layer costs by itself.

use nbdbox_filter_sdk::filter::{Connection, Guest, GuestConnection};
use nbdbox_filter_sdk::{forward, forward_globals, next, PluginInfo, Result, ThreadModel};

struct Passthrough;

struct PassthroughConnection {
    next: next::Connection,
}

impl Guest for Passthrough {
    type Connection = PassthroughConnection;

    fn describe() -> PluginInfo {
        PluginInfo {
            name: "passthrough".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Test filter: pass every call down unchanged".into(),
            magic_config_key: None,
            config_keys: Vec::new(),
            thread_model: ThreadModel::Parallel,
            shared_state: false,
        }
    }

    forward_globals!(config, config_complete, get_ready, list_exports);
}

impl PassthroughConnection {
    fn next(&self) -> &next::Connection {
        &self.next
    }
}

impl GuestConnection for PassthroughConnection {
    fn open(readonly: bool, export_name: String) -> Result<Connection> {
        Ok(Connection::new(PassthroughConnection {
            next: next::Connection::open(readonly, &export_name)?,
        }))
    }

    forward!(next; prepare, finalize, get_size, export_description, capabilities, block_size,
        pread, pwrite, flush, trim, zero, extents, cache);
}

nbdbox_filter_sdk::export_filter!(Passthrough);
