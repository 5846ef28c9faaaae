//! `--load`, `--memfree`, `--memsuspend`, `--noswap` and `--limit`: start a job only while this
//! machine has room for it, by GNU parallel's rules.
//!
//! - `--load MAX`: the load is the number of threads running or waiting for the disk at this
//!   instant (not the minute average: so that at most one start pushes it over), `procs_running +
//!   procs_blocked` of `/proc/stat` less the thread reading it. A job starts while it is below MAX.
//! - `--memfree SIZE`: free memory is `MemFree + Buffers + Cached + SwapCached` of `/proc/meminfo`,
//!   GNU parallel's figure. A job starts while at least SIZE is free; when less than half of SIZE is
//!   free, the youngest running job is killed (and run again if `--retries` allows).
//! - `--memsuspend SIZE`: under twice SIZE free, the youngest jobs are stopped (`SIGSTOP`) so that
//!   fewer run (one under SIZE), and continued when memory comes back; a job starts while at least
//!   SIZE (plus `--memfree`'s) is free.
//! - `--noswap`: the machine swaps when, over the last second, pages went both in and out
//!   (`pswpin` and `pswpout` of `/proc/vmstat` both grew). Until the first second is measured the
//!   answer is unknown, and no job starts (as in GNU parallel).
//! - `--limit "CMD ARGS"`: the shell runs the command before each start; status 0 starts the job,
//!   1 holds it, 2 also kills the youngest running job (checked every second while jobs run).
//!   `io N`, `load N` and `mem SIZE` are built in: the busiest disk's `%util` over a second (from
//!   `/proc/diskstats`) above N, the load above N, less than SIZE free (2 under half of it).
//!
//! Starts pass the [`Gate`] one at a time, each measuring afresh, so that the jobs started just
//! before count in the load. Linux only: the figures come from `/proc` (`MARTELLI_RUN_PROC` names
//! another directory with the same files, for tests).

mod figures;
mod gate;

pub(crate) use gate::{Gate, Jobs};

use figures::Proc;
use std::io;

use super::RunError;

/// The limits asked for; all `None`/`false` when none was.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Limits {
    /// `--load`: start a job only while the load is below this.
    pub(crate) load: Option<f64>,
    /// `--memfree`: start a job only while this many bytes are free; kill the youngest job when
    /// fewer than half are.
    pub(crate) memfree: Option<u64>,
    /// `--memsuspend`: stop the youngest jobs while fewer than twice this many bytes are free.
    pub(crate) memsuspend: Option<u64>,
    /// `--noswap`: start no job while the machine swaps.
    pub(crate) noswap: bool,
    /// `--limit`: a command (or a built-in check) that decides each start.
    pub(crate) limit: Option<LimitCommand>,
}

/// `--limit`'s command.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum LimitCommand {
    /// `io N`: over when the busiest disk was busy more than N % of the last second.
    Io(f64),
    /// `load N`: over when the load is above N.
    Load(f64),
    /// `mem SIZE`: over when less than SIZE is free; far over (kill) under half.
    Mem(u64),
    /// Any other command, run by the shell: its exit status is the answer.
    Script(String),
}

impl Limits {
    /// Parses the options (`cores` for `--load`'s `N%`, `+N` and `-N`), and checks that this
    /// machine can give the figures they need.
    pub(crate) fn parse(o: &LimitOptions<'_>, cores: usize) -> Result<Limits, RunError> {
        let limits = Limits {
            load: o.load.map(|s| parse_load(s, cores)).transpose()?,
            memfree: o
                .memfree
                .map(|s| parse_memory("--memfree", s))
                .transpose()?
                .filter(|&m| m > 0),
            memsuspend: o
                .memsuspend
                .map(|s| parse_memory("--memsuspend", s))
                .transpose()?
                .filter(|&m| m > 0),
            noswap: o.noswap,
            limit: o.limit.map(parse_limit).transpose()?,
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
        if limits.memsuspend.is_some() {
            check("--memsuspend", "meminfo", proc.free_memory().map(drop))?;
        }
        if limits.noswap {
            check("--noswap", "vmstat", proc.swap_counters().map(drop))?;
        }
        match &limits.limit {
            Some(LimitCommand::Io(_)) => {
                check("--limit io", "diskstats", proc.disk_busy().map(drop))?
            }
            Some(LimitCommand::Load(_)) => check("--limit load", "stat", proc.load().map(drop))?,
            Some(LimitCommand::Mem(_)) => {
                check("--limit mem", "meminfo", proc.free_memory().map(drop))?
            }
            Some(LimitCommand::Script(_)) | None => {}
        }
        Ok(limits)
    }

    /// The free memory a start needs: `--memfree` plus `--memsuspend` (0: no limit).
    pub(crate) fn min_free(&self) -> u64 {
        self.memfree.unwrap_or(0) + self.memsuspend.unwrap_or(0)
    }

    /// True when any limit is set.
    pub(crate) fn any(&self) -> bool {
        self.load.is_some()
            || self.memfree.is_some()
            || self.memsuspend.is_some()
            || self.noswap
            || self.limit.is_some()
    }

    /// True when a thread must watch the running jobs or sample the machine (kills, suspensions,
    /// figures measured over a second).
    pub(crate) fn watched(&self) -> bool {
        self.memfree.is_some() || self.memsuspend.is_some() || self.noswap || self.limit.is_some()
    }
}

/// The limit options as given.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct LimitOptions<'a> {
    pub(crate) load: Option<&'a str>,
    pub(crate) memfree: Option<&'a str>,
    pub(crate) memsuspend: Option<&'a str>,
    pub(crate) noswap: bool,
    pub(crate) limit: Option<&'a str>,
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
        decimal(spec).ok_or_else(bad)?
    };
    Ok(load.max(0.01))
}

fn digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// A plain decimal number: `2`, `1.5`.
fn decimal(s: &str) -> Option<f64> {
    let (whole, fraction) = s.split_once('.').unwrap_or((s, "0"));
    (digits(whole) && digits(fraction))
        .then(|| s.parse().ok())
        .flatten()
}

/// `--memfree`, `--memsuspend`: bytes, with GNU parallel's suffixes (K M G T P powers of 1024,
/// k m g t p of 1000).
pub(crate) fn parse_memory(option: &str, spec: &str) -> Result<u64, RunError> {
    if spec == "0" {
        return Ok(0);
    }
    super::pipe::parse_size(spec)
        .and_then(|n| u64::try_from(n).ok())
        .ok_or_else(|| {
            RunError::Usage(format!(
                "invalid {option} '{spec}': expected a size such as 2G, 500M or 1000000000 bytes"
            ))
        })
}

/// `--limit`: `io N`, `load N`, `mem SIZE`, or any command.
pub(crate) fn parse_limit(spec: &str) -> Result<LimitCommand, RunError> {
    let words: Vec<&str> = spec.split_whitespace().collect();
    let bad = |what: &str| {
        RunError::Usage(format!(
            "invalid --limit '{spec}': {what} (or give a command whose exit status decides: 0 start, 1 wait, 2 kill the youngest job)"
        ))
    };
    match words.as_slice() {
        [] => Err(bad("expected a command")),
        ["io", n] => decimal(n)
            .map(LimitCommand::Io)
            .ok_or_else(|| bad("io takes a percentage of time a disk is busy, such as io 50")),
        ["load", n] => decimal(n)
            .map(LimitCommand::Load)
            .ok_or_else(|| bad("load takes a number of running threads, such as load 4")),
        ["mem", n] => parse_memory("--limit mem", n)
            .map(LimitCommand::Mem)
            .map_err(|_| bad("mem takes a size such as mem 2G")),
        _ => Ok(LimitCommand::Script(spec.to_owned())),
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
