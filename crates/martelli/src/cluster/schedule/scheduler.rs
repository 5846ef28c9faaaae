//! The scheduler loop: look at the schedules due by the broker's clock, fire each with the fire
//! script, sleep until the next one (at most `max_sleep`).

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use redis::{Connection, RedisError};

use super::scripts::{FIRE_SCRIPT, PEEK_SCRIPT};
use super::{ScheduleError, SchedulerOptions, Stored, hash_key, index_key, task_id};
use crate::cluster::ClusterError;
use crate::cluster::conn::{Broker, is_connection_error};

/// How many due schedules one look takes at most.
const BATCH: usize = 100;

/// What a scheduler did, when it stops.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SchedulerReport {
    /// Ticks it fired (tasks it queued).
    pub fired: u64,
    /// Ticks it passed over (catch-up `skip`, or a disabled schedule).
    pub skipped: u64,
    /// Ticks it found claimed by another scheduler first.
    pub taken: u64,
}

/// A scheduler running on a thread of its own: fires the schedules under a prefix until
/// [`stop`](Scheduler::stop). Any number may run against one broker; each tick fires once.
#[derive(Debug)]
pub struct Scheduler {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<SchedulerReport, ScheduleError>>>,
}

impl Scheduler {
    /// Connects (an unreachable broker, a wrong password or a Redis older than 7 is an error at
    /// once) and starts the scheduler's thread.
    pub fn start(url: &str, options: SchedulerOptions) -> Result<Scheduler, ScheduleError> {
        let broker = options.broker(url)?;
        let conn = broker.connect_checked()?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("martelli-scheduler".into())
            .spawn(move || run_loop(&broker, conn, &options, &flag))
            .map_err(|source| ClusterError::Setup {
                what: "scheduler thread",
                source,
            })?;
        Ok(Scheduler {
            stop,
            thread: Some(thread),
        })
    }

    /// Runs a scheduler on this thread until `stop` is set (within 100 ms of it).
    pub fn run(
        url: &str,
        options: &SchedulerOptions,
        stop: &AtomicBool,
    ) -> Result<SchedulerReport, ScheduleError> {
        let broker = options.broker(url)?;
        let conn = broker.connect_checked()?;
        run_loop(&broker, conn, options, stop)
    }

    /// Asks the scheduler to stop; [`join`](Scheduler::join) waits for it.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = &self.thread {
            thread.thread().unpark();
        }
    }

    /// Waits for the scheduler to stop (call [`stop`](Scheduler::stop) first).
    pub fn join(mut self) -> Result<SchedulerReport, ScheduleError> {
        match self.thread.take() {
            Some(thread) => thread
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
            None => Ok(SchedulerReport::default()),
        }
    }
}

impl Drop for Scheduler {
    /// Stops the scheduler without waiting for it (it ends within a moment).
    fn drop(&mut self) {
        self.stop();
    }
}

/// Sleeps `d`, waking for `stop` within 100 ms (at once for [`Scheduler::stop`], which unparks).
fn sleep(d: Duration, stop: &AtomicBool) {
    let end = Instant::now() + d;
    loop {
        if stop.load(Ordering::Acquire) {
            return;
        }
        let now = Instant::now();
        if now >= end {
            return;
        }
        std::thread::park_timeout((end - now).min(Duration::from_millis(100)));
    }
}

fn run_loop(
    broker: &Broker,
    mut conn: Connection,
    options: &SchedulerOptions,
    stop: &AtomicBool,
) -> Result<SchedulerReport, ScheduleError> {
    let mut state = LoopState {
        report: SchedulerReport::default(),
        warned: HashSet::new(),
    };
    while !stop.load(Ordering::Acquire) {
        match look(&mut conn, options, stop, &mut state) {
            Ok(pause) => sleep(pause, stop),
            Err(error) if is_connection_error(&error) => {
                match broker.reconnect(stop, "scheduler") {
                    Some(new) => conn = new,
                    None => break,
                }
            }
            Err(error) => {
                // A broker that refuses a command (a script error, a user without rights):
                // said once, tried again after a pause.
                if state.warned.insert(format!("error {error}")) {
                    eprintln!("martelli scheduler: the broker refused a command: {error}");
                }
                sleep(options.max_sleep, stop);
            }
        }
    }
    Ok(state.report)
}

struct LoopState {
    report: SchedulerReport,
    /// What was reported on stderr already (said once each).
    warned: HashSet<String>,
}

/// One look: fires what is due; returns how long to sleep.
fn look(
    conn: &mut Connection,
    options: &SchedulerOptions,
    stop: &AtomicBool,
    state: &mut LoopState,
) -> Result<Duration, RedisError> {
    let prefix = &options.prefix;
    let index = index_key(prefix);
    let (now, due, later): (u64, Vec<String>, i64) = redis::Script::new(PEEK_SCRIPT)
        .key(&index)
        .arg(BATCH)
        .invoke(conn)?;
    let mut progress = false;
    for name in &due {
        if stop.load(Ordering::Acquire) {
            break;
        }
        let stored = match Stored::read(conn, prefix, name) {
            Ok(Some(stored)) => stored,
            Ok(None) => continue,
            Err(ScheduleError::Cluster(ClusterError::Broker { source, .. })) => return Err(source),
            Err(error) => {
                if state.warned.insert(name.clone()) {
                    eprintln!("martelli scheduler: schedule {name:?} left alone: {error}");
                }
                continue;
            }
        };
        let ticks = stored.timing.ticks(now);
        let (Some(tick), Some(next)) = (ticks.due, ticks.next) else {
            if state.warned.insert(name.clone()) {
                eprintln!(
                    "martelli scheduler: schedule {name:?} left alone: {} has no tick around now",
                    stored.timing
                );
            }
            continue;
        };
        let id = task_id(name, tick);
        let (outcome, _at): (String, u64) = redis::Script::new(FIRE_SCRIPT)
            .key(hash_key(prefix, name))
            .key(&index)
            .key(&stored.stream)
            .key(format!("{prefix}:task:{id}"))
            .arg(name)
            .arg(&stored.rev)
            .arg(tick)
            .arg(ticks.prev.map(|p| p.to_string()).unwrap_or_default())
            .arg(next)
            .arg(&id)
            .invoke(conn)?;
        match outcome.as_str() {
            "fired" => {
                state.report.fired += 1;
                progress = true;
                if !options.quiet {
                    eprintln!("martelli scheduler: {name}: queued task {id}");
                }
            }
            "skipped" | "disabled" => {
                state.report.skipped += 1;
                progress = true;
            }
            "taken" => {
                state.report.taken += 1;
                progress = true;
            }
            "changed" => progress = true,
            _ => {}
        }
    }
    if progress {
        // Look again at once: the fired schedules now have their next tick as their score.
        return Ok(Duration::ZERO);
    }
    let until_next = u64::try_from(later)
        .ok()
        .map(|later| Duration::from_millis(later.saturating_sub(now) + 1));
    Ok(until_next.map_or(options.max_sleep, |d| d.min(options.max_sleep)))
}
