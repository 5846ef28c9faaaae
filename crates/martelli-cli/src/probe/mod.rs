//! `martelli probe`: measures this machine's concurrency costs and recommends a model.
//!
//! ```text
//! $ martelli probe --quick            # a table, in about 10 s
//! $ martelli probe --json > here.json # the full probe, as JSON (docs/probe.md has the schema)
//! $ martelli probe --compare here.json --plot curves.svg
//! ```
//!
//! The probe answers the questions of concurrent design with numbers from this machine: how long it
//! takes to create a thread, a process, a task; what a switch between two of them costs; how much
//! memory each holds while idle; how fast bytes cross between processes and what the codec costs;
//! how a CPU-bound job scales with workers and how an I/O-bound job costs on threads and on async.
//! From these it derives recommendations ([`recommend`]) and the machine's tier in Martelli's model
//! (1 core, 2–8 cores, 9+ cores).
//!
//! Every row is a median with its 95 % interval, repeated after a warm-up until the interval is
//! narrow or the row's budget is spent; rows measured while other programs used the CPUs, or whose
//! interval stayed wide, are named in warnings, and recommendations that rest on them say so. Rows
//! that need a second process re-execute this binary as a helper ([`child`]). Linux-only: it reads `/proc` and `/sys`,
//! and uses memfd and `mmap` for the shared-memory row.
//!
//! The probe is built on Linux only; elsewhere `martelli probe` says so and exits with an error.
//!
//! Modules: [`machine`] facts, [`create`] creation costs, [`switch`] switch costs, [`memory`] memory
//! per unit, [`ipc`] transports and codec, [`curves`] workload curves (jobs in [`workload`]),
//! [`foreground`] the foreground's wake-up latency under background pools, [`cluster`] the cluster
//! tier's cost per task; [`stats`] repeats each row until its interval is narrow, [`busy`] watches
//! other work on the machine; [`recommend`], [`warnings`], [`table`] for people, [`schema`] for
//! programs, [`compare`] and [`plot`].

#[cfg(target_os = "linux")]
mod busy;
#[cfg(target_os = "linux")]
mod child;
#[cfg(target_os = "linux")]
mod cluster;
#[cfg(target_os = "linux")]
mod compare;
#[cfg(target_os = "linux")]
mod create;
#[cfg(target_os = "linux")]
mod curves;
#[cfg(target_os = "linux")]
mod foreground;
#[cfg(target_os = "linux")]
mod ipc;
#[cfg(target_os = "linux")]
mod machine;
#[cfg(target_os = "linux")]
mod memory;
#[cfg(target_os = "linux")]
mod plot;
#[cfg(target_os = "linux")]
mod recommend;
#[cfg(target_os = "linux")]
mod schema;
#[cfg(target_os = "linux")]
mod stats;
#[cfg(target_os = "linux")]
mod switch;
#[cfg(target_os = "linux")]
mod table;
#[cfg(target_os = "linux")]
mod warnings;
#[cfg(target_os = "linux")]
mod workload;

#[cfg(target_os = "linux")]
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
#[cfg(target_os = "linux")]
use schema::{Mode, Notes, Report, SCHEMA};
#[cfg(target_os = "linux")]
use stats::{Plans, Stat, Unit};
#[cfg(target_os = "linux")]
use std::io::{self, Write};
#[cfg(target_os = "linux")]
use std::path::Path;
use std::path::PathBuf;
#[cfg(target_os = "linux")]
use std::process::ExitCode;
#[cfg(target_os = "linux")]
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Options of `martelli probe`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ProbeArgs {
    /// Fewer repetitions, smaller curves, shorter budgets: about 10 s instead of about a minute.
    #[arg(long)]
    quick: bool,

    /// Print the report as JSON (schema `martelli-probe/1`, documented in docs/probe.md) instead of
    /// the table.
    #[arg(long)]
    json: bool,

    /// Also draw the workload curves into this SVG file.
    #[arg(long, value_name = "FILE.svg")]
    plot: Option<PathBuf>,

    /// Show how this run differs from an earlier `--json` report (another machine, a container).
    #[arg(long, value_name = "FILE.json", conflicts_with = "json")]
    compare: Option<PathBuf>,

    /// Internal: run as one of the probe's helper processes.
    #[arg(long = "child", hide = true, num_args = 1.., allow_hyphen_values = true)]
    child: Option<Vec<String>>,
}

#[cfg(target_os = "linux")]
/// Why the probe could not finish.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ProbeError {
    #[error("cannot find this program's own executable to start helper processes: {0}")]
    CurrentExe(#[source] io::Error),
    #[error("cannot start {what}: {source}")]
    Spawn {
        what: String,
        #[source]
        source: io::Error,
    },
    /// A measurement or a helper process failed; the message says which and why.
    #[error("{0}")]
    Measure(String),
    #[error("{0}; raise the limit (ulimit -u, cgroup pids.max) or probe with --quick")]
    Limit(String),
    #[error("talking to a helper process failed: {0}")]
    Io(#[from] io::Error),
    #[error("cannot read /proc (martelli probe needs Linux with /proc mounted): {0}")]
    Proc(#[source] io::Error),
    #[error("cannot start a tokio runtime: {0}")]
    Runtime(#[source] io::Error),
    #[error("a martelli pool failed: {0}")]
    Pool(#[source] martelli::Error),
    #[error("cannot compare with {path}: {reason}")]
    Compare { path: PathBuf, reason: String },
    #[error("cannot write the plot {path}: {reason}")]
    Plot { path: PathBuf, reason: String },
}

#[cfg(target_os = "linux")]
impl ProbeError {
    fn spawn(what: &str, source: io::Error) -> ProbeError {
        ProbeError::Spawn {
            what: what.to_owned(),
            source,
        }
    }
}

#[cfg(target_os = "linux")]
/// What every measuring module gets: the plans, the mode, the cores, the helper, the progress bar,
/// and the monitor that watches other work while each row is measured.
#[derive(Debug)]
pub(crate) struct Ctx {
    pub(crate) plans: Plans,
    pub(crate) quick: bool,
    /// The cores work can use (affinity and cgroup quota).
    pub(crate) cores: u64,
    /// The most threads and processes that may exist, and the limit that says so.
    pub(crate) task_limit: Option<(u64, &'static str)>,
    pub(crate) helper: child::Helper,
    progress: ProgressBar,
    monitor: busy::Monitor,
}

#[cfg(target_os = "linux")]
impl Ctx {
    /// `quick` in quick mode, `full` otherwise.
    pub(crate) fn pick(&self, quick: u32, full: u32) -> u32 {
        if self.quick { quick } else { full }
    }

    /// Marks the start of a step on the progress bar (and for the monitor).
    pub(crate) fn step(&self, what: &str) {
        self.monitor.step(what);
        self.progress.set_message(what.to_owned());
        self.progress.inc(1);
    }

    /// Runs `f`, the measurement (or a part of it) of the row at `path` in the report, and
    /// records what other work did meanwhile.
    pub(crate) fn row<T>(&self, path: &str, f: impl FnOnce() -> T) -> T {
        self.monitor.row(path, f)
    }

    /// Measures the timed row at `path` with the timed plan (warm-up, repetitions until its
    /// interval is narrow or its budget spent), watching other work meanwhile.
    pub(crate) fn measure<E>(
        &self,
        path: &str,
        unit: Unit,
        rep: impl FnMut() -> Result<f64, E>,
    ) -> Result<Stat, E> {
        self.row(path, || self.plans.timed.measure(unit, rep))
    }
}

#[cfg(target_os = "linux")]
/// Runs `martelli probe`.
pub(crate) fn run(args: &ProbeArgs) -> anyhow::Result<ExitCode> {
    if let Some(child_args) = &args.child {
        return Ok(child::run(child_args)?);
    }
    // Check what the user gave before spending a minute measuring.
    let earlier = match &args.compare {
        Some(path) => Some(compare::load(path)?),
        None => None,
    };
    if let Some(path) = &args.plot {
        plot::check_path(path)?;
    }

    let report = probe(args.quick)?;

    // The report is printed before the plot is drawn, so that a plot that cannot be written costs
    // the error message, not the minute of measurements.
    let mut out = String::new();
    if args.json {
        out = serde_json::to_string_pretty(&report)?;
        out.push('\n');
    } else {
        out.push_str(&table::render(&report));
        if let (Some(path), Some(earlier)) = (&args.compare, &earlier) {
            out.push('\n');
            out.push_str(&compare::render(&report, earlier, path)?);
        }
    }
    write_stdout(&out)?;
    if let Some(path) = &args.plot {
        plot::draw(&report, path)?;
        if !args.json {
            write_stdout(&format!("\nCurves drawn in {}\n", path.display()))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(target_os = "linux")]
/// Writes to stdout; a closed pipe (`martelli probe | head`) is not an error.
fn write_stdout(text: &str) -> io::Result<()> {
    let mut stdout = io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

#[cfg(target_os = "linux")]
/// Measures everything and derives the recommendations.
fn probe(quick: bool) -> Result<Report, ProbeError> {
    let started = Instant::now();
    let started_unix_s = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mode = if quick { Mode::Quick } else { Mode::Full };
    let plans = if quick { Plans::quick() } else { Plans::full() };
    let machine = machine::read();
    let cores = machine::effective_cores(machine.available_cores, machine.cgroup_cpu_quota_cores);
    let steps = 17
        + (plans.curve.warmup + plans.curve.max_reps) as usize
        + curves::io_concurrencies(quick).len()
        + foreground::Background::ALL.len() * if quick { 1 } else { 3 }
        + 4;
    let progress = ProgressBar::with_draw_target(Some(steps as u64), ProgressDrawTarget::stderr());
    progress.set_style(
        ProgressStyle::with_template("probing {bar:30} {pos}/{len} {wide_msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut ctx = Ctx {
        plans,
        quick,
        cores,
        task_limit: machine.task_limit(),
        helper: child::Helper::new()?,
        progress,
        monitor: busy::Monitor::new(),
    };
    // A quiet moment first: what other work is doing before the probe adds its own.
    ctx.progress.set_message("the machine, before the probe");
    let quiet = Duration::from_millis(if quick { 300 } else { 1000 });
    let before = ctx.monitor.observe(quiet);
    ctx.monitor.start();
    ctx.step("the machine");
    let mut notes = Notes::default();
    let creation = create::measure(&ctx, &mut notes)?;
    let switch = switch::measure(&ctx)?;
    let memory = memory::measure(&ctx)?;
    let ipc = ipc::measure(&ctx)?;
    let curves = curves::measure(&ctx, &mut notes)?;
    ctx.monitor.settle(&before, Duration::from_secs(1));
    let foreground = foreground::measure(&ctx, &mut notes)?;
    let cluster = cluster::measure(&ctx);
    // Leave the machine as found: nothing of the probe's runnable, then the same quiet look.
    ctx.step("the machine, after the probe");
    ctx.monitor.settle(&before, Duration::from_secs(2));
    let after = ctx.monitor.observe(quiet / 2);
    ctx.progress.finish_and_clear();
    let mut noise = ctx.monitor.finish(before, after, cores);
    let sections = serde_json::json!({
        "creation": creation, "switch": switch, "memory": memory, "ipc": ipc, "curves": curves,
        "foreground": foreground, "cluster": cluster,
    });
    let rows = compare::flatten(&sections);
    noise.low_confidence = rows
        .iter()
        .filter(|(_, leaf)| leaf.low_confidence)
        .map(|(path, _)| path.clone())
        .collect();
    let recommendations = recommend::derive(recommend::Inputs {
        machine: &machine,
        creation: &creation,
        switch: &switch,
        memory: &memory,
        ipc: &ipc,
        curves: &curves,
        foreground: &foreground,
        cluster: &cluster,
        noise: &noise,
    });
    let warnings = warnings::derive(&noise, &rows, &machine);
    Ok(Report {
        schema: SCHEMA.to_owned(),
        martelli_version: env!("CARGO_PKG_VERSION").to_owned(),
        mode,
        started_unix_s,
        duration_s: started.elapsed().as_secs_f64(),
        warmup: plans.timed.warmup,
        reps: plans.timed.min_reps,
        max_reps: plans.timed.max_reps,
        row_budget_s: plans.timed.budget.as_secs_f64(),
        machine,
        creation,
        switch,
        memory,
        ipc,
        curves,
        foreground,
        cluster,
        noise,
        warnings,
        recommendations,
        notes,
    })
}

#[cfg(target_os = "linux")]
/// Reads a file the user named, with an error that says which file and why.
fn read_user_file(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| e.to_string())
}

/// Runs `martelli probe` where it is not built: it says so.
#[cfg(not(target_os = "linux"))]
pub(crate) fn run(_args: &ProbeArgs) -> anyhow::Result<std::process::ExitCode> {
    anyhow::bail!(
        "martelli probe runs on Linux only for now: it reads /proc and /sys, and measures shared \
         memory with memfd"
    )
}
