//! `martelli status --cluster URL`: a queue's depth, its workers and its throughput, as aligned
//! tables or as one JSON document (`--json`). The reading is [`martelli::cluster::status`]; this
//! module only prints it.

use std::io::{self, Write};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use martelli::cluster::{ClusterStatus, StatusOptions};

use super::BrokerArgs;

/// Options of `martelli status`.
#[derive(Debug, Args)]
pub(crate) struct StatusArgs {
    #[command(flatten)]
    pub(crate) broker: BrokerArgs,

    /// Print one JSON document instead of tables.
    #[arg(long = "json")]
    pub(crate) json: bool,

    /// Seconds between the two readings the throughput is computed from; 0 skips the throughput.
    #[arg(long = "sample", value_name = "SECS", default_value = "1")]
    pub(crate) sample: f64,
}

/// Reads and prints the status.
pub(crate) fn run(args: &StatusArgs) -> anyhow::Result<ExitCode> {
    let sample = Duration::try_from_secs_f64(args.sample).with_context(|| {
        format!(
            "invalid --sample {}: expected a number of seconds, such as 1 or 0",
            args.sample
        )
    })?;
    let mut options = StatusOptions::new()
        .prefix(&args.broker.prefix)
        .queue(&args.broker.queue)
        .sample(sample);
    if let Some(ca) = &args.broker.tls_ca {
        options = options.tls_ca(ca);
    }
    let status = martelli::cluster::status(&args.broker.url, &options)?;
    let mut out = io::stdout().lock();
    let written = if args.json {
        serde_json::to_writer_pretty(&mut out, &status)
            .map_err(io::Error::from)
            .and_then(|()| writeln!(out))
    } else {
        out.write_all(render(&status).as_bytes())
    };
    match written {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => Err(e).context("cannot write to stdout"),
        _ => Ok(ExitCode::SUCCESS),
    }
}

/// The status as text: the queue, the workers and the throughput.
pub(crate) fn render(status: &ClusterStatus) -> String {
    let q = &status.queue;
    let mut text = format!(
        "broker {}  prefix {}  queue {}\n\n",
        status.broker, status.prefix, q.name
    );
    let mut rows = vec![row(["STREAM", "WAITING", "HELD", "ADDED"])];
    for s in &q.streams {
        rows.push(vec![
            s.priority.clone(),
            s.waiting.to_string(),
            s.held.to_string(),
            s.entries_added.to_string(),
        ]);
    }
    rows.push(vec![
        "total".into(),
        q.waiting.to_string(),
        q.held.to_string(),
        q.streams
            .iter()
            .map(|s| s.entries_added)
            .sum::<u64>()
            .to_string(),
    ]);
    text.push_str(&table(&rows, &[false, true, true, true]));
    text.push_str(&format!(
        "delayed {}  dead letters {}\n\n",
        q.delayed, q.dead
    ));
    if status.workers.is_empty() {
        text.push_str("no workers (none has a heartbeat under this prefix)\n");
    } else {
        let mut rows = vec![row([
            "WORKER", "QUEUE", "ALIVE", "SEEN", "SLOTS", "HELD", "OK", "FAILED", "DEAD",
        ])];
        for w in &status.workers {
            let opt = |v: Option<u64>| v.map_or_else(|| "-".to_owned(), |v| v.to_string());
            rows.push(vec![
                w.consumer.clone(),
                w.queue.clone().unwrap_or_else(|| "-".into()),
                if w.alive { "yes" } else { "no" }.into(),
                w.heartbeat_age_ms.map_or_else(
                    || "never".to_owned(),
                    |ms| format!("{:.1}s ago", ms as f64 / 1e3),
                ),
                opt(w.concurrency),
                w.held.to_string(),
                w.succeeded.to_string(),
                w.failed.to_string(),
                w.dead_lettered.to_string(),
            ]);
        }
        text.push_str(&table(
            &rows,
            &[false, false, false, true, true, true, true, true, true],
        ));
    }
    if let Some(t) = &status.throughput {
        text.push_str(&format!(
            "\nthroughput over {:.1}s: {:.1} tasks/s submitted, {:.1} tasks/s completed\n",
            t.interval_ms as f64 / 1e3,
            t.submitted_per_s,
            t.completed_per_s
        ));
    }
    text
}

fn row<const N: usize>(cells: [&str; N]) -> Vec<String> {
    cells.iter().map(|c| (*c).to_owned()).collect()
}

/// Rows padded to aligned columns, two spaces apart; `right` says which columns align right.
fn table(rows: &[Vec<String>], right: &[bool]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut text = String::new();
    for r in rows {
        let mut line = String::new();
        for (c, cell) in r.iter().enumerate() {
            if c > 0 {
                line.push_str("  ");
            }
            let pad = widths[c].saturating_sub(cell.chars().count());
            if right.get(c).copied().unwrap_or(false) {
                line.push_str(&" ".repeat(pad));
                line.push_str(cell);
            } else {
                line.push_str(cell);
                line.push_str(&" ".repeat(pad));
            }
        }
        text.push_str(line.trim_end());
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns() {
        let rows = vec![
            row(["A", "NUM"]),
            row(["long name", "7"]),
            row(["x", "1234"]),
        ];
        assert_eq!(
            table(&rows, &[false, true]),
            "A           NUM\nlong name     7\nx          1234\n"
        );
    }
}
