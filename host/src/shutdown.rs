//! The server's one shutdown path, as a value. Signals, the end of a `--run` command,
//! `--exit-with-parent` and a component's `host.shutdown()` all call [`Shutdown::request`]:
//! a flag every connection checks, and a pipe that wakes whatever waits in `poll(2)`.
//! After the grace period the lifecycle calls [`Shutdown::abort`]: calls still running in a
//! component are then cut off at their next deadline check.

use nix::poll::{PollFd, PollFlags, PollTimeout};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicPtr, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Clone)]
pub struct Shutdown(Arc<Inner>);

struct Inner {
    requested: AtomicBool,
    aborted: AtomicBool,
    /// What `abort` runs: cutting what blocks outside any component's deadline.
    on_abort: std::sync::Mutex<Vec<Box<dyn Fn() + Send>>>,
    wake_read: OwnedFd,
    wake_write: OwnedFd,
}

impl Shutdown {
    pub fn new() -> std::io::Result<Shutdown> {
        use nix::fcntl::OFlag;
        let (wake_read, wake_write) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)?;
        Ok(Shutdown(Arc::new(Inner {
            requested: AtomicBool::new(false),
            aborted: AtomicBool::new(false),
            on_abort: Default::default(),
            wake_read,
            wake_write,
        })))
    }

    /// Ask the server to stop accepting, finish in-flight requests and exit.
    pub fn request(&self) {
        self.0.request();
    }

    pub fn requested(&self) -> bool {
        self.0.requested.load(Ordering::Relaxed)
    }

    /// The grace period is over: calls still running are cut off at their next check, and
    /// what waits outside them (network requests) is cut.
    pub fn abort(&self) {
        self.request();
        self.0.aborted.store(true, Ordering::SeqCst);
        for cut in self.0.on_abort.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            cut();
        }
    }

    /// Run `cut` when the shutdown aborts what is still running.
    pub fn on_abort(&self, cut: Box<dyn Fn() + Send>) {
        self.0.on_abort.lock().unwrap_or_else(|p| p.into_inner()).push(cut);
    }

    pub fn aborted(&self) -> bool {
        self.0.aborted.load(Ordering::Relaxed)
    }

    /// Readable once shutdown was requested.
    pub fn wake_fd(&self) -> BorrowedFd<'_> {
        self.0.wake_read.as_fd()
    }

    /// INT, QUIT, TERM and HUP request this shutdown (nbdkit's server/signals.c), HUP only
    /// until [`reload_on_hangup`]; PIPE is ignored, since a client that goes away mid-reply
    /// is that connection's problem.
    pub fn handle_signals(&self) {
        use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
        // A handler takes no arguments: it reaches the handle through this one pointer, made
        // from a clone that is never dropped (a handler may be running while it is replaced).
        SIGNAL_TARGET.store(Arc::into_raw(self.0.clone()).cast_mut(), Ordering::SeqCst);
        let graceful = SigAction::new(SigHandler::Handler(on_signal), SaFlags::SA_RESTART, SigSet::empty());
        let ignore = SigAction::new(SigHandler::SigIgn, SaFlags::empty(), SigSet::empty());
        // SAFETY: the handler does only async-signal-safe work (an atomic store and write(2)).
        unsafe {
            for signal in [Signal::SIGINT, Signal::SIGQUIT, Signal::SIGTERM, Signal::SIGHUP] {
                let _ = sigaction(signal, &graceful);
            }
            let _ = sigaction(Signal::SIGPIPE, &ignore);
        }
    }

    /// Sleep for `duration`, or less if shutdown is requested meanwhile; false if it was.
    pub fn sleep(&self, duration: Duration) -> bool {
        let deadline = Instant::now() + duration;
        loop {
            if self.requested() {
                return false;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return true;
            }
            // poll(2) counts in milliseconds: the last sub-millisecond part is slept plainly.
            if left < Duration::from_millis(1) {
                std::thread::sleep(left);
                continue;
            }
            let millis = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
            let mut fds = [PollFd::new(self.wake_fd(), PollFlags::POLLIN)];
            // Interrupted or woken, the loop re-checks.
            let _ = nix::poll::poll(&mut fds, PollTimeout::from(millis));
        }
    }
}

impl Inner {
    /// Only an atomic store and a write(2): safe in a signal handler.
    fn request(&self) {
        self.requested.store(true, Ordering::SeqCst);
        // A full pipe is fine: it is readable already.
        let _ = nix::unistd::write(&self.wake_write, b"x");
    }
}

/// The shutdown a signal requests (see `Shutdown::handle_signals`).
static SIGNAL_TARGET: AtomicPtr<Inner> = AtomicPtr::new(std::ptr::null_mut());

/// The last signal that requested the shutdown; 0 for none.
static SIGNAL_RECEIVED: AtomicI32 = AtomicI32::new(0);

/// The signal that requested the shutdown, if one did (captive mode passes it on to the
/// command, so that the command does not run on without its server).
pub fn signal_received() -> Option<i32> {
    Some(SIGNAL_RECEIVED.load(Ordering::SeqCst)).filter(|&signal| signal != 0)
}

/// The pipe SIGHUP writes to once a configuration file can be read again; -1 until then.
static HANGUP_PIPE: AtomicI32 = AtomicI32::new(-1);

/// From now on SIGHUP asks for a reload instead of a shutdown: the descriptor returned
/// becomes readable after each one. Its other end stays open for the life of the process.
pub fn reload_on_hangup() -> std::io::Result<OwnedFd> {
    use nix::fcntl::OFlag;
    use std::os::fd::IntoRawFd;
    let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)?;
    HANGUP_PIPE.store(write.into_raw_fd(), Ordering::SeqCst);
    Ok(read)
}

extern "C" fn on_signal(signal: nix::libc::c_int) {
    let hangups = HANGUP_PIPE.load(Ordering::SeqCst);
    if signal == nix::libc::SIGHUP && hangups >= 0 {
        // SAFETY: write(2) is async-signal-safe; the descriptor is never closed. A full pipe
        // is fine: a reload is pending already.
        let _ = unsafe { nix::libc::write(hangups, b"h".as_ptr().cast(), 1) };
        return;
    }
    SIGNAL_RECEIVED.store(signal, Ordering::SeqCst);
    let target = SIGNAL_TARGET.load(Ordering::SeqCst);
    if !target.is_null() {
        // SAFETY: set from a leaked Arc, never freed while it is the target.
        unsafe { &*target }.request();
    }
}
