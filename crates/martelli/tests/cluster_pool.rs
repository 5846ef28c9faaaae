//! The same `Pool` API over the cluster backend: `Pool::cluster` and `from_spec("redis://…")` against
//! a real `redis-server` (started by each test on a free port) and real workers serving the
//! `#[martelli::task]` functions below through `cluster::Registered`.
//!
//! This test binary is also its own worker program (`main` calls `martelli::init()` first), so a
//! cluster worker with `WorkerOptions::processes` runs the tasks below in copies of it. It has its own
//! small runner (`harness = false`): `cargo test --features cluster --test cluster_pool [filter]`.

use martelli::cluster::{OnLost, Registered, Tasks, Worker, WorkerOptions, WorkerReport};
use martelli::{
    Error, Pool, Priority, Shutdown, TaskError, TaskOptions, WaitMode, as_completed, wait,
};
use martelli_testkit::poll;
use martelli_testkit::proc::is_dead;
use martelli_testkit::redis::RedisServer;
use std::process::Command;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[path = "support/runner.rs"]
mod runner;
#[path = "support/tasks.rs"]
mod tasks;
use tasks::{abort_with_note, panics, parse_number, segfault, sleep_ms, worker_pid};

// ---- the tasks -------------------------------------------------------------------------------

#[martelli::task]
fn add(a: i64, b: i64) -> i64 {
    a + b
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct Shape {
    name: String,
    sides: Vec<u32>,
}

#[martelli::task(name = "tests::perimeter")]
fn perimeter(shape: Shape, scale: u32) -> (String, u32) {
    (shape.name, shape.sides.iter().sum::<u32>() * scale)
}

#[martelli::task]
fn square(x: u64) -> u64 {
    x * x
}

/// Every `touch` that ran, in order (the worker runs in this process unless it uses processes).
static TOUCHED: Mutex<Vec<String>> = Mutex::new(Vec::new());

#[martelli::task]
fn touch(label: String) -> String {
    TOUCHED.lock().unwrap().push(label.clone());
    label
}

/// Records `label` as started, sleeps `ms`, then records it as finished.
#[martelli::task]
fn touch_slowly(label: String, ms: u64) -> String {
    TOUCHED.lock().unwrap().push(format!("{label}:started"));
    std::thread::sleep(Duration::from_millis(ms));
    TOUCHED.lock().unwrap().push(format!("{label}:finished"));
    label
}

/// Writes its process id to `pid_file`, then hangs.
#[martelli::task]
fn write_pid_then_hang(pid_file: String) -> u32 {
    std::fs::write(&pid_file, std::process::id().to_string()).expect("pid file");
    std::thread::sleep(Duration::from_secs(600));
    0
}

/// Records that it started, then works in small steps until its token fires (at most 30 s), and
/// records how it stopped.
#[martelli::task]
fn work_until_cancelled(label: String) -> u64 {
    TOUCHED.lock().unwrap().push(format!("{label}:started"));
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut steps = 0u64;
    while !martelli::is_cancelled() && Instant::now() < deadline {
        steps += 1;
        std::thread::sleep(Duration::from_millis(5));
    }
    let how = if martelli::is_cancelled() {
        "cancelled"
    } else {
        "gave up"
    };
    TOUCHED.lock().unwrap().push(format!("{label}:{how}"));
    steps
}

/// Waits until the file `gate` exists (at most 60 s), then returns `n`: a task that runs exactly
/// as long as its test wants.
#[martelli::task]
fn wait_for_gate(gate: String, n: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !std::path::Path::new(&gate).exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    n
}

// ---- the runner ------------------------------------------------------------------------------

fn main() {
    martelli::init();
    if std::env::args().any(|a| a == "--from-env-child") {
        from_env_child_main();
    }
    let tests: &[(&str, fn())] = &[
        ("every_outcome_round_trips", every_outcome_round_trips),
        ("from_spec_and_martelli_pool", from_spec_and_martelli_pool),
        (
            "map_task_keeps_input_order_and_as_completed_sees_all",
            map_task_keeps_input_order_and_as_completed_sees_all,
        ),
        ("priorities_choose_the_stream", priorities_choose_the_stream),
        (
            "closures_are_refused_like_on_processes",
            closures_are_refused_like_on_processes,
        ),
        (
            "the_documented_payload_is_a_messagepack_argument_array",
            the_documented_payload_is_a_messagepack_argument_array,
        ),
        (
            "cancel_of_a_running_thread_task_that_never_checks_lets_it_finish",
            cancel_of_a_running_thread_task_that_never_checks_lets_it_finish,
        ),
        (
            "cancel_of_a_running_thread_task_that_checks_its_token_ends_as_cancelled",
            cancel_of_a_running_thread_task_that_checks_its_token_ends_as_cancelled,
        ),
        (
            "cancel_of_a_running_task_on_a_process_kills_its_process",
            cancel_of_a_running_task_on_a_process_kills_its_process,
        ),
        (
            "watching_running_tasks_reads_no_tombstone_without_cancels",
            watching_running_tasks_reads_no_tombstone_without_cancels,
        ),
        (
            "cancel_of_a_queued_task_never_runs_it",
            cancel_of_a_queued_task_never_runs_it,
        ),
        (
            "shutdown_cancel_pending_cancels_every_queued_task",
            shutdown_cancel_pending_cancels_every_queued_task,
        ),
        (
            "registered_and_hand_written_tasks_share_a_worker",
            registered_and_hand_written_tasks_share_a_worker,
        ),
        (
            "crashes_on_worker_processes_are_contained",
            crashes_on_worker_processes_are_contained,
        ),
        (
            "a_deadline_kills_the_process_running_the_task",
            a_deadline_kills_the_process_running_the_task,
        ),
        (
            "init_serves_as_a_worker_when_the_variable_is_set",
            init_serves_as_a_worker_when_the_variable_is_set,
        ),
        (
            "consume_task_serves_a_queue_through_the_cluster",
            consume_task_serves_a_queue_through_the_cluster,
        ),
        (
            "futures_survive_a_broker_restart_without_persistence",
            futures_survive_a_broker_restart_without_persistence,
        ),
    ];
    runner::run(tests);
}

// ---- helpers ---------------------------------------------------------------------------------

fn fast(options: WorkerOptions) -> WorkerOptions {
    options
        .poll(Duration::from_millis(50))
        .lease(Duration::from_millis(500))
}

fn worker(redis: &RedisServer, options: WorkerOptions) -> Worker {
    Worker::start(&redis.url(), Registered, fast(options)).expect("a worker starts")
}

fn stop(worker: Worker) -> WorkerReport {
    worker.stop();
    worker.join().expect("the worker stops cleanly")
}

/// A fresh path for a gate file ([`wait_for_gate`]), not created yet.
fn gate_file(what: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let path =
        std::env::temp_dir().join(format!("martelli-gate-{what}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    path.display().to_string()
}

fn touched() -> Vec<String> {
    TOUCHED.lock().unwrap().clone()
}

fn keys(raw: &mut redis::Connection, pattern: &str) -> Vec<String> {
    redis::cmd("KEYS").arg(pattern).query(raw).unwrap()
}

fn stream_len(raw: &mut redis::Connection) -> usize {
    redis::cmd("XLEN")
        .arg("martelli:q:default:normal")
        .query(raw)
        .unwrap()
}

/// Writes the tombstone of task `id` and the queue's `cancels` flag, as a producer that cancels
/// does (docs/protocol.md, "Cancelling a task").
fn write_tombstone(raw: &mut redis::Connection, id: &str) {
    redis::pipe()
        .cmd("SET")
        .arg(format!("martelli:cancel:{id}"))
        .arg(1)
        .arg("PX")
        .arg(60_000)
        .ignore()
        .cmd("SET")
        .arg("martelli:q:default:cancels")
        .arg(1)
        .arg("PX")
        .arg(60_000)
        .ignore()
        .exec(raw)
        .unwrap();
}

/// A result as another reader decodes it (docs/protocol.md, "Result").
#[derive(Debug, serde::Deserialize)]
struct RawResult {
    id: String,
    status: String,
    #[serde(default, with = "serde_bytes")]
    payload: Option<Vec<u8>>,
    #[serde(default)]
    error: Option<String>,
}

/// Calls of one command since the server started, from `INFO commandstats` (0 if never called).
/// The scripts (`EVAL`, `EVALSHA`) and the `EXISTS` calls the broker has run so far, from one
/// `INFO commandstats`: read together, no script can run between the two counts (`EXISTS` inside a
/// script is counted when it runs, the script when it ends).
fn scripts_and_exists(raw: &mut redis::Connection) -> (u64, u64) {
    let info: String = redis::cmd("INFO").arg("commandstats").query(raw).unwrap();
    let calls = |command: &str| {
        let prefix = format!("cmdstat_{command}:calls=");
        info.lines()
            .find_map(|line| line.strip_prefix(&prefix))
            .and_then(|rest| rest.split(',').next())
            .map_or(0, |n| n.parse::<u64>().unwrap())
    };
    (calls("evalsha") + calls("eval"), calls("exists"))
}

/// The commands called so far, as `INFO commandstats` says (`name=calls` pairs), for messages.
fn commandstats(raw: &mut redis::Connection) -> String {
    let info: String = redis::cmd("INFO").arg("commandstats").query(raw).unwrap();
    info.lines()
        .filter_map(|line| {
            let (name, rest) = line.strip_prefix("cmdstat_")?.split_once(":calls=")?;
            Some(format!("{name}={}", rest.split(',').next()?))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

// ---- the tests -------------------------------------------------------------------------------

fn every_outcome_round_trips() {
    let redis = RedisServer::start();
    let worker = worker(&redis, WorkerOptions::new().concurrency(4));
    let pool = Pool::cluster(&redis.url()).unwrap();
    assert_eq!(pool.kind(), "cluster");

    // A value, with a struct argument that crosses as a MessagePack map.
    assert_eq!(pool.submit_task(add, (40, 2)).unwrap().wait().unwrap(), 42);
    let shape = Shape {
        name: "triangle".into(),
        sides: vec![3, 4, 5],
    };
    assert_eq!(
        pool.submit_task(perimeter, (shape, 2))
            .unwrap()
            .wait()
            .unwrap(),
        ("triangle".to_owned(), 24)
    );

    // An error the task returned.
    match pool
        .submit_task(parse_number, ("x1".into(),))
        .unwrap()
        .wait()
    {
        Err(TaskError::Failed(failure)) => {
            assert!(failure.message().contains("invalid digit"), "{failure}")
        }
        other => panic!("expected Failed, got {other:?}"),
    }

    // A panic, with its message; the worker goes on.
    match pool
        .submit_task(panics, ("on purpose".into(),))
        .unwrap()
        .wait()
    {
        Err(TaskError::Panicked { message }) => assert_eq!(message, "on purpose"),
        other => panic!("expected Panicked, got {other:?}"),
    }

    // A timeout (from submission, on the envelope's deadline).
    let started = Instant::now();
    let slow = pool
        .with(TaskOptions::new().timeout(Duration::from_millis(300)))
        .submit_task(sleep_ms, (4_000,))
        .unwrap();
    match slow.wait() {
        Err(TaskError::TimedOut { after }) => assert_eq!(after, Duration::from_millis(300)),
        other => panic!("expected TimedOut, got {other:?}"),
    }
    // Resolved by the deadline, not by the task's end (with room for a loaded machine).
    assert!(started.elapsed() < Duration::from_millis(3_500));

    // A name no worker knows: dead-lettered, the caller sees Lost with the reason.
    let unknown = pool
        .submit_named::<_, u64>("tests::no_such_task", (1u64,))
        .unwrap();
    match unknown.wait() {
        Err(TaskError::Lost { reason, .. }) => {
            assert!(reason.contains("unknown task"), "{reason}")
        }
        other => panic!("expected Lost, got {other:?}"),
    }
    let mut raw = redis.raw();
    let dead: usize = redis::cmd("XLEN")
        .arg("martelli:q:default:dead")
        .query(&mut raw)
        .unwrap();
    assert_eq!(dead, 1);

    // The wrong result type is a decode failure that says so.
    match pool
        .submit_named::<_, String>(<add as martelli::Task>::NAME, (1i64, 2i64))
        .unwrap()
        .wait()
    {
        Err(TaskError::Failed(failure)) => {
            assert!(failure.message().contains("disagree"), "{failure}")
        }
        other => panic!("expected a decode failure, got {other:?}"),
    }

    assert_eq!(pool.queued(), 0);
    drop(pool);
    let report = stop(worker);
    assert!(report.succeeded >= 3, "{report:?}");
    assert_eq!(report.dead_lettered, 1, "{report:?}");
}

fn from_spec_and_martelli_pool() {
    let redis = RedisServer::start();
    let worker = worker(&redis, WorkerOptions::new().concurrency(2));
    let pool = Pool::from_spec(&format!("redis://127.0.0.1:{}", redis.port)).unwrap();
    assert_eq!(pool.kind(), "cluster");
    assert_eq!(
        pool.submit_task(square, (12,)).unwrap().wait().unwrap(),
        144
    );
    drop(pool);

    // No broker at the address: a clear error at build time.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let err = Pool::from_spec(&format!("redis://127.0.0.1:{closed}")).unwrap_err();
    assert!(matches!(err, Error::Cluster(_)), "{err:?}");
    assert!(err.to_string().contains("cannot reach"), "{err}");

    // MARTELLI_POOL picks the cluster without a code change (in a child: the environment is
    // process-wide).
    let exe = std::env::current_exe().unwrap();
    let status = Command::new(exe)
        .arg("--from-env-child")
        .env("MARTELLI_POOL", redis.url())
        .status()
        .unwrap();
    assert!(status.success(), "the child failed: {status}");
    stop(worker);
}

fn from_env_child_main() -> ! {
    let pool = Pool::from_env("threads:1").expect("a cluster pool from MARTELLI_POOL");
    assert_eq!(pool.kind(), "cluster");
    assert_eq!(pool.submit_task(add, (2, 3)).unwrap().wait().unwrap(), 5);
    drop(pool);
    std::process::exit(0);
}

fn map_task_keeps_input_order_and_as_completed_sees_all() {
    let redis = RedisServer::start();
    let worker = worker(&redis, WorkerOptions::new().concurrency(4));
    let pool = Pool::builder()
        .cluster(redis.url())
        .cluster_width(4)
        .build()
        .unwrap();
    let squares: Vec<u64> = pool
        .map_task(square, (0..300u64).map(|x| (x,)))
        .chunk(7)
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(squares, (0..300u64).map(|x| x * x).collect::<Vec<_>>());

    // Automatic chunking, and a failing input fails only itself.
    let parsed: Vec<_> = pool
        .map_task(parse_number, ["1", "x", "3"].map(|s| (s.to_owned(),)))
        .collect();
    assert_eq!(parsed[0].as_ref().ok(), Some(&1));
    assert!(matches!(parsed[1], Err(TaskError::Failed(_))));
    assert_eq!(parsed[2].as_ref().ok(), Some(&3));

    let futures: Vec<_> = (1..=20u64)
        .map(|ms| pool.submit_task(sleep_ms, (ms * 5,)).unwrap())
        .collect();
    let mut seen: Vec<u64> = as_completed(futures).map(|f| f.wait().unwrap()).collect();
    seen.sort_unstable();
    assert_eq!(seen, (1..=20u64).map(|ms| ms * 5).collect::<Vec<_>>());

    // wait(FirstError) returns at the first failure, with the slow task still pending.
    let slow = pool.submit_task(sleep_ms, (1_000,)).unwrap();
    let bad = pool.submit_task(parse_number, ("x".into(),)).unwrap();
    let mixed: Vec<martelli::Future<u64>> = vec![slow, bad];
    let waited = wait(mixed, WaitMode::FirstError, Some(Duration::from_secs(10)));
    assert_eq!((waited.done.len(), waited.pending.len()), (1, 1));
    assert!(matches!(
        waited.done.into_iter().next().unwrap().wait(),
        Err(TaskError::Failed(_))
    ));
    for future in waited.pending {
        // Running on its worker by now (its `started` note came): not removed from a queue, but
        // its future resolves as cancelled all the same.
        future.cancel();
        assert!(matches!(
            future.wait_timeout(Duration::from_secs(10)),
            Ok(Err(TaskError::Cancelled))
        ));
    }

    // Dropping the pool waits for every result (Shutdown::Wait), as on every backend.
    let last: Vec<_> = (0..5u64)
        .map(|ms| pool.submit_task(sleep_ms, (50 + ms,)).unwrap())
        .collect();
    drop(pool);
    assert!(
        last.iter().all(|f| f.is_done()),
        "drop returned before the results"
    );
    stop(worker);
}

fn priorities_choose_the_stream() {
    TOUCHED.lock().unwrap().clear();
    let redis = RedisServer::start();
    let pool = Pool::cluster(&redis.url()).unwrap();
    // Queued before any worker exists, lowest priority first.
    let mut futures = Vec::new();
    for (label, priority) in [
        ("low-1", Priority::Low),
        ("normal-1", Priority::Normal),
        ("high-1", Priority::High),
        ("low-2", Priority::Low),
        ("high-2", Priority::High),
    ] {
        let options = TaskOptions::new().priority(priority);
        futures.push(
            pool.with(options)
                .submit_task(touch, (label.to_owned(),))
                .unwrap(),
        );
    }
    let mut raw = redis.raw();
    poll::until("the tasks to reach Redis", Duration::from_secs(5), || {
        let lens: Vec<usize> = ["high", "normal", "low"]
            .iter()
            .map(|p| {
                redis::cmd("XLEN")
                    .arg(format!("martelli:q:default:{p}"))
                    .query(&mut raw)
                    .unwrap()
            })
            .collect();
        lens == [2, 1, 2]
    });
    // One slot: the worker takes one task at a time, highest priority first.
    let worker = worker(&redis, WorkerOptions::new().concurrency(1));
    for future in futures {
        future.wait().unwrap();
    }
    assert_eq!(
        touched(),
        ["high-1", "high-2", "normal-1", "low-1", "low-2"].map(String::from)
    );
    drop(pool);
    stop(worker);
}

fn closures_are_refused_like_on_processes() {
    let redis = RedisServer::start();
    let pool = Pool::cluster(&redis.url()).unwrap();
    let err = pool.submit(|| 1).unwrap_err();
    assert!(
        matches!(err, Error::NotATask { backend: "cluster" }),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(
        message.contains("cluster backend runs only #[martelli::task]"),
        "{message}"
    );
    assert!(message.contains("Pool::submit_task"), "{message}");
    assert!(pool.submit_fallible(|| Ok::<_, std::io::Error>(1)).is_err());
    assert!(matches!(
        pool.try_submit(|| 1),
        Err(martelli::TrySubmitError::NotATask(_))
    ));
}

fn cancel_of_a_queued_task_never_runs_it() {
    TOUCHED.lock().unwrap().clear();
    let redis = RedisServer::start();
    let mut raw = redis.raw();
    let pool = Pool::cluster(&redis.url()).unwrap();
    // No worker yet: both tasks wait in the stream.
    let doomed = pool.submit_task(touch, ("doomed".into(),)).unwrap();
    let kept = pool.submit_task(touch, ("kept".into(),)).unwrap();
    let doomed_id = doomed.id();
    assert!(doomed.cancel(), "a queued task is cancelled");
    assert!(matches!(doomed.wait(), Err(TaskError::Cancelled)));
    // The tombstone is in Redis before the worker starts.
    poll::until("the tombstone", Duration::from_secs(5), || {
        keys(&mut raw, "martelli:cancel:*").len() == 1
    });
    assert_eq!(
        keys(&mut raw, "martelli:q:default:cancels"),
        ["martelli:q:default:cancels"]
    );
    let ttl: i64 = redis::cmd("PTTL")
        .arg(&keys(&mut raw, "martelli:cancel:*")[0])
        .query(&mut raw)
        .unwrap();
    assert!(ttl > 0, "a tombstone expires (PTTL {ttl})");

    let worker = worker(&redis, WorkerOptions::new().concurrency(2));
    assert_eq!(kept.wait().unwrap(), "kept");
    poll::until(
        "the cancelled entry to be acknowledged",
        Duration::from_secs(5),
        || {
            let len: usize = redis::cmd("XLEN")
                .arg("martelli:q:default:normal")
                .query(&mut raw)
                .unwrap();
            len == 0
        },
    );
    let report = stop(worker);
    // The side effect proves it: only the kept task ran.
    assert_eq!(touched(), ["kept"]);
    assert_eq!(report.cancelled, 1, "{report:?}");
    assert_eq!(report.succeeded, 1, "{report:?}");
    // The worker deleted the tombstone with the entry.
    assert!(keys(&mut raw, "martelli:cancel:*").is_empty());
    let _ = doomed_id;
}

fn shutdown_cancel_pending_cancels_every_queued_task() {
    TOUCHED.lock().unwrap().clear();
    let redis = RedisServer::start();
    let mut raw = redis.raw();
    let pool = Pool::cluster(&redis.url()).unwrap();
    let futures: Vec<_> = (0..3)
        .map(|i| pool.submit_task(touch, (format!("never-{i}"),)).unwrap())
        .collect();
    assert_eq!(pool.queued(), 3);
    pool.shutdown(Shutdown::CancelPending);
    assert!(pool.is_shut_down());
    assert!(matches!(
        pool.submit_task(add, (1, 1)),
        Err(Error::ShutDown)
    ));
    for future in futures {
        assert!(matches!(future.wait(), Err(TaskError::Cancelled)));
    }
    assert_eq!(keys(&mut raw, "martelli:cancel:*").len(), 3);
    drop(pool);

    // A worker started now acknowledges the three without running them.
    let worker = worker(&redis, WorkerOptions::new().concurrency(3));
    poll::until("the three cancellations", Duration::from_secs(5), || {
        keys(&mut raw, "martelli:cancel:*").is_empty()
    });
    let report = stop(worker);
    assert_eq!(report.cancelled, 3, "{report:?}");
    assert!(touched().is_empty(), "{:?}", touched());
}

fn registered_and_hand_written_tasks_share_a_worker() {
    let redis = RedisServer::start();
    let tasks = Tasks::new()
        .typed("tests::hand_written", |x: u64| {
            Ok::<_, std::io::Error>(x + 1)
        })
        .registered();
    let worker = Worker::start(&redis.url(), tasks, fast(WorkerOptions::new())).unwrap();
    let pool = Pool::cluster(&redis.url()).unwrap();
    assert_eq!(pool.submit_task(add, (1, 2)).unwrap().wait().unwrap(), 3);
    let by_hand = pool
        .submit_named::<_, u64>("tests::hand_written", 41u64)
        .unwrap();
    assert_eq!(by_hand.wait().unwrap(), 42);
    drop(pool);
    stop(worker);
}

fn crashes_on_worker_processes_are_contained() {
    let redis = RedisServer::start();
    let worker = worker(&redis, WorkerOptions::new().processes(2));
    let pool = Pool::cluster(&redis.url()).unwrap();

    let pid = pool.submit_task(worker_pid, ()).unwrap().wait().unwrap();
    assert_ne!(pid, std::process::id(), "the task ran in a worker process");

    match pool.submit_task(abort_with_note, ()).unwrap().wait() {
        Err(TaskError::WorkerDied(death)) => {
            assert_eq!(death.signal, Some(libc::SIGABRT), "{death}");
            assert!(death.stderr_tail.contains("about to abort"), "{death}");
        }
        other => panic!("expected WorkerDied, got {other:?}"),
    }
    match pool.submit_task(segfault, ()).unwrap().wait() {
        Err(TaskError::WorkerDied(death)) => assert_eq!(death.signal, Some(libc::SIGSEGV)),
        other => panic!("expected WorkerDied, got {other:?}"),
    }
    // Panics and errors are ordinary outcomes there too, and the worker goes on.
    match pool
        .submit_task(panics, ("in a process".into(),))
        .unwrap()
        .wait()
    {
        Err(TaskError::Panicked { message }) => assert_eq!(message, "in a process"),
        other => panic!("expected Panicked, got {other:?}"),
    }
    assert!(matches!(
        pool.submit_task(parse_number, ("?".into(),))
            .unwrap()
            .wait(),
        Err(TaskError::Failed(_))
    ));
    let sums: Vec<i64> = (0..20)
        .map(|i| pool.submit_task(add, (i, i)).unwrap())
        .map(|f| f.wait().unwrap())
        .collect();
    assert_eq!(sums, (0..20).map(|i| 2 * i).collect::<Vec<_>>());
    drop(pool);
    let report = stop(worker);
    assert_eq!(report.succeeded, 21, "{report:?}");
    assert_eq!(report.failed, 4, "{report:?}");
}

fn a_deadline_kills_the_process_running_the_task() {
    static RUN: AtomicU64 = AtomicU64::new(0);
    let redis = RedisServer::start();
    // One process: the next task can run only if the hung one was killed.
    let worker = worker(&redis, WorkerOptions::new().processes(1));
    let pool = Pool::cluster(&redis.url()).unwrap();
    let pid_file = std::env::temp_dir().join(format!(
        "martelli-cluster-pool-{}-{}",
        std::process::id(),
        RUN.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_file(&pid_file);
    let hung = pool
        .with(TaskOptions::new().timeout(Duration::from_millis(800)))
        .submit_task(
            write_pid_then_hang,
            (pid_file.to_string_lossy().into_owned(),),
        )
        .unwrap();
    assert!(matches!(hung.wait(), Err(TaskError::TimedOut { .. })));
    let pid: u32 = std::fs::read_to_string(&pid_file)
        .expect("the task wrote its pid before its deadline")
        .parse()
        .unwrap();
    let _ = std::fs::remove_file(&pid_file);
    poll::until(
        "the hung process to be killed",
        Duration::from_secs(5),
        || is_dead(pid),
    );
    assert_eq!(pool.submit_task(square, (9,)).unwrap().wait().unwrap(), 81);
    drop(pool);
    let report = stop(worker);
    assert_eq!(
        report.failed, 1,
        "the timed_out result was stored: {report:?}"
    );
}

fn init_serves_as_a_worker_when_the_variable_is_set() {
    let redis = RedisServer::start();
    // This very binary: `main` calls `martelli::init()` first, which serves here.
    let mut child = Command::new(std::env::current_exe().unwrap())
        .env(martelli::cluster::WORKER_ENV, redis.url())
        .env("MARTELLI_CLUSTER_PROCESSES", "1")
        .spawn()
        .unwrap();
    let pool = Pool::cluster(&redis.url()).unwrap();
    assert_eq!(pool.submit_task(add, (20, 22)).unwrap().wait().unwrap(), 42);
    let pid = pool.submit_task(worker_pid, ()).unwrap().wait().unwrap();
    assert_ne!(pid, child.id(), "the task ran on the worker's process pool");
    assert_ne!(pid, std::process::id());
    match pool.submit_task(abort_with_note, ()).unwrap().wait() {
        Err(TaskError::WorkerDied(death)) => assert_eq!(death.signal, Some(libc::SIGABRT)),
        other => panic!("expected WorkerDied, got {other:?}"),
    }
    assert_eq!(pool.submit_task(square, (5,)).unwrap().wait().unwrap(), 25);
    // SAFETY: sending SIGTERM to our own child, which we have not reaped yet.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "a clean stop: {status}");

    // An invalid setting is refused with status 2 before any connection.
    let status = Command::new(std::env::current_exe().unwrap())
        .env(martelli::cluster::WORKER_ENV, redis.url())
        .env("MARTELLI_CLUSTER_CONCURRENCY", "many")
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(2));
}

fn the_documented_payload_is_a_messagepack_argument_array() {
    use martelli::Task;
    let redis = RedisServer::start();
    let worker = worker(&redis, WorkerOptions::new().concurrency(2));
    // A producer that knows only docs/protocol.md: raw bytes in, raw bytes out.
    let client = martelli::cluster::Client::connect(&redis.url()).unwrap();
    // fixarray of 2 (0x92), positive fixints 2 and 3.
    let sum = client
        .submit_raw(add::NAME, vec![0x92, 0x02, 0x03])
        .unwrap();
    assert_eq!(sum.wait().unwrap(), vec![0x05]);
    // A struct argument is a map keyed by field name; a tuple result is an array.
    let mut shape = vec![0x92, 0x82]; // [ {name: "square", sides: [2, 2, 2, 2]}, 10 ]
    shape.push(0xa4);
    shape.extend_from_slice(b"name");
    shape.push(0xa6);
    shape.extend_from_slice(b"square");
    shape.push(0xa5);
    shape.extend_from_slice(b"sides");
    shape.extend_from_slice(&[0x94, 2, 2, 2, 2, 10]);
    let out = client
        .submit_raw(perimeter::NAME, shape)
        .unwrap()
        .wait()
        .unwrap();
    assert_eq!(
        rmp_serde::from_slice::<(String, u32)>(&out).unwrap(),
        ("square".to_owned(), 80)
    );
    // One argument is still an array: a bare string is refused with a clear failure.
    let bare = rmp_serde::to_vec("12").unwrap();
    match client.submit_raw(parse_number::NAME, bare).unwrap().wait() {
        Err(TaskError::Failed(failure)) => {
            assert!(failure.message().contains("MessagePack"), "{failure}")
        }
        other => panic!("expected a decode failure, got {other:?}"),
    }
    drop(client);
    stop(worker);
}

fn cancel_of_a_running_thread_task_that_never_checks_lets_it_finish() {
    TOUCHED.lock().unwrap().clear();
    let redis = RedisServer::start();
    let worker = worker(&redis, WorkerOptions::new().concurrency(1));
    let pool = Pool::cluster(&redis.url()).unwrap();
    let running = pool
        .submit_task(touch_slowly, ("running".into(), 1_500))
        .unwrap();
    poll::until("the task to start", Duration::from_secs(5), || {
        touched() == ["running:started"] && running.is_running()
    });
    // Not removed from a queue (it runs), but the future resolves as cancelled; the task is not
    // interrupted (a thread is never killed), and it never looks at its token.
    assert!(!running.cancel());
    assert!(matches!(running.wait(), Err(TaskError::Cancelled)));
    assert_eq!(touched(), ["running:started"]);
    poll::until("the task to finish", Duration::from_secs(5), || {
        touched() == ["running:started", "running:finished"]
    });
    drop(pool);
    let report = stop(worker);
    // The worker saw the tombstone while the task ran: its outcome is `cancelled`, not its value.
    assert_eq!(report.cancelled, 1, "{report:?}");
    assert_eq!(report.succeeded, 0, "{report:?}");
}

fn cancel_of_a_running_thread_task_that_checks_its_token_ends_as_cancelled() {
    use martelli::Task;
    TOUCHED.lock().unwrap().clear();
    let redis = RedisServer::start();
    let mut raw = redis.raw();
    let worker = worker(&redis, WorkerOptions::new().concurrency(2));
    // A producer that knows only docs/protocol.md, so that the result's status can be read.
    let payload = rmp_serde::to_vec(&("spinner",)).unwrap();
    let envelope = martelli_testkit::envelope::Envelope::new(
        "running-1",
        work_until_cancelled::NAME,
        &payload,
    )
    .reply("tests:reply")
    .encode();
    let _: String = redis::cmd("XADD")
        .arg("martelli:q:default:normal")
        .arg("*")
        .arg("e")
        .arg(envelope)
        .query(&mut raw)
        .unwrap();
    poll::until("the task to start", Duration::from_secs(5), || {
        touched() == ["spinner:started"]
    });
    let cancelled_at = Instant::now();
    write_tombstone(&mut raw, "running-1");
    let popped: Option<(String, Vec<u8>)> = redis::cmd("BRPOP")
        .arg("tests:reply")
        .arg(10)
        .query(&mut raw)
        .unwrap();
    let (_, bytes) = popped.expect("a result within 10 s");
    assert!(
        cancelled_at.elapsed() < Duration::from_secs(5),
        "the task stopped {:?} after its tombstone",
        cancelled_at.elapsed()
    );
    let result: RawResult = rmp_serde::from_slice(&bytes).unwrap();
    assert_eq!(result.id, "running-1");
    assert_eq!(result.status, "cancelled", "{result:?}");
    let error = result.error.unwrap_or_default();
    assert!(error.contains("cancelled while it ran"), "{error}");
    // What the task still returned comes back in the payload.
    let steps: u64 = rmp_serde::from_slice(&result.payload.expect("the returned value")).unwrap();
    assert!(steps > 0);
    assert_eq!(touched(), ["spinner:started", "spinner:cancelled"]);
    // Acknowledged, and the tombstone deleted with it; never retried.
    poll::until(
        "the tombstone to be deleted",
        Duration::from_secs(5),
        || keys(&mut raw, "martelli:cancel:*").is_empty(),
    );
    assert_eq!(stream_len(&mut raw), 0);
    let report = stop(worker);
    assert_eq!(report.cancelled, 1, "{report:?}");
    assert_eq!(report.succeeded + report.failed, 0, "{report:?}");
}

fn cancel_of_a_running_task_on_a_process_kills_its_process() {
    static RUN: AtomicU64 = AtomicU64::new(0);
    let redis = RedisServer::start();
    let mut raw = redis.raw();
    // One process: the next task can run only if the cancelled one's process was replaced.
    let worker = worker(&redis, WorkerOptions::new().processes(1));
    let pool = Pool::cluster(&redis.url()).unwrap();
    let pid_file = std::env::temp_dir().join(format!(
        "martelli-cluster-cancel-{}-{}",
        std::process::id(),
        RUN.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_file(&pid_file);
    let hung = pool
        .submit_task(
            write_pid_then_hang,
            (pid_file.to_string_lossy().into_owned(),),
        )
        .unwrap();
    let mut pid = None;
    poll::until("the task to write its pid", Duration::from_secs(10), || {
        pid = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|p| p.trim().parse::<u32>().ok());
        pid.is_some()
    });
    let _ = std::fs::remove_file(&pid_file);
    let pid = pid.unwrap();
    assert_ne!(pid, std::process::id(), "the task runs in a worker process");
    assert!(!is_dead(pid));
    poll::until(
        "the future to read as running",
        Duration::from_secs(5),
        || hung.is_running(),
    );
    assert!(!hung.cancel(), "a running task is not removed from a queue");
    assert!(matches!(hung.wait(), Err(TaskError::Cancelled)));
    poll::until(
        "the cancelled task's process to be killed",
        Duration::from_secs(5),
        || is_dead(pid),
    );
    // The worker goes on, on a new process.
    assert_eq!(pool.submit_task(square, (9,)).unwrap().wait().unwrap(), 81);
    poll::until(
        "the tombstone to be deleted",
        Duration::from_secs(5),
        || keys(&mut raw, "martelli:cancel:*").is_empty(),
    );
    assert_eq!(stream_len(&mut raw), 0, "acknowledged, never retried");
    drop(pool);
    let report = stop(worker);
    assert_eq!(report.cancelled, 1, "{report:?}");
    assert_eq!(report.failed, 0, "{report:?}");
    assert_eq!(report.succeeded, 1, "{report:?}");
}

fn watching_running_tasks_reads_no_tombstone_without_cancels() {
    let redis = RedisServer::start();
    let mut raw = redis.raw();
    let worker = worker(&redis, WorkerOptions::new().concurrency(2));
    let pool = Pool::cluster(&redis.url()).unwrap();
    // Both slots busy until the test opens the gate, however slowly the measurement goes: only
    // maintenance scripts run meanwhile.
    let gate = gate_file("watching");
    let busy: Vec<_> = (0..2)
        .map(|n| pool.submit_task(wait_for_gate, (gate.clone(), n)).unwrap())
        .collect();
    poll::until("both tasks to run", Duration::from_secs(30), || {
        busy.iter().all(martelli::Future::is_running)
    });
    // Every script the worker runs reads the `cancels` flag once (EXISTS); without cancels nothing
    // else is read, in the scripts or beside them. A window lasts until the worker ran 8 scripts
    // (about 400 ms on a quiet machine), however long that takes.
    let window = |raw: &mut redis::Connection| {
        let (scripts, exists) = scripts_and_exists(raw);
        let (scripts_then, exists_then) = poll::read_until(
            "the worker to run 8 scripts",
            Duration::from_secs(30),
            || scripts_and_exists(raw),
            |(now, _)| now - scripts >= 8,
        );
        (scripts_then - scripts, exists_then - exists)
    };
    let (scripts, exists) = window(&mut raw);
    assert_eq!(
        exists,
        scripts,
        "without cancels: one EXISTS per script ({})",
        commandstats(&mut raw)
    );
    // With the flag set (and no tombstone), the worker reads its two running tasks' tombstones too:
    // the measurement can tell.
    redis::cmd("SET")
        .arg("martelli:q:default:cancels")
        .arg(1)
        .exec(&mut raw)
        .unwrap();
    let (scripts, exists) = window(&mut raw);
    assert!(
        exists >= scripts + 2,
        "with cancels: {exists} EXISTS in {scripts} scripts"
    );
    assert!(
        busy.iter().all(martelli::Future::is_running),
        "both tasks ran through the measurement"
    );
    std::fs::write(&gate, "").expect("the gate opens");
    for (n, future) in (0..).zip(busy) {
        assert_eq!(future.wait().unwrap(), n, "no tombstone: no task stopped");
    }
    let _ = std::fs::remove_file(&gate);
    drop(pool);
    let report = stop(worker);
    assert_eq!(report.succeeded, 2, "{report:?}");
}

fn consume_task_serves_a_queue_through_the_cluster() {
    let redis = RedisServer::start();
    let worker = worker(&redis, WorkerOptions::new().concurrency(4));
    let pool = Pool::cluster(&redis.url()).unwrap();
    let input = martelli::JoinableQueue::bounded(8);
    let output = martelli::JoinableQueue::new();
    let errors = martelli::JoinableQueue::new();
    let consumers = pool
        .consume_task(parse_number, &input)
        .consumers(4)
        .output(&output)
        .errors(&errors)
        .start()
        .expect("consumers start on a cluster pool");
    for n in 0..200u64 {
        input.put((n.to_string(),)).unwrap();
    }
    input.put(("not a number".to_owned(),)).unwrap();
    input
        .join_timeout(Duration::from_secs(60))
        .expect("every item done");
    let mut values = Vec::new();
    while let Ok(v) = output.try_get() {
        values.push(v);
        output.task_done().unwrap();
    }
    values.sort_unstable();
    assert_eq!(values, (0..200u64).collect::<Vec<_>>());
    let failure = errors.try_get().expect("the bad item failed");
    assert!(failure.error().is_failed(), "{failure}");
    assert!(errors.try_get().is_err(), "only one failure");
    // A closure cannot reach a cluster worker.
    let closures = martelli::JoinableQueue::<u64>::new();
    assert!(matches!(
        pool.consume(|n| n, &closures).start(),
        Err(martelli::ConsumeError::NotATask { backend: "cluster" })
    ));
    input.close();
    consumers.wait();
    drop(pool);
    stop(worker);
}

/// Stops the broker as `redis-cli shutdown nosave` does and starts it again on the same port,
/// once `label` has started on the worker: every task queued behind it vanishes.
fn restart_once_started(redis: &mut RedisServer, label: &str) {
    let started = format!("{label}:started");
    poll::until("the first task to start", Duration::from_secs(30), || {
        touched().contains(&started)
    });
    let mut raw = redis.raw();
    let _ = redis::cmd("SHUTDOWN").arg("NOSAVE").exec(&mut raw);
    redis.restart();
}

fn futures_survive_a_broker_restart_without_persistence() {
    TOUCHED.lock().unwrap().clear();
    let mut redis = RedisServer::start();
    let worker = worker(&redis, WorkerOptions::new().concurrency(1));
    let pool = Pool::cluster(&redis.url()).unwrap();
    let futures: Vec<_> = ["a", "b", "c"]
        .map(|label| pool.submit_task(touch_slowly, (label.into(), 500)).unwrap())
        .into();
    restart_once_started(&mut redis, "a");
    // The running task finishes on its worker; the queued ones are queued again.
    for (future, label) in futures.into_iter().zip(["a", "b", "c"]) {
        match future.wait_timeout(Duration::from_secs(30)) {
            Ok(result) => assert_eq!(result.unwrap(), label),
            Err(_) => panic!("task {label} did not complete within 30 s of the restart"),
        }
    }
    let mut runs = touched();
    runs.retain(|t| t.ends_with(":started"));
    runs.sort();
    assert_eq!(
        runs,
        ["a:started", "b:started", "c:started"],
        "each ran once"
    );
    drop(pool);

    // With OnLost::Fail, the queued task's future fails as lost instead.
    TOUCHED.lock().unwrap().clear();
    let pool = Pool::builder()
        .cluster(redis.url())
        .cluster_on_lost(OnLost::Fail)
        .build()
        .unwrap();
    let running = pool.submit_task(touch_slowly, ("d".into(), 500)).unwrap();
    let queued = pool.submit_task(touch_slowly, ("e".into(), 500)).unwrap();
    restart_once_started(&mut redis, "d");
    match running.wait_timeout(Duration::from_secs(30)) {
        Ok(Ok(label)) => assert_eq!(label, "d"),
        Ok(Err(error)) => panic!("the running task failed: {error}"),
        Err(_) => panic!("the running task did not complete within 30 s of the restart"),
    }
    match queued.wait_timeout(Duration::from_secs(30)) {
        Ok(Err(TaskError::Lost { reason, .. })) => {
            assert!(reason.contains("vanished from the broker"), "{reason}")
        }
        other => panic!("expected Lost, got {other:?}"),
    }
    drop(pool);
    stop(worker);
}
