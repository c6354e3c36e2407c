//! Process lifecycle: startup in nbdkit's order, listeners, captive `--run`, daemonizing,
//! pid file, and the one exit path that cleans up what nbdbox created.
//!
//! ```text
//!   Config → load components → config → config-complete → get-ready → bind
//!     → [--run: start CMD | daemonize] → pid file → serve → shutdown → cleanup → exit
//! ```

pub mod captive;
mod endpoint;
mod introspect;

use crate::backend::{Export, ExportSpec, Stage};
use crate::config::{config_pairs, Action, Config, Listen};
use crate::log::{self, Log};
use crate::runtime::budget::MemoryBudget;
use crate::runtime::engine::EpochTicker;
use crate::runtime::{LayerComponent, Process, Role, Runtime};
use crate::server::{self, Exports, Server, Transport};
use crate::shutdown::Shutdown;
use anyhow::{bail, Context as _, Result};
use endpoint::Cleanup;
use std::process::ExitCode;
use std::sync::Arc;

/// Run nbdbox; every failure before serving is reported once, here, with exit status 1.
pub fn run(config: Config) -> ExitCode {
    let log = Log::new(config.verbose);
    match start(config, &log) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            log::error!(log, "{e:#}");
            ExitCode::from(1)
        }
    }
}

fn print_help() -> Result<()> {
    use clap::CommandFactory;
    crate::cli::Cli::command().print_help()?;
    Ok(())
}

fn start(config: Config, log: &Log) -> Result<u8> {
    if config.action == Action::DumpConfig {
        introspect::print_config();
        return Ok(0);
    }
    if config.exit_with_parent {
        set_exit_with_parent()?;
    }
    let Some(plugin_spec) = config.export.plugin.as_deref() else {
        if config.action == Action::Help {
            print_help()?;
            return Ok(0);
        }
        bail!("no plugin given: try `nbdbox memory 1G -U - --run 'nbdinfo $uri'`, or --help");
    };

    raise_descriptor_limit();
    let shutdown = Shutdown::new().context("creating the shutdown pipe")?;
    let process = Process {
        log: log.clone(),
        shutdown: shutdown.clone(),
        budget: Arc::new(MemoryBudget::new(config.memory_budget)),
    };
    let runtime = Runtime::new(process.clone())?;
    // Deadlines hold from the first call into a component: describe, config, get-ready.
    let ticker = EpochTicker::start(&runtime.engine);
    let limits = config.export.limits;
    let load = |spec: &str, role| runtime.load(spec, role, limits).map(Arc::new);
    let plugin = load(plugin_spec, Role::Plugin)?;
    let filters = config
        .export
        .filters
        .iter()
        .map(|f| load(f, Role::Filter))
        .collect::<Result<Vec<Arc<LayerComponent>>, _>>()?;
    if config.action == Action::Help {
        print_help()?;
        for layer in filters.iter().chain([&plugin]) {
            introspect::print_layer_help(layer);
        }
        return Ok(0);
    }
    let spec = ExportSpec {
        params: config_pairs(&config.export.params, plugin.info.magic_config_key.as_deref())?,
        filters,
        plugin,
        readonly: config.export.readonly,
        limits,
        threads: config.server.threads,
        stdin_free: config.listen != Listen::Stdio,
    };
    if config.action == Action::DumpPlugin {
        let export = Export::configure(spec, Stage::Describe, &process)?;
        introspect::print_plugin_dump(&export);
        return Ok(0);
    }
    let export = Export::configure(spec, Stage::Serve, &process)?;

    let mut cleanup = Cleanup::default();
    let (listeners, endpoint) = endpoint::listen(&config.listen, config.run.is_some(), &mut cleanup)?;
    shutdown.handle_signals();
    // Socket activation (no endpoint of our own, not -s) never daemonizes, as nbdkit: the
    // activator (systemd, libnbd) watches the process it started.
    let stdio = config.listen == Listen::Stdio;
    let socket_activated = endpoint.is_none() && !stdio;
    let foreground = config.foreground || config.run.is_some() || stdio || config.exit_with_parent || socket_activated;
    // Resolved before daemonizing moves us to `/`.
    let pidfile = config.pidfile.as_deref().map(std::path::absolute).transpose()?;
    let ticker = if foreground {
        ticker
    } else {
        // A fork keeps only the calling thread: the ticker stops first and starts again.
        ticker.stop();
        daemonize(config.verbose)?;
        EpochTicker::start(&runtime.engine)
    };
    // The pid file is written before the command starts, so failing to write it is a
    // startup failure: exit 1 and the command never runs.
    if let Some(pidfile) = pidfile {
        std::fs::write(&pidfile, format!("{}\n", std::process::id()))
            .with_context(|| format!("-P: writing {}", pidfile.display()))?;
        cleanup.files.push(pidfile);
    }
    let command = match (&config.run, &endpoint) {
        (Some(command), Some(endpoint)) => {
            let script = captive::script(
                &endpoint.as_captive(),
                config.exportname.as_deref().unwrap_or(""),
                command,
            );
            log::debug!(log, "--run script:\n{script}");
            Some(captive::spawn(&script).context("--run: cannot start /bin/sh")?)
        }
        _ => None,
    };

    let server = Arc::new(Server {
        exports: Exports::single(export),
        options: server::Options {
            no_structured_replies: config.server.no_structured_replies,
            handshake_mask: config.server.handshake_mask,
            threads: config.server.threads,
        },
        shutdown: shutdown.clone(),
        log: log.clone(),
        seats: server::Seats::new(config.server.max_connections),
    });
    let code = if stdio {
        serve_stdio(&server)?;
        0
    } else {
        let accepting = {
            let server = server.clone();
            std::thread::Builder::new()
                .name("accept".into())
                .spawn(move || server::listener::accept_loop(listeners, server))?
        };
        let code = match command {
            Some(mut child) => {
                let status = child.wait().context("--run: waiting for the command")?;
                shutdown.request();
                captive::exit_code(status, log)
            }
            None => 0,
        };
        accepting
            .join()
            .map_err(|_| anyhow::anyhow!("the accept loop panicked"))?;
        code
    };
    for export in server.exports.all() {
        export.cleanup();
    }
    ticker.stop();
    drop(cleanup);
    Ok(code)
}

/// `-s`: one connection on stdin/stdout.
fn serve_stdio(server: &Server) -> Result<()> {
    use std::os::fd::AsFd;
    let input = std::fs::File::from(std::io::stdin().as_fd().try_clone_to_owned()?);
    let output = std::fs::File::from(std::io::stdout().as_fd().try_clone_to_owned()?);
    server::serve(server, Transport::Stdio { input, output }, 0);
    Ok(())
}

/// Fork into the background once listening: the parent exits 0 at once, the child serves
/// from `/` with stdio on /dev/null (stderr kept with -v). Called with no other thread alive.
fn daemonize(verbose: bool) -> Result<()> {
    use nix::unistd::{fork, ForkResult};
    use std::os::fd::AsRawFd;
    // SAFETY: the process is single-threaded here (the epoch ticker was stopped and the
    // accept loop starts after this), so the child inherits a consistent state.
    match unsafe { fork() }.context("fork")? {
        // SAFETY: _exit(2) in the parent skips destructors meant for the child.
        ForkResult::Parent { .. } => unsafe { libc::_exit(0) },
        ForkResult::Child => {}
    }
    std::env::set_current_dir("/")?;
    let null = std::fs::OpenOptions::new().read(true).write(true).open("/dev/null")?;
    let targets: &[i32] = if verbose { &[0, 1] } else { &[0, 1, 2] };
    for &fd in targets {
        nix::unistd::dup2(null.as_raw_fd(), fd)?;
    }
    Ok(())
}

/// Each client holds two descriptors: the soft limit (often 1024) would refuse clients long
/// before `--max-connections` does, so it is raised to the hard one.
fn raise_descriptor_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
        }
    }
}

#[cfg(target_os = "linux")]
fn set_exit_with_parent() -> Result<()> {
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM).context("--exit-with-parent: prctl")
}

#[cfg(not(target_os = "linux"))]
fn set_exit_with_parent() -> Result<()> {
    bail!("--exit-with-parent is not implemented for this operating system")
}
