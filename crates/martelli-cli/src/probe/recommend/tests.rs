//! The rules on synthetic measurements.

use super::*;
use crate::probe::busy::{RowNoise, Window};
use crate::probe::create::Creation;
use crate::probe::curves::{CpuCurve, CpuPoint, IoCurve, IoPoint, IoSide};
use crate::probe::foreground::{Latency, Scenario};
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
    pub(crate) foreground: Foreground,
    pub(crate) cluster: ClusterCost,
    pub(crate) noise: Noise,
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
            foreground: &self.foreground,
            cluster: &self.cluster,
            noise: &self.noise,
        }
    }

    /// Sets the CPU curve (both sides) from wall times in ms, each with its interval.
    pub(crate) fn set_curve(&mut self, times: &[(f64, f64, f64)]) {
        let stat = |&(m, lo, hi): &(f64, f64, f64)| Stat::spread(m, lo, hi, Unit::Millis);
        let base = stat(&times[0]);
        self.curves.cpu.points = times
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let at = stat(t);
                CpuPoint {
                    workers: i as u64 + 1,
                    threads: at,
                    processes: at,
                    threads_speedup: base.median / at.median,
                    processes_speedup: base.median / at.median,
                    threads_speedup_ci: speedup_interval(&base, &at),
                    processes_speedup_ci: speedup_interval(&base, &at),
                }
            })
            .collect();
    }

    /// Lists the low-confidence rows in the noise section, as the probe does.
    pub(crate) fn mark_low_confidence(&mut self) {
        let sections = serde_json::json!({
            "creation": self.creation, "switch": self.switch, "memory": self.memory,
            "ipc": self.ipc, "curves": self.curves,
        });
        self.noise.low_confidence = crate::probe::compare::flatten(&sections)
            .into_iter()
            .filter(|(_, leaf)| leaf.low_confidence)
            .map(|(path, _)| path)
            .collect();
    }

    /// Marks the CPU curve as measured while other programs used `share` of the CPUs.
    pub(crate) fn busy_curve(&mut self, share: f64) {
        for p in &self.curves.cpu.points {
            for side in ["threads", "processes"] {
                let path = format!("curves.cpu.points[workers={}].{side}", p.workers);
                self.noise.rows.insert(
                    path.clone(),
                    RowNoise {
                        window: Window {
                            seconds: 1.0,
                            other_cpu: share,
                            steal: 0.0,
                            run_queue: 2.0,
                        },
                        busy: true,
                    },
                );
                self.noise.busy_rows.push(path);
            }
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

/// A foreground scenario with this p50 and p99 (µs), against an idle p50 of 60 and p99 of 90.
fn scenario(p50: f64, p99: f64) -> Option<Scenario> {
    Some(Scenario {
        latency: Latency {
            p50,
            p99,
            max: 2.0 * p99,
            mean: p50,
            samples: 1000,
            unit: Unit::Micros,
        },
        p50_over_idle: p50 / 60.0,
        p99_over_idle: p99 / 90.0,
    })
}

/// A wall time of `ms` with an interval of ±2 %.
fn narrow(ms: f64) -> (f64, f64, f64) {
    (ms, ms * 0.98, ms * 1.02)
}

pub(crate) fn synthetic() -> Synthetic {
    let cores = 4;
    let speedups = [1.0, 1.9, 2.8, 3.7, 3.6, 3.7, 3.65, 3.6];
    let mut s = Synthetic {
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
                points: Vec::new(),
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
        foreground: Foreground {
            sleep_us: 1000,
            seconds_per_scenario: 1.5,
            background_workers: cores,
            idle: scenario(60.0, 90.0),
            processes_nice_0: scenario(1100.0, 3900.0),
            processes_nice_10: scenario(70.0, 160.0),
            processes_nice_19: scenario(65.0, 120.0),
            threads: scenario(900.0, 3800.0),
        },
        cluster: ClusterCost {
            source: "measured".into(),
            broker: Some("redis-server 7.0.15, private, 127.0.0.1".into()),
            round_trip: Some(Stat::exact(180.0, Unit::Micros)),
            per_task: Some(Stat::exact(25.0, Unit::Micros)),
            worker_start: Some(Stat::exact(8.0, Unit::Millis)),
            round_trip_us: 180.0,
            per_task_us: 25.0,
            note: "measured on this machine".into(),
        },
        noise: Noise::default(),
    };
    let times: Vec<_> = speedups.iter().map(|sp| narrow(100.0 / sp)).collect();
    s.set_curve(&times);
    s
}

#[test]
fn tier_two_recommends_processes_up_to_the_cores() {
    let s = synthetic();
    let r = s.find("tier");
    // 3.7× at 4 workers; 5–8 are not faster with intervals apart.
    assert_eq!(r.value, 4.0);
    assert_eq!(r.verdict, "processes_up_to_4");
    assert!(r.text.contains("tier 2"), "{}", r.text);
    assert!(r.text.contains("up to 4 workers"), "{}", r.text);
    assert!(r.text.contains("3.70× [3.55–3.85]"), "{}", r.text);
    assert!(!r.text.contains("competed"), "{}", r.text);
    assert!(r.low_confidence_basis.is_empty() && r.busy_basis.is_empty());
}

/// The machine: 2 cores shared with other work, where 4 workers took more of the
/// machine's time than 2 and so ran faster.
fn two_cores_four_faster() -> Synthetic {
    let mut s = synthetic();
    s.machine.available_cores = 2;
    s.machine.logical_cores = 2;
    s.machine.tier = Tier::for_cores(2);
    s.machine.load_average = [4.2, 3.9, 3.5];
    s.set_curve(&[narrow(120.0), narrow(90.0), narrow(70.0), narrow(62.0)]);
    s
}

#[test]
fn more_workers_than_cores_on_a_busy_machine_are_not_recommended() {
    let mut s = two_cores_four_faster();
    s.busy_curve(0.45);
    let r = s.find("tier");
    assert_eq!(r.value, 2.0);
    assert_eq!(r.verdict, "processes_up_to_2");
    assert!(r.text.contains("up to 2 workers"), "{}", r.text);
    assert!(
        r.text.contains("At 4 workers the job ran faster"),
        "{}",
        r.text
    );
    assert!(
        r.text.contains("no reason to size a pool past the cores"),
        "{}",
        r.text
    );
    assert!(r.text.contains("used 45 % of the CPUs"), "{}", r.text);
    assert_eq!(r.busy_basis.len(), 8, "{:?}", r.busy_basis);
    assert!(
        r.text.contains("Other work used the CPUs while rows"),
        "{}",
        r.text
    );
}

#[test]
fn more_workers_than_cores_need_a_quiet_machine_and_separate_intervals() {
    let s = two_cores_four_faster();
    let r = s.find("tier");
    assert_eq!(r.value, 4.0);
    assert!(
        r.text
            .contains("more than its 2 cores because the measured curve says so")
    );
    // 3 workers' interval lies below 2 workers': more than the cores again.
    let mut s = two_cores_four_faster();
    s.set_curve(&[
        narrow(120.0),
        (90.0, 82.0, 98.0),
        narrow(70.0),
        (85.0, 60.0, 110.0),
    ]);
    assert_eq!(s.find("tier").value, 3.0);
    // Overlapping intervals are no evidence: back to the cores.
    s.set_curve(&[
        narrow(120.0),
        (90.0, 82.0, 98.0),
        (85.0, 80.0, 90.0),
        (84.0, 78.0, 92.0),
    ]);
    assert_eq!(s.find("tier").value, 2.0);
    // Nor is a point faster than the cores whose own interval is wide.
    s.set_curve(&[
        narrow(120.0),
        (90.0, 82.0, 98.0),
        (85.0, 80.0, 90.0),
        (60.0, 40.0, 80.0),
    ]);
    assert_eq!(s.find("tier").value, 2.0);
}

#[test]
fn a_flat_curve_keeps_the_cores_and_says_other_work_competed() {
    let mut s = synthetic();
    s.set_curve(&[
        (100.0, 80.0, 125.0),
        (95.0, 75.0, 118.0),
        (98.0, 80.0, 120.0),
        (90.0, 72.0, 115.0),
        (96.0, 80.0, 120.0),
        (99.0, 80.0, 125.0),
        (97.0, 80.0, 120.0),
        (95.0, 78.0, 119.0),
    ]);
    let r = s.find("tier");
    assert_eq!(r.value, 4.0);
    assert!(r.text.contains("gained nothing significant"), "{}", r.text);
    assert!(r.text.contains("competed"), "{}", r.text);
    // Every point is wide: the recommendation says it rests on low-confidence rows.
    s.mark_low_confidence();
    let r = s.find("tier");
    assert_eq!(
        r.low_confidence_basis.len(),
        16,
        "{:?}",
        r.low_confidence_basis
    );
    assert!(
        r.text.contains("Low confidence: it rests on rows"),
        "{}",
        r.text
    );
}

#[test]
fn a_gain_far_below_the_cores_is_called_out() {
    let mut s = synthetic();
    let times: Vec<_> = [1.0, 1.4, 1.6, 1.7, 1.7, 1.7, 1.7, 1.7]
        .iter()
        .map(|sp| narrow(100.0 / sp))
        .collect();
    s.set_curve(&times);
    let r = s.find("tier");
    assert_eq!(r.value, 4.0);
    assert!(r.text.contains("far less than the cores"), "{}", r.text);
}

#[test]
fn fewer_workers_only_when_apart_from_the_cores() {
    let mut s = synthetic();
    s.set_curve(&[
        narrow(100.0),
        narrow(50.0),
        narrow(70.0),
        narrow(80.0),
        narrow(80.0),
        narrow(80.0),
        narrow(80.0),
        narrow(80.0),
    ]);
    let r = s.find("tier");
    assert_eq!(r.value, 2.0);
    assert!(r.text.contains("fewer than its 4 cores"), "{}", r.text);
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
    // The curve does not reach 32 workers: the count is the cores.
    assert_eq!(r.value, 32.0);
}

#[test]
fn a_cpu_quota_lowers_the_tier_cores() {
    let mut s = synthetic();
    s.machine.available_cores = 16;
    s.machine.cgroup_cpu_quota_cores = Some(2.0);
    s.machine.tier = Tier::for_cores(2);
    let times: Vec<_> = (1..=8u32)
        .map(|w| narrow(100.0 / f64::from(w.min(2))))
        .collect();
    s.set_curve(&times);
    let r = s.find("tier");
    assert!(r.text.contains("2 usable"), "{}", r.text);
    assert_eq!(r.value, 2.0);
}

#[test]
fn threads_stand_in_when_the_process_curve_is_missing() {
    let mut s = synthetic();
    let times: Vec<_> = (1..=8u32)
        .map(|w| narrow(100.0 / f64::from(w.min(3))))
        .collect();
    s.set_curve(&times);
    for p in &mut s.curves.cpu.points {
        p.processes.median = f64::NAN;
    }
    let curve = sizing_curve(&s.curves);
    assert_eq!(curve.len(), 8);
    assert!(curve.iter().all(|(_, st)| st.median.is_finite()));
    s.curves.cpu.points.clear();
    assert!(sizing_curve(&s.curves).is_empty());
    assert_eq!(size_pool(&[], 4, false).why, Why::NotMeasured);
}

#[test]
fn threads_or_processes_names_the_deciding_figures() {
    let r = synthetic().find("threads_or_processes");
    assert_eq!(r.verdict, "by_kind_of_code");
    assert!(r.text.contains("decided by your code"), "{}", r.text);
    assert!(
        r.text.contains("13.0 µs per task to a process"),
        "{}",
        r.text
    );
    assert!(r.text.contains("5.00 µs to a thread"), "{}", r.text);
}

#[test]
fn a_recommendation_on_a_low_confidence_row_says_so() {
    let mut s = synthetic();
    s.noise.low_confidence = vec![
        "switch.process_pipe".into(),
        "memory.process_idle_rss".into(),
    ];
    let r = s.find("process_task_min");
    assert_eq!(r.low_confidence_basis, ["switch.process_pipe"]);
    assert!(
        r.text.contains(
            "Low confidence: it rests on a row whose interval was wide (switch.process_pipe)"
        ),
        "{}",
        r.text
    );
    let r = s.find("thread_task_min");
    assert!(r.low_confidence_basis.is_empty());
    assert!(!r.text.contains("Low confidence"));
    // Every recommendation whose basis holds a low-confidence row says so.
    for r in derive(s.inputs()) {
        let rests = r
            .basis
            .iter()
            .any(|b| s.noise.low_confidence.iter().any(|row| within(row, b)));
        assert_eq!(
            rests,
            r.text.contains("Low confidence"),
            "{}: {}",
            r.id,
            r.text
        );
    }
}

#[test]
fn within_matches_paths_and_their_parts() {
    assert!(within("curves.cpu", "curves.cpu"));
    assert!(within("curves.cpu.points[workers=2].threads", "curves.cpu"));
    assert!(within(
        "curves.cpu.points[workers=2].threads",
        "curves.cpu.points"
    ));
    assert!(!within("curves.cpu_extra", "curves.cpu"));
    assert!(!within("curves", "curves.cpu"));
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
    assert!(r.text.starts_with("Up to 1,000"), "{}", r.text);
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
    assert!(r.text.contains("at 1,000"), "{}", r.text);
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
fn payload_advice_turns_on_the_ratio_and_its_interval() {
    let mut s = synthetic();
    let r = s.find("large_payloads");
    assert_eq!(r.value, 3.0);
    assert_eq!(r.verdict, "shared_memory");
    assert!(r.text.contains("worth it"), "{}", r.text);
    s.ipc.shared_memory_1mib = Stat::exact(2200.0, Unit::MibPerSec);
    let r = s.find("large_payloads");
    assert_eq!(r.verdict, "pipe_is_enough");
    assert!(r.text.contains("a pipe is enough"), "{}", r.text);
    // The two runs: 6.9× then 0.91×. An interval across the threshold decides nothing.
    s.ipc.shared_memory_1mib = Stat::spread(3000.0, 1500.0, 9000.0, Unit::MibPerSec);
    let r = s.find("large_payloads");
    assert_eq!(r.verdict, "undecided");
    assert!(r.text.contains("do not say"), "{}", r.text);
}

#[test]
fn codec_bytes_only_when_it_pays() {
    let mut s = synthetic();
    let r = s.find("codec_bytes");
    assert_eq!((r.value, r.verdict.as_str()), (20.0, "mark_bytes"));
    s.ipc.codec.buffer_1mib_as_seq = Stat::exact(7000.0, Unit::MibPerSec);
    assert!(derive(s.inputs()).iter().all(|r| r.id != "codec_bytes"));
    s.ipc.codec.buffer_1mib_as_seq = Stat::spread(4000.0, 1000.0, 6000.0, Unit::MibPerSec);
    assert!(derive(s.inputs()).iter().all(|r| r.id != "codec_bytes"));
}

#[test]
fn nice_is_recommended_when_it_helps_the_foreground() {
    let mut s = synthetic();
    let r = s.find("foreground_nice");
    assert_eq!(r.verdict, "nice_helps");
    assert!((r.value - 3900.0 / 160.0).abs() < 1e-9, "{}", r.value);
    assert!(
        r.text
            .contains("from 90.0 µs idle to 3.90 ms at nice 0 (43.3× idle)"),
        "{}",
        r.text
    );
    assert!(r.text.contains("`worker_nice(10)`"), "{}", r.text);
    // Nice that changes nothing is said so.
    s.foreground.processes_nice_10 = scenario(1000.0, 3000.0);
    assert_eq!(s.find("foreground_nice").verdict, "nice_no_better");
    // A background that does not hurt needs no nice.
    s.foreground.processes_nice_0 = scenario(70.0, 150.0);
    let r = s.find("foreground_nice");
    assert_eq!(r.verdict, "nice_not_needed");
    assert!(r.text.contains("within 2× of idle"), "{}", r.text);
    // Without the idle figure there is nothing to compare with.
    s.foreground.idle = None;
    assert!(derive(s.inputs()).iter().all(|r| r.id != "foreground_nice"));
}

#[test]
fn the_cluster_pays_off_from_ten_times_its_cost_per_task() {
    let mut s = synthetic();
    let r = s.find("cluster");
    assert_eq!(r.value, 250.0);
    assert_eq!(r.unit, "us");
    assert!(
        r.text.contains("tasks of at least 250 µs each"),
        "{}",
        r.text
    );
    assert!(r.text.contains("tasks of 1.80 ms or more"), "{}", r.text);
    // 2.25 × 8 ms = 18 ms on 4 workers at 3.70×: 66.6 ms of one core's work.
    assert!(
        r.text
            .contains("more than 66.6 ms of one core's work (18.0 ms on this machine's 4 workers"),
        "{}",
        r.text
    );
    assert!(r.text.contains("private redis-server"), "{}", r.text);
    // Without a broker, the published figures, said so.
    s.cluster = ClusterCost::published("no redis-server on the PATH");
    let r = s.find("cluster");
    assert!((r.value - 207.6).abs() < 0.1, "{}", r.value);
    assert!(
        r.text
            .contains("no redis-server on the PATH: the published figures stand in"),
        "{}",
        r.text
    );
    assert!(
        r.text.contains("not measured without a broker"),
        "{}",
        r.text
    );
    // Tier 3 leads with the cores.
    s.machine.available_cores = 32;
    s.machine.tier = Tier::for_cores(32);
    assert!(
        s.find("cluster")
            .text
            .starts_with("This machine has 32 usable cores (tier 3)")
    );
}

#[test]
fn every_basis_names_a_report_field() {
    let s = synthetic();
    let report = serde_json::json!({
        "machine": s.machine, "creation": s.creation, "switch": s.switch,
        "memory": s.memory, "ipc": s.ipc, "curves": s.curves, "foreground": s.foreground,
        "cluster": s.cluster,
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
