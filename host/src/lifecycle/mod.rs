//! Process lifecycle: startup in nbdkit's order, listeners, captive `--run`, daemonizing,
//! pid file, and the one exit path that cleans up what nbdbox created.
//!
//! ```text
//!   Config → load components → config → config-complete → get-ready → bind
//!     → [--run: start CMD | daemonize] → pid file → serve (SIGHUP: reload the exports)
//!     → shutdown → cleanup → exit
//! ```

pub mod captive;
pub mod debug_flags;
mod endpoint;
mod exports;
mod introspect;

use crate::backend::Stage;
use crate::config::{Action, Config, Listen, TlsMode};
use crate::log::{self, Log};
use crate::runtime::budget::MemoryBudget;
use crate::runtime::engine::EpochTicker;
use crate::runtime::{DebugFlags, LayerComponent, Process, Runtime};
use crate::server::tls::Tls;
use crate::server::{self, Exports, Server, Transport};
use crate::shutdown::Shutdown;
use anyhow::{bail, Context as _, Result};
use endpoint::Cleanup;
use std::process::ExitCode;
use std::sync::Arc;

/// Run nbdbox; every failure before serving is reported once, here, with exit status 1.
pub fn run(config: Config) -> ExitCode {
    let log = match Log::configured(config.verbose, &config.log_to, config.name.as_deref()) {
        Ok(log) => log,
        Err(e) => {
            log::error!(Log::new(config.verbose), "--log: {e}");
            return ExitCode::from(1);
        }
    };
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
    match config.action {
        Action::DumpConfig => {
            introspect::print_config();
            return Ok(0);
        }
        Action::ListOptions { long } => {
            introspect::print_option_names(long);
            return Ok(0);
        }
        Action::Version if config.exports.iter().all(|export| export.plugin.is_none()) => {
            introspect::print_version(&[]);
            return Ok(0);
        }
        _ => {}
    }
    if config.exit_with_parent {
        set_exit_with_parent()?;
    }
    if config.exports.iter().any(|export| export.plugin.is_none()) {
        if config.action == Action::Help {
            print_help()?;
            return Ok(0);
        }
        bail!("no plugin given: try `nbdbox memory 1G -U - --run 'nbdinfo $uri'`, or --help");
    }

    raise_descriptor_limit();
    return_large_buffers_to_the_system();
    let shutdown = Shutdown::new().context("creating the shutdown pipe")?;
    let component_flags = config
        .debug_flags
        .iter()
        .filter(|f| f.name != "nbdkit")
        .map(|f| (f.name.clone(), f.flag.clone(), f.value));
    let process = Process {
        log: log.clone(),
        shutdown: shutdown.clone(),
        budget: Arc::new(MemoryBudget::new(config.memory_budget)),
        debug_flags: Arc::new(DebugFlags::new(component_flags)),
    };
    let runtime = Arc::new(Runtime::new(process.clone())?);
    // Deadlines hold from the first call into a component: describe, config, get-ready.
    let ticker = EpochTicker::start(&runtime.engine);
    let stdio = config.listen == Listen::Stdio;
    let builder = exports::Builder {
        runtime: runtime.clone(),
        process: process.clone(),
        threads: config.server.threads,
        stdin_free: !stdio,
    };
    match config.action {
        Action::Help | Action::DumpPlugin | Action::Version => return describe(&config, &builder, log),
        Action::DumpConfigToml => {
            print!("{}", builder.config_toml(&config)?);
            return Ok(0);
        }
        Action::Serve | Action::DumpConfig | Action::ListOptions { .. } => {}
    }
    let (table, running) = builder.table(&config.exports, config.default_export.as_deref(), &[])?;
    let layer_names: Vec<&str> = running
        .iter()
        .flat_map(|built| built.export.layers().iter().map(|layer| layer.name()))
        .collect();
    debug_flags::apply(&config.debug_flags, &layer_names, &process.debug_flags, log);
    let tls = Tls::configure(&config.server.tls, log)?;

    let mut cleanup = Cleanup::default();
    let (listeners, endpoint) = endpoint::listen(&config.listen, config.run.is_some(), &mut cleanup)?;
    // Sockets bound, grants and keys opened: nothing needs the privileges any more.
    change_user(config.user.as_deref(), config.group.as_deref())?;
    let export_name = config
        .exportname
        .as_deref()
        .or(config.default_export.as_deref())
        .unwrap_or("");
    // Clients need TLS to connect only under --tls=require (nbdkit's server/uri.c).
    let uri_tls = tls.credentials().filter(|_| tls.mode() == TlsMode::Require);
    if let (true, Some(endpoint)) = (config.print_uri, &endpoint) {
        use std::io::{IsTerminal, Write};
        let uri = captive::uri(&endpoint.as_captive(), export_name, uri_tls);
        let mut stdout = std::io::stdout().lock();
        stdout.write_all(captive::print_uri_text(&uri, stdout.is_terminal()).as_bytes())?;
        stdout.flush()?;
    }
    let hangups = match config.config_file {
        Some(_) => Some(crate::shutdown::reload_on_hangup().context("SIGHUP")?),
        None => None,
    };
    shutdown.handle_signals();
    // Socket activation (no endpoint of our own, not -s) never daemonizes, as nbdkit: the
    // activator (systemd, libnbd) watches the process it started.
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
        log.daemonized();
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
            let script = captive::script(&endpoint.as_captive(), export_name, uri_tls, command);
            log::debug!(log, "--run script:\n{script}");
            Some(captive::spawn(&script).context("--run: cannot start /bin/sh")?)
        }
        _ => None,
    };

    let server = Arc::new(Server {
        exports: Exports::new(table),
        options: server::Options {
            no_structured_replies: config.server.no_structured_replies,
            handshake_mask: config.server.handshake_mask,
            threads: config.server.threads,
            tls,
            handshake_timeout: config.server.handshake_timeout,
            keepalive: config.server.keepalive,
            no_meta_contexts: config.server.no_meta_contexts,
            oldstyle: config.server.oldstyle,
        },
        shutdown: shutdown.clone(),
        log: log.clone(),
        seats: server::Seats::new(config.server.max_connections),
    });
    let reloading = match (config.config_file, hangups) {
        (Some(source), Some(hangups)) => {
            let builder = exports::Builder {
                stdin_free: false,
                ..builder
            };
            Some(exports::Reloader::new(builder, server.clone(), source, running).spawn(hangups)?)
        }
        _ => None,
    };
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
            Some(child) => {
                let status = captive::wait(child, &shutdown).context("--run: waiting for the command")?;
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
    // The reloader stops with the server.
    shutdown.request();
    let retired = reloading
        .map(|thread| thread.join().unwrap_or_default())
        .unwrap_or_default();
    for export in server.exports.current().all().chain(&retired) {
        export.cleanup();
    }
    ticker.stop();
    drop(cleanup);
    // Everything left is memory and mappings (instances, compiled code, buffers), which
    // the kernel reclaims faster than their destructors do: about 0.4 ms of every run.
    std::process::exit(code.into())
}

/// `--help`, `--version` and `--dump-plugin`: the plugin and filters a command line names
/// (nbdkit-probing(1): naming a layer that cannot be loaded fails).
fn describe(config: &Config, builder: &exports::Builder, log: &Log) -> Result<u8> {
    let ([export], None) = (&config.exports[..], &config.config_file) else {
        bail!("--help, --version and --dump-plugin describe the plugin a command line names, not a config file's");
    };
    let layers = builder.load(export)?;
    let outermost_first: Vec<&LayerComponent> = layers.filters.iter().chain([&layers.plugin]).map(|l| &**l).collect();
    let names: Vec<&str> = outermost_first.iter().map(|layer| layer.info.name.as_str()).collect();
    debug_flags::apply(&config.debug_flags, &names, &builder.process.debug_flags, log);
    if config.action == Action::Version {
        introspect::print_version(&outermost_first);
        return Ok(0);
    }
    if config.action == Action::Help {
        print_help()?;
        for layer in layers.filters.iter().chain([&layers.plugin]) {
            introspect::print_layer_help(layer);
        }
        return Ok(0);
    }
    let export = builder.configure(export, layers, Stage::Describe)?;
    introspect::print_plugin_dump(&export);
    Ok(0)
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

/// nbdkit's -u / -g: the group first (while still allowed to change it), supplementary
/// groups dropped, then the user.
fn change_user(user: Option<&str>, group: Option<&str>) -> Result<()> {
    use nix::unistd::{setgid, setgroups, setuid, Gid, Group, Uid, User};
    let gid = match group {
        None => None,
        Some(name) => Some(match name.parse::<u32>() {
            Ok(id) => Gid::from_raw(id),
            Err(_) => {
                Group::from_name(name)?
                    .with_context(|| format!("-g: no group '{name}'"))?
                    .gid
            }
        }),
    };
    let uid = match user {
        None => None,
        Some(name) => Some(match name.parse::<u32>() {
            Ok(id) => Uid::from_raw(id),
            Err(_) => {
                User::from_name(name)?
                    .with_context(|| format!("-u: no user '{name}'"))?
                    .uid
            }
        }),
    };
    if let Some(gid) = gid {
        setgroups(&[gid]).context("-g: setgroups")?;
        setgid(gid).context("-g: setgid")?;
    }
    if let Some(uid) = uid {
        setuid(uid).context("-u: setuid")?;
    }
    Ok(())
}

/// Request buffers of a MiB and more come and go with clients: with glibc's adaptive mmap
/// threshold they would land in per-thread heaps that are never given back, and a server that
/// served large requests once would keep hundreds of MiB. A fixed threshold keeps them mapped
/// on their own, so freeing one returns it.
fn return_large_buffers_to_the_system() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes an allocator parameter; called before any other thread runs.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 << 10);
    }
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
