//! Operator messages on stderr: `nbdbox: error: ...` always, debug lines only with `-v`.

use std::sync::atomic::{AtomicBool, Ordering};

static VERBOSE: AtomicBool = AtomicBool::new(false);

pub fn set_verbose(on: bool) {
    VERBOSE.store(on, Ordering::Relaxed);
}

pub fn verbose() -> bool {
    VERBOSE.load(Ordering::Relaxed)
}

macro_rules! error {
    ($($arg:tt)*) => { eprintln!("nbdbox: error: {}", format_args!($($arg)*)) };
}

macro_rules! warning {
    ($($arg:tt)*) => { eprintln!("nbdbox: warning: {}", format_args!($($arg)*)) };
}

macro_rules! debug {
    ($($arg:tt)*) => {
        if $crate::log::verbose() {
            eprintln!("nbdbox: debug: {}", format_args!($($arg)*))
        }
    };
}

pub(crate) use {debug, error, warning};
