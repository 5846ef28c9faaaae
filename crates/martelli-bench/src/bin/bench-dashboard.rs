//! What `martelli dashboard` costs the broker of a busy cluster.
//!
//! Worker processes (this binary re-run as `worker`) serve a queue of no-op tasks, and a client
//! submits them at a steady `--rate` (10,000 tasks/s by default). Two phases of `--seconds` each:
//! first without the dashboard, then with `martelli dashboard` running and one page connected to
//! its live feed. Each phase reads Redis's `INFO commandstats` before and after, and reports the
//! commands' calls and CPU time (`usec`) in the phase. The dashboard's share is exact, not a
//! difference of two noisy totals: it is the only client that sends `XINFO`, `XRANGE`, `XLEN`,
//! `ZCARD`, `SCAN` and `HGETALL` (the workers and the client never do), so those commands in the
//! second phase are its load. `INFO cpu` (the server's own CPU seconds) is reported beside it.

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use martelli::cluster::Client;
use std::collections::{BTreeMap, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The commands only the dashboard sends (as `INFO commandstats` names them).
const DASHBOARD_COMMANDS: [&str; 8] = [
    "xinfo|stream",
    "xinfo|groups",
    "xinfo|consumers",
    "xrange",
    "xlen",
    "zcard",
    "scan",
    "hgetall",
];

#[derive(Parser, Debug)]
#[command(about = "what martelli dashboard costs a busy broker (see BENCHMARKS.md)")]
struct Args {
    #[command(subcommand)]
    command: Option<Sub>,
    /// The broker.
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    url: String,
    /// The `martelli` binary whose dashboard is measured.
    #[arg(long)]
    martelli: Option<PathBuf>,
    /// Tasks submitted per second.
    #[arg(long, default_value_t = 10_000)]
    rate: u64,
    /// Seconds of each phase.
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    /// Worker processes.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Threads (task slots) per worker.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
}

#[derive(Subcommand, Debug)]
enum Sub {
    /// Runs one worker process (started by the benchmark itself).
    Worker {
        #[arg(long)]
        queue: String,
    },
}

/// Calls and microseconds per command.
type Stats = BTreeMap<String, (u64, u64)>;

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(Sub::Worker { queue }) = &args.command {
        return martelli_bench::serve_noop(&args.url, queue, args.concurrency);
    }
    let Some(martelli) = args.martelli.clone() else {
        bail!("give --martelli PATH: the martelli binary whose dashboard is measured");
    };
    if args.rate == 0 || args.seconds == 0 {
        bail!("--rate and --seconds must be at least 1");
    }
    let mut info = redis::Client::open(args.url.as_str())
        .and_then(|c| c.get_connection())
        .context("cannot connect to the broker")?;
    let queue = "bench";
    martelli_bench::with_workers(&args.url, queue, args.workers, args.concurrency, |client| {
        martelli_bench::warm_up(client)?;
        measure_both(client, &mut info, &args, &martelli)
    })
}

/// The load without the dashboard, then with it serving one open page.
fn measure_both(
    client: &Client,
    info: &mut redis::Connection,
    args: &Args,
    martelli: &std::path::Path,
) -> anyhow::Result<()> {
    println!(
        "load: {} tasks/s for {} s per phase, {} workers x {} slots",
        args.rate, args.seconds, args.workers, args.concurrency
    );
    let without = phase(client, info, args)?;
    report("without the dashboard", &without, None);

    let mut dashboard = Command::new(martelli)
        .args([
            "dashboard",
            "--cluster",
            &args.url,
            "--listen",
            "127.0.0.1:0",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {} dashboard", martelli.display()))?;
    // The dashboard is stopped whatever the phase with it returns.
    let with = with_dashboard(client, info, args, &mut dashboard);
    let _ = dashboard.kill();
    let _ = dashboard.wait();
    let (with, reader) = with?;
    // The reader ends now that the dashboard is stopped (its connection closed).
    let ticks = reader.join().unwrap_or(0);
    report("with the dashboard", &with, Some(&without));
    println!("the page received {ticks} live ticks");
    Ok(())
}

/// The phase with the dashboard serving one page open on its live feed, and the thread reading that
/// feed (it returns the ticks it read once the dashboard is stopped).
fn with_dashboard(
    client: &Client,
    info: &mut redis::Connection,
    args: &Args,
    dashboard: &mut Child,
) -> anyhow::Result<(Phase, std::thread::JoinHandle<u64>)> {
    let addr = served_at(dashboard)?;
    // One page open on the live feed, reading every tick.
    let mut feed = std::net::TcpStream::connect(&addr).context("cannot reach the dashboard")?;
    write!(
        feed,
        "GET /api/events HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n"
    )?;
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        let mut ticks = 0u64;
        while let Ok(n) = feed.read(&mut buf) {
            if n == 0 {
                break;
            }
            ticks += buf[..n].windows(10).filter(|w| w == b"event: tic").count() as u64;
        }
        ticks
    });
    std::thread::sleep(Duration::from_secs(3));
    let with = phase(client, info, args)?;
    Ok((with, reader))
}

/// What one phase measured.
struct Phase {
    tasks_per_s: f64,
    seconds: f64,
    stats: Stats,
    cpu_s: f64,
}

/// Submits at the rate for the phase's seconds, waiting for results a second behind, and reads
/// the broker's statistics around it.
fn phase(client: &Client, info: &mut redis::Connection, args: &Args) -> anyhow::Result<Phase> {
    let (stats0, cpu0) = read_stats(info)?;
    let started = Instant::now();
    let per_tick = (args.rate / 100).max(1);
    let tick = Duration::from_secs_f64(per_tick as f64 / args.rate as f64);
    let mut inflight = VecDeque::new();
    let mut submitted = 0u64;
    let end = started + Duration::from_secs(args.seconds);
    let mut next = started;
    while Instant::now() < end {
        for _ in 0..per_tick {
            inflight.push_back(client.submit_raw(martelli_bench::NOOP, Vec::new())?);
            submitted += 1;
        }
        while inflight.len() as u64 > args.rate {
            if let Some(oldest) = inflight.pop_front() {
                oldest.wait()?;
            }
        }
        next += tick;
        if let Some(pause) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(pause);
        }
    }
    for future in inflight {
        future.wait()?;
    }
    let seconds = started.elapsed().as_secs_f64();
    let (stats1, cpu1) = read_stats(info)?;
    let stats = stats1
        .iter()
        .map(|(name, (calls, usec))| {
            let (c0, u0) = stats0.get(name).copied().unwrap_or((0, 0));
            (
                name.clone(),
                (calls.saturating_sub(c0), usec.saturating_sub(u0)),
            )
        })
        .filter(|(_, (calls, _))| *calls > 0)
        .collect();
    Ok(Phase {
        tasks_per_s: submitted as f64 / seconds,
        seconds,
        stats,
        cpu_s: cpu1 - cpu0,
    })
}

/// `INFO commandstats` (minus the `INFO` calls themselves) and the server's CPU seconds.
fn read_stats(info: &mut redis::Connection) -> anyhow::Result<(Stats, f64)> {
    let text: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(info)
        .context("INFO commandstats")?;
    let mut stats = Stats::new();
    for line in text.lines() {
        let Some((name, rest)) = line
            .strip_prefix("cmdstat_")
            .and_then(|l| l.split_once(':'))
        else {
            continue;
        };
        let field = |key: &str| {
            rest.split(',')
                .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        if name != "info" {
            stats.insert(name.to_owned(), (field("calls"), field("usec")));
        }
    }
    let cpu: String = redis::cmd("INFO")
        .arg("cpu")
        .query(info)
        .context("INFO cpu")?;
    let seconds = cpu
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            matches!(k, "used_cpu_sys" | "used_cpu_user")
                .then(|| v.trim().parse::<f64>().ok())
                .flatten()
        })
        .sum();
    Ok((stats, seconds))
}

fn report(title: &str, p: &Phase, baseline: Option<&Phase>) {
    let total = |s: &Stats| -> (u64, u64) {
        s.values()
            .fold((0, 0), |(c, u), (calls, usec)| (c + calls, u + usec))
    };
    let (calls, usec) = total(&p.stats);
    let (dash_calls, dash_usec) = DASHBOARD_COMMANDS
        .iter()
        .filter_map(|c| p.stats.get(*c))
        .fold((0, 0), |(c, u), (calls, usec)| (c + calls, u + usec));
    println!();
    println!(
        "{title}: {:.0} tasks/s over {:.1} s; broker: {:.0} commands/s, {:.0} ms of command time/s, \
         {:.1}% of a core (INFO cpu)",
        p.tasks_per_s,
        p.seconds,
        calls as f64 / p.seconds,
        usec as f64 / 1e3 / p.seconds,
        p.cpu_s / p.seconds * 100.0
    );
    let mut rows: Vec<_> = p.stats.iter().collect();
    rows.sort_by_key(|(_, (_, usec))| std::cmp::Reverse(*usec));
    for (name, (c, u)) in rows.iter().take(14) {
        println!(
            "  {name:<18} {:>10.0} calls/s {:>9.1} ms/s",
            *c as f64 / p.seconds,
            *u as f64 / 1e3 / p.seconds
        );
    }
    if baseline.is_some() {
        let others_calls = calls - dash_calls;
        let others_usec = usec - dash_usec;
        println!(
            "  the dashboard's commands: {:.1} calls/s, {:.2} ms of command time/s: {:.3}% of the \
             other commands' calls and {:.3}% of their command time",
            dash_calls as f64 / p.seconds,
            dash_usec as f64 / 1e3 / p.seconds,
            dash_calls as f64 / others_calls.max(1) as f64 * 100.0,
            dash_usec as f64 / others_usec.max(1) as f64 * 100.0
        );
    }
}

/// Reads the dashboard's stderr until it says where it serves; keeps draining it after.
fn served_at(child: &mut Child) -> anyhow::Result<String> {
    let stderr = child.stderr.take().context("the dashboard's stderr")?;
    let mut lines = BufReader::new(stderr).lines();
    for line in lines.by_ref() {
        let line = line.context("read the dashboard's stderr")?;
        if let Some(rest) = line.split("serving http://").nth(1) {
            let addr = rest.split('/').next().unwrap_or_default().to_owned();
            std::thread::spawn(move || for _ in lines {});
            return Ok(addr);
        }
        eprintln!("{line}");
    }
    bail!("the dashboard exited before it served")
}
