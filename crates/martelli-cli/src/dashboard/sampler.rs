//! The sampler: one thread that reads the broker once per interval, however many pages are open.
//!
//! Each reading becomes a [`Sample`] in a ring of fixed capacity (the charts' history, kept here so
//! that it survives a page reload) and a [`Tick`] broadcast to every open page as a server-sent
//! event. Between readings the sampler turns counters into rates: tasks submitted per second (the
//! streams' entries added), tasks done per second (entries that left the streams: acknowledged or
//! dead-lettered), and an estimate of the mean time a task spends in the queue by Little's law
//! (tasks in the queue ÷ tasks done per second).
//!
//! It also remembers the workers it has seen ([`WorkerBook`]): a worker's heartbeat expires a lease
//! after it dies, so only the dashboard can say that it is gone, and since when.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Context;
use martelli::cluster::{DEFAULT_QUEUE, Inspector, Reading, WorkerStatus};
use serde::Serialize;
use tokio::sync::broadcast;

use super::Settings;

/// How often the queues under the prefix are looked for again (one `SCAN` of the key space).
const DISCOVERY: Duration = Duration::from_secs(10);

/// How long a gone worker is remembered.
const FORGET_GONE_MS: u64 = 3600 * 1000;

/// The most workers remembered (gone ones are forgotten first, oldest first).
const MAX_WORKERS: usize = 2000;

/// One reading of every queue, as the charts and tables use it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Sample {
    /// When it was read (Unix ms).
    pub(crate) at_ms: u64,
    pub(crate) queues: Vec<QueuePoint>,
}

/// One queue in a [`Sample`].
#[derive(Debug, Clone, Serialize)]
pub(crate) struct QueuePoint {
    pub(crate) name: String,
    pub(crate) waiting: u64,
    pub(crate) held: u64,
    pub(crate) delayed: u64,
    pub(crate) dead: u64,
    /// Per priority, highest first: `[waiting, held]`.
    pub(crate) streams: Vec<[u64; 2]>,
    /// Tasks added per second since the previous sample.
    pub(crate) submitted_per_s: Option<f64>,
    /// Tasks that left the streams per second since the previous sample.
    pub(crate) completed_per_s: Option<f64>,
    /// How long the oldest waiting task has waited (ms).
    pub(crate) oldest_waiting_ms: Option<u64>,
    /// Little's law: (waiting + held) ÷ completed per second, in ms.
    pub(crate) mean_in_queue_ms: Option<f64>,
}

/// A worker as the page shows it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct WorkerRow {
    pub(crate) consumer: String,
    /// The host (or `--name`) part of the consumer name.
    pub(crate) host: String,
    pub(crate) pid: Option<u64>,
    pub(crate) queue: Option<String>,
    pub(crate) concurrency: Option<u64>,
    pub(crate) held: u64,
    pub(crate) succeeded: u64,
    pub(crate) failed: u64,
    pub(crate) dead_lettered: u64,
    pub(crate) alive: bool,
    /// Alive: when the dashboard first saw it alive. Gone: its last heartbeat, or when the
    /// dashboard last saw it.
    pub(crate) since_ms: u64,
    /// Its last heartbeat (Unix ms), when it has had one.
    pub(crate) last_seen_ms: Option<u64>,
    /// True when it was alive in the dashboard's first reading (so it was alive before `since`).
    pub(crate) before_start: bool,
}

/// What every open page receives once per interval.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Tick<'a> {
    pub(crate) sample: Option<&'a Sample>,
    pub(crate) workers: &'a [WorkerRow],
    /// The broker's error, while it fails.
    pub(crate) error: Option<&'a str>,
}

/// What the sampler shares with the server.
#[derive(Debug)]
pub(crate) struct Shared {
    live: Mutex<Live>,
    events: broadcast::Sender<Arc<str>>,
    pub(crate) interval: Duration,
    pub(crate) capacity: usize,
}

#[derive(Debug, Default)]
struct Live {
    ring: VecDeque<Sample>,
    workers: Vec<WorkerRow>,
    error: Option<String>,
    /// The latest tick as sent, for a page that connects between two.
    last_event: Option<Arc<str>>,
}

/// The history a page loads when it opens.
#[derive(Debug, Serialize)]
pub(crate) struct History<'a> {
    pub(crate) interval_ms: u64,
    pub(crate) capacity: usize,
    pub(crate) samples: &'a VecDeque<Sample>,
    pub(crate) workers: &'a [WorkerRow],
    pub(crate) error: Option<&'a str>,
}

impl Shared {
    pub(crate) fn new(capacity: usize, interval: Duration) -> Shared {
        // A page that falls this many ticks behind skips to the newest.
        let (events, _) = broadcast::channel(16);
        Shared {
            live: Mutex::new(Live::default()),
            events,
            interval,
            capacity,
        }
    }

    fn live(&self) -> std::sync::MutexGuard<'_, Live> {
        self.live.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The history as JSON.
    pub(crate) fn history_json(&self) -> String {
        let live = self.live();
        serde_json::to_string(&History {
            interval_ms: u64::try_from(self.interval.as_millis()).unwrap_or(u64::MAX),
            capacity: self.capacity,
            samples: &live.ring,
            workers: &live.workers,
            error: live.error.as_deref(),
        })
        .unwrap_or_else(|e| format!("{{\"error\":\"cannot encode the history: {e}\"}}"))
    }

    /// The latest tick, and a receiver of the ticks after it.
    pub(crate) fn subscribe(&self) -> (Option<Arc<str>>, broadcast::Receiver<Arc<str>>) {
        let live = self.live();
        (live.last_event.clone(), self.events.subscribe())
    }

    /// Records a reading (or the broker's error) and sends it to the pages.
    fn publish(
        &self,
        sample: Option<Sample>,
        workers: Option<Vec<WorkerRow>>,
        error: Option<String>,
    ) {
        let mut live = self.live();
        if let Some(sample) = sample {
            if live.ring.len() == self.capacity {
                live.ring.pop_front();
            }
            live.ring.push_back(sample);
        }
        if let Some(workers) = workers {
            live.workers = workers;
        }
        live.error = error;
        let tick = Tick {
            sample: live.ring.back(),
            workers: &live.workers,
            error: live.error.as_deref(),
        };
        let Ok(json) = serde_json::to_string(&tick) else {
            return;
        };
        let json: Arc<str> = json.into();
        live.last_event = Some(Arc::clone(&json));
        // No page open is no error.
        let _ = self.events.send(json);
    }
}

/// Stops the sampler's thread when told (or dropped).
#[derive(Debug)]
pub(crate) struct StopSampler {
    stop: mpsc::Sender<()>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl StopSampler {
    /// Stops the thread and waits for it (at most one reading).
    pub(crate) fn stop(mut self) {
        let _ = self.stop.send(());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Starts the sampler's thread; its first reading is taken at once.
pub(crate) fn start(
    inspector: Inspector,
    settings: &Settings,
    shared: Arc<Shared>,
) -> anyhow::Result<StopSampler> {
    let (stop, stopped) = mpsc::channel();
    let mut sampler = Sampler {
        inspector,
        configured: settings.queues.clone(),
        queues: settings.queues.iter().cloned().collect(),
        discovered_at: None,
        previous: HashMap::new(),
        book: WorkerBook::default(),
        shared,
    };
    let interval = settings.interval;
    let thread = std::thread::Builder::new()
        .name("martelli-dashboard-sampler".into())
        .spawn(move || {
            loop {
                let started = Instant::now();
                sampler.tick();
                let pause = interval.saturating_sub(started.elapsed());
                match stopped.recv_timeout(pause) {
                    Err(RecvTimeoutError::Timeout) => {}
                    Ok(()) | Err(RecvTimeoutError::Disconnected) => break,
                }
            }
        })
        .context("cannot start the dashboard's sampler thread")?;
    Ok(StopSampler {
        stop,
        thread: Some(thread),
    })
}

struct Sampler {
    inspector: Inspector,
    configured: Vec<String>,
    queues: BTreeSet<String>,
    discovered_at: Option<Instant>,
    /// Per queue: the previous sample's time, entries added and entries done.
    previous: HashMap<String, (u64, u64, u64)>,
    book: WorkerBook,
    shared: Arc<Shared>,
}

impl Sampler {
    fn tick(&mut self) {
        match self.read() {
            Ok(reading) => {
                let sample = self.sample(&reading);
                let seen = reading
                    .workers
                    .iter()
                    .map(|w| row_of(w, reading.at_ms))
                    .collect();
                let workers = self.book.update(seen, reading.at_ms);
                for w in &reading.workers {
                    if let Some(q) = &w.queue {
                        self.queues.insert(q.clone());
                    }
                }
                self.shared.publish(Some(sample), Some(workers), None);
            }
            Err(e) => {
                let message = format!("cannot read the broker: {e}");
                self.shared.publish(None, None, Some(message));
            }
        }
    }

    fn read(&mut self) -> Result<Reading, martelli::cluster::ClusterError> {
        if self
            .discovered_at
            .is_none_or(|at| at.elapsed() >= DISCOVERY)
        {
            let found = self.inspector.queues()?;
            self.queues.extend(found);
            self.queues.extend(self.configured.iter().cloned());
            self.discovered_at = Some(Instant::now());
        }
        if self.queues.is_empty() {
            self.queues.insert(DEFAULT_QUEUE.to_owned());
        }
        let queues: Vec<String> = self.queues.iter().cloned().collect();
        self.inspector.reading(&queues)
    }

    fn sample(&mut self, reading: &Reading) -> Sample {
        let at = reading.at_ms;
        let queues = reading
            .queues
            .iter()
            .map(|q| {
                let s = &q.status;
                let added: u64 = s.streams.iter().map(|st| st.entries_added).sum();
                let done = added.saturating_sub(s.waiting + s.held);
                let rates = self
                    .previous
                    .insert(s.name.clone(), (at, added, done))
                    .and_then(|(then, added0, done0)| {
                        let secs = at.checked_sub(then).filter(|ms| *ms > 0)? as f64 / 1e3;
                        let submitted = added.checked_sub(added0)? as f64 / secs;
                        let completed = done.checked_sub(done0)? as f64 / secs;
                        Some((submitted, completed))
                    });
                let in_queue = (s.waiting + s.held) as f64;
                QueuePoint {
                    name: s.name.clone(),
                    waiting: s.waiting,
                    held: s.held,
                    delayed: s.delayed,
                    dead: s.dead,
                    streams: s.streams.iter().map(|st| [st.waiting, st.held]).collect(),
                    submitted_per_s: rates.map(|r| r.0),
                    completed_per_s: rates.map(|r| r.1),
                    oldest_waiting_ms: q.oldest_waiting_ms,
                    mean_in_queue_ms: rates.filter(|r| r.1 > 0.0).map(|r| in_queue / r.1 * 1e3),
                }
            })
            .collect();
        Sample { at_ms: at, queues }
    }
}

/// The workers the dashboard has seen, alive or gone.
#[derive(Debug, Default)]
pub(crate) struct WorkerBook {
    rows: HashMap<String, WorkerRow>,
    readings: u64,
}

impl WorkerBook {
    /// Takes in one reading of the heartbeats (taken at `now`, each as [`row_of`] makes it) and
    /// returns every row, alive ones first, each group by consumer name.
    pub(crate) fn update(&mut self, seen: Vec<WorkerRow>, now: u64) -> Vec<WorkerRow> {
        let first = self.readings == 0;
        self.readings += 1;
        let mut present = BTreeSet::new();
        for w in seen {
            present.insert(w.consumer.clone());
            let Some(row) = self.rows.get_mut(&w.consumer) else {
                let since = if w.alive {
                    now
                } else {
                    w.last_seen_ms.unwrap_or(now)
                };
                let row = WorkerRow {
                    since_ms: since,
                    before_start: first && w.alive,
                    ..w
                };
                self.rows.insert(row.consumer.clone(), row);
                continue;
            };
            if w.alive != row.alive {
                row.since_ms = if w.alive {
                    now
                } else {
                    w.last_seen_ms.or(row.last_seen_ms).unwrap_or(now)
                };
            }
            row.alive = w.alive;
            row.pid = w.pid.or(row.pid);
            row.queue = w.queue.or(row.queue.take());
            row.concurrency = w.concurrency.or(row.concurrency);
            row.held = w.held;
            row.succeeded = w.succeeded;
            row.failed = w.failed;
            row.dead_lettered = w.dead_lettered;
            row.last_seen_ms = w.last_seen_ms.or(row.last_seen_ms);
        }
        for row in self.rows.values_mut() {
            if row.alive && !present.contains(&row.consumer) {
                // Its heartbeat is gone: it stopped (and deleted it) or it expired.
                row.alive = false;
                row.held = 0;
                row.since_ms = row.last_seen_ms.unwrap_or(now);
            }
        }
        self.rows
            .retain(|_, r| r.alive || now.saturating_sub(r.since_ms) < FORGET_GONE_MS);
        if self.rows.len() > MAX_WORKERS {
            let mut gone: Vec<(u64, String)> = self
                .rows
                .values()
                .filter(|r| !r.alive)
                .map(|r| (r.since_ms, r.consumer.clone()))
                .collect();
            gone.sort();
            let excess = self.rows.len() - MAX_WORKERS;
            for (_, name) in gone.into_iter().take(excess) {
                self.rows.remove(&name);
            }
        }
        let mut rows: Vec<WorkerRow> = self.rows.values().cloned().collect();
        rows.sort_by(|a, b| {
            b.alive
                .cmp(&a.alive)
                .then_with(|| a.consumer.cmp(&b.consumer))
        });
        rows
    }
}

/// A worker's row as one reading shows it (`since_ms` and `before_start` are the book's).
pub(crate) fn row_of(w: &WorkerStatus, now: u64) -> WorkerRow {
    WorkerRow {
        consumer: w.consumer.clone(),
        host: host_of(&w.consumer).to_owned(),
        pid: w.pid,
        queue: w.queue.clone(),
        concurrency: w.concurrency,
        held: w.held,
        succeeded: w.succeeded,
        failed: w.failed,
        dead_lettered: w.dead_lettered,
        alive: w.alive,
        since_ms: now,
        last_seen_ms: w.heartbeat_age_ms.map(|age| now.saturating_sub(age)),
        before_start: false,
    }
}

/// The host part of a consumer name `<host or name>-<pid>-<8 hex>`; the whole name otherwise.
pub(crate) fn host_of(consumer: &str) -> &str {
    let mut parts = consumer.rsplitn(3, '-');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(random), Some(pid), Some(host))
            if random.len() == 8
                && random.bytes().all(|b| b.is_ascii_hexdigit())
                && !pid.is_empty()
                && pid.bytes().all(|b| b.is_ascii_digit())
                && !host.is_empty() =>
        {
            host
        }
        _ => consumer,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(consumer: &str, alive: bool, last_seen_ms: Option<u64>) -> WorkerRow {
        WorkerRow {
            consumer: consumer.to_owned(),
            host: host_of(consumer).to_owned(),
            pid: Some(42),
            queue: Some("default".to_owned()),
            concurrency: Some(4),
            held: 1,
            succeeded: 7,
            failed: 0,
            dead_lettered: 0,
            alive,
            since_ms: 0,
            last_seen_ms,
            before_start: false,
        }
    }

    #[test]
    fn hosts_come_from_consumer_names() {
        assert_eq!(host_of("node1-41822-9c0e1d2a"), "node1");
        assert_eq!(host_of("build-box-7-12-0123abcd"), "build-box-7");
        assert_eq!(host_of("plain"), "plain");
        assert_eq!(host_of("a-b-c"), "a-b-c");
    }

    #[test]
    fn workers_that_die_or_vanish_are_gone_since_their_last_heartbeat() {
        let mut book = WorkerBook::default();
        let rows = book.update(vec![seen("n1-1-0000000a", true, Some(9_900))], 10_000);
        assert!(rows[0].alive && rows[0].before_start);
        assert_eq!(rows[0].host, "n1");
        // Its heartbeat goes stale: gone since the last one.
        let rows = book.update(vec![seen("n1-1-0000000a", false, Some(9_500))], 11_000);
        assert!(!rows[0].alive);
        assert_eq!(rows[0].since_ms, 9_500);
        // A new worker appears; the old one's heartbeat expires and it stays listed as gone.
        let rows = book.update(vec![seen("n2-2-0000000b", true, Some(12_000))], 12_000);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].consumer, "n2-2-0000000b");
        assert!(rows[0].alive && !rows[0].before_start);
        assert_eq!(rows[0].since_ms, 12_000);
        assert!(!rows[1].alive);
        assert_eq!(rows[1].since_ms, 9_500);
        // A worker that stops cleanly deletes its heartbeat: gone since it was last seen.
        let rows = book.update(Vec::new(), 13_000);
        assert!(rows.iter().all(|r| !r.alive));
        assert_eq!(
            rows.iter().find(|r| r.host == "n2").unwrap().since_ms,
            12_000
        );
        // Gone workers are forgotten after an hour.
        assert!(book.update(Vec::new(), 13_000 + FORGET_GONE_MS).is_empty());
    }
}
