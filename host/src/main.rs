//! The `nbdbox` command: see the library's documentation for the architecture.

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    match nbdbox::cli::Cli::try_parse() {
        Ok(cli) => match cli.into_config() {
            Ok(config) => nbdbox::lifecycle::run(config),
            Err(e) => {
                eprintln!("nbdbox: error: {e}");
                ExitCode::from(1)
            }
        },
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
