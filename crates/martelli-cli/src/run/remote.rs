//! `run --cluster URL`: each job attempt is sent to the workers of a cluster queue as a
//! shell-command task ([`crate::cluster::shell`]) and its result fills the job's [`Outcome`], so
//! the engine prints, logs, retries and halts exactly as for a local job.
//!
//! What differs from a local run:
//!
//! - the command runs on the worker's machine, in the worker's working directory and environment,
//!   with an empty stdin; `--timeout`, `--kill-grace` and `--nice` travel with it and the worker
//!   enforces them on the command's process group;
//! - output arrives when the job ends (`--line-buffer` prints its lines then), capped by the
//!   worker's `--max-output` (a note on stderr says when it was cut);
//! - a job still queued or running when `--halt now`, a second Ctrl-C (or a closed stdout) stops
//!   the run is cancelled through its future: its tombstone is written before `run` goes on, so a
//!   queued job never starts and a running one has its process group killed by its worker, within
//!   the worker's poll interval (half a second by default);
//! - `--timeout` also bounds the wait here: a job whose result has not come `--timeout` plus
//!   `--kill-grace` plus [`RESULT_GRACE`] (the *bound*) after a worker took it (its worker stopped,
//!   or its result was lost) is failed as timed out and cancelled on its worker. A worker took the
//!   job when its `started` note came; when none has come a bound after the job was queued (a
//!   worker stopped between taking the job and sending the note sends nothing), `run` asks the
//!   broker whether a worker holds the job, again every bound, and counts from the last sign of life
//!   the broker saw of that worker on it (`Client::held_for`). A job still queued waits for a worker
//!   as long as it takes; one that vanished from the broker (a restart without persistence) is
//!   queued again by the client (`martelli::cluster::OnLost`);
//! - `--countdown` and `--start-at` queue each job to start later (it waits in the broker's delayed
//!   set); `--result-ttl` keeps each job's record in the broker, readable by id with `martelli
//!   result` (docs/protocol.md, "Addition 1"). The ids are `RUN-SEQ` (`RUN-SEQ.N` for the Nth
//!   retry of a job), where `RUN` is printed on stderr when the run starts.

use std::collections::HashMap;
use std::io::{self, Write};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use martelli::TaskError;
use martelli::cluster::{Client, StatusOptions, SubmitOptions};
use martelli::process::Signal;
use serde_bytes::ByteBuf;

use super::RunError;
use super::config::{ClusterTarget, Config, OutputMode, StartAt};
use super::output::{LineSink, Outcome};
use super::template::Composed;
use crate::cluster::shell::{self, ShellResult, ShellTask};

/// How often a slot waiting for a result looks at the kill flag.
const KILL_CHECK: Duration = Duration::from_millis(100);

/// With `--timeout`, how long past the timeout and the kill grace a started job's result may take
/// to come back (the worker's kill, its writes, the trip through the broker) before `run` gives up
/// on it.
const RESULT_GRACE: Duration = Duration::from_secs(5);

/// The longest a cancelled job waits for its tombstone to reach the broker (a broker that went away
/// does not hold `run` up for ever; the job's command then finishes on its worker).
const CANCEL_FLUSH: Duration = Duration::from_secs(5);

/// A connection to the cluster queue the jobs go to.
#[derive(Debug)]
pub(crate) struct Remote {
    client: Client,
    target: ClusterTarget,
    /// With `--result-ttl`: the stem of this run's task ids, and how often each job was sent.
    ids: Option<(String, Mutex<HashMap<u64, u32>>)>,
    /// Set once `run` said that the broker does not let it tell whether a worker holds a job.
    cannot_tell: AtomicBool,
}

impl Remote {
    /// Connects to the broker (checking the address, the credentials and the server's version).
    pub(crate) fn connect(target: &ClusterTarget) -> Result<Remote, RunError> {
        let mut builder = Client::builder(&target.url)
            .queue(&target.queue)
            .prefix(&target.prefix);
        if let Some(ca) = &target.tls_ca {
            builder = builder.tls_ca(ca);
        }
        let ids = target.result_ttl.map(|ttl| {
            let mut bytes = [0u8; 4];
            // A clock-based stem if the system's random source fails: ids need only be unique.
            let stem = match getrandom::fill(&mut bytes) {
                Ok(()) => bytes.iter().map(|b| format!("{b:02x}")).collect::<String>(),
                Err(_) => format!("{:x}", now_ms() & 0xffff_ffff),
            };
            let _ = writeln!(
                io::stderr().lock(),
                "martelli run: job N is cluster task {stem}-N (its retry M: {stem}-N.M); \
                 `martelli result {stem}-N --cluster URL` reads it until {} s after it ends",
                ttl.as_secs_f64()
            );
            (stem, Mutex::new(HashMap::new()))
        });
        Ok(Remote {
            client: builder.build()?,
            target: target.clone(),
            ids,
            cannot_tell: AtomicBool::new(false),
        })
    }

    /// The slots of the live workers serving the queue: `-j`'s default with `--cluster`. `None`
    /// when no live worker serves it, or when the broker does not let this user read the workers
    /// (a warning says which, and that the jobs wait for a worker).
    pub(crate) fn worker_slots(&self) -> Option<usize> {
        let mut options = StatusOptions::new()
            .queue(&self.target.queue)
            .prefix(&self.target.prefix)
            .sample(Duration::ZERO);
        if let Some(ca) = &self.target.tls_ca {
            options = options.tls_ca(ca);
        }
        let queue = &self.target.queue;
        let slots: u64 = match martelli::cluster::status(&self.target.url, &options) {
            Ok(status) => status
                .workers
                .iter()
                .filter(|w| w.alive && w.queue.as_deref() == Some(queue.as_str()))
                .filter_map(|w| w.concurrency)
                .sum(),
            Err(error) => {
                let _ = writeln!(
                    io::stderr().lock(),
                    "martelli run: cannot tell whether a live worker serves queue {queue:?}: \
                     {error} (the broker user needs the read-only commands of `martelli status` \
                     for that: see docs/cluster.md, \"Access control\"); -j falls back to this \
                     machine's cores, and the jobs wait for a worker"
                );
                return None;
            }
        };
        if slots == 0 {
            let _ = writeln!(
                io::stderr().lock(),
                "martelli run: no live worker serves queue {queue:?} yet; the jobs wait until one \
                 starts (martelli worker --cluster URL --queue {queue})"
            );
            return None;
        }
        usize::try_from(slots).ok()
    }

    /// Runs one attempt of a job on the cluster and fills `outcome` with its result.
    pub(crate) fn attempt(
        &self,
        config: &Config,
        killing: &AtomicBool,
        composed: &Composed,
        tag_prefix: &[u8],
        outcome: &mut Outcome,
    ) {
        let task = shell_task(config, composed);
        let sent = rmp_serde::to_vec_named(&task)
            .map_err(|e| format!("could not encode the job as a {} task: {e}", shell::TASK))
            .and_then(|payload| {
                self.client
                    .with(self.options(outcome.seq))
                    .submit_raw(shell::TASK, payload)
                    .map_err(|e| format!("could not queue the job: {e}"))
            });
        let mut future = match sent {
            Ok(future) => future,
            Err(reason) => return fail(outcome, reason),
        };
        let bound = config
            .timeout
            .map(|t| t.saturating_add(config.grace).saturating_add(RESULT_GRACE));
        let mut started: Option<Instant> = None;
        // Without a `started` note a whole bound after the job was queued (or after the last look),
        // the broker is asked whether a worker holds the job: a worker stopped between taking it
        // and sending its note sends nothing more.
        let mut look_at = bound.and_then(|b| Instant::now().checked_add(b));
        let answer = loop {
            if killing.load(Ordering::SeqCst) {
                self.cancel(future);
                outcome.signal = Signal::KILL.as_raw();
                return;
            }
            if started.is_none() && future.is_running() {
                started = Some(Instant::now());
            }
            if let (None, Some(bound), Some(at)) = (started, bound, look_at) {
                if Instant::now() >= at {
                    look_at = Instant::now().checked_add(bound);
                    started = self.held_since(&future);
                }
            }
            if let (Some(at), Some(bound)) = (started, bound) {
                if at.elapsed() >= bound {
                    self.cancel(future);
                    return no_result(outcome, config, bound);
                }
            }
            match future.wait_timeout(KILL_CHECK) {
                Ok(answer) => break answer,
                Err(pending) => future = pending,
            }
        };
        let result: ShellResult = match answer {
            Ok(bytes) => match rmp_serde::from_slice(&bytes) {
                Ok(result) => result,
                Err(e) => {
                    return fail(
                        outcome,
                        format!("the worker's result is not a {} result: {e}", shell::TASK),
                    );
                }
            },
            Err(TaskError::Lost { attempts, reason }) => {
                return fail(
                    outcome,
                    format!("the cluster gave the job up after {attempts} delivery(ies): {reason}"),
                );
            }
            Err(e) => return fail(outcome, format!("the cluster could not run the job: {e}")),
        };
        fill(config, tag_prefix, outcome, result);
    }

    /// The submission options of job `seq`: its start time and its record (`--countdown`,
    /// `--start-at`, `--result-ttl`).
    fn options(&self, seq: u64) -> SubmitOptions {
        let mut options = SubmitOptions::new();
        match self.target.start_at {
            Some(StartAt::After(delay)) => options = options.delay(delay),
            Some(StartAt::At(at)) => options = options.eta(at),
            None => {}
        }
        if let (Some(ttl), Some((stem, sent))) = (self.target.result_ttl, &self.ids) {
            let mut sent = sent
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let n = sent.entry(seq).or_insert(0);
            let id = match *n {
                0 => format!("{stem}-{seq}"),
                retry => format!("{stem}-{seq}.{retry}"),
            };
            *n += 1;
            options = options.result_ttl(ttl).id(id);
        }
        options
    }

    /// When a worker that holds the job last showed life on it, as the broker sees it (its
    /// delivery, or its worker's latest renewal of the lease): `None` when no worker holds it (it
    /// still waits for one) or when the broker cannot tell (an ACL user without `XPENDING`: the
    /// job then waits for its `started` note or its result, as before).
    fn held_since(&self, future: &martelli::Future<Vec<u8>>) -> Option<Instant> {
        match self.client.held_for(future) {
            Ok(idle) => idle.map(|idle| {
                Instant::now()
                    .checked_sub(idle)
                    .unwrap_or_else(Instant::now)
            }),
            Err(error) => {
                if self.cannot_tell.swap(true, Ordering::Relaxed) {
                    return None;
                }
                let _ = writeln!(
                    io::stderr().lock(),
                    "martelli run: cannot tell whether a worker holds a job that sent no news: \
                     {error} (the broker user needs XPENDING: see docs/cluster.md, \"Access \
                     control\"); jobs without news wait for their result"
                );
                None
            }
        }
    }

    /// Cancels a job that is queued or running on a worker, and waits (a little) until its
    /// tombstone is in the broker, so that the worker sees it even when `run` exits next.
    fn cancel(&self, future: martelli::Future<Vec<u8>>) {
        future.cancel();
        if !self.client.flush_timeout(CANCEL_FLUSH) {
            let _ = writeln!(
                io::stderr().lock(),
                "martelli run: could not reach the broker to cancel a job within {CANCEL_FLUSH:?}; \
                 its command finishes on its worker"
            );
        }
    }
}

/// The shell-command task of one job: a shell line (or argv for `--no-shell`), and the limits the
/// worker enforces.
fn shell_task(config: &Config, composed: &Composed) -> ShellTask {
    let millis = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    let mut task = ShellTask {
        timeout_ms: config.timeout.map(millis),
        grace_ms: Some(millis(config.grace)),
        nice: config.nice,
        ..ShellTask::default()
    };
    match composed {
        Composed::Shell(line) => task.shell = Some(ByteBuf::from(line.clone())),
        Composed::Argv(argv) => {
            task.argv = Some(argv.iter().map(|a| ByteBuf::from(a.clone())).collect());
        }
    }
    task
}

/// A started job whose result did not come within its `--timeout` and the graces: it fails as
/// timed out, saying why.
fn no_result(outcome: &mut Outcome, config: &Config, bound: Duration) {
    let timeout = config.timeout.unwrap_or_default();
    outcome.timed_out = true;
    outcome.start = SystemTime::now().checked_sub(bound).unwrap_or(UNIX_EPOCH);
    outcome.runtime = bound;
    outcome.stderr.extend_from_slice(
        format!(
            "martelli run: no result came from the cluster {:.1}s after a worker took the job \
             (--timeout {:.1}s, --kill-grace {:.1}s, and {}s for the result to come back): its \
             worker stopped or its result was lost; the job is failed here and cancelled on its \
             worker\n",
            bound.as_secs_f64(),
            timeout.as_secs_f64(),
            config.grace.as_secs_f64(),
            RESULT_GRACE.as_secs()
        )
        .as_bytes(),
    );
}

/// A job the cluster could not run: it fails like a job that could not start.
fn fail(outcome: &mut Outcome, reason: String) {
    outcome
        .stderr
        .extend_from_slice(format!("martelli run: {reason}\n").as_bytes());
    outcome.spawn_error = Some(reason);
}

/// Copies a command's result into the job's outcome, and prints its output now when the output
/// mode prints as it goes (`--line-buffer`, `-u`).
fn fill(config: &Config, tag_prefix: &[u8], outcome: &mut Outcome, result: ShellResult) {
    outcome.code = result.code;
    outcome.signal = result.signal.unwrap_or(0);
    outcome.timed_out = result.timed_out;
    outcome.stdout_bytes = result.stdout_bytes;
    outcome.start = UNIX_EPOCH + Duration::from_millis(result.started_ms);
    if result.started_ms == 0 {
        outcome.start = SystemTime::now();
    }
    outcome.runtime = Duration::from_micros(result.duration_us);
    outcome.host = Some(result.host);
    let mut stderr = result.stderr.into_vec();
    for (name, truncated, kept, total) in [
        (
            "stdout",
            result.stdout_truncated,
            result.stdout.len(),
            result.stdout_bytes,
        ),
        (
            "stderr",
            result.stderr_truncated,
            stderr.len(),
            result.stderr_bytes,
        ),
    ] {
        if truncated {
            stderr.extend_from_slice(
                format!(
                    "martelli run: the worker kept the first {kept} of the {total} bytes the job \
                     wrote to {name} (its --max-output)\n"
                )
                .as_bytes(),
            );
        }
    }
    if let Some(reason) = result.error {
        stderr.extend_from_slice(format!("martelli run: {reason}\n").as_bytes());
        outcome.spawn_error = Some(reason);
    }
    let stdout = result.stdout.into_vec();
    match config.output {
        OutputMode::Group | OutputMode::Json => {
            outcome.stdout = stdout;
            outcome.stderr.extend_from_slice(&stderr);
        }
        OutputMode::LineBuffer => {
            let mut sink = LineSink::new(tag_prefix.to_vec());
            sink.push(0, &stdout);
            sink.push(1, &stderr);
            sink.finish();
            if config.results.is_some() {
                outcome.stdout = stdout;
                outcome.stderr.extend_from_slice(&stderr);
            }
        }
        OutputMode::Ungroup => {
            let _ = io::stdout().lock().write_all(&stdout);
            let _ = io::stderr().lock().write_all(&stderr);
        }
    }
}

/// Milliseconds since the Unix epoch (0 before it).
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
