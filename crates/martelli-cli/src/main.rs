//! The `martelli` command.
//!
//! Subcommands arrive with their features: `run` (a GNU-parallel-compatible command runner), `probe`
//! (measures this machine's concurrency costs) and `worker` (cluster worker).

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// martelli: one task API from one core to a cluster.
#[derive(Debug, Parser)]
#[command(name = "martelli", version, about, long_about = None, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        None => {
            use clap::CommandFactory;
            // `martelli` with no subcommand prints the help and fails, as git does.
            let _ = Cli::command().print_help();
            ExitCode::from(2)
        }
    }
}
