//! The fetch thread: reads entries (never more than the free slots), renews leases, reclaims
//! entries whose lease expired, moves due delayed tasks, watches the tombstones of running tasks,
//! and at stop hands back what no executor has started.

use super::scripts::{FETCH_SCRIPT, PROMOTE_BATCH, PROMOTE_SCRIPT, Scripts};
use super::write::Write;
use super::{Held, Job, Shared, Watch, ensure_groups};
use crate::cancel::CancelToken;
use crate::cluster::conn::{self, Entry};
use crate::cluster::envelope::{ENTRY_FIELD, TaskEnvelope};
use crate::cluster::ratelimit::{RATE_SCRIPT, RateLimit};
use crate::cluster::{GROUP, reclaim, unix_ms};
use crossbeam_channel::Sender;
use redis::{Connection, RedisResult, Value};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Where the fetch thread sends what it fetched: jobs to the executors, outcomes to the writer.
struct Senders<'a> {
    jobs: &'a Sender<Job>,
    out: &'a Sender<Write>,
}

/// When the fetch thread next has maintenance to do, and how often.
struct Schedule {
    renew_at: Instant,
    reclaim_at: Instant,
    /// When idle consumers without a heartbeat are next swept from the group (once per lease).
    sweep_at: Instant,
    promote_at: Instant,
    /// When the tombstones of the tasks handed to the executors are next read (rule 5), with the
    /// next promotion at or after it.
    watch_at: Instant,
    renew_every: Duration,
    reclaim_every: Duration,
    promote_every: Duration,
    watch_every: Duration,
    /// Whether the queue's `cancels` key existed at the last look (fetch or promotion): only then
    /// are the tombstones of running tasks read.
    cancels: bool,
}

/// Why a task out of attempts is dead-lettered, saying where its attempts went: those spent before
/// its entry was written (the envelope's `attempts`, set by whoever queued it) and the earlier
/// deliveries of this entry, each of which ended with its worker no longer renewing the lease.
fn give_up_reason(envelope: &TaskEnvelope, deliveries: u32) -> String {
    let before = envelope.attempts;
    let lapsed = deliveries.saturating_sub(1);
    let mut spent = Vec::new();
    if before > 0 {
        spent.push(format!(
            "{before} spent before this entry was queued (its envelope's attempts field)"
        ));
    }
    if lapsed > 0 {
        spent.push(format!(
            "{lapsed} delivery(ies) of this entry whose worker stopped renewing its lease (it died, \
             hung, or lost the broker)"
        ));
    }
    format!(
        "gave up after {} attempt(s) (max_attempts = {}): {}",
        before.saturating_add(lapsed),
        envelope.max_attempts,
        spent.join(" and ")
    )
}

impl Shared {
    /// The fetch thread: takes tasks until stopped, then hands back what it has not started.
    pub(super) fn run(
        self: &Arc<Self>,
        mut conn: Connection,
        jobs: Sender<Job>,
        out: &Sender<Write>,
    ) {
        let to = Senders { jobs: &jobs, out };
        let scripts = Scripts {
            fetch: redis::Script::new(FETCH_SCRIPT),
            promote: redis::Script::new(PROMOTE_SCRIPT),
            reclaim: reclaim::script(),
        };
        let now = Instant::now();
        let promote_every = self.options.poll.min(Duration::from_millis(100));
        let mut schedule = Schedule {
            renew_at: now,
            reclaim_at: now,
            sweep_at: now + self.options.lease,
            promote_at: now,
            watch_at: now,
            renew_every: self.options.lease / 3,
            reclaim_every: (self.options.lease / 2).min(self.options.poll),
            promote_every,
            // Watching happens at a promotion, at most `promote_every` after `watch_at`: so the
            // tombstones of running tasks are read at least once per poll interval.
            watch_every: self
                .options
                .poll
                .saturating_sub(promote_every)
                .max(promote_every),
            cancels: false,
        };
        while !self.stopping() {
            if let Err(error) = self.step(&mut conn, &scripts, &mut schedule, &to) {
                // After a reconnect or a lost group (the broker may have restarted without
                // persistence), the heartbeat and the list of held tasks in it are written again
                // at once, so that clients looking for their tasks find them (see `lost.rs`).
                schedule.renew_at = Instant::now();
                if conn::is_nogroup(&error) {
                    // Redis restarted without persistence (or someone deleted the group): recreate it
                    // and go on, rather than failing on every read.
                    if let Err(error) = ensure_groups(&mut conn, &self.keys) {
                        eprintln!(
                            "martelli cluster worker {}: could not recreate the consumer group: {error}",
                            self.consumer
                        );
                        std::thread::sleep(self.options.poll);
                    }
                } else if conn::is_connection_error(&error) {
                    match self.broker.reconnect(&self.stop, "worker") {
                        Some(fresh) => conn = fresh,
                        None => break,
                    }
                } else {
                    eprintln!("martelli cluster worker {}: {error}", self.consumer);
                    std::thread::sleep(self.options.poll);
                }
            }
        }
        self.hand_back(jobs, out);
    }

    /// One round of the fetch thread: maintenance that is due, then one fetch (or a wait for a slot).
    fn step(
        self: &Arc<Self>,
        conn: &mut Connection,
        scripts: &Scripts,
        timers: &mut Schedule,
        to: &Senders<'_>,
    ) -> RedisResult<()> {
        let now = Instant::now();
        if now >= timers.renew_at {
            self.renew(conn)?;
            timers.renew_at = now + timers.renew_every;
        }
        if now >= timers.promote_at {
            self.promote(conn, scripts, timers, now)?;
        }
        let free = self.free();
        if free > 0 && now >= timers.reclaim_at {
            let sweep = now >= timers.sweep_at;
            self.reclaim(conn, &scripts.reclaim, free, sweep, to)?;
            timers.reclaim_at = now + timers.reclaim_every;
            if sweep {
                timers.sweep_at = now + self.options.lease;
            }
        }
        let next = timers
            .renew_at
            .min(timers.promote_at)
            .min(timers.reclaim_at);
        let free = self.free();
        if free == 0 {
            // Reclaiming waits for a free slot, and a freed slot wakes this wait: only renewals and
            // delayed tasks bound it.
            let until = timers.renew_at.min(timers.promote_at);
            let held = self.held.lock();
            if held.len() >= self.slots() && !self.stopping() {
                let wait = until.saturating_duration_since(Instant::now());
                let _held = self.slot_freed.wait_for(held, wait);
            }
            return Ok(());
        }
        let value: Value = scripts
            .fetch
            .key(&self.keys.streams[0])
            .key(&self.keys.streams[1])
            .key(&self.keys.streams[2])
            .key(self.keys.cancels())
            .arg(GROUP)
            .arg(&self.consumer)
            .arg(free)
            .invoke(conn)?;
        let reply = conn::array(&value);
        let tombstones = reply.first().and_then(conn::int).unwrap_or(1) != 0;
        timers.cancels = tombstones;
        let mut got = Vec::new();
        for item in reply.get(1).map_or(&[][..], conn::array) {
            if let Some((index, entry, _)) = Entry::parse_indexed(item) {
                got.push((index, entry, 1));
            }
        }
        if got.is_empty() {
            // A task that arrives during the blocking read was added after the script ran: its
            // tombstone, if any, comes after its XADD and is checked only when the script saw the
            // `cancels` key (a tombstone written after the fetch is not seen anyway; rule 4).
            // Nothing waiting: block until a task arrives, maintenance is due, or the poll ends.
            let block = next
                .saturating_duration_since(Instant::now())
                .min(self.options.poll)
                .max(Duration::from_millis(1));
            let value: Value = redis::cmd("XREADGROUP")
                .arg("GROUP")
                .arg(GROUP)
                .arg(&self.consumer)
                .arg("COUNT")
                .arg(1)
                .arg("BLOCK")
                .arg(u64::try_from(block.as_millis()).unwrap_or(u64::MAX))
                .arg("STREAMS")
                .arg(&self.keys.streams[..])
                .arg(&[">", ">", ">"][..])
                .query(conn)?;
            for stream in conn::array(&value) {
                let parts = conn::array(stream);
                let (Some(key), Some(entries)) = (parts.first(), parts.get(1)) else {
                    continue;
                };
                let key = conn::string(key).unwrap_or_default();
                let index = self
                    .keys
                    .streams
                    .iter()
                    .position(|s| *s == key)
                    .unwrap_or(1);
                for raw in conn::array(entries) {
                    if let Some(entry) = Entry::parse(raw) {
                        got.push((index, entry, 1));
                    }
                }
            }
        }
        self.dispatch(conn, got, tombstones, to)
    }

    fn free(&self) -> usize {
        self.slots().saturating_sub(self.held.lock().len())
    }

    /// Moves due delayed tasks to their stream; in the same script, learns whether the queue has
    /// cancellations and, when it had at the last look and a watch is due, reads the tombstones of
    /// the tasks handed to the executors and fires the tokens of those found (rule 5).
    fn promote(
        &self,
        conn: &mut Connection,
        scripts: &Scripts,
        timers: &mut Schedule,
        now: Instant,
    ) -> RedisResult<()> {
        let watched = if timers.cancels && now >= timers.watch_at {
            timers.watch_at = now + timers.watch_every;
            self.watched()
        } else {
            Vec::new()
        };
        let mut invocation = scripts.promote.key(&self.keys.delayed);
        invocation
            .key(&self.keys.streams[0])
            .key(&self.keys.streams[1])
            .key(&self.keys.streams[2])
            .key(self.keys.cancels())
            .key(self.keys.rate_limits());
        for (id, _) in &watched {
            invocation.key(self.keys.tombstone(id));
        }
        let value: Value = invocation
            .arg(unix_ms())
            .arg(PROMOTE_BATCH)
            .arg(ENTRY_FIELD)
            .invoke(conn)?;
        timers.promote_at = now + timers.promote_every;
        let reply = conn::array(&value);
        timers.cancels = reply.get(1).and_then(conn::int).unwrap_or(0) != 0;
        let found = reply.get(2).map_or(&[][..], conn::array);
        for position in found.iter().filter_map(conn::int) {
            let index = usize::try_from(position - 1).ok();
            if let Some((_, token)) = index.and_then(|i| watched.get(i)) {
                token.cancel();
            }
        }
        // The rate limits, `{name, COUNT/PERIOD_MS, ...}`; a value this build cannot read is left
        // out (and said once per change).
        let mut limits = HashMap::new();
        for pair in reply.get(3).map_or(&[][..], conn::array).chunks(2) {
            let (Some(name), Some(value)) = (
                pair.first().and_then(conn::string),
                pair.get(1).and_then(conn::string),
            ) else {
                continue;
            };
            match value.parse::<RateLimit>() {
                Ok(limit) => {
                    limits.insert(name, limit.interval_us());
                }
                Err(error) => {
                    let mut said = self.bad_limits.lock();
                    if said.insert(format!("{name}={value}")) {
                        eprintln!(
                            "martelli cluster worker {}: ignoring the rate limit of task {name:?} \
                             in {}: {error}",
                            self.consumer,
                            self.keys.rate_limits()
                        );
                    }
                }
            }
        }
        *self.limits.lock() = limits;
        Ok(())
    }

    /// Reserves a start time for each job whose task name has a rate limit (see `ratelimit.rs`),
    /// in one script call: returns the jobs that may start now, and the writes that put the others
    /// in the delayed set until their time, with it in their envelope (`slot`).
    fn reserve(
        &self,
        conn: &mut Connection,
        jobs: Vec<Job>,
    ) -> (Vec<Job>, Vec<Write>, RedisResult<()>) {
        let limited: Vec<(usize, u64)> = {
            let limits = self.limits.lock();
            if limits.is_empty() {
                return (jobs, Vec::new(), Ok(()));
            }
            jobs.iter()
                .enumerate()
                .filter(|(_, job)| job.envelope.slot.is_none())
                .filter_map(|(i, job)| limits.get(&job.envelope.task).map(|us| (i, *us)))
                .collect()
        };
        if limited.is_empty() {
            return (jobs, Vec::new(), Ok(()));
        }
        let script = redis::Script::new(RATE_SCRIPT);
        let mut invocation = script.prepare_invoke();
        for (i, interval) in &limited {
            invocation
                .key(self.keys.rate(&jobs[*i].envelope.task))
                .arg(*interval);
        }
        let waits: Vec<u64> = match invocation.invoke(conn) {
            Ok(waits) => waits,
            // The broker could not reserve: the tasks run now (the error is reported and the
            // fetch thread reconnects); a limit is kept while the broker answers.
            Err(error) => return (jobs, Vec::new(), Err(error)),
        };
        let mut wait_of = vec![0u64; jobs.len()];
        for ((i, _), wait) in limited.iter().zip(waits) {
            wait_of[*i] = wait;
        }
        let now = unix_ms();
        let mut run = Vec::with_capacity(jobs.len());
        let mut later = Vec::new();
        for (job, wait) in jobs.into_iter().zip(wait_of) {
            if wait == 0 {
                run.push(job);
                continue;
            }
            let due = now.saturating_add(wait);
            let mut envelope = job.envelope;
            envelope.slot = Some(due);
            // This delivery did not run the task: it does not count as an attempt.
            envelope.attempts = job.attempt.saturating_sub(1);
            match envelope.encode() {
                Ok(bytes) => {
                    let mut member = Vec::with_capacity(bytes.len() + 1);
                    member.push(b'0' + u8::try_from(job.stream).unwrap_or(1));
                    member.extend_from_slice(&bytes);
                    later.push(Write::Defer {
                        held: (job.stream, job.entry),
                        member,
                        due,
                    });
                }
                // Unreachable for an envelope that decoded; left held, its lease expires and
                // another worker reclaims it.
                Err(error) => eprintln!(
                    "martelli cluster worker {}: could not re-encode task {}: {error}",
                    self.consumer, envelope.id
                ),
            }
        }
        (run, later, Ok(()))
    }

    /// The task ids and tokens of the tasks handed to the executors whose tokens have not fired.
    fn watched(&self) -> Vec<Watch> {
        self.held
            .lock()
            .values()
            .flatten()
            .filter(|(_, token)| !token.is_cancelled())
            .cloned()
            .collect()
    }

    /// Checks fetched entries and hands them to the executors or, when they cannot run, to the
    /// dead-letter stream; with `tombstones`, cancelled tasks get a `cancelled` result instead
    /// (rule 4). `deliveries` is Redis's delivery count of the entry. Every entry is dispatched even
    /// when reading the tombstones fails (the tasks then run); that error is returned after.
    fn dispatch(
        &self,
        conn: &mut Connection,
        entries: Vec<(usize, Entry, u32)>,
        tombstones: bool,
        to: &Senders<'_>,
    ) -> RedisResult<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut jobs = Vec::new();
        let mut dead = Vec::new();
        {
            let mut held = self.held.lock();
            for (stream, entry, deliveries) in entries {
                match self.check(stream, &entry, deliveries) {
                    Ok(job) => {
                        let watch = (job.envelope.id.clone(), job.token.clone());
                        held.insert((stream, entry.id), Some(watch));
                        jobs.push(job);
                    }
                    Err(write) => {
                        held.insert((stream, entry.id), None);
                        dead.push(*write);
                    }
                }
            }
        }
        let mut outcome = Ok(());
        if tombstones && !jobs.is_empty() {
            match self.cancelled(conn, &jobs) {
                Ok(cancelled) => {
                    let mut kept = Vec::with_capacity(jobs.len());
                    for (job, cancelled) in jobs.into_iter().zip(cancelled) {
                        if cancelled {
                            dead.push(self.cancelled_result(job));
                        } else {
                            kept.push(job);
                        }
                    }
                    jobs = kept;
                }
                Err(error) => outcome = Err(error),
            }
        }
        // Addition 3: tasks whose name has a rate limit start at the time they reserve.
        let (jobs, deferred, reserved) = self.reserve(conn, jobs);
        dead.extend(deferred);
        if let Err(error) = reserved {
            outcome = outcome.and(Err(error));
        }
        // Neither send fails: `Shared` keeps a job receiver, and the writer keeps its receiver
        // until every outcome sender (this thread's among them) is gone.
        for job in jobs {
            let _ = to.jobs.send(job);
        }
        for write in dead {
            let _ = to.out.send(write);
        }
        outcome
    }

    /// Whether each job's tombstone exists, in one round trip.
    fn cancelled(&self, conn: &mut Connection, jobs: &[Job]) -> RedisResult<Vec<bool>> {
        let mut pipe = redis::pipe();
        for job in jobs {
            pipe.cmd("EXISTS")
                .arg(self.keys.tombstone(&job.envelope.id));
        }
        let found: Vec<i64> = pipe.query(conn)?;
        Ok(found.into_iter().map(|n| n != 0).collect())
    }

    fn check(&self, stream: usize, entry: &Entry, deliveries: u32) -> Result<Job, Box<Write>> {
        let held = (stream, entry.id.clone());
        let size = entry.size();
        let Some(raw) = entry.field(ENTRY_FIELD) else {
            return Err(Box::new(self.dead_letter(
                held,
                entry,
                None,
                deliveries,
                format!("malformed entry: it has no {ENTRY_FIELD:?} field holding a task envelope"),
            )));
        };
        // A refused envelope that names its task and reply list still gets its `lost` result.
        let envelope = TaskEnvelope::decode(raw).map_err(|e| (e, TaskEnvelope::addressed(raw)));
        if size > self.options.max_payload {
            let reason = format!(
                "oversized entry: {size} bytes, over this worker's limit of {} bytes (send a \
                 reference to the data instead, or raise max_payload)",
                self.options.max_payload
            );
            let about = match &envelope {
                Ok(envelope) => Some(envelope),
                Err((_, addressed)) => addressed.as_ref(),
            };
            return Err(Box::new(
                self.dead_letter(held, entry, about, deliveries, reason),
            ));
        }
        let envelope = match envelope {
            Ok(envelope) => envelope,
            Err((reason, addressed)) => {
                return Err(Box::new(self.dead_letter(
                    held,
                    entry,
                    addressed.as_ref(),
                    deliveries,
                    format!("malformed entry: {reason}"),
                )));
            }
        };
        let attempt = envelope.attempts.saturating_add(deliveries);
        if attempt > envelope.max_attempts {
            let reason = give_up_reason(&envelope, deliveries);
            let attempts = attempt - 1;
            return Err(Box::new(self.dead_letter(
                held,
                entry,
                Some(&envelope),
                attempts,
                reason,
            )));
        }
        Ok(Job {
            stream,
            entry: entry.id.clone(),
            envelope,
            attempt,
            token: CancelToken::new(),
        })
    }

    /// Resets the idle time of every held entry (its lease) and refreshes the heartbeat, with the
    /// ids of the tasks held (`tasks`: clients looking for a task whose entry vanished find it there;
    /// see `lost.rs`).
    fn renew(&self, conn: &mut Connection) -> RedisResult<()> {
        let (held, tasks) = {
            let held = self.held.lock();
            let tasks: Vec<&str> = held.values().flatten().map(|(id, _)| id.as_str()).collect();
            (held.keys().cloned().collect::<Vec<Held>>(), tasks.join(","))
        };
        let mut pipe = redis::pipe();
        for (index, stream) in self.keys.streams.iter().enumerate() {
            let ids: Vec<&str> = held
                .iter()
                .filter(|(s, _)| *s == index)
                .map(|(_, id)| id.as_str())
                .collect();
            if !ids.is_empty() {
                pipe.cmd("XCLAIM")
                    .arg(stream)
                    .arg(GROUP)
                    .arg(&self.consumer)
                    .arg(0)
                    .arg(&ids)
                    .arg("JUSTID")
                    .ignore();
            }
        }
        let heartbeat = self.keys.heartbeat(&self.consumer);
        let c = &self.counters;
        pipe.cmd("HSET")
            .arg(&heartbeat)
            .arg("queue")
            .arg(&self.options.queue)
            .arg("pid")
            .arg(std::process::id())
            .arg("concurrency")
            .arg(self.options.concurrency)
            .arg("held")
            .arg(held.len())
            .arg("succeeded")
            .arg(c.succeeded.load(Ordering::Relaxed))
            .arg("failed")
            .arg(c.failed.load(Ordering::Relaxed))
            .arg("dead_lettered")
            .arg(c.dead_lettered.load(Ordering::Relaxed))
            .arg("last_seen")
            .arg(unix_ms())
            .arg("lease_ms")
            .arg(u64::try_from(self.options.lease.as_millis()).unwrap_or(u64::MAX))
            .arg("tasks")
            .arg(tasks)
            .ignore();
        pipe.cmd("PEXPIRE")
            .arg(&heartbeat)
            .arg(u64::try_from(self.options.lease.as_millis()).unwrap_or(u64::MAX))
            .ignore();
        pipe.exec(conn)
    }

    /// Takes over entries whose lease expired (their worker stopped renewing), up to `free`, and
    /// clears away the workers reclaimed from (see `reclaim.rs`); with `sweep`, also the idle
    /// consumers of workers that died holding nothing.
    fn reclaim(
        &self,
        conn: &mut Connection,
        script: &redis::Script,
        free: usize,
        sweep: bool,
        to: &Senders<'_>,
    ) -> RedisResult<()> {
        let heartbeat_prefix = self.keys.heartbeat("");
        let pass = reclaim::Pass {
            streams: &self.keys.streams,
            heartbeat_prefix: &heartbeat_prefix,
            consumer: &self.consumer,
            lease_ms: u64::try_from(self.options.lease.as_millis()).unwrap_or(u64::MAX),
            free,
            sweep,
        };
        let reclaimed = reclaim::reclaim(conn, script, &pass)?;
        if reclaimed.entries.is_empty() {
            return Ok(());
        }
        self.counters
            .reclaimed
            .fetch_add(reclaimed.entries.len() as u64, Ordering::Relaxed);
        self.dispatch(conn, reclaimed.entries, true, to)
    }

    /// At stop: closes the job channel (the executors end once it is empty) and puts every task
    /// no executor has taken back on its stream.
    fn hand_back(&self, jobs: Sender<Job>, out: &Sender<Write>) {
        drop(jobs);
        for job in self.jobs.try_iter() {
            if job.token.is_cancelled() {
                // Its tombstone was found while it waited: it is not handed back (rule 5).
                let _ = out.send(self.cancelled_result(job));
                continue;
            }
            let mut envelope = job.envelope;
            // This delivery did not run the task: it does not count as an attempt.
            envelope.attempts = job.attempt.saturating_sub(1);
            match envelope.encode() {
                Ok(bytes) => {
                    let _ = out.send(Write::HandBack {
                        held: (job.stream, job.entry),
                        envelope: bytes,
                    });
                }
                // Unreachable for an envelope that decoded; leaving the entry un-acknowledged lets its
                // lease expire and another worker reclaim it.
                Err(error) => eprintln!(
                    "martelli cluster worker {}: could not re-encode task {}: {error}",
                    self.consumer, envelope.id
                ),
            }
        }
    }
}
