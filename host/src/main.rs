//! The `nbdbox` command: see the library's documentation for the architecture.

use clap::Parser;

fn main() -> std::process::ExitCode {
    nbdbox::lifecycle::run(nbdbox::cli::Cli::parse())
}
