//! The jobs the probe runs: a CPU-bound spin, idle threads and async tasks whose memory is read, and
//! the simulated I/O job (many concurrent waits). The memory-sensitive ones run in a fresh helper
//! process each (see [`super::child`]), so that the resident-set deltas they report are their own.

use super::ProbeError;
use martelli::Pool;
use serde::{Deserialize, Serialize};
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Condvar, Mutex};
use std::time::{Duration, Instant};

/// `units` rounds of a xorshift generator: pure CPU work that the optimiser cannot remove.
pub(crate) fn spin(units: u64) -> u64 {
    let mut x = black_box(0x9E37_79B9_7F4A_7C15_u64);
    for _ in 0..units {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
    }
    black_box(x)
}

/// Resident and virtual size of this process, in bytes (from /proc/self/statm).
pub(crate) fn self_memory() -> Result<(u64, u64), ProbeError> {
    let statm = std::fs::read_to_string("/proc/self/statm").map_err(ProbeError::Proc)?;
    parse_statm(&statm)
        .ok_or_else(|| ProbeError::Measure(format!("unexpected /proc/self/statm: {statm:?}")))
}

/// Resident size in bytes of process `pid`.
pub(crate) fn process_rss(pid: u32) -> Result<u64, ProbeError> {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).map_err(ProbeError::Proc)?;
    Ok(parse_statm(&statm)
        .ok_or_else(|| ProbeError::Measure(format!("unexpected /proc/{pid}/statm: {statm:?}")))?
        .0)
}

fn parse_statm(statm: &str) -> Option<(u64, u64)> {
    let page = rustix::param::page_size() as u64;
    let mut it = statm.split_whitespace();
    let size: u64 = it.next()?.parse().ok()?;
    let resident: u64 = it.next()?.parse().ok()?;
    Some((resident * page, size * page))
}

/// Memory per idle unit, as a helper reports it.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(crate) struct PerUnit {
    /// Resident bytes per unit.
    pub(crate) rss: f64,
}

/// Starts `n` threads (default stack), waits until every one is blocked, and reports the growth of
/// this process's memory per thread.
pub(crate) fn idle_threads(n: u64) -> Result<PerUnit, ProbeError> {
    let (rss0, _) = self_memory()?;
    let started = Arc::new(Barrier::new(n as usize + 1));
    let gate = Arc::new((Mutex::new(false), Condvar::new()));
    let mut handles = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let started = Arc::clone(&started);
        let gate = Arc::clone(&gate);
        let handle = std::thread::Builder::new()
            .spawn(move || {
                started.wait();
                let (open, cv) = &*gate;
                let mut open = open.lock().unwrap_or_else(|p| p.into_inner());
                while !*open {
                    open = cv.wait(open).unwrap_or_else(|p| p.into_inner());
                }
            })
            .map_err(|e| {
                ProbeError::Limit(format!("could not start thread {}: {e}", handles.len() + 1))
            });
        match handle {
            Ok(h) => handles.push(h),
            Err(e) => {
                // The started threads wait at the barrier for the ones that never came: release
                // them by exiting; the process ends here.
                return Err(e);
            }
        }
    }
    started.wait();
    let (rss1, _) = self_memory()?;
    {
        let (open, cv) = &*gate;
        *open.lock().unwrap_or_else(|p| p.into_inner()) = true;
        cv.notify_all();
    }
    for h in handles {
        let _ = h.join();
    }
    Ok(PerUnit {
        rss: rss1.saturating_sub(rss0) as f64 / n as f64,
    })
}

fn current_thread_runtime() -> Result<tokio::runtime::Runtime, ProbeError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .map_err(ProbeError::Runtime)
}

/// Spawns `n` tokio tasks on the current runtime that each wait on one gate and then sleep for
/// `then`, and returns once every one of them is waiting: open the gate with `notify_waiters`.
async fn park_tasks(
    n: u64,
    then: Duration,
) -> (Arc<tokio::sync::Notify>, Vec<tokio::task::JoinHandle<()>>) {
    let gate = Arc::new(tokio::sync::Notify::new());
    let parked = Arc::new(AtomicU64::new(0));
    let mut handles = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let gate = Arc::clone(&gate);
        let parked = Arc::clone(&parked);
        handles.push(tokio::spawn(async move {
            let opened = gate.notified();
            parked.fetch_add(1, Ordering::Relaxed);
            opened.await;
            if !then.is_zero() {
                tokio::time::sleep(then).await;
            }
        }));
    }
    while parked.load(Ordering::Relaxed) < n {
        tokio::task::yield_now().await;
    }
    (gate, handles)
}

/// Spawns `n` tokio tasks on one thread, runs them until each is suspended on a wait, and reports the
/// growth of this process's memory per task.
pub(crate) fn idle_async_tasks(n: u64) -> Result<PerUnit, ProbeError> {
    let rt = current_thread_runtime()?;
    rt.block_on(async move {
        let (rss0, _) = self_memory()?;
        let (gate, handles) = park_tasks(n, Duration::ZERO).await;
        let (rss1, _) = self_memory()?;
        gate.notify_waiters();
        for h in handles {
            let _ = h.await;
        }
        Ok(PerUnit {
            rss: rss1.saturating_sub(rss0) as f64 / n as f64,
        })
    })
}

/// Spawns `n` tasks on a martelli event-loop pool (`Pool::event_loop`), waits until each is suspended
/// on a wait, and reports the growth of this process's memory per task: tokio's task plus martelli's
/// future, cancel token and driver.
pub(crate) fn idle_event_loop_tasks(n: u64) -> Result<PerUnit, ProbeError> {
    let pool = Pool::event_loop().map_err(ProbeError::Pool)?;
    let (rss0, _) = self_memory()?;
    let gate = Arc::new(tokio::sync::Notify::new());
    let parked = Arc::new(AtomicU64::new(0));
    let (all_parked, on_all_parked) = std::sync::mpsc::channel::<()>();
    let mut futures = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let gate = Arc::clone(&gate);
        let parked = Arc::clone(&parked);
        let all_parked = all_parked.clone();
        let future = pool
            .submit_async(async move {
                let opened = gate.notified();
                let mut opened = std::pin::pin!(opened);
                // Registered before it is counted: the gate cannot open between the two.
                opened.as_mut().enable();
                if parked.fetch_add(1, Ordering::AcqRel) + 1 == n {
                    let _ = all_parked.send(());
                }
                opened.await;
            })
            .map_err(ProbeError::Pool)?;
        futures.push(future);
    }
    drop(all_parked);
    on_all_parked
        .recv()
        .map_err(|_| ProbeError::Measure("event-loop tasks ended before all were parked".into()))?;
    let (rss1, _) = self_memory()?;
    gate.notify_waiters();
    for f in futures {
        f.wait()
            .map_err(|e| ProbeError::Measure(format!("an event-loop task failed: {e}")))?;
    }
    Ok(PerUnit {
        rss: rss1.saturating_sub(rss0) as f64 / n as f64,
    })
}

/// Where the units of the threaded I/O job gather before their waits begin.
///
/// Each arrival wakes the coordinator only (never the parked units), and the gate opens as a relay:
/// the coordinator wakes one unit, and every unit that passes wakes the next. At most a few units
/// are runnable at any moment, and their waits start (and so end) spread over the time the cores
/// need to run them anyway. Waking all n at once (or, worse, on every arrival) left hundreds or
/// thousands of threads runnable together and pushed the machine's load average up for minutes, so
/// that the next probe saw a busy machine.
#[derive(Debug, Default)]
struct Gate {
    state: Mutex<GateState>,
    all_here: Condvar,
    opened: Condvar,
    /// How many times a parked unit woke up: about one per unit.
    wakeups: AtomicU64,
}

#[derive(Debug, Default)]
struct GateState {
    arrived: u64,
    open: bool,
}

impl Gate {
    /// A unit arrives and waits until the gate is open, then passes the relay on.
    fn pass(&self) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.arrived += 1;
        self.all_here.notify_one();
        while !s.open {
            s = self.opened.wait(s).unwrap_or_else(|p| p.into_inner());
            self.wakeups.fetch_add(1, Ordering::Relaxed);
        }
        drop(s);
        self.opened.notify_one();
    }

    /// Waits until `n` units have arrived.
    fn wait_for(&self, n: u64) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        while s.arrived < n {
            s = self.all_here.wait(s).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Opens the gate: wakes the first unit of the relay.
    fn open(&self) {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).open = true;
        self.opened.notify_one();
    }
}

/// Which side of the I/O curve a run is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IoKind {
    /// A martelli thread pool with one worker per wait.
    Threads,
    /// tokio tasks on one thread.
    Async,
}

/// One run of the I/O-bound job, as a helper reports it.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(crate) struct IoRun {
    /// Wall time from start to the last wait's end, workers started and joined, in ms.
    pub(crate) wall_ms: f64,
    /// Growth of the resident set while every wait was pending, in bytes.
    pub(crate) rss_delta: f64,
}

/// The I/O-bound job: `n` concurrent waits of `wait_ms` each. Every unit first parks at a gate; when
/// all `n` are parked (all concurrent, memory read), the gate opens and each waits `wait_ms`.
pub(crate) fn io_run(kind: IoKind, n: u64, wait_ms: u64) -> Result<IoRun, ProbeError> {
    let wait = Duration::from_millis(wait_ms);
    match kind {
        IoKind::Threads => {
            let (rss0, _) = self_memory()?;
            let start = Instant::now();
            let workers = usize::try_from(n).unwrap_or(usize::MAX);
            let pool = Pool::builder()
                .threads(workers)
                .name_prefix("probe-io")
                .build()
                .map_err(|e| ProbeError::Limit(format!("a pool of {n} threads: {e}")))?;
            let gate = Arc::new(Gate::default());
            let mut futures = Vec::with_capacity(workers);
            for _ in 0..n {
                let gate = Arc::clone(&gate);
                let future = pool
                    .submit(move || {
                        gate.pass();
                        std::thread::sleep(wait);
                    })
                    .map_err(|e| ProbeError::Measure(format!("submit to the I/O pool: {e}")))?;
                futures.push(future);
            }
            gate.wait_for(n);
            let (rss1, _) = self_memory()?;
            gate.open();
            for f in futures {
                f.wait()
                    .map_err(|e| ProbeError::Measure(format!("an I/O task failed: {e}")))?;
            }
            drop(pool);
            Ok(IoRun {
                wall_ms: start.elapsed().as_secs_f64() * 1e3,
                rss_delta: rss1.saturating_sub(rss0) as f64,
            })
        }
        IoKind::Async => {
            let rt = current_thread_runtime()?;
            rt.block_on(async move {
                let (rss0, _) = self_memory()?;
                let start = Instant::now();
                let (gate, handles) = park_tasks(n, wait).await;
                let (rss1, _) = self_memory()?;
                gate.notify_waiters();
                for h in handles {
                    h.await.map_err(|e| {
                        ProbeError::Measure(format!("an async I/O task failed: {e}"))
                    })?;
                }
                Ok(IoRun {
                    wall_ms: start.elapsed().as_secs_f64() * 1e3,
                    rss_delta: rss1.saturating_sub(rss0) as f64,
                })
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spin_is_deterministic_and_not_trivial() {
        assert_eq!(spin(1000), spin(1000));
        assert_ne!(spin(1000), spin(1001));
    }

    #[test]
    fn statm_parses() {
        let page = rustix::param::page_size() as u64;
        assert_eq!(
            parse_statm("100 20 5 1 0 30 0\n"),
            Some((20 * page, 100 * page))
        );
        assert_eq!(parse_statm("oops"), None);
    }

    #[test]
    fn io_runs_wait_at_least_the_wait() {
        for kind in [IoKind::Threads, IoKind::Async] {
            let run = io_run(kind, 8, 5).expect("an I/O run of 8 waits");
            assert!(run.wall_ms >= 5.0, "{kind:?}: {run:?}");
        }
    }

    #[test]
    fn the_gate_wakes_each_unit_about_once() {
        // Regression: the gate used to notify every parked unit on every arrival, up to n²/2
        // wake-ups, which kept hundreds of threads runnable at once on a loaded machine.
        let n = 200;
        let gate = Arc::new(Gate::default());
        let units: Vec<_> = (0..n)
            .map(|_| {
                let gate = Arc::clone(&gate);
                std::thread::spawn(move || gate.pass())
            })
            .collect();
        gate.wait_for(n);
        gate.open();
        for unit in units {
            unit.join().expect("a unit passes the gate");
        }
        let wakeups = gate.wakeups.load(Ordering::Relaxed);
        // One wake-up per parked unit, plus a few spurious ones at most.
        assert!(wakeups <= 2 * n, "{wakeups} wake-ups for {n} units");
    }

    #[test]
    fn idle_units_report_memory() {
        let t = idle_threads(8).expect("8 idle threads");
        // Each thread touches at least one page of its stack.
        assert!(t.rss >= 4096.0, "{t:?}");
        let a = idle_async_tasks(1000).expect("1000 idle tasks");
        assert!(a.rss >= 0.0 && a.rss.is_finite(), "{a:?}");
        let e = idle_event_loop_tasks(1000).expect("1000 idle event-loop tasks");
        assert!(e.rss >= 0.0 && e.rss.is_finite(), "{e:?}");
    }
}
