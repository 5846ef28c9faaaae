//! `martelli result ID --cluster URL`: a task's state and outcome, read by id from the task's
//! record in the broker (docs/protocol.md, "Addition 1: task records"). A task keeps a record when
//! its producer asked for one (`martelli run --cluster --result-ttl`, `SubmitOptions::result_ttl`,
//! `Client::send`).
//!
//! A `martelli.shell` task that ended prints its command's stdout and stderr and exits with the
//! command's exit status, as the command did; any other task prints its value as JSON. `--json`
//! prints the whole record as one JSON document instead. Exit status: the command's (shell tasks),
//! 0 for a task that returned a value, 1 for one that failed or was dead-lettered, 3 for one that
//! has not ended (queued or running; `--wait` waits for it), 4 for an id with no record.

use std::io::{self, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use martelli::cluster::{Client, RecordState, TaskRecord};

use super::BrokerArgs;
use super::shell::{self, ShellResult};

/// How often `--wait` reads the record again.
const WAIT_STEP: Duration = Duration::from_millis(100);

/// Exit status for a task that has not ended.
const NOT_ENDED: u8 = 3;
/// Exit status for an id with no record.
const NO_RECORD: u8 = 4;

/// Options of `martelli result`.
#[derive(Debug, Args)]
pub(crate) struct ResultArgs {
    /// The task id (`martelli run --cluster --result-ttl` prints how its ids are made).
    #[arg(value_name = "ID")]
    pub(crate) id: String,

    #[command(flatten)]
    pub(crate) broker: BrokerArgs,

    /// Print the record as one JSON document.
    #[arg(long = "json")]
    pub(crate) json: bool,

    /// Wait up to SECS for the task to end.
    #[arg(long = "wait", value_name = "SECS")]
    pub(crate) wait: Option<f64>,
}

/// Reads and prints the record.
pub(crate) fn run(args: &ResultArgs) -> anyhow::Result<ExitCode> {
    let wait = match args.wait {
        Some(secs) => Duration::try_from_secs_f64(secs).with_context(|| {
            format!("invalid --wait {secs}: expected a number of seconds, such as 10 or 0.5")
        })?,
        None => Duration::ZERO,
    };
    let mut builder = Client::builder(&args.broker.url)
        .prefix(&args.broker.prefix)
        .queue(&args.broker.queue);
    if let Some(ca) = &args.broker.tls_ca {
        builder = builder.tls_ca(ca);
    }
    let client = builder.build()?;
    let until = Instant::now() + wait;
    let record = loop {
        let record = client.status(&args.id)?;
        let ended = record.as_ref().is_some_and(|r| r.state.is_ended());
        if ended || Instant::now() >= until {
            break record;
        }
        std::thread::sleep(WAIT_STEP.min(until.saturating_duration_since(Instant::now())));
    };
    let Some(record) = record else {
        eprintln!(
            "martelli result: no record of task {:?} under prefix {:?}: it was sent without a \
             result TTL, its record expired, or the id is wrong",
            args.id, args.broker.prefix
        );
        return Ok(ExitCode::from(NO_RECORD));
    };
    let mut out = io::stdout().lock();
    let written = if args.json {
        serde_json::to_writer_pretty(&mut out, &json(&record))
            .map_err(io::Error::from)
            .and_then(|()| writeln!(out))
            .map(|()| exit_of(&record))
    } else {
        print(&mut out, &record)
    };
    match written {
        Ok(code) => Ok(code),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(exit_of(&record)),
        Err(e) => Err(e).context("cannot write to stdout"),
    }
}

/// The exit status for a record, shell commands aside.
fn exit_of(record: &TaskRecord) -> ExitCode {
    match record.state {
        RecordState::Done => ExitCode::SUCCESS,
        RecordState::Queued | RecordState::Running => ExitCode::from(NOT_ENDED),
        _ => ExitCode::FAILURE,
    }
}

/// A one-line summary, for stderr.
fn summary(record: &TaskRecord) -> String {
    let mut line = format!(
        "martelli result: task {} ({}) is {}",
        record.id, record.task, record.state
    );
    if record.attempts > 0 {
        line.push_str(&format!(", attempt {}", record.attempts));
    }
    if let Some(worker) = &record.worker {
        line.push_str(&format!(", worker {worker}"));
    }
    if let Some(due) = record.due_ms {
        line.push_str(&format!(", retry due at {due} ms (Unix)"));
    }
    if !record.errors.is_empty() {
        line.push_str(&format!(", {} retried run(s)", record.errors.len()));
    }
    if let Some(error) = record.error() {
        line.push_str(&format!(": {error}"));
    }
    line
}

/// Prints a record as text: a shell command's output (exiting with its status), another task's
/// value as JSON, and a summary on stderr.
fn print(out: &mut impl Write, record: &TaskRecord) -> io::Result<ExitCode> {
    let mut err = io::stderr().lock();
    for e in &record.errors {
        writeln!(
            err,
            "martelli result: run {} ({}) on {}: {}",
            e.attempt, e.status, e.worker, e.error
        )?;
    }
    let value = match record.outcome() {
        Some(Ok(bytes)) => bytes,
        _ => {
            writeln!(err, "{}", summary(record))?;
            return Ok(exit_of(record));
        }
    };
    if record.task == shell::TASK {
        let result: ShellResult = match rmp_serde::from_slice(&value) {
            Ok(result) => result,
            Err(e) => {
                writeln!(
                    err,
                    "{}; its result is not a {} result: {e}",
                    summary(record),
                    shell::TASK
                )?;
                return Ok(ExitCode::FAILURE);
            }
        };
        out.write_all(&result.stdout)?;
        out.flush()?;
        err.write_all(&result.stderr)?;
        if let Some(error) = &result.error {
            writeln!(err, "martelli result: the command could not run: {error}")?;
        }
        return Ok(match (result.code, result.signal) {
            (Some(code), _) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
            (None, Some(signal)) => ExitCode::from(u8::try_from(128 + signal).unwrap_or(1)),
            (None, None) => ExitCode::FAILURE,
        });
    }
    let shown: serde_json::Value = rmp_serde::from_slice(&value)
        .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&value).into()));
    writeln!(out, "{shown}")?;
    Ok(ExitCode::SUCCESS)
}

/// The record as JSON.
fn json(record: &TaskRecord) -> serde_json::Value {
    let value = match record.outcome() {
        Some(Ok(bytes)) => rmp_serde::from_slice::<serde_json::Value>(&bytes)
            .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&bytes).into())),
        _ => serde_json::Value::Null,
    };
    serde_json::json!({
        "id": record.id,
        "state": record.state.as_str(),
        "task": record.task,
        "attempts": record.attempts,
        "worker": record.worker,
        "updated_ms": record.updated_ms,
        "due_ms": record.due_ms,
        "status": record.status(),
        "error": record.error(),
        "errors": record.errors,
        "value": value,
    })
}
