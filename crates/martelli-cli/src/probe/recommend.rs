//! Recommendations in numbers, derived from the measurements.
//!
//! Each rule reads a few measured values (its `basis`, paths into the report), computes one number,
//! and says what it means for the choice of backend. The rules, with their formulas, are listed in
//! `docs/probe.md`; each is unit-tested here on synthetic measurements.

use super::create::Creation;
use super::curves::Curves;
use super::ipc::Ipc;
use super::machine::{Machine, effective_cores};
use super::memory::Memory;
use super::stats::{Bytes, Human, Unit, sig3};
use super::switch::Switch;
use serde::{Deserialize, Serialize};

/// One recommendation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Recommendation {
    /// A stable identifier of the rule (`tier`, `process_task_min`, …).
    pub(crate) id: String,
    /// The recommendation, for a person.
    pub(crate) text: String,
    /// The number it rests on.
    pub(crate) value: f64,
    /// The number's unit (`workers`, `us`, `x`, `tasks`, `processes`).
    pub(crate) unit: String,
    /// The report fields the number was derived from.
    pub(crate) basis: Vec<String>,
}

/// The measurements the rules read.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Inputs<'a> {
    pub(crate) machine: &'a Machine,
    pub(crate) creation: &'a Creation,
    pub(crate) switch: &'a Switch,
    pub(crate) memory: &'a Memory,
    pub(crate) ipc: &'a Ipc,
    pub(crate) curves: &'a Curves,
}

/// Speedups within this fraction of the best count as "as good as the best".
const NEAR_BEST: f64 = 0.95;
/// A best speedup below this fraction of the usable cores means other work competed for them.
const CONTENDED: f64 = 0.6;
/// Threads "cost more memory" than async from this ratio on…
const MEMORY_RATIO: f64 = 2.0;
/// …when the difference is also at least this many bytes.
const MEMORY_MATTERS: f64 = 1024.0 * 1024.0;
/// Shared memory is "worth it" from this throughput ratio over a pipe.
const SHM_WORTH_IT: f64 = 1.5;

fn rec(id: &str, text: String, value: f64, unit: &str, basis: &[&str]) -> Recommendation {
    Recommendation {
        id: id.to_owned(),
        text,
        value,
        unit: unit.to_owned(),
        basis: basis.iter().map(|b| (*b).to_owned()).collect(),
    }
}

/// Applies every rule that has the measurements it needs.
pub(crate) fn derive(inputs: Inputs<'_>) -> Vec<Recommendation> {
    [
        Some(tier(inputs)),
        process_task_min(inputs),
        Some(thread_task_min(inputs)),
        async_memory(inputs),
        keep_workers_warm(inputs),
        task_limit(inputs),
        memory_workers(inputs),
        large_payloads(inputs),
        codec_bytes(inputs),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// The smallest worker count whose speedup is within [`NEAR_BEST`] of the best, with that speedup.
/// Processes are read first (they are what tier 2 recommends for CPU-bound work), threads if the
/// process side is missing.
pub(crate) fn best_workers(curves: &Curves) -> Option<(u64, f64)> {
    let speedups: Vec<(u64, f64)> = curves
        .cpu
        .points
        .iter()
        .map(|p| {
            let s = if p.processes_speedup.is_finite() {
                p.processes_speedup
            } else {
                p.threads_speedup
            };
            (p.workers, s)
        })
        .filter(|(_, s)| s.is_finite() && *s > 0.0)
        .collect();
    let best = speedups.iter().map(|&(_, s)| s).fold(f64::NAN, f64::max);
    if !best.is_finite() {
        return None;
    }
    speedups.into_iter().find(|&(_, s)| s >= NEAR_BEST * best)
}

fn tier(i: Inputs<'_>) -> Recommendation {
    let m = i.machine;
    let cores = effective_cores(m.available_cores, m.cgroup_cpu_quota_cores);
    let (workers, speedup) = best_workers(i.curves).unwrap_or((cores, f64::NAN));
    let speedup_s = if speedup.is_finite() {
        format!("{speedup:.2}×")
    } else {
        "not measured".to_owned()
    };
    let workers_s = if workers == 1 {
        "1 worker".to_owned()
    } else {
        format!("{workers} workers")
    };
    let basis = [
        "machine.available_cores",
        "machine.cgroup_cpu_quota_cores",
        "machine.load_average",
        "curves.cpu",
    ];
    let load = format!(
        "load average {:.1} when the probe started",
        m.load_average[0]
    );
    let contended = if m.tier.level > 1 && speedup.is_finite() && speedup < CONTENDED * cores as f64
    {
        format!(
            " The best speedup, {speedup_s}, is far below its {cores} cores: other work competed \
             for them while the probe ran ({load}); probe again on a quiet machine before sizing a \
             pool."
        )
    } else if m.tier.level > 1 && workers < cores {
        format!(
            " That is fewer than its {cores} cores: other work competed for them while the probe \
             ran ({load}); probe again on a quiet machine before sizing a pool."
        )
    } else {
        String::new()
    };
    match m.tier.level {
        1 => rec(
            "tier",
            format!(
                "This machine is tier 1 (1 core): CPU-bound work gains nothing from parallel \
                 workers (best speedup {speedup_s}). Run it inline, and overlap waits with async."
            ),
            1.0,
            "workers",
            &basis,
        ),
        2 => rec(
            "tier",
            format!(
                "This machine is tier 2 (2–8 cores, {cores} usable): use processes up to {workers_s} \
                 for CPU-bound work (speedup {speedup_s} at {workers}; more workers gain \
                 nothing), threads or async for I/O-bound work.{contended}"
            ),
            workers as f64,
            "workers",
            &basis,
        ),
        _ => rec(
            "tier",
            format!(
                "This machine is tier 3 (9+ cores, {cores} usable): processes or threads up to \
                 {workers_s} here (speedup {speedup_s}); past one machine, distributed \
                 processing: use the cluster backend.{contended}"
            ),
            workers as f64,
            "workers",
            &basis,
        ),
    }
}

fn process_task_min(i: Inputs<'_>) -> Option<Recommendation> {
    let trip = i.switch.process_pipe.median;
    let codec_us = i.ipc.codec.small_struct_round_trip.median / 1e3;
    let overhead = trip + 2.0 * codec_us;
    overhead.is_finite().then(|| {
        rec(
            "process_task_min",
            format!(
                "A task shorter than {} costs more to send to a process worker than to run \
                 (a pipe round trip of {} plus {} of {} encoding both ways): run it inline or on \
                 threads, or chunk it (`map` does). This is a floor: the process pool's own \
                 bookkeeping adds to it (its benchmarks measure the whole round trip).",
                Human(overhead, Unit::Micros),
                Human(trip, Unit::Micros),
                Human(2.0 * codec_us, Unit::Micros),
                i.ipc.codec.name,
            ),
            overhead,
            "us",
            &["switch.process_pipe", "ipc.codec.small_struct_round_trip"],
        )
    })
}

fn thread_task_min(i: Inputs<'_>) -> Recommendation {
    let x = i.creation.pool_submit_wait.median;
    rec(
        "thread_task_min",
        format!(
            "A task shorter than {} costs more to hand to a martelli thread pool than to run: \
             batch small tasks (`map` chunks them) or run them inline.",
            Human(x, Unit::Micros)
        ),
        x,
        "us",
        &["creation.pool_submit_wait"],
    )
}

fn async_memory(i: Inputs<'_>) -> Option<Recommendation> {
    let both: Vec<(u64, f64, f64, f64, f64)> = i
        .curves
        .io
        .points
        .iter()
        .filter_map(|p| {
            let (t, a) = (p.threads.as_ref()?, p.async_.as_ref()?);
            Some((
                p.concurrency,
                t.memory.median,
                a.memory.median,
                t.wall.median,
                a.wall.median,
            ))
        })
        .collect();
    let &(n_max, t_mem, a_mem, t_wall, a_wall) = both.last()?;
    let basis = ["curves.io"];
    let times = format!(
        "At {n_max} waits of {} ms, threads took {} and async {}.",
        i.curves.io.wait_ms,
        Human(t_wall, Unit::Millis),
        Human(a_wall, Unit::Millis)
    );
    let threshold = both
        .iter()
        .find(|&&(_, t, a, _, _)| t >= MEMORY_RATIO * a && t - a >= MEMORY_MATTERS)
        .map(|&(n, ..)| n);
    match threshold {
        Some(n) if a_mem > 0.0 => {
            let ratio = t_mem / a_mem;
            Some(rec(
                "async_memory",
                format!(
                    "From {n} concurrent waits on, async costs {}× less memory than threads ({} vs \
                     {} per wait at {n_max}): use async for many waits. {times}",
                    sig3(ratio),
                    Bytes(a_mem / n_max as f64),
                    Bytes(t_mem / n_max as f64),
                ),
                ratio,
                "x",
                &basis,
            ))
        }
        Some(n) => Some(rec(
            "async_memory",
            format!(
                "From {n} concurrent waits on, threads cost {} more memory than async, whose \
                 growth did not register at {n_max} waits: use async for many waits. {times}",
                Bytes(t_mem)
            ),
            t_mem,
            "bytes",
            &basis,
        )),
        None => Some(rec(
            "async_memory",
            format!(
                "Up to {n_max} concurrent waits, threads cost less than {MEMORY_RATIO}× the \
                 memory of async (or under 1 MiB more): choose by code style. {times}"
            ),
            if a_mem > 0.0 { t_mem / a_mem } else { 1.0 },
            "x",
            &basis,
        )),
    }
}

fn keep_workers_warm(i: Inputs<'_>) -> Option<Recommendation> {
    let c = i.creation;
    let (process, basis) = match (&c.process_posix_spawn, &c.process_fork_exec) {
        (Some(p), _) => (p.median, "creation.process_posix_spawn"),
        (None, Some(f)) => (f.median, "creation.process_fork_exec"),
        (None, None) => (
            c.process_reexec_ready.median,
            "creation.process_reexec_ready",
        ),
    };
    let thread = c.thread_spawn_join.median;
    let ratio = process / thread;
    ratio.is_finite().then(|| {
        rec(
            "keep_workers_warm",
            format!(
                "Starting a process costs {} ({}× a thread's {}), and starting this binary as a \
                 worker {}: keep workers in a pool (martelli does) rather than start one per task.",
                Human(process, Unit::Micros),
                sig3(ratio),
                Human(thread, Unit::Micros),
                Human(c.process_reexec_ready.median, Unit::Micros),
            ),
            ratio,
            "x",
            &[
                basis,
                "creation.thread_spawn_join",
                "creation.process_reexec_ready",
            ],
        )
    })
}

fn task_limit(i: Inputs<'_>) -> Option<Recommendation> {
    let (n, which) = i.machine.task_limit()?;
    Some(rec(
        "task_limit",
        format!(
            "At most {n} threads and processes can exist at once here ({which}): more concurrent \
             waits than that need async, not one thread each."
        ),
        n as f64,
        "tasks",
        &[
            "machine.rlimit_nproc",
            "machine.threads_max",
            "machine.cgroup_pids_max",
            "machine.pid_max",
        ],
    ))
}

fn memory_workers(i: Inputs<'_>) -> Option<Recommendation> {
    let rss = i.memory.process_idle_rss.median;
    let usable = i.machine.usable_memory_bytes() as f64;
    if !(rss > 0.0 && usable > 0.0) {
        return None;
    }
    let k = (usable / rss).floor();
    let source = if i.machine.cgroup_memory_max_bytes.is_some() {
        "the cgroup limit"
    } else {
        "available now"
    };
    Some(rec(
        "memory_workers",
        format!(
            "Memory allows about {k:.0} idle worker processes of {} each ({} {source}); each \
             worker's own data comes on top, so size process pools by cores, not by memory, \
             unless tasks hold large data.",
            Bytes(rss),
            Bytes(usable)
        ),
        k,
        "processes",
        &[
            "memory.process_idle_rss",
            "machine.cgroup_memory_max_bytes",
            "machine.memory_available_bytes",
        ],
    ))
}

fn large_payloads(i: Inputs<'_>) -> Option<Recommendation> {
    let (pipe, shm) = (i.ipc.pipe_1mib.median, i.ipc.shared_memory_1mib.median);
    let ratio = shm / pipe;
    if !ratio.is_finite() {
        return None;
    }
    let text = if ratio >= SHM_WORTH_IT {
        format!(
            "For 1 MiB payloads, shared memory moves {}, {}× a pipe's {}: worth it for large \
             arguments and results.",
            Human(shm, Unit::MibPerSec),
            sig3(ratio),
            Human(pipe, Unit::MibPerSec)
        )
    } else {
        format!(
            "For 1 MiB payloads a pipe moves {} and shared memory {} ({}×): a pipe is enough here.",
            Human(pipe, Unit::MibPerSec),
            Human(shm, Unit::MibPerSec),
            sig3(ratio)
        )
    };
    Some(rec(
        "large_payloads",
        text,
        ratio,
        "x",
        &["ipc.pipe_1mib", "ipc.shared_memory_1mib"],
    ))
}

fn codec_bytes(i: Inputs<'_>) -> Option<Recommendation> {
    let c = &i.ipc.codec;
    let (bytes, seq) = (c.buffer_1mib_as_bytes.median, c.buffer_1mib_as_seq.median);
    let ratio = bytes / seq;
    (ratio.is_finite() && ratio >= SHM_WORTH_IT).then(|| {
        rec(
            "codec_bytes",
            format!(
                "{} encodes and decodes a 1 MiB Vec<u8> at {} element by element, and at {} when \
                 it is marked as bytes (serde_bytes): {}× faster. Mark large buffers as bytes.",
                c.name,
                Human(seq, Unit::MibPerSec),
                Human(bytes, Unit::MibPerSec),
                sig3(ratio)
            ),
            ratio,
            "x",
            &[
                "ipc.codec.buffer_1mib_as_seq",
                "ipc.codec.buffer_1mib_as_bytes",
            ],
        )
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::probe::create::Creation;
    use crate::probe::curves::{CpuCurve, CpuPoint, IoCurve, IoPoint, IoSide};
    use crate::probe::ipc::Codec;
    use crate::probe::machine::Tier;
    use crate::probe::stats::Stat;

    /// Owned synthetic measurements of a quiet 4-core machine.
    pub(crate) struct Synthetic {
        pub(crate) machine: Machine,
        pub(crate) creation: Creation,
        pub(crate) switch: Switch,
        pub(crate) memory: Memory,
        pub(crate) ipc: Ipc,
        pub(crate) curves: Curves,
    }

    impl Synthetic {
        pub(crate) fn inputs(&self) -> Inputs<'_> {
            Inputs {
                machine: &self.machine,
                creation: &self.creation,
                switch: &self.switch,
                memory: &self.memory,
                ipc: &self.ipc,
                curves: &self.curves,
            }
        }

        fn find(&self, id: &str) -> Recommendation {
            derive(self.inputs())
                .into_iter()
                .find(|r| r.id == id)
                .unwrap_or_else(|| panic!("no recommendation `{id}`"))
        }
    }

    fn us(v: f64) -> Stat {
        Stat::exact(v, Unit::Micros)
    }

    fn io_side(wall_ms: f64, bytes: f64) -> Option<IoSide> {
        Some(IoSide {
            wall: Stat::exact(wall_ms, Unit::Millis),
            memory: Stat::exact(bytes, Unit::Bytes),
        })
    }

    pub(crate) fn synthetic() -> Synthetic {
        let cores = 4;
        let speedups = [1.0, 1.9, 2.8, 3.7, 3.6, 3.7, 3.65, 3.6];
        Synthetic {
            machine: Machine {
                cpu_model: Some("Synthetic CPU".into()),
                kernel: "Linux 6.1".into(),
                logical_cores: cores,
                physical_cores: Some(cores),
                available_cores: cores,
                cgroup_version: Some(2),
                cgroup_cpu_quota_cores: None,
                cgroup_memory_max_bytes: None,
                cgroup_pids_max: None,
                memory_total_bytes: 16 << 30,
                memory_available_bytes: 8 << 30,
                rlimit_nproc: Some(63_000),
                threads_max: Some(126_000),
                pid_max: Some(4_194_304),
                page_size_bytes: 4096,
                load_average: [0.1, 0.2, 0.3],
                tier: Tier::for_cores(cores),
            },
            creation: Creation {
                thread_spawn_join: us(20.0),
                pool_start_shutdown: us(40.0),
                pool_submit_wait: us(5.0),
                process_fork_exec: Some(us(600.0)),
                process_posix_spawn: Some(us(400.0)),
                process_reexec_ready: us(1500.0),
                process_worker_handshake: None,
                async_spawn_complete: us(0.3),
                event_loop_spawn_wait: us(15.0),
            },
            switch: Switch {
                thread_condvar: us(8.0),
                process_pipe: us(12.0),
                async_one_thread: us(0.2),
            },
            memory: Memory {
                thread_idle_rss: Stat::exact(12_288.0, Unit::Bytes),
                process_idle_rss: Stat::exact(4.0 * 1024.0 * 1024.0, Unit::Bytes),
                async_task_suspended: Stat::exact(300.0, Unit::Bytes),
                event_loop_task_suspended: Stat::exact(700.0, Unit::Bytes),
                threads_per_sample: 100,
                tasks_per_sample: 10_000,
            },
            ipc: Ipc {
                pipe_1kib: Stat::exact(200.0, Unit::MibPerSec),
                pipe_1mib: Stat::exact(2000.0, Unit::MibPerSec),
                unix_socket_1kib: Stat::exact(180.0, Unit::MibPerSec),
                unix_socket_1mib: Stat::exact(2500.0, Unit::MibPerSec),
                shared_memory_1kib: Stat::exact(150.0, Unit::MibPerSec),
                shared_memory_1mib: Stat::exact(6000.0, Unit::MibPerSec),
                codec: Codec {
                    name: "postcard".into(),
                    small_struct_bytes: 48,
                    small_struct_round_trip: Stat::exact(500.0, Unit::Nanos),
                    buffer_1mib_as_bytes: Stat::exact(8000.0, Unit::MibPerSec),
                    buffer_1mib_as_seq: Stat::exact(400.0, Unit::MibPerSec),
                },
            },
            curves: Curves {
                cpu: CpuCurve {
                    calibration_ms: 100.0,
                    points: speedups
                        .iter()
                        .enumerate()
                        .map(|(i, &s)| CpuPoint {
                            workers: i as u64 + 1,
                            threads: Stat::exact(100.0 / s, Unit::Millis),
                            processes: Stat::exact(100.0 / s, Unit::Millis),
                            threads_speedup: s,
                            processes_speedup: s,
                        })
                        .collect(),
                },
                io: IoCurve {
                    wait_ms: 10,
                    points: vec![
                        IoPoint {
                            concurrency: 10,
                            threads: io_side(11.0, 200_000.0),
                            async_: io_side(10.5, 0.0),
                        },
                        IoPoint {
                            concurrency: 100,
                            threads: io_side(14.0, 1_400_000.0),
                            async_: io_side(10.6, 40_000.0),
                        },
                        IoPoint {
                            concurrency: 1000,
                            threads: io_side(60.0, 14_000_000.0),
                            async_: io_side(11.0, 400_000.0),
                        },
                    ],
                },
            },
        }
    }

    #[test]
    fn tier_two_recommends_processes_up_to_the_knee() {
        let s = synthetic();
        let r = s.find("tier");
        // 3.7× at 4 workers; 5–8 gain nothing more.
        assert_eq!(r.value, 4.0);
        assert!(r.text.contains("tier 2"), "{}", r.text);
        assert!(r.text.contains("up to 4 workers"), "{}", r.text);
        assert!(!r.text.contains("competed"), "{}", r.text);
    }

    #[test]
    fn a_loaded_machine_is_called_out() {
        let mut s = synthetic();
        for p in &mut s.curves.cpu.points {
            p.processes_speedup = if p.workers == 1 { 1.0 } else { 1.9 };
        }
        let r = s.find("tier");
        assert_eq!(r.value, 2.0);
        assert!(r.text.contains("competed"), "{}", r.text);
    }

    #[test]
    fn a_flat_curve_is_called_out_even_past_the_cores() {
        let mut s = synthetic();
        // The knee is at 5 workers, past the 4 cores, but 1.3× is far from 4 cores' worth.
        for p in &mut s.curves.cpu.points {
            p.processes_speedup = if p.workers >= 5 { 1.3 } else { 1.0 };
        }
        let r = s.find("tier");
        assert_eq!(r.value, 5.0);
        assert!(r.text.contains("far below its 4 cores"), "{}", r.text);
    }

    #[test]
    fn tier_one_and_tier_three() {
        let mut s = synthetic();
        s.machine.available_cores = 1;
        s.machine.tier = Tier::for_cores(1);
        let r = s.find("tier");
        assert!(r.text.contains("tier 1"), "{}", r.text);
        assert_eq!(r.value, 1.0);

        let mut s = synthetic();
        s.machine.available_cores = 32;
        s.machine.tier = Tier::for_cores(32);
        let r = s.find("tier");
        assert!(r.text.contains("cluster backend"), "{}", r.text);
    }

    #[test]
    fn a_cpu_quota_lowers_the_tier_cores() {
        let mut s = synthetic();
        s.machine.available_cores = 16;
        s.machine.cgroup_cpu_quota_cores = Some(2.0);
        s.machine.tier = Tier::for_cores(2);
        for p in &mut s.curves.cpu.points {
            p.processes_speedup = p.workers.min(2) as f64;
        }
        let r = s.find("tier");
        assert!(r.text.contains("2 usable"), "{}", r.text);
        assert_eq!(r.value, 2.0);
    }

    #[test]
    fn threads_stand_in_when_the_process_curve_is_missing() {
        let mut s = synthetic();
        for p in &mut s.curves.cpu.points {
            p.processes_speedup = f64::NAN;
            p.threads_speedup = p.workers.min(3) as f64;
        }
        assert_eq!(best_workers(&s.curves), Some((3, 3.0)));
        s.curves.cpu.points.clear();
        assert_eq!(best_workers(&s.curves), None);
    }

    #[test]
    fn process_task_floor_adds_codec_both_ways() {
        let r = synthetic().find("process_task_min");
        // 12 µs pipe round trip + 2 × 0.5 µs codec.
        assert!((r.value - 13.0).abs() < 1e-9, "{}", r.value);
        assert!(r.text.contains("13.0 µs"), "{}", r.text);
        assert!(r.text.contains("is a floor"), "{}", r.text);
    }

    #[test]
    fn thread_task_floor_is_the_submit_wait_round_trip() {
        let r = synthetic().find("thread_task_min");
        assert_eq!(r.value, 5.0);
        assert_eq!(r.unit, "us");
    }

    #[test]
    fn async_memory_threshold_and_ratio() {
        let r = synthetic().find("async_memory");
        // 10 waits: 200 KB more, under 1 MiB; 100 waits: 1.4 MB vs 40 KB, both criteria met.
        assert!(
            r.text.starts_with("From 100 concurrent waits"),
            "{}",
            r.text
        );
        assert!((r.value - 35.0).abs() < 1e-9, "{}", r.value);
    }

    #[test]
    fn async_memory_when_threads_are_cheap() {
        let mut s = synthetic();
        for p in &mut s.curves.io.points {
            p.async_ = p.threads.clone();
        }
        let r = s.find("async_memory");
        assert!(r.text.starts_with("Up to 1000"), "{}", r.text);
        assert_eq!(r.value, 1.0);
    }

    #[test]
    fn async_memory_uses_the_largest_point_with_both_sides() {
        let mut s = synthetic();
        s.curves.io.points.push(IoPoint {
            concurrency: 10_000,
            threads: None,
            async_: io_side(20.0, 4_000_000.0),
        });
        let r = s.find("async_memory");
        assert!(r.text.contains("at 1000"), "{}", r.text);
        s.curves.io.points.iter_mut().for_each(|p| p.threads = None);
        assert!(derive(s.inputs()).iter().all(|r| r.id != "async_memory"));
    }

    #[test]
    fn keep_workers_warm_prefers_posix_spawn() {
        let mut s = synthetic();
        assert_eq!(s.find("keep_workers_warm").value, 20.0);
        s.creation.process_posix_spawn = None;
        assert_eq!(s.find("keep_workers_warm").value, 30.0);
        s.creation.process_fork_exec = None;
        assert_eq!(s.find("keep_workers_warm").value, 75.0);
    }

    #[test]
    fn task_limit_names_the_binding_limit() {
        let mut s = synthetic();
        s.machine.cgroup_pids_max = Some(512);
        let r = s.find("task_limit");
        assert_eq!(r.value, 512.0);
        assert!(r.text.contains("cgroup pids.max"), "{}", r.text);
    }

    #[test]
    fn memory_workers_follow_the_cgroup_limit() {
        let mut s = synthetic();
        assert_eq!(s.find("memory_workers").value, 2048.0);
        s.machine.cgroup_memory_max_bytes = Some(64 << 20);
        let r = s.find("memory_workers");
        assert_eq!(r.value, 16.0);
        assert!(r.text.contains("cgroup limit"), "{}", r.text);
    }

    #[test]
    fn payload_advice_turns_on_the_ratio() {
        let mut s = synthetic();
        let r = s.find("large_payloads");
        assert_eq!(r.value, 3.0);
        assert!(r.text.contains("worth it"), "{}", r.text);
        s.ipc.shared_memory_1mib = Stat::exact(2200.0, Unit::MibPerSec);
        let r = s.find("large_payloads");
        assert!(r.text.contains("a pipe is enough"), "{}", r.text);
    }

    #[test]
    fn codec_bytes_only_when_it_pays() {
        let mut s = synthetic();
        assert_eq!(s.find("codec_bytes").value, 20.0);
        s.ipc.codec.buffer_1mib_as_seq = Stat::exact(7000.0, Unit::MibPerSec);
        assert!(derive(s.inputs()).iter().all(|r| r.id != "codec_bytes"));
    }

    #[test]
    fn every_basis_names_a_report_field() {
        let s = synthetic();
        let report = serde_json::json!({
            "machine": s.machine, "creation": s.creation, "switch": s.switch,
            "memory": s.memory, "ipc": s.ipc, "curves": s.curves,
        });
        for r in derive(s.inputs()) {
            for path in &r.basis {
                let mut v = &report;
                for key in path.split('.') {
                    v = v
                        .get(key)
                        .unwrap_or_else(|| panic!("{}: no field {path}", r.id));
                }
            }
        }
    }
}
