//! Is the machine busy? Other programs' share of the CPUs, the hypervisor's steal, the run queue and
//! the load average: before the probe measures anything, while each row is measured, and after.
//!
//! The probe tells its own work from other work by CPU time. `/proc/stat` says how many ticks the
//! CPUs this process may use (its affinity) spent busy, idle and stolen; `/proc/PID/stat` says how
//! many this process used, and each of its descendants, alive or already waited for. Busy ticks
//! less the probe's own are other programs'. The load average is reported too, but it does not
//! decide: it is a one-minute (and longer) average, so it still counts work that ended before the
//! probe began — a previous run's threads, a build that just finished.
//!
//! A row is measured *while busy* when other programs used at least [`OTHER_BUSY`] of the CPUs'
//! time, or the hypervisor stole at least [`STEAL_BUSY`] of it, during its repetitions. A row too
//! short for the tick counters to say (under [`MIN_WINDOW_S`] of CPU time) is judged by the step it
//! belongs to, and where that is short too, by the whole probe.

use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fs;
use std::time::{Duration, Instant};

/// Other programs' share of the CPUs' time from which a row counts as measured while busy.
pub(crate) const OTHER_BUSY: f64 = 0.10;
/// The hypervisor's steal from which a row counts as measured while busy.
pub(crate) const STEAL_BUSY: f64 = 0.05;
/// The least CPU time (seconds, summed over the usable CPUs) a window needs to be judged on its own.
pub(crate) const MIN_WINDOW_S: f64 = 0.2;

/// One reading of the counters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Counters {
    at: Instant,
    /// Ticks the usable CPUs spent running something (user, nice, system, irq, softirq).
    busy: u64,
    /// Ticks stolen from them by the hypervisor.
    steal: u64,
    /// All their ticks, idle ones included.
    total: u64,
    /// Ticks this process and its descendants used.
    own: u64,
    /// Runnable tasks on the whole machine, this reading's own thread included (`procs_running`).
    running: u32,
}

/// The CPU lines of `/proc/stat` for the CPUs in `cpus`: (busy, steal, total) ticks, and
/// `procs_running`.
pub(crate) fn parse_proc_stat(text: &str, cpus: &[usize]) -> Option<(u64, u64, u64, u32)> {
    let (mut busy, mut steal, mut total) = (0, 0, 0);
    let mut running = None;
    let mut seen = 0;
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        let Some(name) = fields.next() else { continue };
        if name == "procs_running" {
            running = fields.next().and_then(|v| v.parse().ok());
            continue;
        }
        let Some(cpu) = name
            .strip_prefix("cpu")
            .and_then(|n| n.parse::<usize>().ok())
        else {
            continue;
        };
        if !cpus.contains(&cpu) {
            continue;
        }
        // user nice system idle iowait irq softirq steal (guest time is inside user and nice).
        let v: Vec<u64> = fields.take(8).filter_map(|f| f.parse().ok()).collect();
        if v.len() < 8 {
            return None;
        }
        busy += v[0] + v[1] + v[2] + v[5] + v[6];
        steal += v[7];
        total += v[..8].iter().sum::<u64>();
        seen += 1;
    }
    (seen > 0).then_some((busy, steal, total, running?))
}

/// utime + stime + cutime + cstime of a `/proc/PID/stat` line: the ticks a process used, and
/// those of its children it waited for.
pub(crate) fn parse_pid_stat(text: &str) -> Option<u64> {
    // The command name (field 2) is in parentheses and may hold spaces: count after the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14–17 of the line are 12–15 after the name (state is 3, the first after it).
    let ticks = |i: usize| fields.get(i)?.parse::<u64>().ok();
    Some(ticks(11)? + ticks(12)? + ticks(13)? + ticks(14)?)
}

/// Ticks used by `pid` and all its descendants, alive or waited for.
fn tree_ticks(pid: u32, depth: u32) -> u64 {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        // It ended between the listing and this read; its parent's counters hold it once reaped.
        return 0;
    };
    let mut ticks = parse_pid_stat(&stat).unwrap_or(0);
    if depth < 8 {
        for child in children(pid) {
            ticks += tree_ticks(child, depth + 1);
        }
    }
    ticks
}

/// The live children of `pid`, from every thread's `children` list.
fn children(pid: u32) -> Vec<u32> {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for task in tasks.flatten() {
        if let Ok(list) = fs::read_to_string(task.path().join("children")) {
            out.extend(
                list.split_whitespace()
                    .filter_map(|c| c.parse::<u32>().ok()),
            );
        }
    }
    out
}

/// The CPUs this process may run on.
pub(crate) fn usable_cpus() -> Vec<usize> {
    match rustix::thread::sched_getaffinity(None) {
        Ok(set) => (0..rustix::thread::CpuSet::MAX_CPU)
            .filter(|&i| set.is_set(i))
            .collect(),
        Err(_) => (0..martelli::available_cores()).collect(),
    }
}

/// Reads the counters now, or `None` where `/proc` cannot tell.
pub(crate) fn read(cpus: &[usize]) -> Option<Counters> {
    let (busy, steal, total, running) =
        parse_proc_stat(&fs::read_to_string("/proc/stat").ok()?, cpus)?;
    Some(Counters {
        at: Instant::now(),
        busy,
        steal,
        total,
        own: tree_ticks(std::process::id(), 0),
        running,
    })
}

/// Other programs' use of the CPUs over a window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Window {
    /// How long the window lasted, seconds (summed over the windows of a row measured in parts).
    pub(crate) seconds: f64,
    /// Other programs' share of the usable CPUs' time, 0 to 1.
    pub(crate) other_cpu: f64,
    /// The hypervisor's steal, as a share of the usable CPUs' time, 0 to 1.
    pub(crate) steal: f64,
    /// Runnable tasks of other programs (system-wide), on average over the readings at the
    /// window's edges.
    pub(crate) run_queue: f64,
}

impl Window {
    /// Whether other work used enough of the CPUs to disturb what was measured.
    pub(crate) fn is_busy(&self) -> bool {
        self.other_cpu >= OTHER_BUSY || self.steal >= STEAL_BUSY
    }
}

/// Ticks summed over the windows of one row or one step.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Accum {
    seconds: f64,
    other: u64,
    steal: u64,
    total: u64,
    run_queue: f64,
    readings: u32,
}

impl Accum {
    fn add(&mut self, a: &Counters, b: &Counters) {
        let busy = b.busy.saturating_sub(a.busy);
        let own = b.own.saturating_sub(a.own);
        self.seconds += b.at.duration_since(a.at).as_secs_f64();
        self.other += busy.saturating_sub(own);
        self.steal += b.steal.saturating_sub(a.steal);
        self.total += b.total.saturating_sub(a.total);
        // The reading thread is one of the runnable tasks; a finished row leaves no others of ours.
        self.run_queue +=
            f64::from(a.running.saturating_sub(1)) + f64::from(b.running.saturating_sub(1));
        self.readings += 2;
    }

    fn window(&self) -> Window {
        let share = |t: u64| {
            if self.total == 0 {
                0.0
            } else {
                (t as f64 / self.total as f64).min(1.0)
            }
        };
        Window {
            seconds: self.seconds,
            other_cpu: share(self.other),
            steal: share(self.steal),
            run_queue: if self.readings == 0 {
                0.0
            } else {
                self.run_queue / f64::from(self.readings)
            },
        }
    }

    /// Whether the window holds enough CPU time for its shares to mean something.
    fn is_long_enough(&self, ticks_per_s: f64) -> bool {
        self.total as f64 >= MIN_WINDOW_S * ticks_per_s
    }
}

/// The machine in a quiet moment of the probe's (before it measures anything, after it is done).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Moment {
    /// `/proc/loadavg`'s 1-, 5- and 15-minute load averages.
    pub(crate) load_average: [f64; 3],
    #[serde(flatten)]
    pub(crate) window: Window,
}

/// What one row saw of other work.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub(crate) struct RowNoise {
    #[serde(flatten)]
    pub(crate) window: Window,
    /// Measured while other work used the CPUs (judged by the row's step, or the whole probe,
    /// when the row was short).
    pub(crate) busy: bool,
}

/// The `noise` section of the report.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Noise {
    pub(crate) before: Moment,
    /// The whole probe, from its first measurement to its last.
    pub(crate) during: Window,
    pub(crate) after: Moment,
    /// True when other work was running before the probe began ([`Moment::is_busy`]).
    pub(crate) busy_before: bool,
    /// Every measured row, by its path in the report.
    pub(crate) rows: BTreeMap<String, RowNoise>,
    /// The rows measured while other work used the CPUs.
    pub(crate) busy_rows: Vec<String>,
    /// The rows whose interval is wide (`low_confidence` stats).
    pub(crate) low_confidence: Vec<String>,
}

impl Moment {
    /// Whether other work was running: its share of the CPUs, the steal, or a run queue of at least
    /// half the usable cores. The load average alone does not decide (module docs).
    pub(crate) fn is_busy(&self, cores: u64) -> bool {
        self.window.is_busy() || self.window.run_queue >= (cores as f64 / 2.0).max(1.0)
    }
}

/// Watches the machine while the probe runs.
#[derive(Debug)]
pub(crate) struct Monitor {
    cpus: Vec<usize>,
    ticks_per_s: f64,
    started: Option<Counters>,
    state: RefCell<State>,
}

#[derive(Debug, Default)]
struct State {
    rows: BTreeMap<String, (Accum, String)>,
    steps: BTreeMap<String, Accum>,
    step: Option<(String, Counters)>,
}

impl Monitor {
    pub(crate) fn new() -> Monitor {
        let cpus = usable_cpus();
        let ticks_per_s = rustix::param::clock_ticks_per_second() as f64 * cpus.len().max(1) as f64;
        Monitor {
            cpus,
            ticks_per_s,
            started: None,
            state: RefCell::new(State::default()),
        }
    }

    /// Watches the machine for `span` without doing anything else: the quiet moment before (or
    /// after) the probe. Readings every 25 ms give the run queue.
    pub(crate) fn observe(&self, span: Duration) -> Moment {
        let load_average = load_average();
        let first = read(&self.cpus);
        let end = Instant::now() + span;
        let mut acc = Accum::default();
        let mut prev = first;
        while Instant::now() < end {
            std::thread::sleep(Duration::from_millis(25));
            let now = read(&self.cpus);
            if let (Some(a), Some(b)) = (prev, now) {
                acc.add(&a, &b);
            }
            prev = now;
        }
        let mut window = acc.window();
        // Consecutive windows share their edge readings: the run queue is their plain mean anyway.
        window.seconds = acc.seconds;
        Moment {
            load_average,
            window,
        }
    }

    /// Marks the start of the measurements.
    pub(crate) fn start(&mut self) {
        self.started = read(&self.cpus);
    }

    /// Marks the start of a step (a group of rows); the previous one ends.
    pub(crate) fn step(&self, name: &str) {
        let now = read(&self.cpus);
        let mut state = self.state.borrow_mut();
        if let (Some((prev, since)), Some(now)) = (state.step.take(), now) {
            state.steps.entry(prev).or_default().add(&since, &now);
        }
        state.step = now.map(|now| (name.to_owned(), now));
    }

    /// Runs `f`, the measurement (or a part of it) of the row at `path`, and records what other
    /// work did meanwhile.
    pub(crate) fn row<T>(&self, path: &str, f: impl FnOnce() -> T) -> T {
        let before = read(&self.cpus);
        let out = f();
        if let (Some(a), Some(b)) = (before, read(&self.cpus)) {
            let mut state = self.state.borrow_mut();
            let step = state
                .step
                .as_ref()
                .map(|(s, _)| s.clone())
                .unwrap_or_default();
            let entry = state.rows.entry(path.to_owned()).or_default();
            entry.0.add(&a, &b);
            entry.1 = step;
        }
        out
    }

    /// Waits (at most `limit`) until the run queue is back to what it was before the probe: the
    /// probe's own heavy rows leave nothing runnable behind for the next row, or the next run.
    pub(crate) fn settle(&self, before: &Moment, limit: Duration) {
        let end = Instant::now() + limit;
        let quiet = before.window.run_queue.ceil() + 1.0;
        while Instant::now() < end {
            match read(&self.cpus) {
                Some(c) if f64::from(c.running.saturating_sub(1)) <= quiet => return,
                Some(_) => std::thread::sleep(Duration::from_millis(20)),
                None => return,
            }
        }
    }

    /// The `noise` section: the moments before and after, and every row's window with its verdict.
    pub(crate) fn finish(&self, before: Moment, after: Moment, cores: u64) -> Noise {
        self.step("");
        let during = match (self.started, read(&self.cpus)) {
            (Some(a), Some(b)) => {
                let mut acc = Accum::default();
                acc.add(&a, &b);
                acc
            }
            _ => Accum::default(),
        };
        let state = self.state.borrow();
        let mut rows = BTreeMap::new();
        for (path, (acc, step)) in &state.rows {
            let long = |a: &&Accum| a.is_long_enough(self.ticks_per_s);
            let judged = Some(acc)
                .filter(long)
                .or_else(|| state.steps.get(step).filter(long))
                .or_else(|| Some(&during).filter(long));
            rows.insert(
                path.clone(),
                RowNoise {
                    window: acc.window(),
                    busy: judged.is_some_and(|a| a.window().is_busy()),
                },
            );
        }
        let during = during.window();
        let busy_rows = rows
            .iter()
            .filter(|(_, r)| r.busy)
            .map(|(p, _)| p.clone())
            .collect();
        Noise {
            before,
            during,
            after,
            busy_before: before.is_busy(cores),
            rows,
            busy_rows,
            low_confidence: Vec::new(),
        }
    }
}

/// `/proc/loadavg`'s three averages (zeros where it cannot be read).
pub(crate) fn load_average() -> [f64; 3] {
    super::machine::parse_loadavg(&fs::read_to_string("/proc/loadavg").unwrap_or_default())
        .unwrap_or([0.0; 3])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `/proc/stat` (its CPU lines and run queue) recorded on a 2-core virtual machine while other
    /// engineers compiled, and again one second later: the CPUs were busy throughout.
    const STAT_A: &str = "cpu  325893 297 73709 35341 312 0 500 254 0 0
cpu0 164524 140 35210 17970 82 0 111 125 0 0
cpu1 161368 157 38499 17371 230 0 388 128 0 0
intr 1 2 3
ctxt 123456
procs_running 10
procs_blocked 0
";
    const STAT_B: &str = "cpu  326077 297 73727 35341 312 0 500 254 0 0
cpu0 164616 140 35218 17970 82 0 111 125 0 0
cpu1 161460 157 38508 17371 230 0 388 128 0 0
procs_running 11
";

    #[test]
    fn proc_stat_sums_the_usable_cpus() {
        let (busy, steal, total, running) = parse_proc_stat(STAT_A, &[0, 1]).expect("two cpus");
        assert_eq!(
            busy,
            164524 + 140 + 35210 + 111 + 161368 + 157 + 38499 + 388
        );
        assert_eq!(steal, 125 + 128);
        assert_eq!(total, busy + 17970 + 82 + 17371 + 230 + steal);
        assert_eq!(running, 10);
        let (busy1, ..) = parse_proc_stat(STAT_A, &[1]).expect("one cpu");
        assert_eq!(busy1, 161368 + 157 + 38499 + 388);
        assert!(parse_proc_stat(STAT_A, &[7]).is_none());
        assert!(parse_proc_stat("cpu0 1 2 3\nprocs_running 1\n", &[0]).is_none());
    }

    #[test]
    fn pid_stat_reads_past_a_name_with_spaces() {
        let line = "4242 (martelli (probe) x) S 1 4242 4242 0 -1 4194560 900 0 0 0 \
                    120 30 7 3 20 0 9 0 5000 1000000 300 18446744073709551615";
        assert_eq!(parse_pid_stat(line), Some(120 + 30 + 7 + 3));
        assert_eq!(parse_pid_stat("garbage"), None);
    }

    fn counters(text: &str, own: u64, at: Instant) -> Counters {
        let (busy, steal, total, running) = parse_proc_stat(text, &[0, 1]).expect("stat");
        Counters {
            at,
            busy,
            steal,
            total,
            own,
            running,
        }
    }

    #[test]
    fn other_work_is_busy_time_less_the_probes_own() {
        // 201 ticks in that second, all busy, none stolen. Say the probe used 50 of them.
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_secs(1);
        let (a, b) = (counters(STAT_A, 1000, t0), counters(STAT_B, 1050, t1));
        let mut acc = Accum::default();
        acc.add(&a, &b);
        let w = acc.window();
        assert_eq!(acc.total, 201);
        assert!((w.other_cpu - 151.0 / 201.0).abs() < 1e-9, "{w:?}");
        assert_eq!(w.steal, 0.0);
        // procs_running 10 then 11, less the reading thread: 9 and 10.
        assert_eq!(w.run_queue, 9.5);
        assert!((w.seconds - 1.0).abs() < 1e-9);
        assert!(w.is_busy());
        // Had the probe used all 201 busy ticks, nobody else was there.
        let mut acc = Accum::default();
        acc.add(&a, &counters(STAT_B, 1201, t1));
        let w = acc.window();
        assert_eq!(w.other_cpu, 0.0);
        assert!(!w.is_busy(), "{w:?}");
    }

    #[test]
    fn a_busy_moment_needs_live_signals_not_the_load_average() {
        let quiet = Moment {
            load_average: [200.0, 40.0, 12.0],
            window: Window {
                seconds: 0.3,
                other_cpu: 0.02,
                steal: 0.0,
                run_queue: 0.2,
            },
        };
        assert!(!quiet.is_busy(2), "a high load average alone is not busy");
        let mut queued = quiet;
        queued.window.run_queue = 1.5;
        assert!(queued.is_busy(2));
        assert!(!queued.is_busy(8));
        let mut stolen = quiet;
        stolen.window.steal = 0.08;
        assert!(stolen.is_busy(2));
        let mut shared = quiet;
        shared.window.other_cpu = 0.4;
        assert!(shared.is_busy(64));
    }

    #[test]
    fn short_rows_are_judged_by_their_step() {
        let m = Monitor::new();
        let t = m.ticks_per_s;
        let mut state = m.state.borrow_mut();
        let long_busy = Accum {
            seconds: 1.0,
            other: (0.5 * t) as u64,
            steal: 0,
            total: t as u64,
            run_queue: 2.0,
            readings: 2,
        };
        let short_quiet = Accum {
            seconds: 0.01,
            other: 0,
            steal: 0,
            total: 1,
            run_queue: 0.0,
            readings: 2,
        };
        state.steps.insert("ipc".into(), long_busy);
        state
            .rows
            .insert("ipc.pipe_1kib".into(), (short_quiet, "ipc".into()));
        state
            .rows
            .insert("switch.thread_condvar".into(), (long_busy, "switch".into()));
        state
            .rows
            .insert("codec".into(), (short_quiet, "nowhere".into()));
        drop(state);
        // The monitor never started: no whole-probe window to fall back on.
        let noise = m.finish(Moment::default(), Moment::default(), 2);
        assert!(noise.rows["ipc.pipe_1kib"].busy, "judged by its busy step");
        assert!(noise.rows["switch.thread_condvar"].busy);
        assert!(
            !noise.rows["codec"].busy,
            "too short, and nothing to judge by"
        );
        assert_eq!(noise.busy_rows, ["ipc.pipe_1kib", "switch.thread_condvar"]);
    }

    #[test]
    fn this_machine_can_be_read() {
        let cpus = usable_cpus();
        assert!(!cpus.is_empty());
        let c = read(&cpus).expect("/proc/stat and /proc/self/stat");
        assert!(c.total >= c.busy && c.total > 0);
        assert!(c.running >= 1, "this thread is running");
    }
}
