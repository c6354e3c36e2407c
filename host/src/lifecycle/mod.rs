//! Process lifecycle: startup in nbdkit's order, listeners, captive `--run`, daemonizing,
//! pid file, and the one exit path that cleans up what nbdbox created.
//!
//! ```text
//!   parse CLI → load plugin → config → config-complete → get-ready → bind
//!     → [--run: start CMD | daemonize] → pid file → serve → shutdown → clean up → exit
//! ```

pub mod captive;
pub mod shutdown;

use crate::chain::Chain;
use crate::cli::{config_pairs, Cli};
use crate::log;
use crate::runtime::bindings::{ConfigKind, ThreadModel};
use crate::runtime::grants::{self, Grant, Grants};
use crate::runtime::{LayerComponent, Limits, Role, Runtime, Stack};
use crate::server::listener::{self, Listener};
use crate::server::{self, ServerConfig};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use wasmtime::error::Context as _;
use wasmtime::{bail, format_err, Result};

/// Run nbdbox; every failure before serving is reported once, here, with exit status 1.
pub fn run(cli: Cli) -> ExitCode {
    log::set_verbose(cli.verbose);
    match start(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            log::error!("{e:#}");
            ExitCode::from(1)
        }
    }
}

/// Things to remove when the process exits, whichever way it exits normally.
#[derive(Default)]
struct Cleanup {
    files: Vec<PathBuf>,
    dirs: Vec<PathBuf>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for file in &self.files {
            let _ = std::fs::remove_file(file);
        }
        for dir in &self.dirs {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

fn check_combinations(cli: &Cli) -> Result<()> {
    let endpoints = [cli.port.is_some(), cli.unix.is_some(), cli.single]
        .iter()
        .filter(|&&b| b)
        .count();
    if endpoints > 1 {
        bail!("-p, -U and -s cannot be used in this combination");
    }
    if cli.single && (cli.run.is_some() || cli.dump_plugin) {
        bail!("-s cannot be used with --run or --dump-plugin");
    }
    if !(cli.call_timeout > 0.0 && cli.call_timeout.is_finite()) {
        bail!("--call-timeout must be a positive number of seconds");
    }
    Ok(())
}

fn start(cli: Cli) -> Result<u8> {
    if cli.dump_config {
        print_config();
        return Ok(0);
    }
    check_combinations(&cli)?;
    if cli.exit_with_parent {
        set_exit_with_parent()?;
    }
    let Some(plugin_spec) = cli.plugin.as_deref() else {
        if cli.help {
            use clap::CommandFactory;
            Cli::command().print_help()?;
            return Ok(0);
        }
        bail!("no plugin given: try `nbdbox memory 1G -U - --run 'nbdinfo $uri'`, or --help");
    };

    let runtime = Runtime::new()?;
    let limits = Limits {
        memory: cli.memory_limit,
        call_timeout: Duration::from_secs_f64(cli.call_timeout),
    };
    let plugin = runtime.load(plugin_spec, Role::Plugin, limits)?;
    let filters = cli
        .filters
        .iter()
        .map(|f| runtime.load(f, Role::Filter, limits))
        .collect::<Result<Vec<_>>>()?;
    let mut stack = Stack::new(filters, plugin);
    if cli.help {
        use clap::CommandFactory;
        Cli::command().print_help()?;
        for layer in stack.filters().iter().chain([stack.plugin()]) {
            print_layer_help(layer);
        }
        return Ok(0);
    }
    configure(&mut stack, &cli.params, cli.readonly)?;
    if cli.dump_plugin {
        stack.instantiate(true)?;
        print_plugin_dump(&stack);
        return Ok(0);
    }
    let primary = stack.instantiate(false)?;
    let chain = Chain::new(stack, primary);

    let mut cleanup = Cleanup::default();
    let (listeners, endpoint) = listen(&cli, &mut cleanup)?;
    let config = Arc::new(ServerConfig {
        chain,
        readonly: cli.readonly,
        no_structured_replies: cli.no_sr,
        handshake_mask: cli.mask_handshake,
        threads: cli.threads,
    });

    shutdown::install_signal_handlers();
    // Socket activation (no endpoint of our own, not -s) never daemonizes, as nbdkit: the
    // activator (systemd, libnbd) watches the process it started.
    let socket_activated = endpoint.is_none() && !cli.single;
    let foreground = cli.foreground || cli.run.is_some() || cli.single || cli.exit_with_parent || socket_activated;
    // Resolved before daemonizing moves us to `/`.
    let pidfile = cli.pidfile.as_deref().map(std::path::absolute).transpose()?;
    if !foreground {
        daemonize(cli.verbose)?;
    }
    // The pid file is written before the command starts, so failing to write it is a
    // startup failure: exit 1 and the command never runs.
    if let Some(pidfile) = pidfile {
        std::fs::write(&pidfile, format!("{}\n", std::process::id()))
            .with_context(|| format!("-P: writing {}", pidfile.display()))?;
        cleanup.files.push(pidfile);
    }
    let command = match (&cli.run, &endpoint) {
        (Some(command), Some(endpoint)) => {
            let script = captive::script(&endpoint.as_captive(), cli.exportname.as_deref().unwrap_or(""), command);
            log::debug!("--run script:\n{script}");
            Some(captive::spawn(&script).context("--run: cannot start /bin/sh")?)
        }
        _ => None,
    };
    crate::runtime::engine::start_epoch_ticker(&runtime.engine);

    if cli.single {
        serve_stdio(&config)?;
        return Ok(0);
    }
    let server = {
        let config = config.clone();
        std::thread::Builder::new()
            .name("accept".into())
            .spawn(move || listener::accept_loop(listeners, config))?
    };
    let code = match command {
        Some(mut child) => {
            let status = child.wait().context("--run: waiting for the command")?;
            shutdown::request();
            captive::exit_code(status)
        }
        None => 0,
    };
    server.join().map_err(|_| format_err!("the accept loop panicked"))?;
    drop(cleanup);
    Ok(code)
}

/// Apply the command-line parameters: open the grants for file and directory keys, then
/// record every config call (replayed into each instance).
fn configure(stack: &mut Stack, params: &[String], readonly: bool) -> Result<()> {
    let plugin = stack.info();
    let pairs = config_pairs(params, plugin.magic_config_key.as_deref()).map_err(|e| format_err!("{e}"))?;
    let mut grants = Grants::default();
    for (key, value) in &pairs {
        let kind = plugin.config_keys.iter().find(|k| k.name == *key).map(|k| k.kind);
        let grant = match kind {
            Some(ConfigKind::File) => {
                grants::open_file(Path::new(value), readonly).map(|(file, writable)| Grant::File {
                    file: Arc::new(file),
                    writable,
                })
            }
            Some(ConfigKind::Directory) => grants::open_directory(Path::new(value), readonly),
            _ => continue,
        };
        grants.insert(key, grant.with_context(|| format!("{key}={value}"))?);
    }
    stack.set_grants(grants);
    for (key, value) in &pairs {
        stack.push_config(key, value);
    }
    Ok(())
}

/// How clients reach the server, for `--run`.
enum Endpoint {
    Tcp(String),
    Unix(PathBuf),
}

impl Endpoint {
    fn as_captive(&self) -> captive::Endpoint<'_> {
        match self {
            Endpoint::Tcp(port) => captive::Endpoint::Tcp { port },
            Endpoint::Unix(path) => captive::Endpoint::Unix {
                socket: path.to_str().unwrap_or_default(),
            },
        }
    }
}

fn listen(cli: &Cli, cleanup: &mut Cleanup) -> Result<(Vec<Listener>, Option<Endpoint>)> {
    if cli.single {
        return Ok((Vec::new(), None));
    }
    if let Some(listeners) = activated_sockets(cli)? {
        return Ok((listeners, None));
    }
    match cli.unix.as_deref() {
        Some("-") => {
            // Always /tmp, as nbdkit: the path must stay short enough for sun_path.
            let dir = nix::unistd::mkdtemp("/tmp/nbdboxXXXXXX").context("-U -: creating a private directory")?;
            cleanup.dirs.push(dir.clone());
            let socket = dir.join("socket");
            let listener = listener::bind_unix(&socket)?;
            cleanup.files.push(socket.clone());
            Ok((vec![listener], Some(Endpoint::Unix(socket))))
        }
        Some(path) => {
            let socket = std::path::absolute(path)?;
            let listener = listener::bind_unix(&socket)?;
            cleanup.files.push(socket.clone());
            Ok((vec![listener], Some(Endpoint::Unix(socket))))
        }
        None => {
            let port = cli.port.clone().unwrap_or_else(|| "10809".into());
            let listeners = listener::bind_tcp(cli.ipaddr.as_deref(), &port)?;
            Ok((listeners, Some(Endpoint::Tcp(port))))
        }
    }
}

/// systemd-style socket activation: `LISTEN_PID` is us and `LISTEN_FDS` sockets start at fd 3.
fn activated_sockets(cli: &Cli) -> Result<Option<Vec<Listener>>> {
    let pid_matches = std::env::var("LISTEN_PID").ok().and_then(|p| p.parse::<u32>().ok()) == Some(std::process::id());
    let Some(count) = std::env::var("LISTEN_FDS").ok().filter(|_| pid_matches) else {
        return Ok(None);
    };
    let count: i32 = match count.parse() {
        Ok(n) if (1..=16).contains(&n) => n,
        _ => bail!("LISTEN_FDS: expected 1 to 16 sockets, got '{count}'"),
    };
    if cli.ipaddr.is_some() || cli.port.is_some() || cli.unix.is_some() || cli.run.is_some() {
        bail!("socket activation cannot be used with -i, -p, -U or --run");
    }
    // SAFETY (remove_var): still single-threaded; the variables must not reach --run commands.
    unsafe {
        std::env::remove_var("LISTEN_PID");
        std::env::remove_var("LISTEN_FDS");
    }
    (3..3 + count)
        .map(listener::from_activated_fd)
        .collect::<Result<Vec<_>>>()
        .map(Some)
}

/// `-s`: one connection on stdin/stdout.
fn serve_stdio(config: &ServerConfig) -> Result<()> {
    use std::os::fd::AsFd;
    let stdin = std::fs::File::from(std::io::stdin().as_fd().try_clone_to_owned()?);
    let stdout = std::fs::File::from(std::io::stdout().as_fd().try_clone_to_owned()?);
    server::serve(config, stdin, stdout, 0);
    Ok(())
}

/// Fork into the background once listening: the parent exits 0 at once, the child serves
/// from `/` with stdio on /dev/null (stderr kept with -v). Called before any thread exists.
fn daemonize(verbose: bool) -> Result<()> {
    use nix::unistd::{fork, ForkResult};
    // SAFETY: the process is single-threaded here (the epoch ticker and the accept loop
    // start after this), so the child inherits a consistent state.
    match unsafe { fork() }.context("fork")? {
        ForkResult::Parent { .. } => unsafe { libc::_exit(0) },
        ForkResult::Child => {}
    }
    std::env::set_current_dir("/")?;
    let null = std::fs::OpenOptions::new().read(true).write(true).open("/dev/null")?;
    use std::os::fd::AsRawFd;
    let targets: &[i32] = if verbose { &[0, 1] } else { &[0, 1, 2] };
    for &fd in targets {
        nix::unistd::dup2(null.as_raw_fd(), fd)?;
    }
    Ok(())
}

#[cfg(target_os = "linux")]
fn set_exit_with_parent() -> Result<()> {
    // SAFETY: prctl with PR_SET_PDEATHSIG takes a signal number and nothing else.
    let ret = unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) };
    if ret != 0 {
        bail!("--exit-with-parent: prctl: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn set_exit_with_parent() -> Result<()> {
    bail!("--exit-with-parent is not implemented for this operating system")
}

fn thread_model_name(model: ThreadModel) -> &'static str {
    match model {
        ThreadModel::SerializeConnections => "serialize_connections",
        ThreadModel::SerializeAllRequests => "serialize_all_requests",
        ThreadModel::SerializeRequests => "serialize_requests",
        ThreadModel::Parallel => "parallel",
    }
}

fn kind_name(kind: ConfigKind) -> &'static str {
    match kind {
        ConfigKind::Text => "text",
        ConfigKind::Size => "size",
        ConfigKind::Boolean => "boolean",
        ConfigKind::File => "file",
        ConfigKind::Directory => "directory",
    }
}

fn print_config() {
    let exe = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let (major, minor) = (env!("CARGO_PKG_VERSION_MAJOR"), env!("CARGO_PKG_VERSION_MINOR"));
    println!("binary={exe}\nexit_with_parent={}\nhost_cpu={}\nhost_os={}\nname=nbdbox\nplugins={}\ntls=no\nversion={}\nversion_major={major}\nversion_minor={minor}\nwit={}",
        if cfg!(target_os = "linux") { "yes" } else { "no" },
        std::env::consts::ARCH,
        std::env::consts::OS,
        crate::runtime::builtin_names(Role::Plugin).join(","),
        env!("CARGO_PKG_VERSION"),
        crate::runtime::bindings::WIT_PACKAGE);
}

/// nbdkit's --dump-plugin: the plugin's fields, with the thread model of the whole stack.
fn print_plugin_dump(stack: &Stack) {
    let plugin = stack.plugin();
    let info = &plugin.info;
    let path = std::fs::canonicalize(&plugin.source)
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| plugin.source.clone());
    println!("path={path}\nname={}", info.name);
    if !info.version.is_empty() {
        println!("version={}", info.version);
    }
    println!("wit={}", crate::runtime::bindings::WIT_PACKAGE);
    println!(
        "max_thread_model={}\nthread_model={}",
        thread_model_name(info.thread_model),
        thread_model_name(stack.thread_model())
    );
    if let Some(key) = &info.magic_config_key {
        println!("magic_config_key={key}");
    }
    println!("shared_state={}", if info.shared_state { "yes" } else { "no" });
    for key in &info.config_keys {
        println!("config_key={}:{}", key.name, kind_name(key.kind));
    }
}

fn print_layer_help(layer: &LayerComponent) {
    let info = &layer.info;
    let role = if layer.role == Role::Filter { "filter" } else { "plugin" };
    println!("\n{role}: {} ({})\n{}", info.name, layer.source, info.description);
    for key in &info.config_keys {
        let magic = if info.magic_config_key.as_deref() == Some(key.name.as_str()) {
            " (magic: may be given bare)"
        } else {
            ""
        };
        println!("{}=<{}>{magic}\n    {}", key.name, kind_name(key.kind), key.help);
    }
}
