//! The machine's figures the limits read, from `/proc` (Linux), in GNU parallel's definitions.

use std::collections::HashMap;
use std::io;
use std::path::PathBuf;

/// Where the figures are read: `/proc`, or the directory `MARTELLI_RUN_PROC` names (for tests).
pub(super) struct Proc {
    pub(super) root: PathBuf,
}

impl Proc {
    pub(super) fn new() -> Proc {
        let root = std::env::var_os("MARTELLI_RUN_PROC")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/proc"));
        Proc { root }
    }

    fn read(&self, file: &str) -> io::Result<String> {
        std::fs::read_to_string(self.root.join(file))
    }

    /// The load now: threads running or blocked on the disk, less the one reading.
    pub(super) fn load(&self) -> io::Result<f64> {
        parse_stat(&self.read("stat")?)
    }

    /// Free memory in bytes, GNU parallel's way.
    pub(super) fn free_memory(&self) -> io::Result<u64> {
        parse_meminfo(&self.read("meminfo")?)
    }

    /// Pages swapped in and out since boot.
    pub(super) fn swap_counters(&self) -> io::Result<(u64, u64)> {
        parse_vmstat(&self.read("vmstat")?)
    }

    /// Milliseconds each block device has spent doing I/O since boot.
    pub(super) fn disk_busy(&self) -> io::Result<HashMap<String, u64>> {
        parse_diskstats(&self.read("diskstats")?)
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
pub(super) fn parse_stat(text: &str) -> io::Result<f64> {
    let running = field(text, "procs_running").ok_or_else(|| invalid("no procs_running line"))?;
    let blocked = field(text, "procs_blocked").ok_or_else(|| invalid("no procs_blocked line"))?;
    Ok((running + blocked).saturating_sub(1) as f64)
}

/// `MemFree + Buffers + Cached + SwapCached` of `/proc/meminfo` (kB), in bytes.
pub(super) fn parse_meminfo(text: &str) -> io::Result<u64> {
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
pub(super) fn parse_vmstat(text: &str) -> io::Result<(u64, u64)> {
    let pages_in = field(text, "pswpin").ok_or_else(|| invalid("no pswpin line"))?;
    let pages_out = field(text, "pswpout").ok_or_else(|| invalid("no pswpout line"))?;
    Ok((pages_in, pages_out))
}

/// Each device's milliseconds spent doing I/O (the 10th statistic, `io_ticks`) of
/// `/proc/diskstats`.
pub(super) fn parse_diskstats(text: &str) -> io::Result<HashMap<String, u64>> {
    let mut busy = HashMap::new();
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.len() < 13 {
            continue;
        }
        let ticks = words[12]
            .parse()
            .map_err(|_| invalid("an io_ticks field that is not a number"))?;
        busy.insert(words[2].to_owned(), ticks);
    }
    if busy.is_empty() {
        return Err(invalid("no device lines"));
    }
    Ok(busy)
}

/// The busiest device's share of `elapsed_ms` spent doing I/O between two readings, in percent
/// (iostat's `%util`); devices that appeared in between are left out.
pub(super) fn busiest(
    before: &HashMap<String, u64>,
    after: &HashMap<String, u64>,
    elapsed_ms: f64,
) -> f64 {
    if elapsed_ms <= 0.0 {
        return 0.0;
    }
    after
        .iter()
        .filter_map(|(name, &ticks)| {
            let earlier = *before.get(name)?;
            Some(ticks.saturating_sub(earlier) as f64 * 100.0 / elapsed_ms)
        })
        .fold(0.0, f64::max)
        .min(100.0)
}
