//! `martelli probe --quick` end to end: the real binary, its real helper processes, the JSON schema,
//! the SVG plot, the table and `--compare`. Most tests read two shared runs (one as JSON with a plot,
//! one as a table comparing against the first), made once per test run; two tests run the probe
//! under conditions of their own (a low RLIMIT_NPROC, a plot that cannot be written).
//! Linux-only, like the probe.

#![cfg(target_os = "linux")]

use martelli_testkit::proc::KillOnDrop;
use serde_json::Value;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

/// The longest a quick probe may take here (a debug build on a loaded 2-core machine takes
/// 10–20 s): past it the run is killed and its test fails, instead of hanging.
const LIMIT: Duration = Duration::from_secs(180);

fn martelli() -> Command {
    Command::new(env!("CARGO_BIN_EXE_martelli"))
}

/// Runs `cmd` to the end and collects its output; kills it and fails the calling test if it takes
/// longer than [`LIMIT`]. Its pipes are drained while it runs, so a long report cannot block it.
fn output(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = KillOnDrop::new(cmd.spawn().expect("start martelli"));
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut bytes);
            }
            bytes
        })
    };
    let stdout = drain(
        child
            .child()
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let stderr = drain(
        child
            .child()
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let status = child.wait_for(LIMIT);
    Output {
        status,
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    }
}

struct Runs {
    dir: PathBuf,
    json: Value,
    table: String,
}

impl Runs {
    fn svg(&self) -> PathBuf {
        self.dir.join("curves.svg")
    }
    fn json_path(&self) -> PathBuf {
        self.dir.join("quick.json")
    }
}

fn check(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The two shared runs, made once per test run (cargo-nextest runs each test in a process of its
/// own; they all read the same runs) and read once per process.
fn runs() -> &'static Runs {
    static RUNS: OnceLock<Runs> = OnceLock::new();
    RUNS.get_or_init(|| {
        let base = Path::new(env!("CARGO_TARGET_TMPDIR"));
        let dir = martelli_testkit::shared::dir_per_run(base, "probe_quick", make_runs);
        let report = std::fs::read(dir.join("quick.json")).expect("the shared report");
        let json: Value = serde_json::from_slice(&report).expect("the report is JSON");
        let table = std::fs::read(dir.join("table.txt")).expect("the shared table");
        let table = String::from_utf8(table).expect("the table is UTF-8");
        Runs { dir, json, table }
    })
}

/// Runs the probe as JSON with a plot, then as a table comparing against that report, and leaves
/// `quick.json`, `curves.svg` and `table.txt` in `dir`.
fn make_runs(dir: &Path) {
    let svg = dir.join("curves.svg");
    let out = output(
        martelli()
            .args(["probe", "--quick", "--json", "--plot"])
            .arg(&svg),
    );
    check(&out, "probe --quick --json --plot");
    // stderr is not a terminal here: no progress bar, and nothing else to say on success.
    assert!(
        out.stderr.is_empty(),
        "unexpected stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json_path = dir.join("quick.json");
    std::fs::write(&json_path, &out.stdout).expect("save the report");
    let out = output(
        martelli()
            .args(["probe", "--quick", "--compare"])
            .arg(&json_path),
    );
    check(&out, "probe --quick --compare");
    std::fs::write(dir.join("table.txt"), &out.stdout).expect("save the table");
}

/// The value at a dotted path (`curves.cpu.points.0.threads`); panics naming the missing part.
fn get<'a>(v: &'a Value, path: &str) -> &'a Value {
    path.split('.').fold(v, |v, key| {
        let next = match (v, key.parse::<usize>()) {
            (Value::Array(items), Ok(i)) => items.get(i),
            _ => v.get(key),
        };
        next.unwrap_or_else(|| panic!("the report has no field {path} (missing {key})"))
    })
}

fn keys(v: &Value) -> Vec<&str> {
    let mut k: Vec<&str> = v
        .as_object()
        .expect("an object")
        .keys()
        .map(String::as_str)
        .collect();
    k.sort_unstable();
    k
}

/// Checks a measured row: every field, the right unit, min ≤ interval low ≤ median ≤ interval high
/// ≤ max, the low-confidence mark where the interval is wider than ±10 %, all inside `range`.
fn stat(v: &Value, path: &str, unit: &str, range: (f64, f64)) {
    let s = get(v, path);
    assert_eq!(
        keys(s),
        [
            "ci_high",
            "ci_low",
            "low_confidence",
            "max",
            "median",
            "min",
            "outliers",
            "reps",
            "unit"
        ],
        "{path}"
    );
    assert_eq!(s["unit"], unit, "{path}");
    let reps = s["reps"].as_u64().expect("reps");
    assert!(reps >= 3, "{path}: {s}");
    assert!(
        s["outliers"].as_u64().expect("outliers") <= reps,
        "{path}: {s}"
    );
    let (min, lo, med, hi, max) = (
        s["min"].as_f64().expect("min"),
        s["ci_low"].as_f64().expect("ci_low"),
        s["median"].as_f64().expect("median"),
        s["ci_high"].as_f64().expect("ci_high"),
        s["max"].as_f64().expect("max"),
    );
    assert!(
        min <= lo && lo <= med && med <= hi && hi <= max,
        "{path}: {s}"
    );
    let wide = hi - lo > 0.2 * med.abs();
    assert_eq!(s["low_confidence"], wide, "{path}: {s}");
    assert!(
        min >= range.0 && max <= range.1,
        "{path}: {s} is outside the plausible range {range:?}"
    );
}

const US: &str = "us";
const NS: &str = "ns";
const MS: &str = "ms";
const BYTES: &str = "bytes";
const MBPS: &str = "MiB/s";

#[test]
fn report_has_every_top_level_field() {
    let r = &runs().json;
    assert_eq!(
        keys(r),
        [
            "cluster",
            "creation",
            "curves",
            "duration_s",
            "foreground",
            "ipc",
            "machine",
            "martelli_version",
            "max_reps",
            "memory",
            "mode",
            "noise",
            "notes",
            "recommendations",
            "reps",
            "row_budget_s",
            "schema",
            "started_unix_s",
            "switch",
            "warmup",
            "warnings"
        ]
    );
    assert_eq!(r["schema"], "martelli-probe/1");
    assert_eq!(r["mode"], "quick");
    assert_eq!(r["martelli_version"], env!("CARGO_PKG_VERSION"));
    let duration = r["duration_s"].as_f64().expect("duration");
    assert!(duration > 0.0 && duration < 120.0, "{duration}");
    assert!(r["started_unix_s"].as_u64().expect("start") > 1_600_000_000);
    assert!(r["reps"].as_u64().expect("reps") >= 3);
    assert!(r["max_reps"].as_u64().expect("max_reps") >= r["reps"].as_u64().expect("reps"));
    assert!(r["row_budget_s"].as_f64().expect("budget") > 0.0);
    assert!(r["warmup"].as_u64().expect("warmup") >= 1);
}

/// The dotted paths of every measured row (objects with a median, or latency percentiles, and a
/// unit), curve points keyed by worker count or concurrency as the probe names them.
fn stat_paths(v: &Value, path: String, out: &mut Vec<(String, Value)>) {
    match v {
        Value::Object(m)
            if (m.contains_key("median") || m.contains_key("p50")) && m.contains_key("unit") =>
        {
            out.push((path, v.clone()))
        }
        Value::Object(m) => {
            for (k, child) in m {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                stat_paths(child, p, out);
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                let key = ["workers", "concurrency"]
                    .iter()
                    .find_map(|k| item[*k].as_u64().map(|n| format!("{k}={n}")))
                    .unwrap_or_else(|| i.to_string());
                stat_paths(item, format!("{path}[{key}]"), out);
            }
        }
        _ => {}
    }
}

fn measured_rows(r: &Value) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for section in [
        "creation",
        "switch",
        "memory",
        "ipc",
        "curves",
        "foreground",
        "cluster",
    ] {
        stat_paths(&r[section], section.to_owned(), &mut out);
    }
    out
}

#[test]
fn noise_is_watched_before_during_and_after() {
    let r = &runs().json;
    let n = get(r, "noise");
    assert_eq!(
        keys(n),
        [
            "after",
            "before",
            "busy_before",
            "busy_rows",
            "during",
            "low_confidence",
            "rows"
        ]
    );
    for moment in ["before", "after"] {
        let m = &n[moment];
        assert_eq!(
            keys(m),
            ["load_average", "other_cpu", "run_queue", "seconds", "steal"],
            "{moment}"
        );
        assert!(m["seconds"].as_f64().expect("seconds") > 0.05, "{m}");
    }
    let share = |w: &Value, k: &str| w[k].as_f64().unwrap_or_else(|| panic!("{k}: {w}"));
    for w in std::iter::once(&n["during"]).chain(n["rows"].as_object().expect("rows").values()) {
        for k in ["other_cpu", "steal"] {
            assert!((0.0..=1.0).contains(&share(w, k)), "{k}: {w}");
        }
        assert!(share(w, "run_queue") >= 0.0, "{w}");
    }
    // Every timed row was watched under its own path (I/O points under their side).
    let watched = n["rows"].as_object().expect("rows");
    for (path, _) in measured_rows(r) {
        let side = path.trim_end_matches(".wall").trim_end_matches(".memory");
        assert!(watched.contains_key(side), "{side} was not watched");
    }
    // The busy list is the rows marked busy; the low-confidence list is the stats marked so.
    let busy: Vec<&str> = watched
        .iter()
        .filter(|(_, w)| w["busy"] == true)
        .map(|(p, _)| p.as_str())
        .collect();
    let listed: Vec<&str> = n["busy_rows"]
        .as_array()
        .expect("busy rows")
        .iter()
        .map(|p| p.as_str().expect("a path"))
        .collect();
    assert_eq!(busy, listed);
    let wide: Vec<String> = measured_rows(r)
        .into_iter()
        .filter(|(_, s)| s["low_confidence"] == true)
        .map(|(p, _)| p)
        .collect();
    let mut flagged: Vec<String> = n["low_confidence"]
        .as_array()
        .expect("low confidence")
        .iter()
        .map(|p| p.as_str().expect("a path").to_owned())
        .collect();
    flagged.sort();
    let mut wide_sorted = wide.clone();
    wide_sorted.sort();
    assert_eq!(flagged, wide_sorted);
}

#[test]
fn warnings_name_the_rows_they_touch() {
    let r = &runs().json;
    let paths: Vec<String> = measured_rows(r).into_iter().map(|(p, _)| p).collect();
    let known = [
        "busy_before",
        "load_average_lags",
        "busy_during",
        "low_confidence",
        "outliers",
        "left_busy",
    ];
    for w in r["warnings"].as_array().expect("warnings") {
        assert_eq!(keys(w), ["id", "rows", "text"]);
        let id = w["id"].as_str().expect("id");
        assert!(known.contains(&id), "{w}");
        for row in w["rows"].as_array().expect("rows") {
            let row = row.as_str().expect("a path");
            assert!(
                paths
                    .iter()
                    .any(|p| p == row || p.starts_with(&format!("{row}."))),
                "{id} names {row}, which is not a measured row"
            );
        }
    }
    let has = |id: &str| {
        r["warnings"]
            .as_array()
            .expect("warnings")
            .iter()
            .any(|w| w["id"] == id)
    };
    assert_eq!(has("busy_before"), r["noise"]["busy_before"] == true);
    assert_eq!(
        has("low_confidence"),
        !r["noise"]["low_confidence"]
            .as_array()
            .expect("list")
            .is_empty()
    );
    assert_eq!(
        has("busy_during"),
        !r["noise"]["busy_rows"].as_array().expect("list").is_empty()
    );
    if !r["warnings"].as_array().expect("warnings").is_empty() {
        assert!(runs().table.contains("WARNINGS"));
    }
}

#[test]
fn machine_facts_are_present_and_plausible() {
    let m = get(&runs().json, "machine");
    assert_eq!(
        keys(m),
        [
            "available_cores",
            "cgroup_cpu_quota_cores",
            "cgroup_memory_max_bytes",
            "cgroup_pids_max",
            "cgroup_version",
            "cpu_model",
            "kernel",
            "load_average",
            "logical_cores",
            "memory_available_bytes",
            "memory_total_bytes",
            "page_size_bytes",
            "physical_cores",
            "pid_max",
            "rlimit_nproc",
            "threads_max",
            "tier"
        ]
    );
    let n = |k: &str| {
        m[k].as_u64()
            .unwrap_or_else(|| panic!("machine.{k}: {}", m[k]))
    };
    let logical = n("logical_cores");
    assert!((1..=65_536).contains(&logical));
    assert!((1..=logical).contains(&n("available_cores")));
    if let Some(p) = m["physical_cores"].as_u64() {
        assert!((1..=logical).contains(&p));
    }
    assert!(n("memory_total_bytes") >= 64 << 20);
    assert!(n("memory_available_bytes") <= n("memory_total_bytes"));
    assert!([4096, 16384, 65536].contains(&n("page_size_bytes")));
    assert!(m["kernel"].as_str().expect("kernel").starts_with("Linux"));
    let load: Vec<f64> = m["load_average"]
        .as_array()
        .expect("load averages")
        .iter()
        .map(|x| x.as_f64().expect("a number"))
        .collect();
    assert_eq!(load.len(), 3);
    // A load average is 0 on an idle machine; never negative, and far below 10,000 here.
    assert!(load.iter().all(|l| (0.0..10_000.0).contains(l)), "{load:?}");
    // Limits are a positive number, or null for "no limit".
    for k in [
        "cgroup_memory_max_bytes",
        "cgroup_pids_max",
        "rlimit_nproc",
        "threads_max",
        "pid_max",
    ] {
        assert!(
            m[k].is_null() || m[k].as_u64().is_some_and(|v| v > 0),
            "{k}: {}",
            m[k]
        );
    }
    assert!(
        m["cgroup_cpu_quota_cores"].is_null()
            || m["cgroup_cpu_quota_cores"]
                .as_f64()
                .is_some_and(|q| q > 0.0)
    );
    let tier = &m["tier"];
    assert_eq!(keys(tier), ["advice", "level", "name"]);
    let level = tier["level"].as_u64().expect("tier level");
    let cores = n("available_cores");
    let expected = match m["cgroup_cpu_quota_cores"].as_f64() {
        Some(q) => cores.min(q.ceil() as u64).max(1),
        None => cores,
    };
    assert_eq!(
        level,
        match expected {
            1 => 1,
            2..=8 => 2,
            _ => 3,
        }
    );
}

#[test]
fn creation_costs_are_plausible() {
    let r = &runs().json;
    let c = get(r, "creation");
    assert_eq!(
        keys(c),
        [
            "async_spawn_complete",
            "event_loop_spawn_wait",
            "pool_start_shutdown",
            "pool_submit_wait",
            "process_fork_exec",
            "process_posix_spawn",
            "process_reexec_ready",
            "process_worker_handshake",
            "thread_spawn_join"
        ]
    );
    stat(r, "creation.thread_spawn_join", US, (0.5, 100_000.0));
    stat(r, "creation.pool_start_shutdown", US, (0.5, 100_000.0));
    stat(r, "creation.pool_submit_wait", US, (0.05, 100_000.0));
    stat(r, "creation.process_fork_exec", US, (10.0, 1_000_000.0));
    stat(r, "creation.process_posix_spawn", US, (10.0, 1_000_000.0));
    stat(r, "creation.process_reexec_ready", US, (50.0, 5_000_000.0));
    stat(r, "creation.async_spawn_complete", US, (0.01, 10_000.0));
    stat(r, "creation.event_loop_spawn_wait", US, (0.05, 100_000.0));
}

#[test]
fn the_process_worker_row_is_measured() {
    // `probe` starts a real one-worker process pool of its own binary, which answers the handshake
    // because the binary's `main` calls `martelli::init()` first.
    let r = &runs().json;
    stat(
        r,
        "creation.process_worker_handshake",
        US,
        (50.0, 5_000_000.0),
    );
    assert!(
        r["notes"]
            .get("creation.process_worker_handshake")
            .is_none()
    );
    let line = runs()
        .table
        .lines()
        .find(|l| l.contains("spawn → handshake"))
        .expect("the table has the process-worker row");
    assert!(!line.contains("not available"), "{line}");
}

#[test]
fn switch_costs_are_plausible() {
    let r = &runs().json;
    assert_eq!(
        keys(get(r, "switch")),
        ["async_one_thread", "process_pipe", "thread_condvar"]
    );
    stat(r, "switch.thread_condvar", US, (0.01, 100_000.0));
    stat(r, "switch.process_pipe", US, (0.1, 100_000.0));
    stat(r, "switch.async_one_thread", US, (0.005, 10_000.0));
}

#[test]
fn memory_per_unit_is_plausible() {
    let r = &runs().json;
    assert_eq!(
        keys(get(r, "memory")),
        [
            "async_task_suspended",
            "event_loop_task_suspended",
            "process_idle_rss",
            "tasks_per_sample",
            "thread_idle_rss",
            "threads_per_sample"
        ]
    );
    // A thread touches at least part of a page of stack; a task is a small heap object.
    stat(
        r,
        "memory.thread_idle_rss",
        BYTES,
        (512.0, 64.0 * 1024.0 * 1024.0),
    );
    stat(
        r,
        "memory.process_idle_rss",
        BYTES,
        (128.0 * 1024.0, 1024.0 * 1024.0 * 1024.0),
    );
    stat(
        r,
        "memory.async_task_suspended",
        BYTES,
        (1.0, 1024.0 * 1024.0),
    );
    stat(
        r,
        "memory.event_loop_task_suspended",
        BYTES,
        (1.0, 1024.0 * 1024.0),
    );
    assert!(r["memory"]["threads_per_sample"].as_u64().expect("threads") >= 10);
    assert!(r["memory"]["tasks_per_sample"].as_u64().expect("tasks") >= 1000);
}

#[test]
fn ipc_and_codec_are_plausible() {
    let r = &runs().json;
    assert_eq!(
        keys(get(r, "ipc")),
        [
            "codec",
            "pipe_1kib",
            "pipe_1mib",
            "shared_memory_1kib",
            "shared_memory_1mib",
            "unix_socket_1kib",
            "unix_socket_1mib"
        ]
    );
    for t in ["pipe", "unix_socket", "shared_memory"] {
        for size in ["1kib", "1mib"] {
            stat(r, &format!("ipc.{t}_{size}"), MBPS, (0.1, 1_000_000.0));
        }
    }
    let c = get(r, "ipc.codec");
    assert_eq!(
        keys(c),
        [
            "buffer_1mib_as_bytes",
            "buffer_1mib_as_seq",
            "name",
            "small_struct_bytes",
            "small_struct_round_trip"
        ]
    );
    assert_eq!(c["name"], "postcard");
    assert!((8..=256).contains(&c["small_struct_bytes"].as_u64().expect("size")));
    stat(
        r,
        "ipc.codec.small_struct_round_trip",
        NS,
        (1.0, 10_000_000.0),
    );
    stat(
        r,
        "ipc.codec.buffer_1mib_as_bytes",
        MBPS,
        (1.0, 1_000_000.0),
    );
    stat(r, "ipc.codec.buffer_1mib_as_seq", MBPS, (0.1, 1_000_000.0));
}

#[test]
fn cpu_curve_covers_one_to_twice_the_cores() {
    let r = &runs().json;
    let cpu = get(r, "curves.cpu");
    assert_eq!(keys(cpu), ["calibration_ms", "points"]);
    assert!(cpu["calibration_ms"].as_f64().expect("calibration") > 0.0);
    let points = cpu["points"].as_array().expect("points");
    let cores = r["machine"]["available_cores"].as_u64().expect("cores");
    let workers: Vec<u64> = points
        .iter()
        .map(|p| p["workers"].as_u64().expect("workers"))
        .collect();
    assert_eq!(workers.first(), Some(&1));
    assert_eq!(workers.last(), Some(&(2 * cores)));
    assert!(workers.windows(2).all(|w| w[0] < w[1]), "{workers:?}");
    for (i, p) in points.iter().enumerate() {
        assert_eq!(
            keys(p),
            [
                "processes",
                "processes_speedup",
                "processes_speedup_ci",
                "threads",
                "threads_speedup",
                "threads_speedup_ci",
                "workers"
            ]
        );
        for k in ["threads", "processes"] {
            let ci = p[format!("{k}_speedup_ci")].as_array().expect("interval");
            let (lo, hi) = (ci[0].as_f64().expect("low"), ci[1].as_f64().expect("high"));
            let s = p[format!("{k}_speedup")].as_f64().expect("speedup");
            assert!(
                0.0 < lo && lo <= s && s <= hi,
                "{k} at {}: {lo} {s} {hi}",
                workers[i]
            );
        }
        stat(
            r,
            &format!("curves.cpu.points.{i}.threads"),
            MS,
            (0.01, 60_000.0),
        );
        stat(
            r,
            &format!("curves.cpu.points.{i}.processes"),
            MS,
            (0.01, 60_000.0),
        );
        for k in ["threads_speedup", "processes_speedup"] {
            let s = p[k].as_f64().expect("speedup");
            // Noise on a busy machine can push a point past the ideal (the one-worker runs slowed
            // by other work), but a speedup of 16× the cores is a broken measurement.
            assert!(
                s > 0.0 && s <= 16.0 * cores as f64,
                "{k} at {}: {s}",
                workers[i]
            );
        }
    }
    assert_eq!(points[0]["threads_speedup"], 1.0);
    assert_eq!(points[0]["processes_speedup"], 1.0);
}

#[test]
fn io_curve_waits_at_least_the_wait_and_reports_memory() {
    let r = &runs().json;
    let io = get(r, "curves.io");
    assert_eq!(keys(io), ["points", "wait_ms"]);
    let wait = io["wait_ms"].as_f64().expect("wait");
    let points = io["points"].as_array().expect("points");
    let n: Vec<u64> = points
        .iter()
        .map(|p| p["concurrency"].as_u64().expect("concurrency"))
        .collect();
    assert_eq!(n, [10, 100, 1000]);
    for (i, p) in points.iter().enumerate() {
        assert_eq!(keys(p), ["async", "concurrency", "threads"]);
        for side in ["threads", "async"] {
            let s = &p[side];
            if s.is_null() {
                // Only a refusal by the machine may leave a side out, and it must say so.
                let why = &r["notes"][format!("curves.io.points[{i}].{side}")];
                assert!(
                    why.as_str().is_some_and(|w| w.starts_with("not available")),
                    "{why}"
                );
                continue;
            }
            assert_eq!(keys(s), ["memory", "wall"]);
            let wall = get(s, "wall");
            assert_eq!(wall["unit"], MS);
            // Every unit waits `wait_ms` after all are parked: the wall time cannot be shorter.
            assert!(
                wall["min"].as_f64().expect("min") >= wait,
                "{side} at {}: {wall}",
                n[i]
            );
            assert!(wall["max"].as_f64().expect("max") < 60_000.0);
            let mem = get(s, "memory");
            assert_eq!(mem["unit"], BYTES);
            let m = mem["median"].as_f64().expect("memory");
            // Growth can be 0 when a few tasks fit in pages already mapped; never negative, and
            // under 1 MiB per wait.
            assert!(
                m >= 0.0 && m <= n[i] as f64 * 1024.0 * 1024.0,
                "{side} at {}: {mem}",
                n[i]
            );
        }
    }
    // A thread per wait costs at least a page of stack per thread at 1000 waits.
    let t1000 = &points[2]["threads"]["memory"]["median"];
    if let Some(t) = t1000.as_f64() {
        assert!(t >= 1000.0 * 1024.0, "{t}");
    }
}

#[test]
fn foreground_latency_is_measured_under_each_background() {
    let r = &runs().json;
    let f = get(r, "foreground");
    assert_eq!(
        keys(f),
        [
            "background_workers",
            "idle",
            "processes_nice_0",
            "processes_nice_10",
            "processes_nice_19",
            "seconds_per_scenario",
            "sleep_us",
            "threads"
        ]
    );
    assert_eq!(f["sleep_us"], 1000);
    assert_eq!(f["background_workers"], r["machine"]["available_cores"]);
    let idle_p99 = get(f, "idle.p99").as_f64().expect("idle p99");
    for key in [
        "idle",
        "processes_nice_0",
        "processes_nice_10",
        "processes_nice_19",
        "threads",
    ] {
        let s = &f[key];
        assert_eq!(
            keys(s),
            [
                "max",
                "mean",
                "p50",
                "p50_over_idle",
                "p99",
                "p99_over_idle",
                "samples",
                "unit"
            ],
            "{key}"
        );
        assert_eq!(s["unit"], "us");
        let n = |k: &str| s[k].as_f64().unwrap_or_else(|| panic!("{key}.{k}: {s}"));
        // A sleep never ends early: every lateness is ≥ 0, and ordered.
        assert!(
            0.0 <= n("p50") && n("p50") <= n("p99") && n("p99") <= n("max"),
            "{key}: {s}"
        );
        // A 1 ms sleep, timed for a few tenths of a second: tens of samples at least, each
        // under a second late.
        assert!(n("samples") >= 20.0 && n("max") < 1e6, "{key}: {s}");
        assert!(
            (n("p99_over_idle") - n("p99") / idle_p99).abs() < 1e-6 * n("p99_over_idle").max(1.0),
            "{key}: {s}"
        );
    }
    assert_eq!(f["idle"]["p99_over_idle"], 1.0);
    let line = runs()
        .table
        .lines()
        .find(|l| l.trim_start().starts_with("process pool, nice 10"))
        .expect("the table has the nice-10 row");
    assert!(line.contains('×'), "{line}");
    let rec = r["recommendations"]
        .as_array()
        .expect("recommendations")
        .iter()
        .find(|x| x["id"] == "foreground_nice")
        .expect("a foreground_nice recommendation");
    assert!(
        ["nice_helps", "nice_no_better", "nice_not_needed"]
            .contains(&rec["verdict"].as_str().expect("verdict")),
        "{rec}"
    );
}

#[test]
fn the_cluster_tier_is_measured_against_a_private_broker() {
    // redis-server is installed where the tests run (scripts/test.sh installs it): the probe starts
    // its own, measures against it and stops it.
    let r = &runs().json;
    let c = get(r, "cluster");
    assert_eq!(
        keys(c),
        [
            "broker",
            "note",
            "per_task",
            "per_task_us",
            "round_trip",
            "round_trip_us",
            "source",
            "worker_start"
        ]
    );
    assert_eq!(c["source"], "measured", "{c}");
    assert!(
        c["broker"]
            .as_str()
            .expect("broker")
            .starts_with("redis-server "),
        "{c}"
    );
    stat(r, "cluster.round_trip", US, (1.0, 1_000_000.0));
    stat(r, "cluster.per_task", US, (0.1, 1_000_000.0));
    stat(r, "cluster.worker_start", MS, (0.01, 60_000.0));
    assert_eq!(c["round_trip_us"], c["round_trip"]["median"]);
    assert_eq!(c["per_task_us"], c["per_task"]["median"]);
    let rec = r["recommendations"]
        .as_array()
        .expect("recommendations")
        .iter()
        .find(|x| x["id"] == "cluster")
        .expect("a cluster recommendation");
    // Ten times the cost per task: the task size from which the overhead is under 10 %.
    let per_task = c["per_task_us"].as_f64().expect("per task");
    let value = rec["value"].as_f64().expect("value");
    assert!((value - 10.0 * per_task).abs() < 1e-6 * value, "{rec}");
    assert!(
        runs()
            .table
            .contains("CLUSTER (no-op tasks through redis-server")
    );
}

#[test]
fn recommendations_are_derived_and_explained() {
    let r = &runs().json;
    let recs = r["recommendations"].as_array().expect("recommendations");
    let ids: Vec<&str> = recs.iter().map(|x| x["id"].as_str().expect("id")).collect();
    for id in [
        "tier",
        "threads_or_processes",
        "process_task_min",
        "thread_task_min",
        "async_memory",
        "keep_workers_warm",
        "foreground_nice",
        "cluster",
    ] {
        assert!(ids.contains(&id), "no `{id}` in {ids:?}");
    }
    let wide: Vec<String> = measured_rows(r)
        .into_iter()
        .filter(|(_, s)| s["low_confidence"] == true)
        .map(|(p, _)| p)
        .collect();
    for rec in recs {
        assert_eq!(
            keys(rec),
            [
                "basis",
                "busy_basis",
                "id",
                "low_confidence_basis",
                "text",
                "unit",
                "value",
                "verdict"
            ]
        );
        assert!(
            !rec["verdict"].as_str().expect("verdict").is_empty(),
            "{rec}"
        );
        // No recommendation rests on a low-confidence row without saying so.
        let text = rec["text"].as_str().expect("text");
        let rests = rec["basis"].as_array().expect("basis").iter().any(|b| {
            let b = b.as_str().expect("a path");
            wide.iter().any(|w| {
                w == b || w.starts_with(&format!("{b}.")) || w.starts_with(&format!("{b}["))
            })
        });
        assert_eq!(rests, text.contains("Low confidence"), "{rec}");
        let v = rec["value"].as_f64().unwrap_or_else(|| panic!("{rec}"));
        assert!(v > 0.0 && v.is_finite(), "{rec}");
        assert!(rec["text"].as_str().is_some_and(|t| t.len() > 20), "{rec}");
        for b in rec["basis"].as_array().expect("basis") {
            let path = b.as_str().expect("a path");
            get(r, path);
        }
    }
    let tier = recs.iter().find(|x| x["id"] == "tier").expect("tier");
    let level = r["machine"]["tier"]["level"].as_u64().expect("level");
    assert!(
        tier["text"]
            .as_str()
            .expect("text")
            .contains(&format!("tier {level}"))
    );
    // On tier 2 or 3, CPU-bound workers never exceed the usable cores unless the text says why.
    let cores = r["machine"]["available_cores"].as_f64().expect("cores");
    let workers = tier["value"].as_f64().expect("workers");
    if level > 1 && workers > cores {
        assert!(
            tier["text"]
                .as_str()
                .expect("text")
                .contains("because the measured curve says so"),
            "{tier}"
        );
    }
    // The thread floor is the measured submit → wait, not a constant.
    let floor = recs
        .iter()
        .find(|x| x["id"] == "thread_task_min")
        .expect("floor");
    assert_eq!(floor["value"], r["creation"]["pool_submit_wait"]["median"]);
}

#[test]
fn svg_plot_parses_and_shows_the_curves() {
    let text = std::fs::read_to_string(runs().svg()).expect("the plot was written");
    let doc = roxmltree::Document::parse(&text).expect("the plot is well-formed XML");
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    let texts: Vec<&str> = doc
        .descendants()
        .filter(|n| n.has_tag_name("text"))
        .filter_map(|n| n.text())
        .collect();
    for caption in [
        "CPU-bound job: speedup",
        "I/O-bound job: memory per wait",
        "Foreground: wake-up latency",
        "threads",
        "processes",
        "async (1 thread)",
        "processes, nice 10",
        // Log axes are labelled at round values, counts with separators.
        "1,000",
        "10 ms",
        "KiB",
    ] {
        assert!(
            texts.iter().any(|t| t.contains(caption)),
            "no {caption:?} in {texts:?}"
        );
    }
    let lines = doc
        .descendants()
        .filter(|n| n.has_tag_name("polyline") || n.has_tag_name("path"))
        .count();
    // Seven curves, and a bar with two caps for every point of the CPU curve's two sides.
    let points = runs().json["curves"]["cpu"]["points"]
        .as_array()
        .expect("points")
        .len();
    assert!(lines >= 7 + 2 * 3 * points, "only {lines} lines drawn");
}

#[test]
fn table_reads_well_and_compares() {
    let t = &runs().table;
    for section in [
        "THE MACHINE",
        "CREATION",
        "SWITCH",
        "MEMORY",
        "IPC",
        "CPU-BOUND JOB",
        "I/O-BOUND JOB",
        "FOREGROUND",
        "CLUSTER",
        "RECOMMENDATIONS",
        "COMPARED WITH",
    ] {
        assert!(t.contains(section), "no {section} in:\n{t}");
    }
    assert!(t.contains("tier "));
    assert!(t.contains(&runs().json_path().display().to_string()));
    // Every compared row has both values and a ratio.
    let compared: Vec<&str> = t
        .lines()
        .skip_while(|l| !l.starts_with("COMPARED WITH"))
        .filter(|l| l.trim_start().starts_with("creation.thread_spawn_join"))
        .collect();
    assert_eq!(compared.len(), 1, "{t}");
    assert!(compared[0].contains('×'), "{}", compared[0]);
    // No line of the table is wider than 100 columns.
    for line in t.lines().take_while(|l| !l.starts_with("COMPARED WITH")) {
        assert!(line.chars().count() <= 100, "too wide: {line}");
    }
}

fn fails_fast(args: &[&str], dir: &Path) -> String {
    let out = output(martelli().args(args).current_dir(dir));
    assert!(!out.status.success(), "{args:?} succeeded");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn bad_input_is_refused_before_probing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let err = fails_fast(
        &["probe", "--quick", "--compare", "nowhere.json"],
        dir.path(),
    );
    assert!(err.contains("cannot compare with nowhere.json"), "{err}");
    std::fs::write(dir.path().join("bad.json"), "{ not json").expect("write");
    let err = fails_fast(&["probe", "--quick", "--compare", "bad.json"], dir.path());
    assert!(err.contains("not JSON"), "{err}");
    let err = fails_fast(&["probe", "--quick", "--plot", "curves.png"], dir.path());
    assert!(err.contains(".svg"), "{err}");
    let err = fails_fast(
        &["probe", "--quick", "--plot", "missing/curves.svg"],
        dir.path(),
    );
    assert!(err.contains("does not exist"), "{err}");
    let err = fails_fast(&["probe", "--json", "--compare", "x.json"], dir.path());
    assert!(err.contains("cannot be used with"), "{err}");
    // Nothing was written for the refused runs.
    assert_eq!(std::fs::read_dir(dir.path()).expect("list").count(), 1);
}

#[test]
fn a_bad_helper_invocation_is_an_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let err = fails_fast(&["probe", "--child", "bogus"], dir.path());
    assert!(err.contains("unknown helper invocation"), "{err}");
    let err = fails_fast(
        &["probe", "--child", "io", "threads", "ten", "10"],
        dir.path(),
    );
    assert!(err.contains("unknown helper invocation"), "{err}");
}

#[test]
fn thread_rows_beyond_the_task_limit_are_absent_and_explained() {
    // A soft RLIMIT_NPROC of 1200 leaves no room for the 1000-thread point plus a margin for the
    // rest of the system: the probe must skip that point, say why, and still measure async there.
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    use std::os::unix::process::CommandExt;
    let hard = getrlimit(Resource::Nproc).maximum;
    let soft = hard.map_or(1200, |h| h.min(1200));
    let mut cmd = martelli();
    cmd.args(["probe", "--quick", "--json"]);
    // SAFETY: between fork and exec the hook makes one system call (setrlimit), which is
    // async-signal-safe, and touches no lock or allocation of the parent.
    unsafe {
        cmd.pre_exec(move || {
            setrlimit(
                Resource::Nproc,
                Rlimit {
                    current: Some(soft),
                    maximum: hard,
                },
            )
            .map_err(std::io::Error::from)
        });
    }
    let out = output(&mut cmd);
    check(&out, "probe --quick --json under ulimit -u 1200");
    let r: Value = serde_json::from_slice(&out.stdout).expect("the report is JSON");
    assert_eq!(r["machine"]["rlimit_nproc"], soft);
    let p = &r["curves"]["io"]["points"][2];
    assert_eq!(p["concurrency"], 1000);
    assert!(p["threads"].is_null(), "{p}");
    assert!(p["async"]["wall"]["median"].as_f64().is_some(), "{p}");
    let why = r["notes"]["curves.io.points[2].threads"]
        .as_str()
        .expect("a note for the skipped point");
    assert!(why.contains(&format!("RLIMIT_NPROC ({soft})")), "{why}");
    if soft >= 100 + 256 {
        // The smaller points still ran on threads.
        assert!(r["curves"]["io"]["points"][1]["threads"].is_object());
    }
    let limit = r["recommendations"]
        .as_array()
        .expect("recommendations")
        .iter()
        .find(|x| x["id"] == "task_limit")
        .expect("a task_limit recommendation");
    assert_eq!(limit["value"], soft as f64);
}

#[test]
fn a_plot_that_cannot_be_written_keeps_the_report() {
    // /proc takes no new files, even from root: the write fails after the measurements.
    let out = output(martelli().args([
        "probe",
        "--quick",
        "--json",
        "--plot",
        "/proc/martelli-probe-curves.svg",
    ]));
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot write the plot"), "{stderr}");
    let r: Value = serde_json::from_slice(&out.stdout).expect("the report was printed first");
    assert_eq!(r["schema"], "martelli-probe/1");
}
