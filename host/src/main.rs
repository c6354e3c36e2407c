//! The `nbdbox` command: see the library's documentation for the architecture.

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    match nbdbox::cli::Cli::try_parse() {
        Ok(cli) => nbdbox::lifecycle::run(cli),
        // --version prints and succeeds; every usage error exits 1, as nbdkit's do.
        Err(e) if !e.use_stderr() => {
            let _ = e.print();
            ExitCode::SUCCESS
        }
        Err(e) => {
            let _ = e.print();
            ExitCode::from(1)
        }
    }
}
