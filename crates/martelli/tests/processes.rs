//! The process backend with real processes and real signals.
//!
//! This test binary is its own worker program: `main` calls `martelli::init()` first, so the pools
//! built below start copies of this binary that serve the tasks defined here. It has its own small
//! runner (`harness = false`): `cargo test --test processes [filter]`.

#[path = "support/runner.rs"]
mod runner;
#[path = "support/tasks.rs"]
mod tasks;
use tasks::{abort_with_note, panics, parse_number, record, segfault, sleep_ms, worker_pid};

use martelli::process::group_alive;
use martelli::{Error, Pool, Status, TaskError, TaskOptions, WaitMode, as_completed, wait};
use martelli_testkit::proc::{dies_within, is_dead};
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

// ---- the tasks -------------------------------------------------------------------------------

#[martelli::task]
fn add(a: u64, b: u64) -> u64 {
    a + b
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Image {
    name: String,
    pixels: Vec<u32>,
}

#[martelli::task(name = "tests::brighten")]
fn brighten(image: Image, by: u32) -> Image {
    Image {
        name: format!("{}+{by}", image.name),
        pixels: image.pixels.iter().map(|p| p + by).collect(),
    }
}

#[martelli::task]
fn echo_bytes(data: ByteBuf) -> ByteBuf {
    data
}

#[martelli::task]
fn make_bytes(len: usize) -> ByteBuf {
    ByteBuf::from(vec![7u8; len])
}

#[martelli::task]
fn double_unless_500(x: u64) -> u64 {
    assert!(x != 500, "refusing {x}");
    x * 2
}

#[martelli::task]
fn spin_forever() {
    let mut x = 0u64;
    loop {
        x = std::hint::black_box(x.wrapping_add(1));
    }
}

/// Allocates `mib` MiB, touches every page, and keeps it for the life of the worker.
#[martelli::task]
fn hold_mib(mib: usize) -> usize {
    static HELD: std::sync::Mutex<Vec<Vec<u8>>> = std::sync::Mutex::new(Vec::new());
    let block = vec![1u8; mib << 20];
    let len = block.len();
    HELD.lock().unwrap_or_else(|e| e.into_inner()).push(block);
    len
}

/// Raises `signum` in its worker; returns it if the worker survives.
#[martelli::task]
fn raise_signal(signum: i32) -> i32 {
    // SAFETY: raise(3) only sends a signal to the calling thread.
    unsafe { libc::raise(signum) };
    signum
}

/// Reads a page mapped without access rights: a real invalid access (a fault, not a sent signal).
#[martelli::task]
fn fault_on_a_protected_page() -> u8 {
    // SAFETY: a fresh anonymous mapping of one page; it is only read (and the read faults).
    unsafe {
        let page = libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        assert_ne!(page, libc::MAP_FAILED, "mmap");
        std::ptr::read_volatile(page.cast::<u8>())
    }
}

/// Recurses until its worker's stack overflows.
#[martelli::task]
fn overflow_the_stack(depth: u64) -> u64 {
    fn down(depth: u64) -> u64 {
        if std::hint::black_box(depth) == u64::MAX {
            return 0;
        }
        let frame = std::hint::black_box([depth as u8; 4096]);
        down(depth + 1) + u64::from(frame[0])
    }
    down(depth)
}

#[martelli::task]
fn exit_unless_one(code: i32) -> i32 {
    if code != 1 {
        std::process::exit(code);
    }
    code
}

#[martelli::task]
fn exit_with(code: i32) {
    eprintln!("exiting with code {code} on purpose");
    std::process::exit(code);
}

/// Starts `sleep 600` (it stays in the worker's process group), writes its pid to `pid_file`, and
/// hangs.
#[martelli::task]
fn grandchild_then_hang(pid_file: String) -> u32 {
    let mut child = Command::new("sleep")
        .arg("600")
        .spawn()
        .expect("sleep starts");
    let pid = child.id();
    std::fs::write(&pid_file, pid.to_string()).expect("pid file");
    std::thread::sleep(Duration::from_secs(600));
    let _ = child.wait();
    pid
}

/// Writes `bytes` straight into the worker's channel to the pool, then answers normally: the pool
/// must take the garbage as a broken worker.
#[martelli::task]
fn write_to_channel(bytes: Vec<u8>) -> u32 {
    // SAFETY: writing to descriptor 3, the worker's channel, which this process holds open.
    unsafe { libc::write(3, bytes.as_ptr().cast(), bytes.len()) };
    std::thread::sleep(Duration::from_millis(200));
    1
}

/// Records `n` in the file at `path` (as `record`), waits until the file `go` exists (for at most
/// 20 s), then exits with `code` unless it is 0, and returns `n`: a test decides when it answers.
#[martelli::task]
fn record_wait_exit(path: String, n: u64, go: String, code: i32) -> u64 {
    record::call(path, n);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !std::path::Path::new(&go).exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    if code != 0 {
        std::process::exit(code);
    }
    n
}

/// Sleeps like `sleep_ms`, under a name no warm-up runs: a task the pool has not seen yet.
#[martelli::task]
fn sleep_unseen(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

/// Says `text` on stdout, on stderr, and through a child program (`echo`), which inherits them.
#[martelli::task]
fn say(text: String) -> usize {
    println!("out: {text}");
    eprintln!("err: {text}");
    let status = Command::new("echo")
        .arg(format!("child: {text}"))
        .status()
        .expect("echo runs");
    assert!(status.success());
    print!("no newline at the end");
    text.len()
}

/// Writes `n` bytes of `x` to stdout.
#[martelli::task]
fn shout(n: usize) {
    let mut out = std::io::stdout().lock();
    out.write_all(&vec![b'x'; n]).expect("stdout");
}

/// Says something on both streams, then aborts.
#[martelli::task]
fn say_then_abort(text: String) {
    println!("out before the crash: {text}");
    eprintln!("err before the crash: {text}");
    std::process::abort();
}

/// Says something, then hangs.
#[martelli::task]
fn say_then_hang(text: String) {
    println!("out before the hang: {text}");
    eprintln!("err before the hang: {text}");
    std::thread::sleep(Duration::from_secs(600));
}

// ---- the runner ------------------------------------------------------------------------------

fn main() {
    // A worker started with `--forget-init` plays a program whose main forgot martelli::init().
    if std::env::args().any(|a| a == "--forget-init") {
        forgot_init_main();
    }
    martelli::init();
    if std::env::args().any(|a| a == "--parent-of-workers") {
        parent_of_workers_main();
    }
    // Orphans (a killed worker's children) become ours, so tests can reap and inspect them.
    martelli::process::become_subreaper().expect("subreaper");

    let tests: &[(&str, fn())] = &[
        ("values_round_trip", values_round_trip),
        ("megabyte_payloads_round_trip", megabyte_payloads_round_trip),
        ("returned_errors_are_failed", returned_errors_are_failed),
        (
            "panics_are_outcomes_and_the_worker_survives",
            panics_are_outcomes_and_the_worker_survives,
        ),
        (
            "abort_is_worker_died_with_signal_and_stderr",
            abort_is_worker_died_with_signal_and_stderr,
        ),
        (
            "segfault_is_worker_died_with_sigsegv",
            segfault_is_worker_died_with_sigsegv,
        ),
        (
            "crash_signals_kill_the_worker_even_when_raised",
            crash_signals_kill_the_worker_even_when_raised,
        ),
        (
            "exit_code_is_worker_died_with_the_code",
            exit_code_is_worker_died_with_the_code,
        ),
        (
            "timeout_kills_the_worker_group_with_its_grandchild",
            timeout_kills_the_worker_group_with_its_grandchild,
        ),
        (
            "cancel_of_a_running_task_kills_its_worker",
            cancel_of_a_running_task_kills_its_worker,
        ),
        (
            "a_worker_killed_while_idle_costs_no_task",
            a_worker_killed_while_idle_costs_no_task,
        ),
        (
            "cancel_of_a_queued_task_never_runs_it",
            cancel_of_a_queued_task_never_runs_it,
        ),
        (
            "unknown_task_name_is_a_clear_outcome",
            unknown_task_name_is_a_clear_outcome,
        ),
        (
            "oversized_arguments_and_results_fail_the_task_only",
            oversized_arguments_and_results_fail_the_task_only,
        ),
        (
            "garbage_from_a_worker_replaces_it",
            garbage_from_a_worker_replaces_it,
        ),
        (
            "workers_are_recycled_after_max_tasks",
            workers_are_recycled_after_max_tasks,
        ),
        ("many_threads_submit_at_once", many_threads_submit_at_once),
        (
            "workers_are_recycled_past_a_memory_limit",
            workers_are_recycled_past_a_memory_limit,
        ),
        (
            "map_task_runs_chunks_in_order",
            map_task_runs_chunks_in_order,
        ),
        (
            "a_cpu_rlimit_kills_a_spinning_worker",
            a_cpu_rlimit_kills_a_spinning_worker,
        ),
        (
            "workers_run_at_the_nice_level_asked",
            workers_run_at_the_nice_level_asked,
        ),
        (
            "map_task_fails_only_the_chunk_of_a_dead_worker",
            map_task_fails_only_the_chunk_of_a_dead_worker,
        ),
        (
            "as_completed_and_wait_work_on_process_futures",
            as_completed_and_wait_work_on_process_futures,
        ),
        ("spec_and_closures", spec_and_closures),
        (
            "a_worker_without_init_refuses_to_spawn",
            a_worker_without_init_refuses_to_spawn,
        ),
        (
            "a_worker_without_init_fails_the_handshake",
            a_worker_without_init_fails_the_handshake,
        ),
        (
            "a_silent_worker_times_out_the_handshake",
            a_silent_worker_times_out_the_handshake,
        ),
        (
            "shutdown_cancel_pending_stops_everything",
            shutdown_cancel_pending_stops_everything,
        ),
        (
            "the_guardian_goes_with_the_last_worker",
            the_guardian_goes_with_the_last_worker,
        ),
        (
            "workers_die_with_a_killed_parent",
            workers_die_with_a_killed_parent,
        ),
        (
            "pipelined_timeout_in_the_middle_runs_the_rest_once",
            pipelined_timeout_in_the_middle_runs_the_rest_once,
        ),
        (
            "pipelined_crash_in_the_middle_runs_the_rest_once",
            pipelined_crash_in_the_middle_runs_the_rest_once,
        ),
        (
            "cancel_of_a_pipelined_task_skips_it",
            cancel_of_a_pipelined_task_skips_it,
        ),
        (
            "a_zero_pipeline_window_keeps_one_task_in_flight",
            a_zero_pipeline_window_keeps_one_task_in_flight,
        ),
        (
            "a_pipelined_timeout_counts_from_the_task_start",
            a_pipelined_timeout_counts_from_the_task_start,
        ),
        (
            "cancel_pending_shutdown_with_pipelined_tasks",
            cancel_pending_shutdown_with_pipelined_tasks,
        ),
        (
            "recycling_counts_exactly_with_pipelining",
            recycling_counts_exactly_with_pipelining,
        ),
        (
            "an_answer_unread_when_the_worker_dies_is_not_blamed",
            an_answer_unread_when_the_worker_dies_is_not_blamed,
        ),
        (
            "an_answer_unread_at_cancel_pending_keeps_its_value",
            an_answer_unread_at_cancel_pending_keeps_its_value,
        ),
        (
            "a_long_task_does_not_hold_work_an_idle_worker_can_run",
            a_long_task_does_not_hold_work_an_idle_worker_can_run,
        ),
        (
            "unseen_tasks_are_not_pipelined_behind_each_other",
            unseen_tasks_are_not_pipelined_behind_each_other,
        ),
        (
            "a_bounded_queue_with_pipelining",
            a_bounded_queue_with_pipelining,
        ),
        (
            "stress_many_threads_every_task_once",
            stress_many_threads_every_task_once,
        ),
        (
            "captured_output_of_print_eprint_and_a_child",
            captured_output_of_print_eprint_and_a_child,
        ),
        (
            "captured_output_is_cut_at_the_limit",
            captured_output_is_cut_at_the_limit,
        ),
        (
            "captured_output_survives_a_crash_and_a_timeout",
            captured_output_survives_a_crash_and_a_timeout,
        ),
        ("capture_needs_a_process_pool", capture_needs_a_process_pool),
    ];
    runner::run(tests);
}

fn pool(n: usize) -> Pool {
    Pool::processes(n).expect("a process pool starts")
}

fn expect_death(result: martelli::TaskResult<impl std::fmt::Debug>) -> martelli::WorkerDeath {
    match result {
        Err(TaskError::WorkerDied(death)) => death,
        other => panic!("expected WorkerDied, got {other:?}"),
    }
}

// ---- the tests -------------------------------------------------------------------------------

fn values_round_trip() {
    let pool = pool(2);
    assert_eq!(pool.submit_task(add, (40, 2)).unwrap().wait().unwrap(), 42);
    let image = Image {
        name: "cat".into(),
        pixels: vec![1, 2, 3],
    };
    let out = pool
        .submit_task(brighten, (image, 10))
        .unwrap()
        .wait()
        .unwrap();
    assert_eq!(
        out,
        Image {
            name: "cat+10".into(),
            pixels: vec![11, 12, 13]
        }
    );
    // The worker is another process.
    let pid = pool.submit_task(worker_pid, ()).unwrap().wait().unwrap();
    assert_ne!(pid, std::process::id());
}

fn megabyte_payloads_round_trip() {
    let pool = pool(1);
    for len in [1 << 20, 64 << 20] {
        let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let back = pool
            .submit_task(echo_bytes, (ByteBuf::from(data.clone()),))
            .unwrap()
            .wait()
            .unwrap();
        assert_eq!(back.len(), len);
        assert!(
            back.as_slice() == data.as_slice(),
            "{len} bytes came back changed"
        );
    }
}

fn returned_errors_are_failed() {
    let pool = pool(1);
    assert_eq!(
        pool.submit_task(parse_number, (" 17 ".into(),))
            .unwrap()
            .wait()
            .unwrap(),
        17
    );
    match pool
        .submit_task(parse_number, ("seventeen".into(),))
        .unwrap()
        .wait()
    {
        Err(TaskError::Failed(f)) => assert_eq!(f.message(), "invalid digit found in string"),
        other => panic!("expected Failed, got {other:?}"),
    }
}

fn panics_are_outcomes_and_the_worker_survives() {
    let pool = pool(1);
    let before = pool.submit_task(worker_pid, ()).unwrap().wait().unwrap();
    match pool.submit_task(panics, ("boom 7".into(),)).unwrap().wait() {
        Err(TaskError::Panicked { message }) => assert_eq!(message, "boom 7"),
        other => panic!("expected Panicked, got {other:?}"),
    }
    let after = pool.submit_task(worker_pid, ()).unwrap().wait().unwrap();
    assert_eq!(before, after, "a panic must not cost the worker");
}

fn abort_is_worker_died_with_signal_and_stderr() {
    let pool = pool(2);
    let death = expect_death(pool.submit_task(abort_with_note, ()).unwrap().wait());
    assert_eq!(death.signal, Some(libc::SIGABRT), "{death}");
    assert_eq!(death.exit_code, None);
    assert!(
        death.stderr_tail.contains("about to abort"),
        "stderr tail: {:?}",
        death.stderr_tail
    );
    // The pool goes on, at full strength.
    let futures: Vec<_> = (0..10)
        .map(|i| pool.submit_task(add, (i, i)).unwrap())
        .collect();
    let sum: u64 = futures.into_iter().map(|f| f.wait().unwrap()).sum();
    assert_eq!(sum, 90);
}

fn segfault_is_worker_died_with_sigsegv() {
    let pool = pool(1);
    let death = expect_death(pool.submit_task(segfault, ()).unwrap().wait());
    assert_eq!(death.signal, Some(libc::SIGSEGV), "{death}");
    assert_eq!(pool.submit_task(add, (1, 1)).unwrap().wait().unwrap(), 2);
}

fn crash_signals_kill_the_worker_even_when_raised() {
    let pool = pool(1);
    // Raised, not a fault: Rust's runtime handles SIGSEGV and SIGBUS (for stack overflows) and
    // would return from them; a worker gives them their default action.
    for signum in [libc::SIGSEGV, libc::SIGBUS, libc::SIGILL, libc::SIGFPE] {
        let death = expect_death(pool.submit_task(raise_signal, (signum,)).unwrap().wait());
        assert_eq!(death.signal, Some(signum), "{death}");
    }
    let death = expect_death(
        pool.submit_task(fault_on_a_protected_page, ())
            .unwrap()
            .wait(),
    );
    assert_eq!(death.signal, Some(libc::SIGSEGV), "{death}");
    // A stack overflow is still reported by the runtime (its handler sees the fault first).
    let death = expect_death(pool.submit_task(overflow_the_stack, (0,)).unwrap().wait());
    assert_eq!(death.signal, Some(libc::SIGABRT), "{death}");
    assert!(
        death.stderr_tail.contains("has overflowed its stack"),
        "{death}"
    );
    assert_eq!(pool.submit_task(add, (1, 2)).unwrap().wait().unwrap(), 3);
}

fn exit_code_is_worker_died_with_the_code() {
    let pool = pool(1);
    let death = expect_death(pool.submit_task(exit_with, (3,)).unwrap().wait());
    assert_eq!((death.exit_code, death.signal), (Some(3), None), "{death}");
    assert!(death.stderr_tail.contains("exiting with code 3"), "{death}");
    assert!(death.to_string().contains("exited with code 3"), "{death}");
    assert_eq!(pool.submit_task(add, (2, 2)).unwrap().wait().unwrap(), 4);
}

fn timeout_kills_the_worker_group_with_its_grandchild() {
    let pool = pool(1);
    let worker = pool.submit_task(worker_pid, ()).unwrap().wait().unwrap();
    let pid_file = std::env::temp_dir().join(format!("martelli-grandchild-{}", std::process::id()));
    let _ = std::fs::remove_file(&pid_file);
    let fut = pool
        .with(TaskOptions::new().timeout(Duration::from_millis(500)))
        .submit_task(grandchild_then_hang, (pid_file.display().to_string(),))
        .unwrap();
    match fut.wait() {
        Err(TaskError::TimedOut { after }) => assert_eq!(after, Duration::from_millis(500)),
        other => panic!("expected TimedOut, got {other:?}"),
    }
    // The worker led its group: the whole group got SIGKILL, grandchild included. The group is
    // gone once the grandchild (an orphan reparented to this subreaper) is reaped.
    assert!(
        dies_within(worker, Duration::from_secs(5)),
        "the worker survived"
    );
    let grandchild: u32 = std::fs::read_to_string(&pid_file).unwrap().parse().unwrap();
    let _ = std::fs::remove_file(&pid_file);
    assert!(
        dies_within(grandchild, Duration::from_secs(5)),
        "the grandchild survived"
    );
    reap(grandchild);
    assert!(
        !group_alive(worker),
        "the worker's process group survived the timeout"
    );
    // A replacement serves the next task.
    let next = pool.submit_task(worker_pid, ()).unwrap().wait().unwrap();
    assert_ne!(next, worker);
}

/// Reaps `pid`, an orphan this subreaper adopted (a killed worker's child), once it has died.
fn reap(pid: u32) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut status = 0;
        // SAFETY: waitpid with WNOHANG on one pid; it writes only `status`.
        let got = unsafe { libc::waitpid(pid as i32, &mut status, libc::WNOHANG) };
        if got != 0 || Instant::now() > deadline {
            return; // reaped, or not (or no longer) our child
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn wait_until_running<T>(fut: &martelli::Future<T>) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while fut.status() != Status::Running {
        assert!(Instant::now() < deadline, "the task never started");
        std::thread::yield_now();
    }
}

fn cancel_of_a_running_task_kills_its_worker() {
    let pool = pool(1);
    let worker = pool.submit_task(worker_pid, ()).unwrap().wait().unwrap();
    let fut = pool.submit_task(sleep_ms, (60_000,)).unwrap();
    wait_until_running(&fut);
    let started = Instant::now();
    assert!(!fut.cancel(), "a running task is not removed from a queue");
    assert!(matches!(fut.wait(), Err(TaskError::Cancelled)));
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "cancel did not stop the task"
    );
    assert!(dies_within(worker, Duration::from_secs(5)));
    let next = pool.submit_task(worker_pid, ()).unwrap().wait().unwrap();
    assert_ne!(next, worker, "a replacement worker runs the next task");
}

fn a_worker_killed_while_idle_costs_no_task() {
    // Nothing watches an idle worker: its death is found when the next task is written to it. That
    // task never reached it, so it runs on the replacement instead of failing.
    let pool = pool(1);
    let worker = pool.submit_task(worker_pid, ()).unwrap().wait().unwrap();
    // SAFETY: kill(2) on the pool's worker, a child of this process that is not reaped yet.
    unsafe { libc::kill(worker as i32, libc::SIGKILL) };
    martelli_testkit::proc::wait_dead(worker, Duration::from_secs(20), "the killed worker");
    match pool.submit_task(worker_pid, ()).unwrap().wait() {
        Ok(next) => assert_ne!(next, worker, "a replacement ran it"),
        Err(e) => panic!("a task blamed for a worker that died before it was sent: {e}"),
    }
    assert_eq!(pool.submit_task(add, (2, 3)).unwrap().wait().unwrap(), 5);
}

fn cancel_of_a_queued_task_never_runs_it() {
    let pool = pool(1);
    let first = pool.submit_task(sleep_ms, (300,)).unwrap();
    let second = pool.submit_task(exit_with, (9,)).unwrap();
    assert!(second.cancel(), "a queued task is removed");
    assert!(matches!(second.wait(), Err(TaskError::Cancelled)));
    assert_eq!(first.wait().unwrap(), 300);
    let worker_a = pool.submit_task(worker_pid, ()).unwrap().wait().unwrap();
    let worker_b = pool.submit_task(worker_pid, ()).unwrap().wait().unwrap();
    assert_eq!(worker_a, worker_b, "the cancelled exit(9) never ran");
}

fn unknown_task_name_is_a_clear_outcome() {
    let pool = pool(1);
    let fut = pool
        .submit_named::<_, u64>("no::such::task", (1u64,))
        .unwrap();
    match fut.wait() {
        Err(e @ TaskError::UnknownTask { .. }) => {
            assert!(e.to_string().contains("\"no::such::task\""), "{e}");
        }
        other => panic!("expected UnknownTask, got {other:?}"),
    }
    // By its name, a known task runs.
    let name = <add as martelli::Task>::NAME;
    assert_eq!(
        pool.submit_named::<_, u64>(name, (5u64, 6u64))
            .unwrap()
            .wait()
            .unwrap(),
        11
    );
}

fn oversized_arguments_and_results_fail_the_task_only() {
    let pool = Pool::builder()
        .processes(1)
        .max_frame_size(4096)
        .build()
        .unwrap();
    let worker = pool.submit_task(worker_pid, ()).unwrap().wait().unwrap();
    match pool
        .submit_task(echo_bytes, (ByteBuf::from(vec![1u8; 10_000]),))
        .unwrap()
        .wait()
    {
        Err(e @ TaskError::Codec(_)) => assert!(e.to_string().contains("max_frame_size"), "{e}"),
        other => panic!("expected Codec for big arguments, got {other:?}"),
    }
    match pool.submit_task(make_bytes, (10_000,)).unwrap().wait() {
        Err(e @ TaskError::Codec(_)) => assert!(e.to_string().contains("max_frame_size"), "{e}"),
        other => panic!("expected Codec for a big result, got {other:?}"),
    }
    assert_eq!(
        pool.submit_task(make_bytes, (100,))
            .unwrap()
            .wait()
            .unwrap()
            .len(),
        100
    );
    let after = pool.submit_task(worker_pid, ()).unwrap().wait().unwrap();
    assert_eq!(worker, after, "a refused frame is not the worker's fault");
}

fn garbage_from_a_worker_replaces_it() {
    let pool = pool(1);
    // An absurd length prefix: refused without allocating, the worker replaced.
    let huge = vec![0xff, 0xff, 0xff, 0x7f];
    // A well-formed length with another protocol version.
    let wrong_version = vec![3, 0, 0, 0, 99, 0, 0];
    for garbage in [huge, wrong_version] {
        let worker = pool.submit_task(worker_pid, ()).unwrap().wait().unwrap();
        match pool
            .submit_task(write_to_channel, (garbage.clone(),))
            .unwrap()
            .wait()
        {
            Err(TaskError::Codec(message)) => assert!(message.contains("replaced"), "{message}"),
            other => panic!("expected Codec for {garbage:?}, got {other:?}"),
        }
        assert!(
            dies_within(worker, Duration::from_secs(5)),
            "the garbling worker lives"
        );
        assert_eq!(pool.submit_task(add, (1, 2)).unwrap().wait().unwrap(), 3);
    }
}

fn workers_are_recycled_after_max_tasks() {
    let pool = Pool::builder()
        .processes(1)
        .max_tasks_per_worker(2)
        .build()
        .unwrap();
    let pids: Vec<u32> = (0..6)
        .map(|_| pool.submit_task(worker_pid, ()).unwrap().wait().unwrap())
        .collect();
    assert_eq!(pids[0], pids[1]);
    assert_eq!(pids[2], pids[3]);
    assert_eq!(pids[4], pids[5]);
    assert!(
        pids[0] != pids[2] && pids[2] != pids[4] && pids[0] != pids[4],
        "{pids:?}"
    );
}

fn workers_are_recycled_past_a_memory_limit() {
    let pool = Pool::builder()
        .processes(1)
        .max_worker_memory(48 << 20)
        .build()
        .unwrap();
    let first = pool.submit_task(worker_pid, ()).unwrap().wait().unwrap();
    // A small task leaves the worker under the limit: it stays.
    assert_eq!(
        pool.submit_task(hold_mib, (1,)).unwrap().wait().unwrap(),
        1 << 20
    );
    assert_eq!(
        pool.submit_task(worker_pid, ()).unwrap().wait().unwrap(),
        first
    );
    // A task that leaves 64 MiB resident finishes normally, then its worker is replaced.
    assert_eq!(
        pool.submit_task(hold_mib, (64,)).unwrap().wait().unwrap(),
        64 << 20
    );
    assert!(
        dies_within(first, Duration::from_secs(5)),
        "the big worker lives on"
    );
    let second = pool.submit_task(worker_pid, ()).unwrap().wait().unwrap();
    assert_ne!(second, first);
}

fn many_threads_submit_at_once() {
    let pool = pool(2);
    let barrier = std::sync::Barrier::new(4);
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let (pool, barrier) = (&pool, &barrier);
            s.spawn(move || {
                barrier.wait();
                let futures: Vec<_> = (0..250u64)
                    .map(|i| pool.submit_task(add, (t * 1000, i)).unwrap())
                    .collect();
                for (i, f) in futures.into_iter().enumerate() {
                    assert_eq!(f.wait().unwrap(), t * 1000 + i as u64);
                }
            });
        }
    });
}

fn map_task_runs_chunks_in_order() {
    let pool = pool(2);
    let results: Vec<_> = pool
        .map_task(double_unless_500, (0..20_000u64).map(|x| (x,)))
        .collect();
    assert_eq!(results.len(), 20_000);
    for (x, r) in results.into_iter().enumerate() {
        match (x, r) {
            (500, Err(TaskError::Panicked { message })) => assert_eq!(message, "refusing 500"),
            (x, Ok(v)) => assert_eq!(v, 2 * x as u64),
            (x, other) => panic!("input {x}: {other:?}"),
        }
    }
    // The same map on threads gives the same results: one task, every backend.
    let threads = Pool::threads(2).unwrap();
    let on_threads: Vec<_> = threads
        .map_task(double_unless_500, (495..505u64).map(|x| (x,)))
        .map(|r| r.ok())
        .collect();
    let on_processes: Vec<_> = pool
        .map_task(double_unless_500, (495..505u64).map(|x| (x,)))
        .chunk(3)
        .map(|r| r.ok())
        .collect();
    assert_eq!(on_threads, on_processes);
}

fn a_cpu_rlimit_kills_a_spinning_worker() {
    let pool = Pool::builder()
        .processes(1)
        .worker_rlimit(martelli::process::Resource::Cpu, Some(1), Some(2))
        .build()
        .unwrap();
    let death = expect_death(pool.submit_task(spin_forever, ()).unwrap().wait());
    assert_eq!(death.signal, Some(libc::SIGXCPU), "{death}");
    assert_eq!(pool.submit_task(add, (1, 2)).unwrap().wait().unwrap(), 3);
}

#[martelli::task]
fn my_nice() -> i32 {
    // SAFETY: getpriority only reads this process's nice value.
    unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) }
}

fn workers_run_at_the_nice_level_asked() {
    // SAFETY: as above, for the test process itself.
    let ours = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
    let pool = Pool::builder().processes(1).worker_nice(5).build().unwrap();
    let theirs = pool.submit_task(my_nice, ()).unwrap().wait().unwrap();
    assert_eq!(theirs, (ours + 5).min(19));
}

fn map_task_fails_only_the_chunk_of_a_dead_worker() {
    let pool = pool(1);
    // Chunks of 4: codes 0 and 3 exit the worker; their chunk-mates share the death.
    let codes = [1, 1, 1, 1, 1, 3, 1, 1, 1, 1, 1, 1];
    let results: Vec<_> = pool
        .map_task(exit_unless_one, codes.iter().map(|&c| (c,)))
        .chunk(4)
        .collect();
    for (i, r) in results.iter().enumerate() {
        let in_dead_chunk = (4..8).contains(&i);
        match r {
            Ok(v) => assert!(!in_dead_chunk && *v == 1, "input {i}: {r:?}"),
            Err(TaskError::WorkerDied(d)) => {
                assert!(in_dead_chunk, "input {i}: {d}");
                assert_eq!(d.exit_code, Some(3));
            }
            Err(e) => panic!("input {i}: {e}"),
        }
    }
}

fn as_completed_and_wait_work_on_process_futures() {
    let pool = pool(2);
    let futures: Vec<_> = [300u64, 10, 100]
        .into_iter()
        .map(|ms| pool.submit_task(sleep_ms, (ms,)).unwrap())
        .collect();
    let order: Vec<u64> = as_completed(futures).map(|f| f.wait().unwrap()).collect();
    assert_eq!(order.len(), 3);
    assert_eq!(*order.last().unwrap(), 300, "{order:?}");

    let futures = vec![
        pool.submit_task(sleep_ms, (5,)).unwrap(),
        pool.submit_task(sleep_ms, (5,)).unwrap(),
    ];
    let waited = wait(futures, WaitMode::All, None);
    assert_eq!(waited.done.len(), 2);
}

fn spec_and_closures() {
    let pool = Pool::from_spec("processes:2").unwrap();
    assert_eq!((pool.kind(), pool.workers()), ("processes", 2));
    assert!(matches!(pool.submit(|| 1), Err(Error::NotATask { .. })));
    let spawned = pool.scope(|s| s.submit(|| 1).map(|_| ()));
    assert!(
        matches!(spawned, Err(Error::NotATask { .. })),
        "{spawned:?}"
    );
    assert!(pool.try_submit(|| 1).unwrap_err().into_inner()() == 1);
    assert_eq!(pool.submit_task(add, (3, 4)).unwrap().wait().unwrap(), 7);
}

/// The `main` of a program that forgot `martelli::init()`: it tries to build a process pool.
fn forgot_init_main() -> ! {
    match Pool::processes(1) {
        Ok(_) => {
            println!("built a pool: the guard failed");
            std::process::exit(0)
        }
        Err(e) => {
            println!("refused: {e}");
            eprintln!("refused: {e}");
            std::process::exit(1)
        }
    }
}

fn a_worker_without_init_refuses_to_spawn() {
    // Started as a worker would be (the variable set), but its main skips init().
    let out = Command::new(std::env::current_exe().unwrap())
        .arg("--forget-init")
        .env("MARTELLI_WORKER", "3 4096")
        .stderr(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("refused"), "{text}");
    assert!(
        text.contains("call martelli::init() on the first line of main"),
        "{text}"
    );
}

fn a_worker_without_init_fails_the_handshake() {
    let err = Pool::builder()
        .processes(1)
        .worker_program(std::env::current_exe().unwrap())
        .worker_args(["--forget-init"])
        .build()
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, Error::Handshake { .. }), "{text}");
    assert!(text.contains("martelli::init()"), "{text}");
    // Its own attempt to build a pool was refused, and its stderr says so.
    assert!(text.contains("exited with code 1"), "{text}");
}

fn a_silent_worker_times_out_the_handshake() {
    let started = Instant::now();
    let err = Pool::builder()
        .processes(1)
        .worker_program("sleep")
        .worker_args(["30"])
        .handshake_timeout(Duration::from_millis(300))
        .build()
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("did not answer the handshake within 300ms"),
        "{text}"
    );
    assert!(text.contains("martelli::init()"), "{text}");
    assert!(text.contains("killed by signal 9"), "{text}");
    assert!(started.elapsed() < Duration::from_secs(20));
}

fn shutdown_cancel_pending_stops_everything() {
    let pool = pool(1);
    let running = pool.submit_task(sleep_ms, (60_000,)).unwrap();
    let queued = pool.submit_task(sleep_ms, (60_000,)).unwrap();
    wait_until_running(&running);
    let started = Instant::now();
    pool.shutdown(martelli::Shutdown::CancelPending);
    assert!(started.elapsed() < Duration::from_secs(30));
    assert!(matches!(running.wait(), Err(TaskError::Cancelled)));
    assert!(matches!(queued.wait(), Err(TaskError::Cancelled)));
    assert!(matches!(
        pool.submit_task(add, (1, 1)),
        Err(Error::ShutDown)
    ));
}

/// The live children of this process that lead a session of their own: a process pool's guardian
/// (it calls `setsid`); workers lead only a process group.
fn session_leading_children() -> std::collections::BTreeSet<u32> {
    let me = std::process::id();
    let mut out = std::collections::BTreeSet::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // After the command name (in parentheses): state, ppid, pgrp, session, …
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let number = |i: usize| fields.get(i).and_then(|f| f.parse::<u32>().ok());
        if !matches!(fields.first(), Some(&"Z" | &"X"))
            && number(1) == Some(me)
            && number(3) == Some(pid)
        {
            out.insert(pid);
        }
    }
    out
}

fn the_guardian_goes_with_the_last_worker() {
    for mode in [martelli::Shutdown::CancelPending, martelli::Shutdown::Wait] {
        let before = session_leading_children();
        let pool = pool(2);
        // CancelPending kills a worker in a task; Wait lets a short one finish.
        let ms = if mode == martelli::Shutdown::Wait {
            10
        } else {
            60_000
        };
        let running = pool.submit_task(sleep_ms, (ms,)).unwrap();
        wait_until_running(&running);
        let guardians: Vec<u32> = session_leading_children()
            .difference(&before)
            .copied()
            .collect();
        assert_eq!(guardians.len(), 1, "{mode:?}: one guardian: {guardians:?}");
        pool.shutdown(mode);
        assert!(
            is_dead(guardians[0]),
            "{mode:?}: the guardian (pid {}) outlived the pool's workers",
            guardians[0]
        );
        drop(pool);
    }
}

/// The `main` of a parent that starts two workers, prints their pids and waits to be killed.
fn parent_of_workers_main() -> ! {
    let pool = pool(2);
    let a = pool.submit_task(sleep_ms, (20,)).unwrap();
    let b = pool.submit_task(worker_pid, ()).unwrap();
    let c = pool.submit_task(worker_pid, ()).unwrap();
    let _ = a.wait();
    let mut pids = vec![b.wait().unwrap(), c.wait().unwrap()];
    pids.sort_unstable();
    pids.dedup();
    let mut more = 0;
    while pids.len() < 2 && more < 100 {
        pids.push(pool.submit_task(worker_pid, ()).unwrap().wait().unwrap());
        pids.sort_unstable();
        pids.dedup();
        more += 1;
    }
    // A task that starts a grandchild (in the worker's group) and hangs: the grandchild must die
    // with this parent too.
    let pid_file = std::env::temp_dir().join(format!("martelli-orphan-{}", std::process::id()));
    let _hanging = pool
        .submit_task(grandchild_then_hang, (pid_file.display().to_string(),))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let grandchild = loop {
        let pid = std::fs::read_to_string(&pid_file).ok();
        if let Some(pid) = pid.and_then(|s| s.parse::<u32>().ok()) {
            break pid;
        }
        assert!(Instant::now() < deadline, "the grandchild never started");
        std::thread::sleep(Duration::from_millis(5));
    };
    let _ = std::fs::remove_file(&pid_file);
    pids.push(grandchild);
    let line: Vec<String> = pids.iter().map(u32::to_string).collect();
    println!("{}", line.join(" "));
    let _ = std::io::stdout().flush();
    std::thread::sleep(Duration::from_secs(600));
    std::process::exit(0)
}

fn workers_die_with_a_killed_parent() {
    let mut parent = Command::new(std::env::current_exe().unwrap())
        .arg("--parent-of-workers")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(parent.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let pids: Vec<u32> = line
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    assert_eq!(pids.len(), 3, "two workers and a grandchild: {line:?}");
    for &pid in &pids {
        assert!(
            !is_dead(pid),
            "process {pid} should run while its parent does"
        );
    }
    // SAFETY: kill(2) on our own child's pid, which is not reaped yet.
    unsafe { libc::kill(parent.id() as i32, libc::SIGKILL) };
    let _ = parent.wait();
    for &pid in &pids {
        assert!(
            dies_within(pid, Duration::from_secs(5)),
            "process {pid} (a worker, or the grandchild) outlived the pool's owner"
        );
        reap(pid);
    }
}

// ---- pipelining ------------------------------------------------------------------------------

/// How many rounds the pipelining and stress tests run: `MARTELLI_STRESS_ROUNDS`, or 3.
fn rounds() -> usize {
    std::env::var("MARTELLI_STRESS_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
}

/// A fresh file name for `record`.
fn record_file(what: &str) -> String {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = std::env::temp_dir().join(format!("martelli-{what}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    path.display().to_string()
}

/// How many times each number was recorded in `path`; removes the file.
fn take_recorded(path: &str) -> std::collections::HashMap<u64, usize> {
    let mut counts = std::collections::HashMap::new();
    for line in std::fs::read_to_string(path).unwrap_or_default().lines() {
        *counts
            .entry(line.parse::<u64>().expect("a number"))
            .or_insert(0) += 1;
    }
    let _ = std::fs::remove_file(path);
    counts
}

/// Checks that each of `numbers` was recorded in `path` exactly once, and nothing else was;
/// removes the file.
#[track_caller]
fn assert_recorded_once_each(path: &str, numbers: usize, round: usize) {
    let counts = take_recorded(path);
    assert_eq!(counts.len(), numbers, "round {round}: {counts:?}");
    assert!(
        counts.values().all(|&c| c == 1),
        "round {round}: a task ran twice: {counts:?}"
    );
}

/// Submits `record` of each of `numbers` to `path`, without waiting.
fn submit_records(
    pool: &Pool,
    path: &str,
    numbers: std::ops::Range<u64>,
) -> Vec<martelli::Future<u64>> {
    numbers
        .map(|i| pool.submit_task(record, (path.to_owned(), i)).unwrap())
        .collect()
}

/// Waits for the futures of [`submit_records`] and checks that each returned its number.
#[track_caller]
fn assert_each_returned(
    futures: Vec<martelli::Future<u64>>,
    numbers: std::ops::Range<u64>,
    round: usize,
) {
    for (f, i) in futures.into_iter().zip(numbers) {
        assert_eq!(f.wait().unwrap(), i, "round {round}");
    }
}

/// Runs each task the pipelining tests use, briefly and one at a time, so that every slot learns
/// they are short: a slot pipelines only tasks it has seen run short.
fn warm_up(pool: &Pool) {
    let scratch = record_file("warm-up");
    for i in 0..50 {
        assert_eq!(
            pool.submit_task(add, (i, 1)).unwrap().wait().unwrap(),
            i + 1
        );
        let recorded = pool.submit_task(record, (scratch.clone(), i)).unwrap();
        assert_eq!(recorded.wait().unwrap(), i);
        assert_eq!(pool.submit_task(sleep_ms, (0,)).unwrap().wait().unwrap(), 0);
        assert_eq!(
            pool.submit_task(exit_unless_one, (1,))
                .unwrap()
                .wait()
                .unwrap(),
            1
        );
        pool.submit_task(worker_pid, ()).unwrap().wait().unwrap();
    }
    let _ = std::fs::remove_file(&scratch);
}

/// Submits tiny tasks without waiting for them: the slot is busy with them while the test submits
/// what it wants pipelined, so that it finds those in the queue when it next takes work.
fn busy_ahead(pool: &Pool) -> Vec<martelli::Future<u64>> {
    (0..200)
        .map(|i| pool.submit_task(add, (i, 0)).unwrap())
        .collect()
}

/// Waits for the tasks of [`busy_ahead`] and checks the sum of what they returned (0 + … + 199).
#[track_caller]
fn assert_ahead_done(ahead: Vec<martelli::Future<u64>>) {
    let sum: u64 = ahead.into_iter().map(|f| f.wait().unwrap()).sum();
    assert_eq!(
        sum,
        (0..200).sum::<u64>(),
        "the sum of what the tasks ahead returned"
    );
}

/// How many fresh pools a pipelining test tries before it gives up on the slot ever pipelining.
const PIPELINE_TRIES: usize = 10;

/// A pool of one worker for the tests that need its slot to pipeline: a window of 250 ms instead
/// of the default 2 ms, so that the tests' tiny tasks, measured in a debug build on a loaded
/// machine (where 2 ms was passed in every one of 10 fresh pools, once), still count as short.
fn pipelining_pool() -> Pool {
    Pool::builder()
        .processes(1)
        .pipeline_window(Duration::from_millis(250))
        .build()
        .expect("a process pool starts")
}

/// Whether what was submitted after `fut` is pipelined behind it: `fut` runs and, while it still
/// runs, the pool's queue is empty (waiting at most 3 s for that). A slot pipelines only tasks it
/// measured under its window (2 ms by default; [`pipelining_pool`] widens it); on a loaded
/// machine its measures can run over, and then it
/// does not: the test tries again on a fresh pool instead of testing something else.
fn pipelined_behind<T>(pool: &Pool, fut: &martelli::Future<T>) -> bool {
    wait_until_running(fut);
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let empty = pool.queued() == 0;
        // Read after the queue: the queue was empty while `fut` still ran.
        if empty && fut.status() == Status::Running {
            return true;
        }
        if fut.status() == Status::Done || Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Runs `record_wait_exit` with an open gate, one at a time, so that the slots know it as short:
/// a test can then hold a line behind it for as long as it wants, whatever the machine's load.
fn warm_up_gated(pool: &Pool) {
    let open = record_file("open");
    std::fs::write(&open, "").unwrap();
    let scratch = record_file("scratch");
    for i in 0..50 {
        let warm = pool.submit_task(record_wait_exit, (scratch.clone(), i, open.clone(), 0));
        assert_eq!(warm.unwrap().wait().unwrap(), i);
    }
    let _ = std::fs::remove_file(&scratch);
    let _ = std::fs::remove_file(&open);
}

/// The numbers recorded in `path`, in the order they were recorded.
fn recorded_in_order(path: &str) -> Vec<u64> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| l.parse().expect("a number"))
        .collect()
}

fn pipelined_timeout_in_the_middle_runs_the_rest_once() {
    // Every round checks the outcome; the rounds count only when the tasks after the slow one were
    // pipelined behind it (so that its timeout kills a worker with a line behind it).
    let (mut round, mut pipelined) = (0, 0);
    while pipelined < rounds() {
        assert!(
            round < rounds() + PIPELINE_TRIES,
            "the slot pipelined {pipelined} of {round} rounds"
        );
        let pool = pipelining_pool();
        warm_up(&pool);
        warm_up_gated(&pool);
        let path = record_file("timeout");
        let never = record_file("never");
        let ahead = busy_ahead(&pool);
        let before = submit_records(&pool, &path, 0..20);
        // Records 50 when it starts, then waits (for a gate that never opens) until its timeout.
        let slow = pool
            .with(TaskOptions::new().timeout(Duration::from_millis(300)))
            .submit_task(record_wait_exit, (path.clone(), 50, never, 0))
            .unwrap();
        let after = submit_records(&pool, &path, 100..120);
        if pipelined_behind(&pool, &slow) {
            pipelined += 1;
        }
        match slow.wait() {
            Err(TaskError::TimedOut { after }) => assert_eq!(after, Duration::from_millis(300)),
            other => panic!("round {round}: expected TimedOut, got {other:?}"),
        }
        assert_each_returned(before, 0..20, round);
        assert_each_returned(after, 100..120, round);
        assert_ahead_done(ahead);
        // In order: nothing behind the slow task ran before it started, or ran twice.
        let order = recorded_in_order(&path);
        let expected: Vec<u64> = (0..20).chain([50]).chain(100..120).collect();
        assert_eq!(order, expected, "round {round}: the order the tasks ran in");
        assert_recorded_once_each(&path, 41, round);
        round += 1;
    }
}

fn pipelined_crash_in_the_middle_runs_the_rest_once() {
    for round in 0..rounds() {
        let pool = pool(1);
        warm_up(&pool);
        let path = record_file("crash");
        let ahead = busy_ahead(&pool);
        let before = submit_records(&pool, &path, 0..20);
        let crash = pool.submit_task(exit_unless_one, (3,)).unwrap();
        let after = submit_records(&pool, &path, 100..120);
        let death = expect_death(crash.wait());
        assert_eq!(death.exit_code, Some(3), "round {round}: {death}");
        assert_each_returned(before, 0..20, round);
        assert_each_returned(after, 100..120, round);
        assert_ahead_done(ahead);
        assert_recorded_once_each(&path, 40, round);
    }
}

/// `pipeline_window(Duration::ZERO)`: nothing is written behind a running task, however short the
/// tasks are known to be; they wait in the pool's queue until the worker is free.
fn a_zero_pipeline_window_keeps_one_task_in_flight() {
    let pool = Pool::builder()
        .processes(1)
        .pipeline_window(Duration::ZERO)
        .build()
        .expect("a process pool starts");
    warm_up(&pool);
    warm_up_gated(&pool);
    let path = record_file("unpipelined");
    let go = record_file("go");
    let front = pool
        .submit_task(record_wait_exit, (path.clone(), 1, go.clone(), 0))
        .unwrap();
    let behind = submit_records(&pool, &path, 10..15);
    wait_until_running(&front);
    // A slot that pipelined would have taken them from the queue at once (see `pipelined_behind`).
    let watched = Instant::now();
    while watched.elapsed() < Duration::from_millis(300) {
        assert_eq!(
            pool.queued(),
            5,
            "the tasks behind the running one stay queued"
        );
        assert_eq!(front.status(), Status::Running);
        std::thread::sleep(Duration::from_millis(5));
    }
    std::fs::write(&go, "").unwrap();
    assert_eq!(front.wait().unwrap(), 1);
    assert_each_returned(behind, 10..15, 0);
    assert_eq!(recorded_in_order(&path), [1, 10, 11, 12, 13, 14]);
    let _ = std::fs::remove_file(&go);
    let _ = std::fs::remove_file(&path);
}

fn cancel_of_a_pipelined_task_skips_it() {
    for _ in 0..PIPELINE_TRIES {
        let pool = pipelining_pool();
        warm_up(&pool);
        warm_up_gated(&pool);
        let worker = pool.submit_task(worker_pid, ()).unwrap().wait().unwrap();
        let path = record_file("cancel");
        let go = record_file("go");
        let ahead = busy_ahead(&pool);
        // Runs until the test opens its gate: the line behind it waits for as long as the test
        // takes.
        let front = pool
            .submit_task(record_wait_exit, (path.clone(), 6, go.clone(), 0))
            .unwrap();
        let victim = pool.submit_task(record, (path.clone(), 7)).unwrap();
        let exit = pool.submit_task(exit_unless_one, (9,)).unwrap();
        let after = pool.submit_task(record, (path.clone(), 8)).unwrap();
        if !pipelined_behind(&pool, &front) {
            std::fs::write(&go, "").unwrap();
            for f in [front, victim, after] {
                let _ = f.wait();
            }
            let _ = exit.wait();
            assert_ahead_done(ahead);
            let _ = take_recorded(&path);
            let _ = std::fs::remove_file(&go);
            continue;
        }
        assert_eq!(victim.status(), Status::Queued, "pipelined is still queued");
        assert!(
            victim.cancel(),
            "a pipelined task that has not started is removed"
        );
        assert!(exit.cancel());
        assert!(matches!(victim.wait(), Err(TaskError::Cancelled)));
        assert!(matches!(exit.wait(), Err(TaskError::Cancelled)));
        // The cancels reach the worker as frames the slot writes once it is scheduled (docs/
        // processes.md, "The cancel window"); the futures resolve before that. Let the slot write
        // them before the worker is let on to the cancelled tasks: what is checked here is that
        // the worker skips a task whose cancel it has, not the machine's scheduling latency.
        std::thread::sleep(Duration::from_millis(300));
        std::fs::write(&go, "").unwrap();
        assert_eq!(front.wait().unwrap(), 6);
        assert_eq!(after.wait().unwrap(), 8);
        assert_ahead_done(ahead);
        let _ = std::fs::remove_file(&go);
        let counts = take_recorded(&path);
        assert_eq!(counts.get(&7), None, "the cancelled task ran");
        assert_eq!(counts.get(&6), Some(&1));
        assert_eq!(counts.get(&8), Some(&1));
        let now = pool.submit_task(worker_pid, ()).unwrap().wait().unwrap();
        assert_eq!(now, worker, "skipping cancelled tasks costs no worker");
        return;
    }
    panic!("no pool pipelined the tasks in {PIPELINE_TRIES} tries");
}

fn a_pipelined_timeout_counts_from_the_task_start() {
    for _ in 0..PIPELINE_TRIES {
        let pool = pipelining_pool();
        warm_up(&pool);
        warm_up_gated(&pool);
        let path = record_file("start");
        let go = record_file("go");
        let ahead = busy_ahead(&pool);
        let first = pool
            .submit_task(record_wait_exit, (path.clone(), 1, go.clone(), 0))
            .unwrap();
        // Written to the worker behind `first`; it starts when `first` ends, which the test holds
        // longer than its timeout: counted from its start, a task of no time is far under it.
        let timeout = Duration::from_secs(2);
        let second = pool
            .with(TaskOptions::new().timeout(timeout))
            .submit_task(sleep_ms, (0,))
            .unwrap();
        let pipelined = pipelined_behind(&pool, &first);
        if pipelined {
            assert_eq!(second.status(), Status::Queued, "it waits behind the first");
            let written = Instant::now();
            while written.elapsed() <= timeout + Duration::from_millis(500) {
                std::thread::sleep(Duration::from_millis(10));
            }
            assert_eq!(second.status(), Status::Queued, "it still waits");
        }
        std::fs::write(&go, "").unwrap();
        assert_eq!(first.wait().unwrap(), 1);
        let result = second.wait();
        assert_ahead_done(ahead);
        let _ = std::fs::remove_file(&go);
        let _ = take_recorded(&path);
        if pipelined {
            assert_eq!(result.unwrap(), 0, "timed out from before its start");
            return;
        }
    }
    panic!("no pool pipelined the tasks in {PIPELINE_TRIES} tries");
}

fn cancel_pending_shutdown_with_pipelined_tasks() {
    let pool = pool(2);
    warm_up(&pool);
    let ahead = busy_ahead(&pool);
    let slow: Vec<_> = (0..2)
        .map(|_| pool.submit_task(sleep_ms, (60_000,)).unwrap())
        .collect();
    let behind: Vec<_> = (0..500)
        .map(|i| pool.submit_task(add, (i, 0)).unwrap())
        .collect();
    // Known to be short, the sleeps are pipelined like the rest; one of them runs.
    let deadline = Instant::now() + Duration::from_secs(10);
    while slow.iter().all(|f| f.status() != Status::Running) {
        assert!(Instant::now() < deadline, "no slow task started");
        std::thread::sleep(Duration::from_millis(1));
    }
    let started = Instant::now();
    pool.shutdown(martelli::Shutdown::CancelPending);
    assert!(started.elapsed() < Duration::from_secs(30));
    for f in slow {
        assert!(matches!(f.wait(), Err(TaskError::Cancelled)));
    }
    for (i, f) in behind.into_iter().enumerate() {
        match f.wait() {
            Ok(v) => assert_eq!(v, i as u64, "ran before the shutdown"),
            Err(TaskError::Cancelled) => {}
            Err(e) => panic!("task {i} behind the slow ones: {e}"),
        }
    }
    for f in ahead {
        assert!(matches!(f.wait(), Ok(_) | Err(TaskError::Cancelled)));
    }
}

fn recycling_counts_exactly_with_pipelining() {
    let pool = Pool::builder()
        .processes(2)
        .max_tasks_per_worker(3)
        .build()
        .unwrap();
    warm_up(&pool);
    let futures: Vec<_> = (0..300)
        .map(|_| pool.submit_task(worker_pid, ()).unwrap())
        .collect();
    let mut counts = std::collections::HashMap::new();
    for f in futures {
        *counts.entry(f.wait().unwrap()).or_insert(0usize) += 1;
    }
    assert_eq!(counts.values().sum::<usize>(), 300);
    assert!(
        counts.values().all(|&c| c <= 3),
        "a worker ran more than 3 tasks: {counts:?}"
    );
    // Every worker but the last one of each slot ran exactly 3 (the warm-up ran on some of them).
    let full = counts.values().filter(|&&c| c == 3).count();
    assert!(full >= counts.len() - 4, "{counts:?}");
}

/// A line the slot is held in the middle of: `gate`, `finished` and `last` were written to the
/// worker together (each records its number, then waits for its file). When the gate's file appears,
/// the worker answers the gate and starts `finished`; the slot reads that answer and is then held in
/// the gate's completion callback (callbacks run on the thread that completes the future), so that
/// it reads nothing more until `resume` is sent.
struct HeldLine {
    path: String,
    worker: u32,
    go: String,
    gate: martelli::Future<u64>,
    finished: martelli::Future<u64>,
    last: martelli::Future<u64>,
    resume: std::sync::mpsc::Sender<()>,
    ahead: Vec<martelli::Future<u64>>,
}

/// Builds a [`HeldLine`] whose `last` task is `record_wait_exit(path, 13, go, last_code)`, on a
/// fresh pool whose slot pipelined its tasks (see [`pipelined_behind`]).
fn held_line(last_code: i32) -> (Pool, HeldLine) {
    for _ in 0..PIPELINE_TRIES {
        let pool = pipelining_pool();
        warm_up(&pool);
        warm_up_gated(&pool);
        if let Some(held) = try_held_line(&pool, last_code) {
            return (pool, held);
        }
    }
    panic!("no pool pipelined the tasks in {PIPELINE_TRIES} tries");
}

/// [`held_line`] on `pool`; `None` (its tasks let go and done) when the slot did not pipeline them.
fn try_held_line(pool: &Pool, last_code: i32) -> Option<HeldLine> {
    let worker = pool.submit_task(worker_pid, ()).unwrap().wait().unwrap();
    let path = record_file("held");
    let go = record_file("go");
    let (gate_go, finished_go) = (format!("{go}-gate"), format!("{go}-finished"));
    let ahead = busy_ahead(pool);
    let submit = |n: u64, go: &str, code: i32| {
        pool.submit_task(record_wait_exit, (path.clone(), n, go.to_owned(), code))
            .unwrap()
    };
    let gate = submit(1, &gate_go, 0);
    let finished = submit(12, &finished_go, 0);
    let last = submit(13, &go, last_code);
    if !pipelined_behind(pool, &gate) {
        for file in [&gate_go, &finished_go, &go] {
            std::fs::write(file, "").unwrap();
        }
        let _ = (gate.wait(), finished.wait(), last.wait());
        assert_ahead_done(ahead);
        for file in [&gate_go, &finished_go, &go, &path] {
            let _ = std::fs::remove_file(file);
        }
        return None;
    }
    let (entered_tx, entered) = std::sync::mpsc::channel();
    let (resume, resume_rx) = std::sync::mpsc::channel::<()>();
    gate.on_done(move |_| {
        let _ = entered_tx.send(());
        let _ = resume_rx.recv_timeout(Duration::from_secs(20));
    });
    std::fs::write(&gate_go, "").unwrap();
    entered
        .recv_timeout(Duration::from_secs(20))
        .expect("the gate's answer was read");
    // `finished` answers now; the slot, held, does not read it.
    std::fs::write(&finished_go, "").unwrap();
    Some(HeldLine {
        path,
        worker,
        go,
        gate,
        finished,
        last,
        resume,
        ahead,
    })
}

impl HeldLine {
    /// Waits until the worker has recorded `n` (then it has sent the answers before that task).
    fn wait_recorded(&self, n: u64) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !std::fs::read_to_string(&self.path)
            .unwrap_or_default()
            .lines()
            .any(|l| l == n.to_string())
        {
            assert!(Instant::now() < deadline, "task {n} never ran");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// After the slot was let go: `finished` kept its value (`blame` says what went wrong if not),
    /// and the gate and the tasks ahead theirs. Returns the record file and the last task.
    #[track_caller]
    fn assert_finished_kept(self, blame: &str) -> (String, martelli::Future<u64>) {
        for suffix in ["", "-gate", "-finished"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", self.go));
        }
        match self.finished.wait() {
            Ok(v) => assert_eq!(v, 12),
            Err(e) => panic!("{blame}: {e}"),
        }
        assert_eq!(self.gate.wait().unwrap(), 1);
        assert_ahead_done(self.ahead);
        (self.path, self.last)
    }
}

fn an_answer_unread_when_the_worker_dies_is_not_blamed() {
    // `finished` answers, then the worker dies at once in `last`, with that answer unread. The
    // slot, let go, has a new task to write first: the write fails, and the slot must still read
    // the answer before it blames anything.
    let (pool, held) = held_line(3);
    std::fs::write(&held.go, "").unwrap();
    martelli_testkit::proc::wait_dead(held.worker, Duration::from_secs(20), "the worker");
    let after = pool.submit_task(record, (held.path.clone(), 14)).unwrap();
    // Queued while the slot is held: it takes it on its next turn and writes it first.
    held.resume.send(()).unwrap();
    let (path, last) =
        held.assert_finished_kept("the task that finished was blamed for the next one's death");
    let death = expect_death(last.wait());
    assert_eq!(death.exit_code, Some(3), "{death}");
    assert_eq!(after.wait().unwrap(), 14);
    assert_recorded_once_each(&path, 4, 0);
}

fn an_answer_unread_at_cancel_pending_keeps_its_value() {
    // `finished` answers and the worker starts `last`, which waits; a CancelPending shutdown
    // kills the worker with `finished`'s answer unread: it must keep its value.
    let (pool, held) = held_line(0);
    held.wait_recorded(13);
    std::thread::scope(|s| {
        s.spawn(|| pool.shutdown(martelli::Shutdown::CancelPending));
        let deadline = Instant::now() + Duration::from_secs(20);
        while !pool.is_shut_down() {
            assert!(Instant::now() < deadline, "the shutdown never began");
            std::thread::sleep(Duration::from_millis(1));
        }
        held.resume.send(()).unwrap();
    });
    let (path, last) =
        held.assert_finished_kept("a task that finished before the shutdown lost its value");
    assert!(matches!(last.wait(), Err(TaskError::Cancelled)));
    assert_recorded_once_each(&path, 3, 0);
}

fn a_long_task_does_not_hold_work_an_idle_worker_can_run() {
    // A fresh pool knows nothing of its tasks: it does not pipeline behind the first long one.
    let pool = pool(2);
    let long = pool.submit_task(sleep_ms, (4_000,)).unwrap();
    wait_until_running(&long);
    let short: Vec<_> = (0..20)
        .map(|i| pool.submit_task(add, (i, 0)).unwrap())
        .collect();
    for (i, f) in short.into_iter().enumerate() {
        assert_eq!(f.wait().unwrap(), i as u64);
    }
    // Held behind the long task, the short ones could not have finished before it.
    assert!(
        !long.is_done(),
        "the short tasks finished only after the long one: they waited for it"
    );
    assert_eq!(long.wait().unwrap(), 4_000);
}

fn unseen_tasks_are_not_pipelined_behind_each_other() {
    // After many tiny tasks, two long ones of a kind the pool has not seen: each gets its own
    // worker, and the tiny tasks after them are not held behind them either.
    let pool = pool(2);
    warm_up(&pool);
    let ahead = busy_ahead(&pool);
    let slow: Vec<_> = (0..2)
        .map(|_| pool.submit_task(sleep_unseen, (1_500,)).unwrap())
        .collect();
    let started = Instant::now();
    let tiny: Vec<_> = (0..100)
        .map(|i| pool.submit_task(add, (i, 0)).unwrap())
        .collect();
    // Run one after the other, the two would never be seen running at once, however long this
    // waits; so the deadline only bounds a slow machine.
    let deadline = Instant::now() + Duration::from_secs(15);
    while slow.iter().any(|f| f.status() != Status::Running) {
        assert!(
            Instant::now() < deadline,
            "the two long tasks did not run side by side"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    for f in slow {
        assert_eq!(f.wait().unwrap(), 1_500);
    }
    // With both workers asleep in the long tasks, the tiny ones waited in the queue, not behind
    // one long task while the other worker was free.
    for (i, f) in tiny.into_iter().enumerate() {
        assert_eq!(f.wait().unwrap(), i as u64);
    }
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_ahead_done(ahead);
}

fn a_bounded_queue_with_pipelining() {
    // Submitters blocked on a full queue are let in as slots take work in batches.
    let pool = Pool::builder().processes(2).queue_bound(4).build().unwrap();
    warm_up(&pool);
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let pool = &pool;
            s.spawn(move || {
                let futures: Vec<_> = (0..2_000u64)
                    .map(|i| pool.submit_task(add, (t * 10_000, i)).unwrap())
                    .collect();
                for (i, f) in futures.into_iter().enumerate() {
                    assert_eq!(f.wait().unwrap(), t * 10_000 + i as u64);
                }
            });
        }
    });
}

fn stress_many_threads_every_task_once() {
    const THREADS: u64 = 8;
    const PER_THREAD: u64 = 5_000;
    for round in 0..rounds() {
        let pool = pool(2);
        let path = record_file("stress");
        let cancelled_early = std::sync::Mutex::new(Vec::new());
        std::thread::scope(|s| {
            for t in 0..THREADS {
                let (pool, path, cancelled_early) = (&pool, &path, &cancelled_early);
                s.spawn(move || {
                    let futures: Vec<_> = (0..PER_THREAD)
                        .map(|i| {
                            let n = t * PER_THREAD + i;
                            (n, pool.submit_task(record, (path.clone(), n)).unwrap())
                        })
                        .collect();
                    // Then cancel every 97th: queued, pipelined, running or done, whichever it
                    // is by now.
                    let futures: Vec<_> = futures
                        .into_iter()
                        .map(|(n, f)| {
                            let removed = n % 97 == 0 && f.cancel();
                            (n, f, removed)
                        })
                        .collect();
                    for (n, f, removed) in futures {
                        match f.wait() {
                            Ok(v) => {
                                assert_eq!(v, n, "round {round}");
                                assert!(!removed, "round {round}: task {n} was removed, then ran");
                            }
                            Err(TaskError::Cancelled) => assert_eq!(n % 97, 0, "round {round}"),
                            Err(e) => panic!("round {round}: task {n}: {e}"),
                        }
                        if removed {
                            cancelled_early.lock().unwrap().push(n);
                        }
                    }
                });
            }
        });
        drop(pool);
        let counts = take_recorded(&path);
        let cancelled_early = cancelled_early.into_inner().unwrap();
        for n in 0..THREADS * PER_THREAD {
            let times = counts.get(&n).copied().unwrap_or(0);
            assert!(times <= 1, "round {round}: task {n} ran {times} times");
            if n % 97 != 0 {
                assert_eq!(times, 1, "round {round}: task {n} never ran");
            }
        }
        // A task cancelled after it was written to its worker runs if the worker reaches it before
        // the Cancel frame does (the window docs/processes.md names); it must stay rare.
        let leaked = cancelled_early
            .iter()
            .filter(|n| counts.contains_key(n))
            .count();
        println!(
            "    round {round}: {} cancelled while queued or pipelined, {leaked} of them ran anyway",
            cancelled_early.len()
        );
        assert!(
            leaked * 10 <= cancelled_early.len().max(10),
            "{leaked} leaked"
        );
    }
}

// ---- captured output -------------------------------------------------------------------------

fn captured_output_of_print_eprint_and_a_child() {
    let pool = pool(1);
    let worker = pool.submit_task(worker_pid, ()).unwrap().wait().unwrap();
    let captured = pool
        .submit_task_captured(say, ("hello".to_owned(),))
        .unwrap()
        .wait()
        .unwrap();
    assert_eq!(captured.outcome.unwrap(), 5);
    assert_eq!(
        captured.stdout.text(),
        "out: hello\nchild: hello\nno newline at the end"
    );
    assert_eq!(captured.stderr.text(), "err: hello\n");
    assert!(!captured.stdout.is_truncated());
    // Each task gets its own output, also when captured tasks are pipelined.
    let futures: Vec<_> = (0..50)
        .map(|i| pool.submit_task_captured(say, (format!("n{i}"),)).unwrap())
        .collect();
    for (i, f) in futures.into_iter().enumerate() {
        let c = f.wait().unwrap();
        assert_eq!(c.stderr.text(), format!("err: n{i}\n"));
        assert!(
            c.stdout
                .text()
                .starts_with(&format!("out: n{i}\nchild: n{i}\n"))
        );
    }
    // A panic's message is on the captured stderr; the worker survives.
    let panicked = pool
        .submit_task_captured(panics, ("captured boom".to_owned(),))
        .unwrap()
        .wait()
        .unwrap();
    assert!(panicked.outcome.as_ref().is_err_and(TaskError::is_panic));
    assert!(
        panicked.stderr.text().contains("captured boom"),
        "{panicked:?}"
    );
    // Tasks not captured still write to the worker's own streams, and the worker is the same.
    assert_eq!(
        pool.submit_task(say, ("free".to_owned(),))
            .unwrap()
            .wait()
            .unwrap(),
        4
    );
    assert_eq!(
        pool.submit_task(worker_pid, ()).unwrap().wait().unwrap(),
        worker
    );
}

fn captured_output_is_cut_at_the_limit() {
    let pool = Pool::builder()
        .processes(1)
        .max_captured_output(1000)
        .build()
        .unwrap();
    let c = pool
        .submit_task_captured(shout, (5000,))
        .unwrap()
        .wait()
        .unwrap();
    assert!(c.outcome.is_ok());
    assert_eq!(c.stdout.bytes().len(), 1000);
    assert_eq!(c.stdout.written(), 5000);
    assert!(c.stdout.is_truncated());
    let c = pool
        .submit_task_captured(shout, (10,))
        .unwrap()
        .wait()
        .unwrap();
    assert_eq!((c.stdout.bytes().len(), c.stdout.written()), (10, 10));
    assert!(!c.stdout.is_truncated() && c.stderr.bytes().is_empty());
}

fn captured_output_survives_a_crash_and_a_timeout() {
    let pool = pool(1);
    let c = pool
        .submit_task_captured(say_then_abort, ("a".to_owned(),))
        .unwrap()
        .wait()
        .unwrap();
    let death = expect_death(c.outcome);
    assert_eq!(death.signal, Some(libc::SIGABRT));
    assert_eq!(c.stdout.text(), "out before the crash: a\n");
    assert_eq!(c.stderr.text(), "err before the crash: a\n");
    assert!(
        death.stderr_tail.contains("err before the crash: a"),
        "{death}"
    );

    let c = pool
        .with(TaskOptions::new().timeout(Duration::from_millis(300)))
        .submit_task_captured(say_then_hang, ("b".to_owned(),))
        .unwrap()
        .wait()
        .unwrap();
    assert!(c.outcome.unwrap_err().is_timeout());
    assert_eq!(c.stdout.text(), "out before the hang: b\n");
    assert_eq!(c.stderr.text(), "err before the hang: b\n");
    // The replacement captures too.
    let c = pool
        .submit_task_captured(say, ("c".to_owned(),))
        .unwrap()
        .wait()
        .unwrap();
    assert_eq!(c.stderr.text(), "err: c\n");
}

fn capture_needs_a_process_pool() {
    let pool = Pool::threads(1).unwrap();
    match pool.submit_task_captured(say, ("x".to_owned(),)) {
        Err(e @ Error::CaptureNeedsProcesses { .. }) => {
            assert!(e.to_string().contains("process pool"), "{e}");
        }
        other => panic!("expected CaptureNeedsProcesses, got {other:?}"),
    }
}
