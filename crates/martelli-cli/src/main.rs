//! The `martelli` command.
//!
//! `probe` measures this machine's concurrency costs and recommends a model; `run` runs commands in
//! parallel with GNU parallel's syntax, on this machine or, with `--cluster URL`, on cluster workers;
//! `worker` is such a cluster worker: it runs shell-command tasks from a Redis queue; `status` shows a
//! queue, its workers and its throughput; `result` reads a task's state and result by id;
//! `ratelimit` limits how often tasks of a name start; `schedule` keeps periodic tasks and runs
//! schedulers; `dashboard` serves a live web page of the
//! cluster.

mod cluster;
mod dashboard;
mod probe;
mod run;
mod schedule;

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
    /// Serve a cluster queue: run the shell commands `martelli run --cluster` (or any producer)
    /// sends, until SIGTERM or Ctrl-C.
    Worker(cluster::worker::WorkerArgs),
    /// Show a cluster queue's depth, its workers and its throughput.
    Status(cluster::status::StatusArgs),
    /// Show a cluster task's state and result by its id (tasks sent with a result TTL).
    Result(cluster::result::ResultArgs),
    /// Set (or remove, with `off`) how many tasks of a name start per second, minute or hour
    /// across all cluster workers.
    Ratelimit(cluster::ratelimit::RateLimitArgs),
    /// Periodic tasks on a cluster: add, list, remove, enable, disable schedules (cron or
    /// intervals), and run schedulers that fire them (each tick once).
    Schedule(schedule::ScheduleArgs),
    /// Serve a live web page of a cluster: queues, workers, tasks, dead letters (requeue, discard).
    Dashboard(dashboard::DashboardArgs),
}

fn main() -> ExitCode {
    // A process started as a martelli worker (by `probe`'s process-pool row) serves tasks here and
    // never returns; any other process returns at once.
    martelli::init();
    // `martelli run …` hands every word after `run` to the runner, which parses them itself (GNU
    // parallel's syntax): the same as the `Run` arm below, without building the whole command tree
    // first. That tree is a fifth of the instructions of starting one job.
    let mut argv = std::env::args_os();
    match argv.nth(1) {
        Some(first) if first == "run" => return run::main(argv.collect()),
        // `#!/usr/bin/martelli run --shebang …`: Linux passes the rest of the `#!` line as one word.
        Some(first) if run::is_shebang_line(&first) => {
            return run::main(run::shebang_words(&first).chain(argv).collect());
        }
        _ => {}
    }
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Probe(args)) => probe::run(&args).unwrap_or_else(|e| {
            eprintln!("martelli probe: {e:#}");
            ExitCode::FAILURE
        }),
        Some(Command::Run { args }) => run::main(args),
        Some(Command::Worker(args)) => cluster::worker::run(&args).unwrap_or_else(|e| {
            eprintln!("martelli worker: error: {}", one_line(&e));
            ExitCode::FAILURE
        }),
        Some(Command::Status(args)) => cluster::status::run(&args).unwrap_or_else(|e| {
            eprintln!("martelli status: error: {}", one_line(&e));
            ExitCode::FAILURE
        }),
        Some(Command::Result(args)) => cluster::result::run(&args).unwrap_or_else(|e| {
            eprintln!("martelli result: error: {}", one_line(&e));
            ExitCode::FAILURE
        }),
        Some(Command::Ratelimit(args)) => cluster::ratelimit::run(&args).unwrap_or_else(|e| {
            eprintln!("martelli ratelimit: error: {}", one_line(&e));
            ExitCode::FAILURE
        }),
        Some(Command::Schedule(args)) => schedule::run(&args).unwrap_or_else(|e| {
            eprintln!("martelli schedule: error: {}", one_line(&e));
            ExitCode::FAILURE
        }),
        Some(Command::Dashboard(args)) => dashboard::run(&args).unwrap_or_else(|e| {
            eprintln!("martelli dashboard: error: {}", one_line(&e));
            ExitCode::FAILURE
        }),
        None => {
            use clap::CommandFactory;
            // `martelli` with no subcommand prints the help and fails, as git does.
            let _ = Cli::command().print_help();
            ExitCode::from(2)
        }
    }
}

/// An error and its causes on one line, each cause shown once (errors that already quote their
/// source are not followed by it again).
fn one_line(error: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in error.chain() {
        let cause = cause.to_string();
        if text.contains(&cause) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&cause);
    }
    text
}
