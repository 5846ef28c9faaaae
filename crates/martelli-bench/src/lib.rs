//! The harness behind martelli's side-by-side benchmarks.
//!
//! Each benchmark binary (`src/bin/bench-*.rs`) runs martelli and its peers in one process, on the
//! same work with the same number of threads, interleaved over several rounds so that a noisy machine
//! disturbs every contender alike, and prints medians over the rounds and their ratios. Nothing here
//! asserts a speed: a target that is missed is printed as missed.

#![warn(missing_docs)]

use anyhow::{Context, bail};
use std::fmt::Write as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Measurements of one contender, one per round.
#[derive(Debug, Clone, Default)]
pub struct Samples {
    values: Vec<f64>,
}

impl Samples {
    /// No measurement yet.
    pub fn new() -> Self {
        Samples::default()
    }

    /// Records one measurement.
    pub fn push(&mut self, value: f64) {
        self.values.push(value);
    }

    /// How many measurements were recorded.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// True when nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The median (the mean of the two middle values for an even count); `None` when empty.
    pub fn median(&self) -> Option<f64> {
        let mut sorted = self.values.clone();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        match n {
            0 => None,
            _ if n % 2 == 1 => Some(sorted[n / 2]),
            _ => Some((sorted[n / 2 - 1] + sorted[n / 2]) / 2.0),
        }
    }

    /// The smallest value; `None` when empty.
    pub fn min(&self) -> Option<f64> {
        self.values.iter().copied().min_by(f64::total_cmp)
    }

    /// The largest value; `None` when empty.
    pub fn max(&self) -> Option<f64> {
        self.values.iter().copied().max_by(f64::total_cmp)
    }
}

/// Times `f` once, in seconds.
pub fn time<R>(f: impl FnOnce() -> R) -> (f64, R) {
    let start = Instant::now();
    let result = f();
    (start.elapsed().as_secs_f64(), result)
}

/// Lets threads left over from the previous contender (a dropped pool's workers on their way out)
/// finish before the next one is timed.
pub fn settle() {
    std::thread::sleep(Duration::from_millis(20));
}

/// The order in which `n` contenders run in round `round`: rotated by one each round, so that no
/// contender always runs first (on a cold cache) or last (after the others heated the machine).
pub fn rotation(n: usize, round: usize) -> impl Iterator<Item = usize> {
    (0..n).map(move |i| (i + round) % n.max(1))
}

/// Formats a rate such as 1234567.0 tasks/s as `1.23 M/s`.
pub fn format_rate(per_second: f64) -> String {
    if per_second >= 1e6 {
        format!("{:.2} M/s", per_second / 1e6)
    } else if per_second >= 1e3 {
        format!("{:.1} k/s", per_second / 1e3)
    } else {
        format!("{per_second:.1} /s")
    }
}

/// Formats seconds with a unit that keeps three significant digits.
pub fn format_seconds(seconds: f64) -> String {
    if seconds >= 1.0 {
        format!("{seconds:.3} s")
    } else if seconds >= 1e-3 {
        format!("{:.2} ms", seconds * 1e3)
    } else if seconds >= 1e-6 {
        format!("{:.3} µs", seconds * 1e6)
    } else {
        format!("{:.1} ns", seconds * 1e9)
    }
}

/// One line of the result table.
#[derive(Debug, Clone)]
pub struct Row {
    /// What was measured.
    pub benchmark: String,
    /// martelli's figure, formatted.
    pub martelli: String,
    /// The peer's name and figure, formatted.
    pub peer: String,
    /// martelli relative to the peer (above 1: martelli is better), `None` when not measured.
    pub ratio: Option<f64>,
    /// The target ratio, `None` for rows given for information.
    pub target: Option<f64>,
}

impl Row {
    /// "yes", "NO", or "-" when there is no target or no figure.
    pub fn verdict(&self) -> &'static str {
        match (self.ratio, self.target) {
            (Some(r), Some(t)) if r >= t => "yes",
            (Some(_), Some(_)) => "NO",
            _ => "-",
        }
    }
}

/// Renders rows as a Markdown table (readable as plain text too).
pub fn render_table(rows: &[Row]) -> String {
    let header = ["benchmark", "martelli", "peer", "ratio", "target", "met"];
    let cells: Vec<[String; 6]> = rows
        .iter()
        .map(|r| {
            [
                r.benchmark.clone(),
                r.martelli.clone(),
                r.peer.clone(),
                r.ratio.map_or_else(|| "-".into(), |x| format!("{x:.2}×")),
                r.target
                    .map_or_else(|| "-".into(), |x| format!("≥ {x:.2}×")),
                r.verdict().into(),
            ]
        })
        .collect();
    let mut widths = header.map(|h| h.chars().count());
    for row in &cells {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, row: &[String]| {
        out.push('|');
        for (cell, w) in row.iter().zip(widths) {
            let pad = w - cell.chars().count();
            let _ = write!(out, " {cell}{} |", " ".repeat(pad));
        }
        out.push('\n');
    };
    line(&mut out, &header.map(String::from));
    line(&mut out, &widths.map(|w| "-".repeat(w)));
    for row in &cells {
        line(&mut out, row);
    }
    out
}

/// What `bench_thread_pool.py` (Python's `ThreadPoolExecutor(2)` on no-op tasks) reports for its
/// `submit_all_then_result` case.
#[derive(Debug, Clone, Copy)]
pub struct PythonThreadPool {
    /// Median microseconds per task over the script's repetitions.
    pub us_per_task: f64,
}

/// Runs the Python peer script once with `reps` repetitions and reads its JSON line.
pub fn run_python_thread_pool(script: &Path, reps: usize) -> anyhow::Result<PythonThreadPool> {
    let output = Command::new("python3")
        .arg(script)
        .env("REPS", reps.to_string())
        .output()
        .with_context(|| format!("failed to run `python3 {}`", script.display()))?;
    if !output.status.success() {
        bail!(
            "`python3 {}` failed ({}): {}",
            script.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .with_context(|| format!("`python3 {}` printed no JSON line", script.display()))?;
    let json: serde_json::Value = serde_json::from_str(line)
        .with_context(|| format!("`python3 {}` printed invalid JSON", script.display()))?;
    let us_per_task = json["submit_all_then_result"]["us_per_task_median"]
        .as_f64()
        .with_context(|| {
            format!(
                "`python3 {}` printed no submit_all_then_result.us_per_task_median",
                script.display()
            )
        })?;
    Ok(PythonThreadPool { us_per_task })
}

/// The task the cluster benchmarks' workers serve: bytes in, nothing out.
pub const NOOP: &str = "noop";

/// Serves `queue` of the broker at `url` with `concurrency` task slots, running [`NOOP`] tasks,
/// until SIGTERM: the worker side of the cluster benchmarks.
pub fn serve_noop(url: &str, queue: &str, concurrency: usize) -> anyhow::Result<()> {
    use martelli::cluster::{Tasks, WorkerOptions, serve};
    let tasks = Tasks::new().raw(NOOP, |_: &[u8]| Ok(Vec::new()));
    let options = WorkerOptions::new()
        .queue(queue.to_owned())
        .concurrency(concurrency);
    serve(url, tasks, options).context("the worker failed")?;
    Ok(())
}

/// Starts this benchmark's own binary again as a worker process:
/// `BIN --url URL --concurrency N worker --queue QUEUE` (each binary parses that form and calls
/// [`serve_noop`]).
pub fn spawn_worker(url: &str, concurrency: usize, queue: &str) -> anyhow::Result<Child> {
    let exe = std::env::current_exe().context("cannot find this benchmark's own binary")?;
    Command::new(exe)
        .args(["--url", url, "--concurrency"])
        .arg(concurrency.to_string())
        .args(["worker", "--queue", queue])
        .stdout(Stdio::null())
        .spawn()
        .context("could not start a worker process")
}

/// Runs `f` with a client on `queue` and `workers` fresh worker processes serving it (each with
/// `concurrency` task slots, started by [`spawn_worker`]); the workers are stopped whatever `f`
/// returns, a failure to start one of them included.
pub fn with_workers<T>(
    url: &str,
    queue: &str,
    workers: usize,
    concurrency: usize,
    f: impl FnOnce(&martelli::cluster::Client) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let client = martelli::cluster::Client::builder(url)
        .queue(queue)
        .build()
        .context("could not connect the client")?;
    let mut started = Vec::new();
    let outcome = (|| {
        for _ in 0..workers {
            started.push(spawn_worker(url, concurrency, queue)?);
        }
        f(&client)
    })();
    for worker in &mut started {
        stop_worker(worker);
    }
    outcome
}

/// Twenty no-op round trips: warms the connections and waits until the workers are up.
pub fn warm_up(client: &martelli::cluster::Client) -> anyhow::Result<()> {
    for _ in 0..20 {
        client.submit_raw(NOOP, Vec::new())?.wait()?;
    }
    Ok(())
}

/// Stops a worker as an operator would (SIGTERM: it finishes its tasks and leaves), or kills it when
/// the signal cannot be sent; then reaps it.
pub fn stop_worker(worker: &mut Child) {
    let stopped = Command::new("kill")
        .args(["-TERM", &worker.id().to_string()])
        .status()
        .is_ok_and(|s| s.success());
    if !stopped {
        let _ = worker.kill();
    }
    let _ = worker.wait();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        let mut s = Samples::new();
        assert_eq!(s.median(), None);
        for v in [5.0, 1.0, 3.0] {
            s.push(v);
        }
        assert_eq!(s.median(), Some(3.0));
        s.push(10.0);
        assert_eq!(s.median(), Some(4.0));
        assert_eq!(s.min(), Some(1.0));
        assert_eq!(s.max(), Some(10.0));
    }

    #[test]
    fn rotation_visits_every_contender_once_and_moves_the_first() {
        let r0: Vec<_> = rotation(3, 0).collect();
        let r1: Vec<_> = rotation(3, 1).collect();
        assert_eq!(r0, [0, 1, 2]);
        assert_eq!(r1, [1, 2, 0]);
    }

    #[test]
    fn verdicts() {
        let row = |ratio, target| Row {
            benchmark: String::new(),
            martelli: String::new(),
            peer: String::new(),
            ratio,
            target,
        };
        assert_eq!(row(Some(1.2), Some(1.0)).verdict(), "yes");
        assert_eq!(row(Some(0.7), Some(0.8)).verdict(), "NO");
        assert_eq!(row(None, Some(0.8)).verdict(), "-");
        assert_eq!(row(Some(2.0), None).verdict(), "-");
    }

    #[test]
    fn table_columns_line_up() {
        let rows = [Row {
            benchmark: "map".into(),
            martelli: "1.00 M/s".into(),
            peer: "rayon 2.00 M/s".into(),
            ratio: Some(0.5),
            target: Some(0.8),
        }];
        let table = render_table(&rows);
        let widths: Vec<usize> = table.lines().map(|l| l.chars().count()).collect();
        assert_eq!(widths.len(), 3);
        assert!(widths.iter().all(|&w| w == widths[0]), "{table}");
        assert!(table.contains("| NO "), "{table}");
    }

    #[test]
    fn formats() {
        assert_eq!(format_rate(2_500_000.0), "2.50 M/s");
        assert_eq!(format_rate(70_000.0), "70.0 k/s");
        assert_eq!(format_seconds(0.05), "50.00 ms");
        assert_eq!(format_seconds(14e-6), "14.000 µs");
    }
}
