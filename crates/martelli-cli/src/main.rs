//! The `martelli` command.
//!
//! `probe` measures this machine's concurrency costs and recommends a model; `run` runs commands in
//! parallel with GNU parallel's syntax. (`worker`, the cluster worker, comes with the cluster backend.)

mod probe;
mod run;

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
    /// Run a command over many arguments in parallel, with GNU parallel's syntax.
    ///
    /// See `martelli run --help` for the options.
    #[command(disable_help_flag = true, disable_version_flag = true)]
    Run {
        /// Options, command and argument sources, as for GNU parallel.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, num_args = 0..)]
        args: Vec<std::ffi::OsString>,
    },
}

fn main() -> ExitCode {
    // A process started as a martelli worker (by `probe`'s process-pool row) serves tasks here and
    // never returns; any other process returns at once.
    martelli::init();
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Probe(args)) => probe::run(&args).unwrap_or_else(|e| {
            eprintln!("martelli probe: {e:#}");
            ExitCode::FAILURE
        }),
        Some(Command::Run { args }) => run::main(args),
        None => {
            use clap::CommandFactory;
            // `martelli` with no subcommand prints the help and fails, as git does.
            let _ = Cli::command().print_help();
            ExitCode::from(2)
        }
    }
}
