//! The `martelli` command.
//!
//! Subcommands arrive with their features: `run` (a GNU-parallel-compatible command runner), `probe`
//! (measures this machine's concurrency costs) and `worker` (cluster worker).

mod probe;

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
enum Command {
    /// Measure this machine's concurrency costs and recommend a model (start here).
    Probe(probe::ProbeArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        None => {
            use clap::CommandFactory;
            // `martelli` with no subcommand prints the help and fails, as git does.
            let _ = Cli::command().print_help();
            ExitCode::from(2)
        }
        Some(Command::Probe(args)) => probe::run(&args).unwrap_or_else(|e| {
            eprintln!("martelli probe: {e:#}");
            ExitCode::FAILURE
        }),
    }
}
