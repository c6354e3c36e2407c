//! The `host` interface: logging, nbdkit's value parsers, limits, shutdown, sleep, counters.

use crate::log::Level;
use crate::runtime::bindings::nbdbox::plugin::host::{Credentials, Host, LogLevel};
use crate::runtime::state::StoreData;
use crate::runtime::{clock, peer};
use std::time::{Duration, Instant};
use wasmtime::Result;

impl Host for StoreData {
    fn log(&mut self, level: LogLevel, message: String) -> Result<()> {
        let level = match level {
            LogLevel::Error => Level::Error,
            LogLevel::Warning => Level::Warning,
            LogLevel::Info => Level::Info,
            LogLevel::Debug => Level::Debug,
        };
        self.env.log.component(&self.env.name, level, &message);
        Ok(())
    }

    fn parse_size(&mut self, value: String) -> Result<Result<u64, String>> {
        Ok(crate::parse::parse_size(&value))
    }

    fn parse_bool(&mut self, value: String) -> Result<Result<bool, String>> {
        Ok(crate::parse::parse_bool(&value))
    }

    fn memory_limit(&mut self) -> Result<u64> {
        Ok(self.env.limits.memory)
    }

    fn shutdown(&mut self) -> Result<()> {
        self.env.shutdown.request();
        Ok(())
    }

    /// Slept time does not count against the call's deadline, up to the allowance for time
    /// blocked per call: a sleep that would go past it returns false at once.
    fn sleep(&mut self, nanoseconds: u64) -> Result<bool> {
        let wanted = Duration::from_nanos(nanoseconds);
        if clock::blocked().saturating_add(wanted) > self.env.limits.blocked_allowance() {
            return Ok(false);
        }
        let start = Instant::now();
        let completed = self.env.shutdown.sleep(wanted);
        clock::add_blocked(start.elapsed());
        Ok(completed)
    }

    fn peer_name(&mut self) -> Result<Option<String>> {
        Ok(peer::current().and_then(|p| p.name.clone()))
    }

    fn is_tls(&mut self) -> Result<bool> {
        Ok(peer::current().is_some_and(|p| p.tls.is_some()))
    }

    fn peer_tls_dn(&mut self) -> Result<Option<String>> {
        Ok(peer::current().and_then(|p| p.tls.as_ref()?.subject_dn.clone()))
    }

    fn peer_tls_issuer_dn(&mut self) -> Result<Option<String>> {
        Ok(peer::current().and_then(|p| p.tls.as_ref()?.issuer_dn.clone()))
    }

    fn debug_flag(&mut self, flag: String) -> Result<Option<i32>> {
        Ok(self.env.debug_flags.read(&self.env.name, &flag))
    }

    fn peer_credentials(&mut self) -> Result<Option<Credentials>> {
        Ok(peer::current()
            .and_then(|p| p.credentials)
            .map(|(pid, uid, gid)| Credentials { pid, uid, gid }))
    }

    fn counter_add(&mut self, name: String, delta: i64) -> Result<i64> {
        Ok(self.env.counter_add(&name, delta))
    }
}
