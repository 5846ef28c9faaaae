//! The gate jobs pass to start, and the thread that watches the running jobs and samples the
//! machine (`--memfree` and `--limit` kills, `--memsuspend`, swap and disk activity over a second).

use std::collections::{HashMap, HashSet};
use std::io::{self, IsTerminal, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use martelli::process::{self, Signal};

use super::figures::{Proc, busiest};
use super::{LimitCommand, Limits, bytes};

/// How often a closed gate looks again at first; it backs off to [`MAX_POLL`].
const POLL: Duration = Duration::from_millis(100);
const MAX_POLL: Duration = Duration::from_secs(1);
/// The window over which swap and disk activity are measured.
const WINDOW: Duration = Duration::from_secs(1);
/// How often `--limit` is asked, while jobs run, whether to kill the youngest.
const LIMIT_EVERY: Duration = Duration::from_secs(1);
/// How long a closed gate waits before it says why, when stderr is a terminal.
const TELL_AFTER: Duration = Duration::from_secs(10);

/// The running jobs, as the watching thread sees and stops them.
pub(crate) trait Jobs {
    /// The running jobs: (sequence number, process group).
    fn running(&self) -> Vec<(u64, u32)>;
    /// Kills a job's process group (`SIGTERM`, then `SIGKILL` after the grace) and returns once
    /// it is gone.
    fn kill(&self, pgid: u32);
}

/// Swap activity as last measured.
const SWAP_UNKNOWN: u8 = 0;
const SWAP_NONE: u8 = 1;
const SWAP_ACTIVE: u8 = 2;

/// Where jobs wait for room to start.
pub(crate) struct Gate {
    limits: Limits,
    proc: Proc,
    /// The shell that runs `--limit`'s command.
    shell: PathBuf,
    /// Starts pass one at a time, each measuring afresh.
    turn: Mutex<()>,
    /// `--noswap`: the last second's activity, kept by [`Gate::watch`].
    swap: AtomicU8,
    /// `--limit io`: the busiest disk's `%util` over the last second, kept by [`Gate::watch`];
    /// `None` until measured.
    io_util: Mutex<Option<f64>>,
    /// Whether a closed gate has said why already.
    told: AtomicBool,
}

/// Why the gate is closed.
enum Closed {
    Load(f64),
    Memory(u64),
    Swap,
    /// `--limit`'s status.
    Limit(i32),
    /// A figure could not be read: as GNU parallel does with an unknown load, start nothing.
    Unreadable(io::Error),
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Gate {
    pub(crate) fn new(limits: Limits, shell: PathBuf) -> Gate {
        Gate {
            limits,
            proc: Proc::new(),
            shell,
            turn: Mutex::new(()),
            swap: AtomicU8::new(SWAP_UNKNOWN),
            io_util: Mutex::new(None),
            told: AtomicBool::new(false),
        }
    }

    /// Blocks until a job may start; false when `stop` was set first.
    pub(crate) fn wait(&self, stop: &AtomicBool) -> bool {
        if !self.limits.any() {
            return true;
        }
        let _turn = lock(&self.turn);
        let since = Instant::now();
        let mut poll = POLL;
        loop {
            if stop.load(Ordering::SeqCst) {
                return false;
            }
            let Some(closed) = self.closed() else {
                return true;
            };
            if since.elapsed() >= TELL_AFTER {
                self.tell(&closed);
            }
            thread::sleep(poll);
            poll = (poll * 2).min(MAX_POLL);
        }
    }

    /// Why no job may start now, if so.
    fn closed(&self) -> Option<Closed> {
        if let Some(max) = self.limits.load {
            match self.proc.load() {
                Ok(load) if load >= max => return Some(Closed::Load(load)),
                Ok(_) => {}
                Err(e) => return Some(Closed::Unreadable(e)),
            }
        }
        let min_free = self.limits.min_free();
        if min_free > 0 {
            match self.proc.free_memory() {
                Ok(free) if free < min_free => return Some(Closed::Memory(free)),
                Ok(_) => {}
                Err(e) => return Some(Closed::Unreadable(e)),
            }
        }
        if self.limits.noswap && self.swap.load(Ordering::SeqCst) != SWAP_NONE {
            return Some(Closed::Swap);
        }
        match self.limit_status() {
            Ok(0) => None,
            Ok(status) => Some(Closed::Limit(status)),
            Err(e) => Some(Closed::Unreadable(e)),
        }
    }

    /// `--limit`'s answer now: 0 start, 1 hold, 2 kill the youngest job (any other status holds,
    /// as in GNU parallel); 0 without `--limit`.
    fn limit_status(&self) -> io::Result<i32> {
        Ok(match &self.limits.limit {
            None => 0,
            // Unknown until a second is measured: hold, as GNU parallel does.
            Some(LimitCommand::Io(max)) => match *lock(&self.io_util) {
                Some(util) if util <= *max => 0,
                _ => 1,
            },
            // GNU parallel's count includes its own `ps`: over when the load reaches N.
            Some(LimitCommand::Load(max)) => i32::from(self.proc.load()? + 1.0 > *max),
            Some(LimitCommand::Mem(min)) => {
                let free = self.proc.free_memory()?;
                if free < min / 2 {
                    2
                } else {
                    i32::from(free < *min)
                }
            }
            Some(LimitCommand::Script(script)) => {
                let status = Command::new(&self.shell)
                    .arg("-c")
                    .arg(script)
                    // GNU parallel names the machine the job would run on; here always this one.
                    .env("SSHLOGIN", ":")
                    .stdin(Stdio::null())
                    .status()
                    .map_err(|e| {
                        io::Error::new(
                            e.kind(),
                            format!(
                                "cannot run --limit's command with {}: {e}",
                                self.shell.display()
                            ),
                        )
                    })?;
                // Killed by a signal: hold.
                status.code().unwrap_or(1)
            }
        })
    }

    /// Says once, on a terminal, why jobs wait.
    fn tell(&self, closed: &Closed) {
        if !io::stderr().is_terminal() || self.told.swap(true, Ordering::SeqCst) {
            return;
        }
        let min_free = self.limits.min_free();
        let why = match closed {
            Closed::Load(load) => format!(
                "the load is {load} and --load allows below {}",
                self.limits.load.unwrap_or_default()
            ),
            Closed::Memory(free) => format!(
                "{} free and --memfree/--memsuspend ask for {}",
                bytes(*free),
                bytes(min_free)
            ),
            Closed::Swap => "the machine is swapping (--noswap)".to_owned(),
            Closed::Limit(status) => format!("--limit's check exited with {status}"),
            Closed::Unreadable(e) => format!("the machine's figures cannot be read: {e}"),
        };
        let _ = writeln!(
            io::stderr().lock(),
            "martelli run: waiting to start jobs: {why}"
        );
    }

    /// Watches the running jobs and samples the machine until `done` is set: swap activity
    /// (`--noswap`) and disk activity (`--limit io`) over each second; with `--memfree`, kills the
    /// youngest job while less than half of it is free; with `--memsuspend`, stops the youngest
    /// jobs while memory is short and continues them when it is back; with `--limit`, kills the
    /// youngest job when the check says 2.
    pub(crate) fn watch(&self, done: &AtomicBool, jobs: &dyn Jobs) {
        let mut swap_base: Option<(Instant, (u64, u64))> = None;
        let mut io_base: Option<(Instant, HashMap<String, u64>)> = None;
        let mut stopped: HashSet<u32> = HashSet::new();
        let mut limit_asked = Instant::now();
        while !done.load(Ordering::SeqCst) {
            let now = Instant::now();
            if self.limits.noswap {
                self.sample_swap(now, &mut swap_base);
            }
            if matches!(self.limits.limit, Some(LimitCommand::Io(_))) {
                self.sample_disks(now, &mut io_base);
            }
            if let Some(min) = self.limits.memfree {
                if let Ok(free) = self.proc.free_memory() {
                    if free < min / 2
                        && kill_youngest(
                            jobs,
                            &format!(
                                "{} free is under half of --memfree {}",
                                bytes(free),
                                bytes(min)
                            ),
                        )
                    {
                        continue;
                    }
                }
            }
            if let Some(size) = self.limits.memsuspend {
                self.suspend(size, jobs, &mut stopped);
            }
            if self.limits.limit.is_some() && now - limit_asked >= LIMIT_EVERY {
                limit_asked = now;
                if !jobs.running().is_empty()
                    && matches!(self.limit_status(), Ok(2))
                    && kill_youngest(jobs, "--limit's check exited with 2")
                {
                    continue;
                }
            }
            thread::sleep(POLL);
        }
        for pgid in stopped {
            let _ = process::signal_group(pgid, Signal::CONT);
        }
    }

    fn sample_swap(&self, now: Instant, base: &mut Option<(Instant, (u64, u64))>) {
        match (self.proc.swap_counters(), *base) {
            (Ok(counters), None) => *base = Some((now, counters)),
            (Ok(counters), Some((at, before))) if now - at >= WINDOW => {
                let active = counters.0 > before.0 && counters.1 > before.1;
                self.swap.store(
                    if active { SWAP_ACTIVE } else { SWAP_NONE },
                    Ordering::SeqCst,
                );
                *base = Some((now, counters));
            }
            (Ok(_), Some(_)) => {}
            (Err(_), _) => {
                self.swap.store(SWAP_UNKNOWN, Ordering::SeqCst);
                *base = None;
            }
        }
    }

    fn sample_disks(&self, now: Instant, base: &mut Option<(Instant, HashMap<String, u64>)>) {
        match (self.proc.disk_busy(), base.take()) {
            (Ok(busy), None) => *base = Some((now, busy)),
            (Ok(busy), Some((at, before))) if now - at >= WINDOW => {
                let elapsed_ms = (now - at).as_secs_f64() * 1000.0;
                *lock(&self.io_util) = Some(busiest(&before, &busy, elapsed_ms));
                *base = Some((now, busy));
            }
            (Ok(_), kept @ Some(_)) => *base = kept,
            (Err(_), _) => *lock(&self.io_util) = None,
        }
    }

    /// `--memsuspend`, GNU parallel's rule: with less than twice `size` free, the oldest
    /// `1 / (2 - free / size)` jobs run (at least one) and the younger ones are stopped; with
    /// twice `size` free, every stopped job continues.
    fn suspend(&self, size: u64, jobs: &dyn Jobs, stopped: &mut HashSet<u32>) {
        let Ok(free) = self.proc.free_memory() else {
            return;
        };
        let mut running = jobs.running();
        stopped.retain(|pgid| running.iter().any(|&(_, p)| p == *pgid));
        let was_stopping = !stopped.is_empty();
        if free < size.saturating_mul(2) {
            running.sort_by_key(|&(seq, _)| seq);
            let share = 1.0 / (2.0 - free as f64 / size as f64);
            let keep = (share.floor() as usize).min(running.len().saturating_sub(1)) + 1;
            for (i, &(_, pgid)) in running.iter().enumerate() {
                if i < keep {
                    if stopped.remove(&pgid) {
                        let _ = process::signal_group(pgid, Signal::CONT);
                    }
                } else if stopped.insert(pgid) {
                    let _ = process::signal_group(pgid, Signal::STOP);
                }
            }
            if !was_stopping && !stopped.is_empty() {
                let _ = writeln!(
                    io::stderr().lock(),
                    "martelli run: memory is short ({} free, --memsuspend {}): {} of {} jobs stopped until it is back",
                    bytes(free),
                    bytes(size),
                    stopped.len(),
                    running.len()
                );
            }
        } else if was_stopping {
            for pgid in stopped.drain() {
                let _ = process::signal_group(pgid, Signal::CONT);
            }
            let _ = writeln!(
                io::stderr().lock(),
                "martelli run: memory is back ({} free): the stopped jobs continue",
                bytes(free)
            );
        }
    }
}

/// Kills the youngest running job (the highest sequence number), saying why; false when no job
/// runs.
fn kill_youngest(jobs: &dyn Jobs, why: &str) -> bool {
    let Some((seq, pgid)) = jobs.running().into_iter().max_by_key(|&(seq, _)| seq) else {
        return false;
    };
    let _ = writeln!(
        io::stderr().lock(),
        "martelli run: killing job {seq}, the youngest: {why} (it runs again if --retries allows)"
    );
    jobs.kill(pgid);
    true
}
