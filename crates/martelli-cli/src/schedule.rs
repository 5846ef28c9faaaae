//! `martelli schedule add|list|remove|enable|disable|run`: periodic tasks on a cluster
//! (docs/protocol.md, "Addition 4: periodic tasks").
//!
//! `add` stores a schedule in the broker: a cron expression (UTC; 5 fields, or 6 with seconds
//! first) or an interval, and the task it queues at each tick: a shell command (the default,
//! `martelli.shell`, run by `martelli worker`) or any registered task with JSON arguments. `run`
//! is a scheduler: run one on each of two or three machines for availability; each tick fires once
//! however many run. `list` shows the schedules with their last and next ticks.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand, ValueEnum};
use martelli::Priority;
use martelli::cluster::{
    CatchUp, CronExpr, Schedule, ScheduleInfo, Scheduler, SchedulerOptions, Schedules,
    parse_interval,
};
use serde_bytes::ByteBuf;

use crate::cluster::BrokerArgs;
use crate::cluster::shell::{self, ShellTask};

/// `martelli schedule`.
#[derive(Debug, Args)]
pub(crate) struct ScheduleArgs {
    #[command(subcommand)]
    command: ScheduleCommand,
}

#[derive(Debug, Subcommand)]
enum ScheduleCommand {
    /// Add a schedule: a task queued at every tick of a cron expression (UTC) or an interval.
    ///
    /// The task is a shell command given after `--` (or with --shell), run by `martelli worker`;
    /// or a registered task (--task NAME) with JSON arguments (--args).
    Add(AddArgs),
    /// List the schedules: timing, task, catch-up rule, last and next tick, ticks fired.
    List(ListArgs),
    /// Remove a schedule (tasks it queued stay queued).
    Remove(NameArgs),
    /// Enable a disabled schedule.
    Enable(NameArgs),
    /// Disable a schedule: its ticks pass without a task until it is enabled.
    Disable(NameArgs),
    /// Be a scheduler: fire the schedules' ticks until SIGTERM or Ctrl-C. Run several for
    /// availability: each tick fires once however many run.
    Run(RunArgs),
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum CatchUpArg {
    /// After a pause, the latest missed tick fires once.
    Latest,
    /// After a pause, no missed tick fires.
    Skip,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum PriorityArg {
    High,
    Normal,
    Low,
}

#[derive(Debug, Args)]
struct AddArgs {
    /// The schedule's name (its tasks' ids are NAME@TICK, the tick in Unix ms).
    #[arg(value_name = "NAME")]
    name: String,

    /// A cron expression in UTC: 5 fields (minute hour day-of-month month day-of-week) or 6
    /// (second first); also @hourly, @daily, @weekly, @monthly, @yearly.
    #[arg(
        long = "cron",
        value_name = "EXPR",
        conflicts_with = "every",
        required_unless_present = "every"
    )]
    cron: Option<String>,

    /// An interval: 500ms, 10s, 5m, 1h30m, 1d. Ticks are its multiples since the Unix epoch.
    #[arg(long = "every", value_name = "INTERVAL")]
    every: Option<String>,

    /// A registered task to queue instead of a shell command.
    #[arg(long = "task", value_name = "TASK", conflicts_with_all = ["shell", "command"])]
    task: Option<String>,

    /// With --task: its arguments as a JSON array (the argument tuple), such as '[2, 3]'.
    #[arg(long = "args", value_name = "JSON", requires = "task")]
    args: Option<String>,

    /// A command line run with /bin/sh -c on the worker.
    #[arg(long = "shell", value_name = "COMMAND", conflicts_with = "command")]
    shell: Option<String>,

    /// What happens to ticks missed while no scheduler ran.
    #[arg(long = "catch-up", value_enum, default_value = "latest")]
    catch_up: CatchUpArg,

    /// The task's priority.
    #[arg(long = "priority", value_enum, default_value = "normal")]
    priority: PriorityArg,

    /// Each task keeps a record (`martelli result NAME@TICK`) until SECS after it ends.
    #[arg(long = "result-ttl", value_name = "SECS")]
    result_ttl: Option<u64>,

    /// Add it disabled.
    #[arg(long = "disabled")]
    disabled: bool,

    /// Replace a schedule of that name (its ticks fired so far are not fired again).
    #[arg(long = "replace")]
    replace: bool,

    #[command(flatten)]
    broker: BrokerArgs,

    /// The command and its arguments, after `--`.
    #[arg(last = true, value_name = "COMMAND")]
    command: Vec<String>,
}

#[derive(Debug, Args)]
struct ListArgs {
    /// Print the schedules as one JSON document.
    #[arg(long = "json")]
    json: bool,

    #[command(flatten)]
    broker: BrokerArgs,
}

#[derive(Debug, Args)]
struct NameArgs {
    /// The schedule's name.
    #[arg(value_name = "NAME")]
    name: String,

    #[command(flatten)]
    broker: BrokerArgs,
}

#[derive(Debug, Args)]
struct RunArgs {
    /// Say nothing when a tick fires (problems are still reported).
    #[arg(long = "quiet", short = 'q')]
    quiet: bool,

    /// The longest sleep between two looks at the schedules, in seconds: how soon a new or
    /// changed schedule is seen.
    #[arg(long = "max-sleep", value_name = "SECS", default_value = "1")]
    max_sleep: f64,

    #[command(flatten)]
    broker: BrokerArgs,
}

fn options(broker: &BrokerArgs) -> SchedulerOptions {
    let mut options = SchedulerOptions::default().prefix(&broker.prefix);
    if let Some(ca) = &broker.tls_ca {
        options = options.tls_ca(ca);
    }
    options
}

/// Runs `martelli schedule …`.
pub(crate) fn run(args: &ScheduleArgs) -> anyhow::Result<ExitCode> {
    match &args.command {
        ScheduleCommand::Add(add) => run_add(add),
        ScheduleCommand::List(list) => run_list(list),
        ScheduleCommand::Remove(n) => {
            let schedules = Schedules::connect(&n.broker.url, &options(&n.broker))?;
            if schedules.remove(&n.name)? {
                eprintln!("martelli schedule: removed {:?}", n.name);
                Ok(ExitCode::SUCCESS)
            } else {
                eprintln!("martelli schedule: no schedule named {:?}", n.name);
                Ok(ExitCode::FAILURE)
            }
        }
        ScheduleCommand::Enable(n) | ScheduleCommand::Disable(n) => {
            let enable = matches!(args.command, ScheduleCommand::Enable(_));
            let schedules = Schedules::connect(&n.broker.url, &options(&n.broker))?;
            if schedules.set_enabled(&n.name, enable)? {
                let state = if enable { "enabled" } else { "disabled" };
                eprintln!("martelli schedule: {:?} is {state}", n.name);
                Ok(ExitCode::SUCCESS)
            } else {
                eprintln!("martelli schedule: no schedule named {:?}", n.name);
                Ok(ExitCode::FAILURE)
            }
        }
        ScheduleCommand::Run(run) => run_scheduler(run),
    }
}

fn run_add(args: &AddArgs) -> anyhow::Result<ExitCode> {
    // The timing first: a bad expression is the likelier mistake.
    if let Some(cron) = &args.cron {
        cron.parse::<CronExpr>()?;
    }
    if let Some(every) = &args.every {
        parse_interval(every)?;
    }
    let (task, payload) = match (&args.task, &args.shell, args.command.is_empty()) {
        (Some(task), _, _) => {
            let json: serde_json::Value = match &args.args {
                Some(text) => serde_json::from_str(text).with_context(|| {
                    format!("--args {text:?} is not JSON (give an array such as '[2, 3]')")
                })?,
                None => serde_json::Value::Array(Vec::new()),
            };
            let payload = rmp_serde::to_vec_named(&json).context("could not encode --args")?;
            (task.clone(), payload)
        }
        (None, Some(line), _) => {
            let shell_task = ShellTask {
                shell: Some(ByteBuf::from(line.as_bytes().to_vec())),
                ..ShellTask::default()
            };
            (
                shell::TASK.to_owned(),
                rmp_serde::to_vec_named(&shell_task)?,
            )
        }
        (None, None, false) => {
            let shell_task = ShellTask {
                argv: Some(
                    args.command
                        .iter()
                        .map(|a| ByteBuf::from(a.as_bytes().to_vec()))
                        .collect(),
                ),
                ..ShellTask::default()
            };
            (
                shell::TASK.to_owned(),
                rmp_serde::to_vec_named(&shell_task)?,
            )
        }
        (None, None, true) => bail!(
            "nothing to schedule: give a command after `--`, a command line with --shell, or a \
             registered task with --task"
        ),
    };
    let schedule = match (&args.cron, &args.every) {
        (Some(cron), _) => Schedule::cron(&args.name, cron, task)?,
        (None, Some(every)) => Schedule::every(&args.name, parse_interval(every)?, task)?,
        (None, None) => bail!("give --cron EXPR or --every INTERVAL"),
    };
    let mut schedule = schedule
        .payload(payload)
        .queue(&args.broker.queue)
        .priority(match args.priority {
            PriorityArg::High => Priority::High,
            PriorityArg::Normal => Priority::Normal,
            PriorityArg::Low => Priority::Low,
        })
        .catch_up(match args.catch_up {
            CatchUpArg::Latest => CatchUp::Latest,
            CatchUpArg::Skip => CatchUp::Skip,
        })
        .enabled(!args.disabled);
    if let Some(secs) = args.result_ttl {
        schedule = schedule.result_ttl(Duration::from_secs(secs));
    }
    let schedules = Schedules::connect(&args.broker.url, &options(&args.broker))?;
    let replaced = if args.replace {
        schedules.replace(&schedule)?
    } else {
        schedules.add(&schedule)?;
        false
    };
    let info = schedules.get(&args.name)?;
    let next = info
        .as_ref()
        .and_then(|i| i.next_ms)
        .map(utc)
        .unwrap_or_default();
    eprintln!(
        "martelli schedule: {} {:?} ({}); next tick {next}",
        if replaced { "replaced" } else { "added" },
        args.name,
        schedule.timing(),
    );
    Ok(ExitCode::SUCCESS)
}

fn run_list(args: &ListArgs) -> anyhow::Result<ExitCode> {
    let schedules = Schedules::connect(&args.broker.url, &options(&args.broker))?;
    let list = schedules.list()?;
    if args.json {
        let items: Vec<serde_json::Value> = list.iter().map(json).collect();
        println!("{}", serde_json::json!({ "schedules": items }));
        return Ok(ExitCode::SUCCESS);
    }
    if list.is_empty() {
        println!("no schedules under prefix {:?}", args.broker.prefix);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<20} {:<22} {:<16} {:<8} {:<7} {:<5} {:<20} {:<20} {:>6} {:>7}",
        "NAME",
        "TIMING",
        "TASK",
        "QUEUE",
        "CATCHUP",
        "ON",
        "LAST FIRED",
        "NEXT",
        "FIRED",
        "SKIPPED"
    );
    for s in &list {
        println!(
            "{:<20} {:<22} {:<16} {:<8} {:<7} {:<5} {:<20} {:<20} {:>6} {:>7}",
            s.name,
            s.timing,
            s.task,
            s.queue,
            s.catch_up,
            if s.enabled { "yes" } else { "no" },
            s.last_fired_ms.map(utc).unwrap_or_else(|| "-".into()),
            s.next_ms.map(utc).unwrap_or_else(|| "-".into()),
            s.fired,
            s.skipped
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn json(s: &ScheduleInfo) -> serde_json::Value {
    serde_json::json!({
        "name": s.name,
        "timing": s.timing,
        "task": s.task,
        "queue": s.queue,
        "priority": s.priority,
        "catch_up": s.catch_up.to_string(),
        "enabled": s.enabled,
        "result_ttl_ms": s.keep_ms,
        "created_ms": s.created_ms,
        "last_ms": s.last_ms,
        "next_ms": s.next_ms,
        "fired": s.fired,
        "skipped": s.skipped,
        "last_fired_ms": s.last_fired_ms,
        "fired_at_ms": s.fired_at_ms,
        "last_id": s.last_id,
    })
}

fn run_scheduler(args: &RunArgs) -> anyhow::Result<ExitCode> {
    let max_sleep = Duration::try_from_secs_f64(args.max_sleep)
        .ok()
        .filter(|d| !d.is_zero())
        .with_context(|| {
            format!(
                "invalid --max-sleep {}: give a number of seconds above 0",
                args.max_sleep
            )
        })?;
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, stop.clone())
            .context("could not install the signal handlers")?;
    }
    let options = options(&args.broker).max_sleep(max_sleep).quiet(args.quiet);
    eprintln!(
        "martelli schedule run: firing the schedules under prefix {:?} (SIGTERM or Ctrl-C stops)",
        args.broker.prefix
    );
    let report = Scheduler::run(&args.broker.url, &options, &stop)?;
    eprintln!(
        "martelli schedule run: stopped: {} tick(s) fired here, {} passed over, {} fired by \
         another scheduler first",
        report.fired, report.skipped, report.taken
    );
    Ok(ExitCode::SUCCESS)
}

/// Unix ms as `YYYY-MM-DD HH:MM:SSZ` (UTC).
pub(crate) fn utc(ms: u64) -> String {
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn utc_prints_a_civil_time() {
        assert_eq!(super::utc(0), "1970-01-01 00:00:00Z");
        assert_eq!(super::utc(1_767_225_600_000), "2026-01-01 00:00:00Z");
        assert_eq!(super::utc(951_827_696_000), "2000-02-29 12:34:56Z");
    }
}
