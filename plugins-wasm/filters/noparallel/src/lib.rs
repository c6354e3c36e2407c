//! noparallel: lower the thread model (nbdkit's filters/noparallel/noparallel.c):
//! `serialize=requests` (default) one request at a time per connection, `all-requests` one
//! at a time over all connections, `connections` one client at a time (and no multi-conn).
//! The host serializes as the stack's thread model says.
//!
//! State: none.

use nbdbox_filter_sdk::prelude::*;

#[derive(Default)]
struct Noparallel {
    model: Option<ThreadModel>,
}

impl Filter for Noparallel {
    const NAME: &'static str = "noparallel";
    const DESCRIPTION: &'static str = "nbdkit noparallel filter";
    const CONFIG_KEYS: &'static [Key] = &[Key::new(
        "serialize",
        Kind::Text,
        "Set serialization level: 'requests' (default), 'all-requests', 'connections'",
    )];
    type Connection = NoparallelConnection;

    fn config(&mut self, _key: &str, value: &str) -> Result<()> {
        self.model = Some(match value {
            "requests" | "request" => ThreadModel::SerializeRequests,
            "all-requests" | "all_requests" => ThreadModel::SerializeAllRequests,
            "connections" | "connection" => ThreadModel::SerializeConnections,
            _ => return Err(error(Errno::Einval, format!("unknown serialize mode '{value}'"))),
        });
        Ok(())
    }

    fn thread_model(&self) -> ThreadModel {
        self.model.unwrap_or(ThreadModel::SerializeRequests)
    }

    fn open(&self, _next: &Next, _readonly: bool, _export_name: &str) -> Result<NoparallelConnection> {
        Ok(NoparallelConnection {
            one_client: self.thread_model() == ThreadModel::SerializeConnections,
        })
    }
}

struct NoparallelConnection {
    one_client: bool,
}

impl FilterConnection for NoparallelConnection {
    /// One client at a time cannot mean several connections (nbdkit's server drops
    /// multi-conn under serialize_connections).
    fn capabilities(&self, next: &Next) -> Result<Capabilities> {
        let below = next.capabilities()?;
        Ok(Capabilities {
            can_multi_conn: below.can_multi_conn && !self.one_client,
            ..below
        })
    }
}

nbdbox_filter_sdk::filter!(Noparallel);
