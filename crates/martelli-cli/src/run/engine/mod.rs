//! The engine: a fixed number of slots, each a thread that takes the next job, starts it as a
//! supervised process group, reads its output with `poll`, reaps it, and reports it (output,
//! joblog, progress) under a lock. No thread hand-off is paid per job; the main thread only starts
//! the slots and waits for them.
//!
//! With `--cluster`, the one step that differs is the job's attempt: instead of spawning, a slot
//! submits the job to the cluster queue ([`Remote::attempt`]) and waits for its result, which fills
//! the same [`Outcome`]; retries, `--halt`, output and the joblog are the same code.
//!
//! Every job is watched by the [`Guardian`] from its spawn to its reaping, so that it dies with
//! `martelli run` even when `martelli run` is killed with SIGKILL; with the guardian in place the
//! jobs do not ask for a parent-death signal, which lets them be spawned with `posix_spawn` rather
//! than `fork`.
//!
//! Signals: the first SIGINT or SIGTERM stops starting jobs and lets the running ones finish; the
//! second kills every running job's process group (SIGTERM, then SIGKILL after the grace), or with
//! `--cluster` cancels the jobs queued or running on workers (their tombstones written first), and
//! exits with 128 + the signal.
//!
//! A job's group is registered (in `live` and with the guardian) from its spawn until just after
//! its leader is reaped. Signalling a registered group therefore cannot reach an unrelated process,
//! except in the microseconds between the reaping and the deregistration, and only if the group was
//! empty and its id reused within them.

use std::collections::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::io::{self, IsTerminal, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use martelli::process::{self, Guardian, Signal, Spawn, Stream, Supervision};

use super::config::{Config, HaltOn, OutputMode, Threshold};
use super::input::{Args, Inputs};
use super::joblog::Joblog;
use super::limits::{Gate, Jobs};
use super::output::{LineSink, Outcome, Print, PrintError, Printer};
use super::pipe::{JobInput, Splitter, Tee};
use super::remote::Remote;
use super::template::{Composed, plain_words, simple_command};
use super::{EXIT_OWN_ERROR, RunError};
use std::collections::BTreeSet;

mod median;
mod report;
mod signals;
mod special;
mod tally;
mod timeouts;

use median::RunningMedian;
use report::Reporter;
use signals::{kill_all, kill_one, running, watch_signals};
use special::{dry_run, shellquote, shuffled};
use tally::{Tally, count};
use timeouts::time_out_slow_jobs;

/// Locks a mutex, ignoring poisoning: every critical section here leaves the data consistent.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Where slots take their next job.
struct Feed {
    inputs: Inputs,
    next_seq: u64,
    next_order: u64,
    skip: HashSet<u64>,
}

impl Feed {
    /// The next job to run: (order, seq, args); skips jobs the joblog says are done.
    fn next(&mut self) -> Option<Result<(u64, u64, Args), RunError>> {
        loop {
            let args = match self.inputs.iter.next()? {
                Ok(args) => args,
                Err(e) => return Some(Err(e)),
            };
            self.next_seq += 1;
            if self.skip.contains(&self.next_seq) {
                continue;
            }
            let order = self.next_order;
            self.next_order += 1;
            return Some(Ok((order, self.next_seq, args)));
        }
    }
}

/// A running job, as `live` keeps it.
#[derive(Debug, Clone, Copy)]
struct LiveJob {
    seq: u64,
    started: Instant,
}

impl Jobs for Shared {
    fn running(&self) -> Vec<(u64, u32)> {
        lock(&self.live)
            .iter()
            .map(|(&pgid, job)| (job.seq, pgid))
            .collect()
    }

    fn kill(&self, pgid: u32) {
        kill_one(self, pgid);
    }
}

/// Where jobs run.
enum Executor {
    /// Here, each job a supervised process group watched by the guardian.
    Local(Guardian),
    /// On the workers of a cluster queue, each job a shell-command task.
    Cluster(Box<Remote>),
}

/// State the slots, the main thread and the signal thread share.
struct Shared {
    config: Config,
    feed: Mutex<Feed>,
    /// Set to stop starting jobs.
    stop: AtomicBool,
    /// Set by `--halt now`: running jobs are being killed, do not retry them.
    killing: AtomicBool,
    /// Process groups of running jobs, registered between spawn and reap.
    live: Mutex<HashMap<u32, LiveJob>>,
    /// `--timeout N%`: the runtimes of the jobs that succeeded, and the groups killed for running
    /// too long (their outcomes say so).
    runtimes: Mutex<RunningMedian>,
    timed_out: Mutex<HashSet<u32>>,
    /// Jobs running on cluster workers (`--cluster`).
    remote_running: AtomicUsize,
    /// When the last job started (`--delay`).
    last_start: Mutex<Option<Instant>>,
    /// The delay between starts now (`--delay`; it moves with `--delay …auto`).
    delay: Mutex<Duration>,
    /// Where jobs wait for room on this machine (`--load`, `--memfree`, `--noswap`).
    gate: Gate,
    /// How a job is watched: its timeout and how it is killed.
    supervision: Supervision,
    /// The signal that interrupted the run, 0 if none.
    interrupted: AtomicI32,
    /// Finished jobs, counted by the slots before they take another job, so that `--halt` stops
    /// the very next start.
    tally: Mutex<Tally>,
    /// Output, joblog and progress, reported to by the slots.
    reporter: Mutex<Reporter>,
    /// Slot numbers (`{%}`, `$PARALLEL_JOBSLOT`) free now: a job takes the lowest, as in GNU
    /// parallel, so the first job gets slot 1.
    free_slots: Mutex<BTreeSet<usize>>,
    /// `--pipe --round-robin`: the input every job reads blocks from.
    round_robin: Option<Arc<Mutex<Splitter>>>,
    /// `--tee`: every job's copy of the input.
    tee: Option<Tee>,
}

/// Runs the jobs; returns the exit status.
pub(crate) fn run(mut config: Config) -> Result<u8, RunError> {
    // --retry-failed: the jobs are the failed commands of the joblog, under their job numbers.
    let retry = match (&config.joblog, config.retry_failed) {
        (Some(path), true) => Some(super::joblog::failed_commands(path)?),
        _ => None,
    };
    let (joblog, mut skip) = match &config.joblog {
        Some(path) if !config.dry_run => {
            let (log, skip) = Joblog::open(path, config.resume)?;
            (Some(log), skip)
        }
        _ => (None, HashSet::new()),
    };
    let reading = super::input::Reading {
        separator: config.separator,
        trim: config.trim,
        eof: config.eof.clone(),
        skip_empty: config.skip_empty,
        skip_first_line: config.skip_first_line,
    };
    // --pipe: the jobs read blocks of the input; --round-robin: all from one shared splitter.
    let mut round_robin = None;
    let mut tee = None;
    let mut inputs = match (retry, &config.pipe) {
        (Some(failed), _) => {
            let max = failed.max_seq;
            let mut commands: std::collections::HashMap<u64, Vec<u8>> =
                failed.jobs.into_iter().collect();
            skip = (1..=max).filter(|s| !commands.contains_key(s)).collect();
            let rows: Vec<Args> = (1..=max)
                .map(|s| vec![commands.remove(&s).unwrap_or_default()])
                .collect();
            Inputs {
                total: Some(rows.len() as u64),
                iter: Box::new(rows.into_iter().map(Ok)),
            }
        }
        (None, Some(pipe)) if pipe.tee => {
            // --tee: one job per argument, all running at once, each reading the whole input.
            let jobs: Vec<Args> = super::columns::inputs(&config, &reading)?
                .iter
                .collect::<Result<_, _>>()?;
            if jobs.len() > config.jobs {
                return Err(RunError::Usage(format!(
                    "--tee runs all {} jobs at once, each reading the whole input, and -j allows {}; give -j 0 or -j {}",
                    jobs.len(),
                    config.jobs,
                    jobs.len()
                )));
            }
            if !config.dry_run {
                tee = Some(Tee::start(pipe, jobs.len())?);
            }
            Inputs {
                total: Some(jobs.len() as u64),
                iter: Box::new(jobs.into_iter().map(Ok)),
            }
        }
        (None, Some(pipe)) => {
            let (inputs, splitter) = super::pipe::inputs(pipe, config.jobs)?;
            if pipe.round_robin {
                round_robin = Some(splitter);
            }
            inputs
        }
        (None, None) => super::columns::inputs(&config, &reading)?,
    };
    if config.shellquote {
        return shellquote(&mut inputs);
    }
    if config.shuf {
        inputs = shuffled(inputs)?;
    }
    config.template.set_total(inputs.total);
    if let Some(grouping) = &config.grouping {
        inputs = super::multi::group(
            inputs,
            grouping.clone(),
            config.template.clone(),
            config.jobs,
        );
    }
    let total = inputs.total.map(|t| t.saturating_sub(skip.len() as u64));
    let mut feed = Feed {
        inputs,
        next_seq: 0,
        next_order: 0,
        skip,
    };
    if config.dry_run {
        return dry_run(&config, &mut feed);
    }
    let executor = match &config.cluster {
        Some(target) => {
            let remote = Remote::connect(target)?;
            if !config.jobs_given {
                if let Some(slots) = remote.worker_slots() {
                    config.jobs = slots.clamp(1, super::config::MAX_JOBS);
                }
            }
            Executor::Cluster(Box::new(remote))
        }
        None => {
            // Orphans a job leaves behind become our children, so they are reaped, not left as
            // zombies.
            let _ = process::become_subreaper();
            // Kills the jobs' process groups if this process dies without doing it (SIGKILL).
            let guardian =
                Guardian::start(config.jobs, config.grace).map_err(|source| RunError::System {
                    what: "cannot start the guardian process",
                    source,
                })?;
            Executor::Local(guardian)
        }
    };
    let executor = Arc::new(executor);
    let shared = Arc::new(Shared {
        feed: Mutex::new(feed),
        stop: AtomicBool::new(false),
        killing: AtomicBool::new(false),
        live: Mutex::new(HashMap::new()),
        runtimes: Mutex::new(RunningMedian::default()),
        timed_out: Mutex::new(HashSet::new()),
        remote_running: AtomicUsize::new(0),
        last_start: Mutex::new(None),
        delay: Mutex::new(config.delay.unwrap_or_default()),
        gate: Gate::new(config.limits.clone(), config.shell.clone()),
        supervision: Supervision::default()
            .timeout(config.timeout)
            .grace(config.grace)
            .kill_sequence(config.kill_sequence.iter().copied()),
        interrupted: AtomicI32::new(0),
        tally: Mutex::new(Tally {
            total,
            ..Tally::default()
        }),
        reporter: Mutex::new(Reporter::new(&config, joblog, total)),
        free_slots: Mutex::new((1..=config.jobs).collect()),
        round_robin,
        tee,
        config,
    });
    watch_signals(&shared)?;
    // --memfree and --limit kill the youngest job, --memsuspend stops jobs, --noswap and --limit
    // io measure over a second: a thread watches until the slots are done.
    let watching = Arc::new(AtomicBool::new(false));
    let watcher = shared
        .config
        .limits
        .watched()
        .then(|| {
            let shared = Arc::clone(&shared);
            let done = Arc::clone(&watching);
            thread::Builder::new()
                .name("limits".into())
                .stack_size(64 * 1024)
                .spawn(move || shared.gate.watch(&done, &*shared))
        })
        .transpose()
        .map_err(|source| RunError::System {
            what: "cannot start the thread that watches memory and swapping",
            source,
        })?;
    // No more slots than jobs, when their number is known.
    let slot_count = total.map_or(shared.config.jobs, |t| {
        shared
            .config
            .jobs
            .min(usize::try_from(t).unwrap_or(usize::MAX))
            .max(1)
    });
    // Slot 1 runs on this thread: one job at a time costs no thread at all.
    let mut slots = Vec::with_capacity(slot_count - 1);
    for slot in 2..=slot_count {
        let shared = Arc::clone(&shared);
        let executor = Arc::clone(&executor);
        let spawned = thread::Builder::new()
            .name(format!("slot-{slot}"))
            // A slot needs little stack (its read buffer is 32 KiB); `-j 0` may start many.
            .stack_size(256 * 1024)
            .spawn(move || run_slot(&shared, &executor, slot));
        match spawned {
            Ok(handle) => slots.push(handle),
            // Fewer slots than asked is still a run.
            Err(_) => break,
        }
    }
    // --timeout N%: a thread kills the jobs that run longer than N % of the median runtime.
    let timer = shared
        .config
        .timeout_percent
        .map(|percent| {
            let shared = Arc::clone(&shared);
            let done = Arc::clone(&watching);
            thread::Builder::new()
                .name("timeouts".into())
                .stack_size(64 * 1024)
                .spawn(move || time_out_slow_jobs(&shared, percent, &done))
        })
        .transpose()
        .map_err(|source| RunError::System {
            what: "cannot start the thread that times jobs out",
            source,
        })?;
    run_slot(&shared, &executor, 1);
    for handle in slots {
        let _ = handle.join();
    }
    watching.store(true, Ordering::SeqCst);
    for thread in [watcher, timer].into_iter().flatten() {
        let _ = thread.join();
    }
    // Every job is reaped and forgotten by the guardian now. Dropping it would close its pipe and
    // wait for it to exit, a round trip through the scheduler at the very end of the run; instead
    // it is left to see its pipe close when this process exits (`martelli run` returns to `main`
    // and exits right after this), and to exit with nothing left to kill. It has left our session
    // and closed our stdin, stdout and stderr, so nothing waits for it; its new parent reaps it.
    if let Ok(Executor::Local(guardian)) = Arc::try_unwrap(executor) {
        std::mem::forget(guardian);
    }
    let code = lock(&shared.reporter).finish(&shared);
    Ok(code)
}

fn run_slot(shared: &Shared, executor: &Executor, _thread: usize) {
    loop {
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let (job, slot) = {
            let mut feed = lock(&shared.feed);
            let job = feed.next();
            // --load, --memfree, --noswap: the job waits for room, holding the feed so that jobs
            // start in their order (and no slot waits when no job is left).
            if matches!(job, Some(Ok(_))) && !shared.gate.wait(&shared.stop) {
                return;
            }
            // Taken with the job, under the feed's lock, so that jobs get slots in their order.
            let slot = lock(&shared.free_slots).pop_first().unwrap_or(1);
            (job, slot)
        };
        let (order, seq, args) = match job {
            None => return,
            Some(Ok(job)) => job,
            Some(Err(e)) => {
                lock(&shared.reporter).fail(shared, e);
                return;
            }
        };
        // --pipe: the job's "argument" is its block of input, for its stdin.
        let (args, stdin) = match (&shared.config.pipe, &shared.round_robin) {
            (None, _) => (args, None),
            // --tee: the job's arguments are its own; its stdin the whole input.
            (Some(_), _) if shared.tee.is_some() => {
                let input = shared.tee.as_ref().map(Tee::next_input);
                (args, input)
            }
            (Some(_), Some(splitter)) => (Vec::new(), Some(JobInput::Shared(Arc::clone(splitter)))),
            (Some(_), None) => {
                let block = args.into_iter().next().unwrap_or_default();
                match &shared.config.cat {
                    // --cat: the block in a file, named by {}.
                    Some(dir) => match cat_file(dir, seq, &block) {
                        Ok(path) => (vec![path.into_os_string().into_vec()], None),
                        Err(e) => {
                            lock(&shared.reporter).fail(shared, e);
                            return;
                        }
                    },
                    None => (Vec::new(), Some(JobInput::Block(block))),
                }
            }
        };
        // --cat's file goes when the job is done, whatever became of it.
        let _cat = shared
            .config
            .cat
            .as_ref()
            .and_then(|_| args.first())
            .map(|path| RemoveOnDrop(PathBuf::from(OsStr::from_bytes(path))));
        let composed = match shared.config.template.try_compose(&args, seq, slot) {
            Ok(Some(composed)) => composed,
            // skip() in a perl expression: the job is not run, and its slot is free again. As in
            // GNU parallel, a skipped job counts as failed in the exit status.
            Ok(None) => {
                lock(&shared.free_slots).insert(slot);
                lock(&shared.tally).failed += 1;
                continue;
            }
            Err(e) => {
                lock(&shared.reporter).fail(shared, RunError::Perl(e));
                return;
            }
        };
        // With `--delay`, the slots pass one at a time, each at least the delay after the one before;
        // the job's recorded start and the time the next one waits from are read together once
        // this slot has passed, so that the joblog's starts are spaced by the delay however late a
        // slot wakes (a schedule computed in advance is not: a slot that wakes late starts closer
        // to the next one). The delay is the one current when the wait ends: with `--delay …auto`
        // a job that ends meanwhile moves it, as in GNU parallel.
        let start = shared.config.delay.map(|_| {
            let mut last = lock(&shared.last_start);
            if let Some(previous) = *last {
                loop {
                    let until = previous + *lock(&shared.delay);
                    let now = Instant::now();
                    if now >= until {
                        break;
                    }
                    thread::sleep(until - now);
                }
            }
            let start = SystemTime::now();
            *last = Some(Instant::now());
            start
        });
        let mut outcome = run_job(
            shared, executor, slot, order, seq, args, composed, stdin, start,
        );
        lock(&shared.free_slots).insert(slot);
        // A job that ends while `--halt now` kills the others was killed: its output is not shown.
        outcome.suppressed = shared.killing.load(Ordering::SeqCst);
        let counted = count(shared, &outcome);
        let stdout_closed = lock(&shared.reporter).report(shared, outcome, &counted.notes);
        // Killing waits up to the grace period: not under the reporter's lock.
        if counted.kill_now || stdout_closed {
            kill_all(shared);
        }
    }
}

/// `--cat`: writes a job's block to a new file in `dir` (the run's temporary directory).
fn cat_file(dir: &Path, seq: u64, block: &[u8]) -> Result<PathBuf, RunError> {
    let mut n = 0u32;
    loop {
        let path = dir.join(format!("par{}-{seq}-{n}.cat", std::process::id()));
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(mut file) => {
                file.write_all(block).map_err(|source| RunError::System {
                    what: "cannot write --cat's file",
                    source,
                })?;
                return Ok(path);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && n < 1000 => n += 1,
            Err(source) => {
                return Err(RunError::System {
                    what: "cannot create --cat's file (set --tmpdir or TMPDIR)",
                    source,
                });
            }
        }
    }
}

/// Removes a file when dropped.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The prefix of every output line of a job: its tag and a tab (`--tag`, `--tagstring`), or
/// nothing.
fn tag(config: &Config, args: &Args, seq: u64, slot: usize) -> Vec<u8> {
    let mut tag = match (&config.tagstring, config.tag) {
        (Some(tagstring), _) => match tagstring.compose(args, seq, slot) {
            Composed::Argv(words) => words.join(&b' '),
            Composed::Shell(line) => line,
        },
        (None, true) => args.join(&b' '),
        (None, false) => return Vec::new(),
    };
    tag.push(b'\t');
    tag
}

#[allow(clippy::too_many_arguments)]
fn run_job(
    shared: &Shared,
    executor: &Executor,
    slot: usize,
    order: u64,
    seq: u64,
    args: Args,
    composed: Composed,
    stdin: Option<JobInput>,
    first_start: Option<SystemTime>,
) -> Outcome {
    let config = &shared.config;
    let command = composed.display();
    // A shell line that is one plain command is run without the shell (see `simple_command`), and
    // so is one whose builtin the system's program of the same name would run alike (`builtins`).
    let direct: Option<(Option<&Path>, Vec<Vec<u8>>)> = match &composed {
        Composed::Shell(line) => match simple_command(line) {
            // A bash function exported under a program's name must run as the function.
            Some(argv) => (!config.functions.contains(&argv[0])).then_some((None, argv)),
            None => plain_words(line).and_then(|words| {
                let program = config.shell_free.program(&words)?;
                Some((Some(program), words))
            }),
        },
        Composed::Argv(_) => None,
    };
    let capture = config.output != OutputMode::Ungroup;
    // Output printed line by line as it comes is kept too only when `--results` stores it.
    let keep_output = config.output != OutputMode::LineBuffer || config.results.is_some();
    let tag_prefix = tag(config, &args, seq, slot);
    if config.verbose_stderr {
        let mut line = command.clone();
        line.push(b'\n');
        let _ = io::stderr().lock().write_all(&line);
    }
    // -v with output that is not held back: the command is printed as the job starts.
    if config.verbose && matches!(config.output, OutputMode::LineBuffer | OutputMode::Ungroup) {
        let mut line = command.clone();
        line.push(b'\n');
        let _ = super::output::write_prefixed(&mut io::stdout().lock(), &tag_prefix, &line);
    }
    let mut attempt = 0;
    loop {
        attempt += 1;
        let start = match first_start {
            Some(start) if attempt == 1 => start,
            _ => SystemTime::now(),
        };
        let clock = Instant::now();
        let mut outcome = Outcome {
            order,
            seq,
            args: Vec::new(),
            command: Vec::new(),
            start,
            runtime: Duration::ZERO,
            code: None,
            signal: 0,
            timed_out: false,
            spawn_error: None,
            stdout: Vec::new(),
            stderr: Vec::new(),
            stdout_bytes: 0,
            suppressed: false,
            host: None,
            tag: tag_prefix.clone(),
        };
        match executor {
            // The job goes to a cluster worker as a shell-command task; the result fills the outcome
            // as a local run would.
            Executor::Cluster(remote) => {
                shared.remote_running.fetch_add(1, Ordering::SeqCst);
                remote.attempt(
                    config,
                    &shared.killing,
                    &composed,
                    &tag_prefix,
                    &mut outcome,
                );
                shared.remote_running.fetch_sub(1, Ordering::SeqCst);
            }
            Executor::Local(guardian) => {
                // `argv`: run these words, their first the program unless `program` says where it
                // is (a builtin's program, started with the builtin's name as `argv[0]`); `None`:
                // the shell runs the line.
                let build = |argv: Option<(Option<&Path>, &[Vec<u8>])>| {
                    let mut spawn = match argv {
                        Some((program, argv)) => {
                            let mut spawn = match program {
                                Some(path) => Spawn::new(path),
                                None => Spawn::new(OsStr::from_bytes(&argv[0])),
                            }
                            .args(argv[1..].iter().map(|a| OsStr::from_bytes(a)));
                            if program.is_some() {
                                spawn.command_mut().arg0(OsStr::from_bytes(&argv[0]));
                            }
                            spawn
                        }
                        // The user's shell, by GNU parallel's rule (`gnu::shell`).
                        None => Spawn::new(&config.shell)
                            .arg("-c")
                            .arg(OsString::from_vec(command.clone())),
                    }
                    .capture_output(capture)
                    .stdin_piped(stdin.is_some())
                    // The guardian kills the job's whole group if this process dies, which also covers
                    // the direct child; without a parent-death signal the spawn can use posix_spawn.
                    .parent_death_signal(None);
                    let cmd = spawn.command_mut();
                    if stdin.is_none() {
                        cmd.stdin(Stdio::null());
                    }
                    cmd.env("PARALLEL_SEQ", seq.to_string())
                        .env("PARALLEL_JOBSLOT", slot.to_string())
                        .env("PARALLEL_PID", std::process::id().to_string());
                    if let Some(var) = &config.process_slot_var {
                        // GNU parallel: the slot number minus one.
                        cmd.env(var, (slot - 1).to_string());
                    }
                    if let Some(n) = config.nice {
                        spawn = spawn.nice(n);
                    }
                    spawn.spawn()
                };
                // The spawn runs without a lock (it takes a while: it returns once the child has exec'd),
                // so slots start jobs side by side. A job registered after `kill_all` looked at the live
                // groups sees `killing` and stops itself; if this process exits first, the guardian,
                // which watches it from the start, kills it.
                let spawned = if shared.killing.load(Ordering::SeqCst) {
                    None
                } else {
                    let child = match (&composed, &direct) {
                        (Composed::Argv(argv), _) => build(Some((None, argv))),
                        // A simple command runs without the shell; if it cannot start, the shell runs it
                        // (for its exact errors, and for scripts without `#!`, which only a shell runs).
                        (Composed::Shell(_), Some((program, argv))) => {
                            build(Some((*program, argv))).or_else(|_| build(None))
                        }
                        (Composed::Shell(_), None) => build(None),
                    };
                    if let Ok(c) = &child {
                        // Best effort: the guardian only fails to watch beyond its capacity (`-j`).
                        let _ = guardian.watch(c.pgid());
                        lock(&shared.live).insert(
                            c.pgid(),
                            LiveJob {
                                seq,
                                started: Instant::now(),
                            },
                        );
                        if shared.killing.load(Ordering::SeqCst) {
                            let _ = c.signal_group(Signal::TERM);
                        }
                    }
                    Some(child)
                };
                match spawned {
                    None => {
                        outcome.signal = Signal::KILL.as_raw();
                    }
                    Some(Err(e)) => {
                        let program = match &composed {
                            Composed::Shell(_) => config.shell.display().to_string(),
                            Composed::Argv(argv) => String::from_utf8_lossy(&argv[0]).into_owned(),
                        };
                        let message = format!("martelli run: cannot run '{program}': {e}\n");
                        outcome.stderr.extend_from_slice(message.as_bytes());
                        outcome.spawn_error = Some(format!("cannot run '{program}': {e}"));
                    }
                    Some(Ok(mut child)) => {
                        // --pipe: a thread writes the block while the output is read here.
                        let writer = match (&stdin, child.take_stdin()) {
                            (Some(input), Some(pipe)) => {
                                let input = input.clone();
                                thread::Builder::new()
                                    .name("stdin".into())
                                    .spawn(move || input.feed(pipe))
                                    .ok()
                            }
                            _ => None,
                        };
                        let mut lines = (config.output == OutputMode::LineBuffer
                            && config.results.is_none())
                        .then(|| LineSink::new(tag_prefix.clone()));
                        let result = child.communicate(&shared.supervision, |stream, bytes| {
                            let i = match stream {
                                Stream::Stdout => 0,
                                Stream::Stderr => 1,
                            };
                            if i == 0 {
                                outcome.stdout_bytes += bytes.len() as u64;
                            }
                            if let Some(sink) = &mut lines {
                                sink.push(i, bytes);
                            }
                            if keep_output {
                                if i == 0 {
                                    outcome.stdout.extend_from_slice(bytes);
                                } else {
                                    outcome.stderr.extend_from_slice(bytes);
                                }
                            }
                        });
                        if let Some(sink) = &mut lines {
                            sink.finish();
                        }
                        if let Some(writer) = writer {
                            let _ = writer.join();
                        }
                        match result {
                            Ok(done) => {
                                use std::os::unix::process::ExitStatusExt;
                                outcome.code = done.status.code();
                                outcome.signal = done.status.signal().unwrap_or(0);
                                outcome.timed_out = done.timed_out;
                            }
                            Err(e) => {
                                // Watching the job failed (a system error): make sure it is gone.
                                let _ = child.kill_tree(config.grace);
                                outcome.spawn_error = Some(format!("lost track of the job: {e}"));
                            }
                        }
                        guardian.forget(child.pgid());
                        lock(&shared.live).remove(&child.pgid());
                        // --timeout N% marks the jobs it killed (no lock per job otherwise).
                        if config.timeout_percent.is_some()
                            && lock(&shared.timed_out).remove(&child.pgid())
                        {
                            outcome.timed_out = true;
                        }
                    }
                }
                outcome.runtime = clock.elapsed();
            }
        }
        if config.timeout_percent.is_some() && !outcome.failed() {
            lock(&shared.runtimes).push(outcome.runtime);
        }
        if config.delay_auto {
            // GNU parallel: 30 % longer after a failed job, 10 % shorter after one that succeeded.
            let mut delay = lock(&shared.delay);
            let factor = if outcome.failed() { 1.3 } else { 0.9 };
            // A delay grown past what a `Duration` holds stays where it is.
            if let Ok(next) = Duration::try_from_secs_f64(delay.as_secs_f64() * factor) {
                *delay = next;
            }
        }
        // A retry is a start: it waits for room as the first attempt did.
        let retry = outcome.failed()
            && attempt < config.tries
            && !shared.killing.load(Ordering::SeqCst)
            && shared.gate.wait(&shared.stop);
        if !retry {
            outcome.args = args;
            outcome.command = command;
            return outcome;
        }
    }
}
