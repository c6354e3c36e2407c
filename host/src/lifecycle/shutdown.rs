//! The one shutdown path. Signals, the end of a `--run` command, `--exit-with-parent` and a
//! component's `host.shutdown()` all land here: a flag every connection checks, and a pipe
//! that wakes the accept loop. Setting it is async-signal-safe (an atomic store and a write).

use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::OnceLock;

static REQUESTED: AtomicBool = AtomicBool::new(false);
static WAKE_WRITE_FD: AtomicI32 = AtomicI32::new(-1);
static WAKE_PIPE: OnceLock<(OwnedFd, OwnedFd)> = OnceLock::new();

fn pipe() -> &'static (OwnedFd, OwnedFd) {
    WAKE_PIPE.get_or_init(|| {
        let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK)
            .expect("create the shutdown pipe");
        WAKE_WRITE_FD.store(write.as_raw_fd(), Ordering::SeqCst);
        (read, write)
    })
}

/// Readable once shutdown was requested. Created on first use; the process must call this
/// (or `install_signal_handlers`) before it forks so the pipe belongs to the server.
pub fn wake_fd() -> BorrowedFd<'static> {
    use std::os::fd::AsFd;
    pipe().0.as_fd()
}

pub fn requested() -> bool {
    REQUESTED.load(Ordering::Relaxed)
}

/// Ask the server to stop accepting, finish in-flight requests and exit.
pub fn request() {
    REQUESTED.store(true, Ordering::SeqCst);
    let fd = WAKE_WRITE_FD.load(Ordering::SeqCst);
    if fd >= 0 {
        // SAFETY: write(2) on our own pipe is async-signal-safe; a full pipe is fine (it is
        // readable already).
        unsafe { libc::write(fd, b"x".as_ptr().cast(), 1) };
    }
}

/// Sleep for `duration`, or less if shutdown is requested meanwhile; false if it was.
pub fn sleep(duration: std::time::Duration) -> bool {
    let deadline = std::time::Instant::now() + duration;
    loop {
        if requested() {
            return false;
        }
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return true;
        }
        let mut wake = libc::pollfd {
            fd: wake_fd().as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let millis = left.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: one valid pollfd; interrupted or woken, the loop re-checks.
        unsafe { libc::poll(&mut wake, 1, millis.max(1)) };
    }
}

extern "C" fn on_signal(_: libc::c_int) {
    request();
}

/// INT, QUIT, TERM and HUP shut down gracefully; PIPE is ignored (a client that goes away
/// mid-reply is that connection's problem).
pub fn install_signal_handlers() {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    pipe();
    let graceful = SigAction::new(SigHandler::Handler(on_signal), SaFlags::SA_RESTART, SigSet::empty());
    let ignore = SigAction::new(SigHandler::SigIgn, SaFlags::empty(), SigSet::empty());
    // SAFETY: the handler only does async-signal-safe work (see `request`).
    unsafe {
        for signal in [Signal::SIGINT, Signal::SIGQUIT, Signal::SIGTERM, Signal::SIGHUP] {
            let _ = sigaction(signal, &graceful);
        }
        let _ = sigaction(Signal::SIGPIPE, &ignore);
    }
}
