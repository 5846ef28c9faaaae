//! `--load`, `--memfree` and `--noswap`: start a job only while this machine has room for it, by
//! GNU parallel's rules.
//!
//! - `--load MAX`: the load is the number of threads running or waiting for the disk at this
//!   instant (not the minute average: so that at most one start pushes it over), `procs_running +
//!   procs_blocked` of `/proc/stat` less the thread reading it. A job starts while it is below MAX.
//! - `--memfree SIZE`: free memory is `MemFree + Buffers + Cached + SwapCached` of `/proc/meminfo`,
//!   GNU parallel's figure. A job starts while at least SIZE is free; when less than half of SIZE is
//!   free, the youngest running job is killed (and run again if `--retries` allows).
//! - `--noswap`: the machine swaps when, over the last second, pages went both in and out
//!   (`pswpin` and `pswpout` of `/proc/vmstat` both grew). Until the first second is measured the
//!   answer is unknown, and no job starts (as in GNU parallel).
//!
//! Starts pass the [`Gate`] one at a time, each measuring afresh, so that the jobs started just
//! before count in the load. Linux only: the figures come from `/proc` (`MARTELLI_RUN_PROC` names
//! another directory with the same three files, for tests).

use std::io;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use super::RunError;

/// How often a closed gate looks again.
const POLL: Duration = Duration::from_millis(100);
/// The window over which swap activity is measured.
const SWAP_WINDOW: Duration = Duration::from_secs(1);
/// How long a closed gate waits before it says why, when stderr is a terminal.
const TELL_AFTER: Duration = Duration::from_secs(10);

/// The limits asked for; all `None`/`false` when none was.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Limits {
    /// `--load`: start a job only while the load is below this.
    pub(crate) load: Option<f64>,
    /// `--memfree`: start a job only while this many bytes are free; kill the youngest job when
    /// fewer than half are.
    pub(crate) memfree: Option<u64>,
    /// `--noswap`: start no job while the machine swaps.
    pub(crate) noswap: bool,
}

impl Limits {
    /// Parses the three options (`cores` for `--load`'s `N%`, `+N` and `-N`), and checks that this
    /// machine can give the figures they need.
    pub(crate) fn parse(
        load: Option<&str>,
        memfree: Option<&str>,
        noswap: bool,
        cores: usize,
    ) -> Result<Limits, RunError> {
        let limits = Limits {
            load: load.map(|s| parse_load(s, cores)).transpose()?,
            memfree: memfree.map(parse_memfree).transpose()?.filter(|&m| m > 0),
            noswap,
        };
        let proc = Proc::new();
        let check = |option: &str, file: &str, read: io::Result<()>| {
            read.map_err(|e| {
                RunError::Usage(format!(
                    "{option} needs {} (Linux) and it cannot be read: {e}",
                    proc.root.join(file).display()
                ))
            })
        };
        if limits.load.is_some() {
            check("--load", "stat", proc.load().map(drop))?;
        }
        if limits.memfree.is_some() {
            check("--memfree", "meminfo", proc.free_memory().map(drop))?;
        }
        if limits.noswap {
            check("--noswap", "vmstat", proc.swap_counters().map(drop))?;
        }
        Ok(limits)
    }

    /// True when any limit is set.
    pub(crate) fn any(&self) -> bool {
        self.load.is_some() || self.memfree.is_some() || self.noswap
    }
}

/// `--load`: `N` (a number, fractions allowed), `N%` of the cores, `+N` or `-N` cores; 0 is 0.01,
/// as in GNU parallel.
pub(crate) fn parse_load(spec: &str, cores: usize) -> Result<f64, RunError> {
    let bad = || {
        RunError::Usage(format!(
            "invalid --load '{spec}': expected a load (2 or 1.5), a percentage of the cores (100%), or +N or -N cores"
        ))
    };
    let cores = cores as f64;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let load = if let Some(p) = spec.strip_suffix('%') {
        if !digits(p) {
            return Err(bad());
        }
        cores * p.parse::<f64>().map_err(|_| bad())? / 100.0
    } else if let Some(n) = spec.strip_prefix('+').filter(|n| digits(n)) {
        cores + n.parse::<f64>().map_err(|_| bad())?
    } else if let Some(n) = spec.strip_prefix('-').filter(|n| digits(n)) {
        cores - n.parse::<f64>().map_err(|_| bad())?
    } else {
        let (whole, fraction) = spec.split_once('.').unwrap_or((spec, "0"));
        if !digits(whole) || !digits(fraction) {
            return Err(bad());
        }
        spec.parse::<f64>().map_err(|_| bad())?
    };
    Ok(load.max(0.01))
}

/// `--memfree`: bytes, with GNU parallel's suffixes (K M G T P powers of 1024, k m g t p of 1000).
pub(crate) fn parse_memfree(spec: &str) -> Result<u64, RunError> {
    if spec == "0" {
        return Ok(0);
    }
    super::pipe::parse_size(spec)
        .and_then(|n| u64::try_from(n).ok())
        .ok_or_else(|| {
            RunError::Usage(format!(
                "invalid --memfree '{spec}': expected a size such as 2G, 500M or 1000000000 bytes"
            ))
        })
}

/// Where the figures are read.
struct Proc {
    root: PathBuf,
}

impl Proc {
    fn new() -> Proc {
        let root = std::env::var_os("MARTELLI_RUN_PROC")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/proc"));
        Proc { root }
    }

    fn read(&self, file: &str) -> io::Result<String> {
        std::fs::read_to_string(self.root.join(file))
    }

    /// The load now: threads running or blocked on the disk, less the one reading.
    fn load(&self) -> io::Result<f64> {
        parse_stat(&self.read("stat")?)
    }

    /// Free memory in bytes, GNU parallel's way.
    fn free_memory(&self) -> io::Result<u64> {
        parse_meminfo(&self.read("meminfo")?)
    }

    /// Pages swapped in and out since boot.
    fn swap_counters(&self) -> io::Result<(u64, u64)> {
        parse_vmstat(&self.read("vmstat")?)
    }
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_owned())
}

/// The value of the line `key value` in `text`.
fn field(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        (words.next()? == key).then(|| words.next()?.parse().ok())?
    })
}

/// `procs_running + procs_blocked - 1` of `/proc/stat`.
fn parse_stat(text: &str) -> io::Result<f64> {
    let running = field(text, "procs_running").ok_or_else(|| invalid("no procs_running line"))?;
    let blocked = field(text, "procs_blocked").ok_or_else(|| invalid("no procs_blocked line"))?;
    Ok((running + blocked).saturating_sub(1) as f64)
}

/// `MemFree + Buffers + Cached + SwapCached` of `/proc/meminfo` (kB), in bytes.
fn parse_meminfo(text: &str) -> io::Result<u64> {
    let mut sum = 0u64;
    let mut seen = false;
    for key in ["MemFree:", "Buffers:", "Cached:", "SwapCached:"] {
        if let Some(kb) = field(text, key) {
            sum = sum.saturating_add(kb);
            seen |= key == "MemFree:";
        }
    }
    if !seen {
        return Err(invalid("no MemFree line"));
    }
    Ok(sum.saturating_mul(1024))
}

/// `pswpin` and `pswpout` of `/proc/vmstat`.
fn parse_vmstat(text: &str) -> io::Result<(u64, u64)> {
    let pages_in = field(text, "pswpin").ok_or_else(|| invalid("no pswpin line"))?;
    let pages_out = field(text, "pswpout").ok_or_else(|| invalid("no pswpout line"))?;
    Ok((pages_in, pages_out))
}

/// Swap activity as last measured.
const SWAP_UNKNOWN: u8 = 0;
const SWAP_NONE: u8 = 1;
const SWAP_ACTIVE: u8 = 2;

/// Where jobs wait for room to start.
pub(crate) struct Gate {
    limits: Limits,
    proc: Proc,
    /// Starts pass one at a time, each measuring afresh.
    turn: Mutex<()>,
    /// `--noswap`: the last second's activity, kept by [`Gate::watch`].
    swap: AtomicU8,
    /// Whether a closed gate has said why already.
    told: AtomicBool,
}

/// Why the gate is closed.
enum Closed {
    Load(f64),
    Memory(u64),
    Swap,
    /// A figure could not be read: as GNU parallel does with an unknown load, start nothing.
    Unreadable(io::Error),
}

impl Gate {
    pub(crate) fn new(limits: Limits) -> Gate {
        Gate {
            limits,
            proc: Proc::new(),
            turn: Mutex::new(()),
            swap: AtomicU8::new(SWAP_UNKNOWN),
            told: AtomicBool::new(false),
        }
    }

    /// Blocks until a job may start; false when `stop` was set first.
    pub(crate) fn wait(&self, stop: &AtomicBool) -> bool {
        if !self.limits.any() {
            return true;
        }
        let _turn = self.turn.lock().unwrap_or_else(|e| e.into_inner());
        let since = Instant::now();
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
            thread::sleep(POLL);
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
        if let Some(min) = self.limits.memfree {
            match self.proc.free_memory() {
                Ok(free) if free < min => return Some(Closed::Memory(free)),
                Ok(_) => {}
                Err(e) => return Some(Closed::Unreadable(e)),
            }
        }
        if self.limits.noswap && self.swap.load(Ordering::SeqCst) != SWAP_NONE {
            return Some(Closed::Swap);
        }
        None
    }

    /// Says once, on a terminal, why jobs wait.
    fn tell(&self, closed: &Closed) {
        use std::io::{IsTerminal, Write};
        if !io::stderr().is_terminal() || self.told.swap(true, Ordering::SeqCst) {
            return;
        }
        let why = match closed {
            Closed::Load(load) => format!(
                "the load is {load} and --load allows below {}",
                self.limits.load.unwrap_or_default()
            ),
            Closed::Memory(free) => format!(
                "{} free and --memfree asks for {}",
                bytes(*free),
                bytes(self.limits.memfree.unwrap_or_default())
            ),
            Closed::Swap => "the machine is swapping (--noswap)".to_owned(),
            Closed::Unreadable(e) => format!("the machine's figures cannot be read: {e}"),
        };
        let _ = writeln!(
            io::stderr().lock(),
            "martelli run: waiting to start jobs: {why}"
        );
    }

    /// Measures swap activity once a second (`--noswap`) and, with `--memfree`, kills the
    /// youngest job while less than half of it is free. Runs until `done` is set. `youngest`
    /// gives the youngest running job (its sequence number and process group); `kill` kills a
    /// group and returns once it is gone.
    pub(crate) fn watch(
        &self,
        done: &AtomicBool,
        youngest: impl Fn() -> Option<(u64, u32)>,
        kill: impl Fn(u32),
    ) {
        let mut last_swap: Option<(Instant, (u64, u64))> = None;
        while !done.load(Ordering::SeqCst) {
            if self.limits.noswap {
                let now = Instant::now();
                match (self.proc.swap_counters(), last_swap) {
                    (Ok(counters), None) => last_swap = Some((now, counters)),
                    (Ok(counters), Some((at, before))) if now - at >= SWAP_WINDOW => {
                        let active = counters.0 > before.0 && counters.1 > before.1;
                        self.swap.store(
                            if active { SWAP_ACTIVE } else { SWAP_NONE },
                            Ordering::SeqCst,
                        );
                        last_swap = Some((now, counters));
                    }
                    (Ok(_), Some(_)) => {}
                    (Err(_), _) => {
                        self.swap.store(SWAP_UNKNOWN, Ordering::SeqCst);
                        last_swap = None;
                    }
                }
            }
            if let Some(min) = self.limits.memfree {
                if let Ok(free) = self.proc.free_memory() {
                    if free < min / 2 {
                        if let Some((seq, pgid)) = youngest() {
                            use std::io::Write;
                            let _ = writeln!(
                                io::stderr().lock(),
                                "martelli run: killing job {seq}, the youngest: {} free is under half of --memfree {} (it runs again if --retries allows)",
                                bytes(free),
                                bytes(min)
                            );
                            kill(pgid);
                            continue;
                        }
                    }
                }
            }
            thread::sleep(POLL);
        }
    }
}

/// Bytes for a person: `1.5 GiB`.
fn bytes(n: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < units.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", units[unit])
    }
}

#[cfg(test)]
mod tests;
