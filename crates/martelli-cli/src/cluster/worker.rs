//! `martelli worker --cluster URL`: a cluster worker that runs shell-command tasks
//! ([`shell::TASK`]) until SIGTERM or SIGINT, then stops gracefully (it puts back what it has not
//! started and finishes what it runs). A second signal exits at once. A command whose task is
//! cancelled while it runs has its process group killed ([`shell`]).

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use martelli::cluster::{Scheduler, SchedulerOptions, Tasks, WorkerOptions, serve};
use martelli::process::Guardian;

use super::BrokerArgs;
use super::shell::{self, ShellRunner};

/// Options of `martelli worker`.
#[derive(Debug, Args)]
pub(crate) struct WorkerArgs {
    #[command(flatten)]
    pub(crate) broker: BrokerArgs,

    /// Commands run at once [default: the number of cores].
    #[arg(short = 'j', long = "jobs", value_name = "N")]
    pub(crate) jobs: Option<usize>,

    /// Seconds a task stays with this worker without a renewal; a task whose worker died is taken
    /// over by another worker after it. Every worker of a queue should use the same.
    #[arg(long = "lease", value_name = "SECS", default_value = "30")]
    pub(crate) lease: f64,

    /// The stem of this worker's consumer name [default: the host name].
    #[arg(long = "name", value_name = "NAME")]
    pub(crate) name: Option<String>,

    /// The largest task this worker runs, in bytes; larger ones are dead-lettered.
    #[arg(long = "max-payload", value_name = "BYTES", default_value_t = martelli::cluster::DEFAULT_MAX_PAYLOAD)]
    pub(crate) max_payload: usize,

    /// The most bytes of each command's stdout and of its stderr sent back; the rest is counted
    /// and reported as truncated.
    #[arg(long = "max-output", value_name = "BYTES", default_value_t = shell::DEFAULT_MAX_OUTPUT)]
    pub(crate) max_output: u64,

    /// Seconds the worker blocks waiting for tasks before it looks at its stop flag.
    #[arg(long = "poll", value_name = "SECS", default_value = "0.5", hide = true)]
    pub(crate) poll: f64,

    /// Also be a scheduler: fire the periodic schedules under the prefix (`martelli schedule`),
    /// each tick once however many schedulers run.
    #[arg(long = "scheduler")]
    pub(crate) scheduler: bool,
}

/// Runs the worker until it is stopped; exit status 0 after a graceful stop.
pub(crate) fn run(args: &WorkerArgs) -> anyhow::Result<ExitCode> {
    let seconds = |what: &str, s: f64| {
        Duration::try_from_secs_f64(s)
            .ok()
            .filter(|d| !d.is_zero())
            .with_context(|| format!("invalid --{what} {s}: expected a positive number of seconds"))
    };
    let lease = seconds("lease", args.lease)?;
    let poll = seconds("poll", args.poll)?;
    let jobs = match args.jobs {
        Some(0) => anyhow::bail!("invalid --jobs 0: a worker runs at least one command at a time"),
        Some(n) => n,
        None => martelli::available_cores(),
    };
    let host = args.name.clone().unwrap_or_else(host_name);
    // Processes a command leaves behind become our children when their parent exits, so that they
    // are reaped as their group is cleaned up (not left as zombies that keep the group alive).
    let _ = martelli::process::become_subreaper();
    // Started before the worker's threads: it is a forked copy of this process.
    let guardian = Guardian::start(jobs, Duration::from_millis(500))
        .context("cannot start the guardian process that kills commands if the worker dies")?;
    let runner = ShellRunner::new(host, args.max_output, Some(guardian));
    let tasks = Tasks::new().raw(shell::TASK, move |payload: &[u8]| {
        runner.run_payload(payload)
    });
    let mut options = WorkerOptions::new()
        .prefix(&args.broker.prefix)
        .queue(&args.broker.queue)
        .concurrency(jobs)
        .lease(lease)
        .poll(poll)
        .max_payload(args.max_payload);
    if let Some(name) = &args.name {
        options = options.name(name);
    }
    if let Some(ca) = &args.broker.tls_ca {
        options = options.tls_ca(ca);
    }
    // Started after the guardian (a fork of this process), as the worker's threads are.
    let scheduler = if args.scheduler {
        let mut options = SchedulerOptions::default().prefix(&args.broker.prefix);
        if let Some(ca) = &args.broker.tls_ca {
            options = options.tls_ca(ca);
        }
        Some(Scheduler::start(&args.broker.url, options)?)
    } else {
        None
    };
    let report = serve(&args.broker.url, tasks, options);
    if let Some(scheduler) = scheduler {
        scheduler.stop();
        let fired = scheduler.join()?;
        eprintln!(
            "martelli worker: scheduler stopped: {} tick(s) fired here, {} passed over",
            fired.fired, fired.skipped
        );
    }
    let report = report?;
    eprintln!(
        "martelli worker: stopped: {} succeeded, {} failed, {} cancelled, {} dead-lettered, {} \
         reclaimed from other workers, {} handed back",
        report.succeeded,
        report.failed,
        report.cancelled,
        report.dead_lettered,
        report.reclaimed,
        report.handed_back
    );
    Ok(ExitCode::SUCCESS)
}

/// This machine's host name, as the joblog's Host column shows it.
pub(crate) fn host_name() -> String {
    rustix::system::uname()
        .nodename()
        .to_str()
        .ok()
        .filter(|h| !h.is_empty())
        .map_or_else(|| "worker".to_owned(), str::to_owned)
}
