//! When to go to the cluster: what a task costs through martelli's cluster tier (Redis Streams).
//!
//! When `redis-server` is on the `PATH`, the probe starts a private one on a free port of 127.0.0.1
//! (no persistence), a cluster [`Worker`] and a [`Client`] in this process, and measures three
//! things against it: a no-op task's round trip one at a time, the cost per task with many in
//! flight, and the start of a worker (started and connected until the first result reaches a new
//! client). The server is stopped when the measurement ends, whichever way. Without `redis-server`
//! the figures published in BENCHMARKS.md stand in, and the report says so.

use super::stats::{Stat, Unit, in_unit};
use super::{Ctx, ProbeError};
use martelli::cluster::{Client, Tasks, Worker, WorkerOptions};
use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The published figures (BENCHMARKS.md, "Cluster", at a quiet moment on a 2-core machine,
/// 2026-11-26): 48,169 no-op tasks per second with many in flight, a round trip of 0.174 ms (p50).
pub(crate) const PUBLISHED_PER_TASK_US: f64 = 1e6 / 48_169.0;
pub(crate) const PUBLISHED_ROUND_TRIP_US: f64 = 174.0;
const PUBLISHED: &str =
    "BENCHMARKS.md, Cluster, at a quiet moment on a 2-core machine (2026-11-26)";

/// The no-op task the probe sends.
const NOOP: &str = "martelli-probe::noop";
/// The queue the probe uses on its private server.
const QUEUE: &str = "probe";

/// The `cluster` section of the report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct ClusterCost {
    /// `"measured"` against a private redis-server, or `"published"`.
    pub(crate) source: String,
    /// The broker measured against (`redis-server 7.0.15, private, 127.0.0.1`), or null.
    pub(crate) broker: Option<String>,
    /// A no-op task submitted and its result received, one at a time, µs.
    pub(crate) round_trip: Option<Stat>,
    /// Wall time per no-op task with many in flight (submitted together, all results in), µs.
    pub(crate) per_task: Option<Stat>,
    /// A worker started and connected, until a new client has the first result, ms.
    pub(crate) worker_start: Option<Stat>,
    /// The round trip the advice uses (measured median, or the published figure), µs.
    pub(crate) round_trip_us: f64,
    /// The cost per task the advice uses, µs.
    pub(crate) per_task_us: f64,
    /// Where the figures come from, and what they leave out.
    pub(crate) note: String,
}

impl ClusterCost {
    /// The published figures, with why they stand in.
    pub(crate) fn published(why: &str) -> ClusterCost {
        ClusterCost {
            source: "published".to_owned(),
            broker: None,
            round_trip: None,
            per_task: None,
            worker_start: None,
            round_trip_us: PUBLISHED_ROUND_TRIP_US,
            per_task_us: PUBLISHED_PER_TASK_US,
            note: format!(
                "{why}: the published figures stand in ({PUBLISHED}); a worker's start is not \
                 known without a broker here"
            ),
        }
    }
}

/// A private redis-server, killed and reaped when dropped.
struct Server {
    child: Child,
    port: u16,
    version: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Starts `redis-server` on a free port of 127.0.0.1 and waits (at most 5 s) until it accepts
    /// connections. `Ok(None)` when there is no `redis-server` on the PATH.
    fn start() -> Result<Option<Server>, String> {
        let version = match Command::new("redis-server").arg("--version").output() {
            Ok(out) => String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .find_map(|w| w.strip_prefix("v="))
                .unwrap_or("?")
                .to_owned(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("cannot run redis-server: {e}")),
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("no free port on 127.0.0.1: {e}"))?
            .port();
        let mut child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start redis-server: {e}"))?;
        let stdout = child.stdout.take();
        let server = Server {
            child,
            port,
            version,
        };
        let (ready, on_ready) = mpsc::channel();
        // Reads the log until the server is ready, then drains it so that it never blocks on a
        // full pipe; the thread ends with the server.
        std::thread::spawn(move || {
            let Some(stdout) = stdout else { return };
            let mut told = false;
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if !told && line.contains("Ready to accept connections") {
                    let _ = ready.send(());
                    told = true;
                }
            }
        });
        match on_ready.recv_timeout(Duration::from_secs(5)) {
            Ok(()) => Ok(Some(server)),
            Err(_) => Err(format!(
                "redis-server did not accept connections on port {port} within 5 s"
            )),
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

fn err(e: impl std::fmt::Display) -> ProbeError {
    ProbeError::Measure(format!("the cluster measurement failed: {e}"))
}

fn start_worker(url: &str) -> Result<Worker, ProbeError> {
    let tasks = Tasks::new().raw(NOOP, |payload: &[u8]| Ok(payload.to_vec()));
    let options = WorkerOptions::new()
        .queue(QUEUE)
        .concurrency(8)
        .poll(Duration::from_millis(50));
    Worker::start(url, tasks, options).map_err(err)
}

fn client(url: &str) -> Result<Client, ProbeError> {
    Client::builder(url).queue(QUEUE).build().map_err(err)
}

/// The longest the probe waits for a result: a broker that stops answering fails the measurement
/// (and the published figures stand in) instead of hanging the probe.
const PATIENCE: Duration = Duration::from_secs(10);

/// Waits for a result until `deadline`.
fn result(future: martelli::Future<Vec<u8>>, deadline: Instant) -> Result<(), ProbeError> {
    match future.wait_deadline(deadline) {
        Ok(r) => r.map(drop).map_err(err),
        Err(_) => Err(err(format!("no result within {} s", PATIENCE.as_secs()))),
    }
}

fn noop(client: &Client) -> Result<(), ProbeError> {
    let future = client.submit_raw(NOOP, Vec::new()).map_err(err)?;
    result(future, Instant::now() + PATIENCE)
}

/// Measures the cluster's costs against a private redis-server, or says why the published figures
/// stand in.
pub(crate) fn measure(ctx: &Ctx) -> ClusterCost {
    ctx.step("cluster: a private redis-server");
    let server = match Server::start() {
        Ok(Some(server)) => server,
        Ok(None) => return ClusterCost::published("no redis-server on the PATH"),
        Err(why) => return ClusterCost::published(&why),
    };
    match measure_on(ctx, &server) {
        Ok(cost) => cost,
        Err(e) => ClusterCost::published(&e.to_string()),
    }
}

fn measure_on(ctx: &Ctx, server: &Server) -> Result<ClusterCost, ProbeError> {
    let url = server.url();
    let fresh = ctx.plans.fresh;
    ctx.step("cluster: worker start");
    let worker_start = ctx.row("cluster.worker_start", || {
        fresh.measure(Unit::Millis, || {
            let start = Instant::now();
            let worker = start_worker(&url)?;
            let c = client(&url)?;
            noop(&c)?;
            let took = in_unit(start.elapsed(), Unit::Millis);
            worker.stop();
            worker.join().map_err(err)?;
            Ok::<_, ProbeError>(took)
        })
    })?;
    let worker = start_worker(&url)?;
    let c = client(&url)?;
    let measured = (|| {
        ctx.step("cluster: round trips");
        let k = ctx.pick(50, 200);
        let round_trip = ctx.measure("cluster.round_trip", Unit::Micros, || {
            let start = Instant::now();
            for _ in 0..k {
                noop(&c)?;
            }
            Ok::<_, ProbeError>(in_unit(start.elapsed(), Unit::Micros) / f64::from(k))
        })?;
        ctx.step("cluster: many tasks in flight");
        let m = ctx.pick(500, 2_000);
        let per_task = ctx.row("cluster.per_task", || {
            fresh.measure(Unit::Micros, || {
                let start = Instant::now();
                let futures = (0..m)
                    .map(|_| c.submit_raw(NOOP, Vec::new()))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(err)?;
                let deadline = Instant::now() + PATIENCE;
                for f in futures {
                    result(f, deadline)?;
                }
                Ok::<_, ProbeError>(in_unit(start.elapsed(), Unit::Micros) / f64::from(m))
            })
        })?;
        Ok::<_, ProbeError>((round_trip, per_task))
    })();
    drop(c);
    worker.stop();
    let _ = worker.join();
    let (round_trip, per_task) = measured?;
    Ok(ClusterCost {
        source: "measured".to_owned(),
        broker: Some(format!(
            "redis-server {}, private, 127.0.0.1 (started by the probe)",
            server.version
        )),
        round_trip_us: round_trip.median,
        per_task_us: per_task.median,
        round_trip: Some(round_trip),
        per_task: Some(per_task),
        worker_start: Some(worker_start),
        note: "measured on this machine: client, broker and worker share its cores, and there is \
               no network between them; another machine adds its network's round trip"
            .to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_published_figures_say_where_they_come_from() {
        let c = ClusterCost::published("no redis-server on the PATH");
        assert_eq!(c.source, "published");
        assert!((c.per_task_us - 20.76).abs() < 0.01, "{}", c.per_task_us);
        assert_eq!(c.round_trip_us, 174.0);
        assert!(
            c.note.starts_with("no redis-server on the PATH"),
            "{}",
            c.note
        );
        assert!(c.note.contains("BENCHMARKS.md"), "{}", c.note);
        assert!(c.round_trip.is_none() && c.worker_start.is_none());
    }

    #[test]
    fn a_private_server_starts_and_stops() {
        // redis-server is installed where the tests run (scripts/test.sh installs it).
        let server = Server::start()
            .expect("redis-server starts")
            .expect("redis-server is on the PATH");
        let pid = server.child.id();
        let url = server.url();
        let worker = start_worker(&url).expect("a worker");
        let c = client(&url).expect("a client");
        noop(&c).expect("a round trip");
        drop(c);
        worker.stop();
        worker.join().expect("the worker stops");
        drop(server);
        // Killed and reaped: no such process any more.
        assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
    }
}
