//! What every component instance's `Store` holds, and the `host` interface it implements.

use super::bindings::nbdbox::plugin::host::{Host, LogLevel};
use super::buffers::RequestBuffers;
use super::component::{add_slept, Instance};
use super::grants::Grants;
use crate::log;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use wasmtime::component::{HasData, Linker, ResourceTable};
use wasmtime::{Result, StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// Per-instance state: WASI (stderr only), its resource table, limits, the granted files and
/// the buffers of the call in progress.
pub struct LayerCtx {
    /// The component's name, for log lines.
    pub(crate) name: Arc<str>,
    wasi: WasiCtx,
    pub(crate) table: ResourceTable,
    pub(crate) limits: StoreLimits,
    memory_limit: u64,
    pub(crate) grants: Arc<Grants>,
    pub(crate) buffers: RequestBuffers,
    /// The layer below, for a filter.
    pub(crate) next: Option<Box<Instance>>,
    /// Epoch ticks the whole stack has spent in `host.sleep`, and how many of them this
    /// store has already been credited with.
    slept: Arc<AtomicU64>,
    credited: u64,
}

impl LayerCtx {
    pub fn new(
        name: Arc<str>,
        memory_limit: u64,
        grants: Arc<Grants>,
        next: Option<Box<Instance>>,
        slept: Arc<AtomicU64>,
    ) -> LayerCtx {
        // No preopens, environment, arguments or network: WASI here is only the plumbing a
        // Rust guest's std needs, plus stderr for panics.
        let wasi = WasiCtx::builder().inherit_stderr().build();
        let limits = StoreLimitsBuilder::new()
            .memory_size(usize::try_from(memory_limit).unwrap_or(usize::MAX))
            .instances(64)
            .tables(64)
            .memories(8)
            // A failed memory.grow returns -1 so the guest's fallible allocations can turn it
            // into ENOSPC; infallible ones still abort, which traps.
            .trap_on_grow_failure(false)
            .build();
        let credited = slept.load(Ordering::Relaxed);
        LayerCtx {
            name,
            wasi,
            table: ResourceTable::new(),
            limits,
            memory_limit,
            grants,
            buffers: RequestBuffers::default(),
            next,
            slept,
            credited,
        }
    }

    /// A call begins: sleep before it does not extend its deadline.
    pub(crate) fn start_call(&mut self) {
        self.credited = self.slept.load(Ordering::Relaxed);
    }

    /// Ticks slept since the deadline was last set or extended: how far to extend it.
    pub(crate) fn take_sleep_credit(&mut self) -> u64 {
        let slept = self.slept.load(Ordering::Relaxed);
        let credit = slept.saturating_sub(self.credited);
        self.credited = slept;
        credit
    }
}

impl WasiView for LayerCtx {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

struct IoTable;
impl HasData for IoTable {
    type Data<'a> = &'a mut ResourceTable;
}

/// Link the WASI interfaces a Rust guest's std imports (io, clocks, random, cli) and nothing
/// else: no filesystem, no sockets, so a component that imports them fails to load.
pub fn add_wasi_plumbing(linker: &mut Linker<LayerCtx>) -> Result<()> {
    use wasmtime_wasi::cli::{WasiCli, WasiCliView as _};
    use wasmtime_wasi::clocks::{WasiClocks, WasiClocksView as _};
    use wasmtime_wasi::p2::bindings::{cli, clocks, random, sync};
    use wasmtime_wasi::random::WasiRandom;

    let l = linker;
    sync::io::error::add_to_linker::<LayerCtx, IoTable>(l, |t| &mut t.table)?;
    sync::io::poll::add_to_linker::<LayerCtx, IoTable>(l, |t| &mut t.table)?;
    sync::io::streams::add_to_linker::<LayerCtx, IoTable>(l, |t| &mut t.table)?;
    clocks::wall_clock::add_to_linker::<LayerCtx, WasiClocks>(l, LayerCtx::clocks)?;
    clocks::monotonic_clock::add_to_linker::<LayerCtx, WasiClocks>(l, LayerCtx::clocks)?;
    random::random::add_to_linker::<LayerCtx, WasiRandom>(l, |t| t.wasi.random())?;
    random::insecure::add_to_linker::<LayerCtx, WasiRandom>(l, |t| t.wasi.random())?;
    random::insecure_seed::add_to_linker::<LayerCtx, WasiRandom>(l, |t| t.wasi.random())?;
    cli::exit::add_to_linker::<LayerCtx, WasiCli>(l, LayerCtx::cli)?;
    cli::environment::add_to_linker::<LayerCtx, WasiCli>(l, LayerCtx::cli)?;
    cli::stdin::add_to_linker::<LayerCtx, WasiCli>(l, LayerCtx::cli)?;
    cli::stdout::add_to_linker::<LayerCtx, WasiCli>(l, LayerCtx::cli)?;
    cli::stderr::add_to_linker::<LayerCtx, WasiCli>(l, LayerCtx::cli)?;
    cli::terminal_input::add_to_linker::<LayerCtx, WasiCli>(l, LayerCtx::cli)?;
    cli::terminal_output::add_to_linker::<LayerCtx, WasiCli>(l, LayerCtx::cli)?;
    cli::terminal_stdin::add_to_linker::<LayerCtx, WasiCli>(l, LayerCtx::cli)?;
    cli::terminal_stdout::add_to_linker::<LayerCtx, WasiCli>(l, LayerCtx::cli)?;
    cli::terminal_stderr::add_to_linker::<LayerCtx, WasiCli>(l, LayerCtx::cli)?;
    Ok(())
}

impl Host for LayerCtx {
    fn log(&mut self, level: LogLevel, message: String) -> Result<()> {
        let name = &self.name;
        match level {
            LogLevel::Error => log::error!("{name}: {message}"),
            LogLevel::Warning => log::warning!("{name}: {message}"),
            LogLevel::Info | LogLevel::Debug => log::debug!("{name}: {message}"),
        }
        Ok(())
    }
    fn parse_size(&mut self, value: String) -> Result<Result<u64, String>> {
        Ok(crate::parse::parse_size(&value))
    }
    fn parse_bool(&mut self, value: String) -> Result<Result<bool, String>> {
        Ok(crate::parse::parse_bool(&value))
    }
    fn memory_limit(&mut self) -> Result<u64> {
        Ok(self.memory_limit)
    }
    fn shutdown(&mut self) -> Result<()> {
        crate::lifecycle::shutdown::request();
        Ok(())
    }
    fn sleep(&mut self, nanoseconds: u64) -> Result<bool> {
        let duration = Duration::from_nanos(nanoseconds);
        let completed = crate::lifecycle::shutdown::sleep(duration);
        add_slept(&self.slept, duration);
        Ok(completed)
    }
}

impl super::bindings::nbdbox::plugin::types::Host for LayerCtx {}
