//! The semantics suite every backend runs. Each backend's test file calls `backend_suite!` with a
//! function that builds its pool; a new backend inherits every test on the day it lands (the pattern of
//! tokio's `tests/rt_common.rs`).
//!
//! This half is written with closures, so it runs on the in-process backends (inline, threads,
//! async). Its other half, `tests/task_suite.rs`, checks the same behaviours with registered tasks on
//! all five backends, processes and the cluster included; its module doc lists the behaviours the
//! out-of-process backends cannot share (closures, scopes, initializers, a source error by type)
//! and why.

#[macro_export]
macro_rules! backend_suite {
    ($make:expr) => {
        use martelli::{Pool, TaskError, WaitMode};
        use std::sync::Arc;
        use std::sync::atomic::{AtomicUsize, Ordering};

        fn pool() -> Pool {
            ($make)()
        }

        #[test]
        fn submit_returns_the_value() {
            let pool = pool();
            let fut = pool.submit(|| 6 * 7).unwrap();
            assert_eq!(fut.wait().unwrap(), 42);
        }

        #[test]
        fn many_submissions_each_resolve_once() {
            let pool = pool();
            let futures: Vec<_> = (0..2_000u64)
                .map(|i| pool.submit(move || i * 3).unwrap())
                .collect();
            let sum: u64 = futures.into_iter().map(|f| f.wait().unwrap()).sum();
            assert_eq!(sum, 3 * (0..2_000u64).sum::<u64>());
        }

        #[test]
        fn a_panic_is_an_outcome_and_the_pool_goes_on() {
            let pool = pool();
            let bad = pool.submit(|| -> u32 { panic!("boom {}", 7) }).unwrap();
            match bad.wait() {
                Err(TaskError::Panicked { message }) => assert_eq!(message, "boom 7"),
                other => panic!("expected a panic outcome, got {other:?}"),
            }
            // Every worker survives: more tasks than workers still run.
            let n = pool.workers() * 3;
            let futures: Vec<_> = (0..n).map(|i| pool.submit(move || i).unwrap()).collect();
            let got: Vec<usize> = futures.into_iter().map(|f| f.wait().unwrap()).collect();
            assert_eq!(got, (0..n).collect::<Vec<_>>());
        }

        #[test]
        fn a_returned_error_is_failed_with_its_source() {
            let pool = pool();
            let fut = pool
                .submit_fallible(|| -> Result<u8, std::io::Error> {
                    Err(std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        "no such file",
                    ))
                })
                .unwrap();
            match fut.wait() {
                Err(TaskError::Failed(failure)) => {
                    assert_eq!(failure.message(), "no such file");
                    let io = failure
                        .downcast_ref::<std::io::Error>()
                        .expect("source kept");
                    assert_eq!(io.kind(), std::io::ErrorKind::NotFound);
                }
                other => panic!("expected Failed, got {other:?}"),
            }
            let ok = pool.submit_fallible(|| Ok::<_, std::io::Error>(5)).unwrap();
            assert_eq!(ok.wait().unwrap(), 5);
        }

        #[test]
        fn as_completed_yields_every_future_once() {
            let pool = pool();
            let futures: Vec<_> = (0..50u32)
                .map(|i| pool.submit(move || i).unwrap())
                .collect();
            let mut got: Vec<u32> = martelli::as_completed(futures)
                .map(|f| {
                    assert!(f.is_done());
                    f.wait().unwrap()
                })
                .collect();
            got.sort_unstable();
            assert_eq!(got, (0..50).collect::<Vec<_>>());
        }

        #[test]
        fn wait_all_returns_every_future_done() {
            let pool = pool();
            let futures: Vec<_> = (0..20).map(|i| pool.submit(move || i).unwrap()).collect();
            let waited = martelli::wait(futures, WaitMode::All, None);
            assert_eq!(waited.done.len(), 20);
            assert!(waited.pending.is_empty());
            assert!(waited.done.iter().all(|f| f.is_done()));
        }

        #[test]
        fn map_keeps_input_order_and_reports_each_panic() {
            let pool = pool();
            let out: Vec<_> = pool
                .map(
                    |x: u32| if x == 7 { panic!("seven") } else { x * 2 },
                    0..20u32,
                )
                .collect();
            assert_eq!(out.len(), 20);
            for (i, r) in out.into_iter().enumerate() {
                if i == 7 {
                    assert!(r.unwrap_err().is_panic());
                } else {
                    assert_eq!(r.unwrap(), i as u32 * 2);
                }
            }
        }

        #[test]
        fn unordered_map_returns_every_result() {
            let pool = pool();
            let mut out: Vec<u64> = pool
                .map(|x: u64| x + 1, 0..5_000u64)
                .unordered()
                .collect::<Result<_, _>>()
                .unwrap();
            out.sort_unstable();
            assert_eq!(out, (1..=5_000u64).collect::<Vec<_>>());
        }

        #[test]
        fn map_over_an_endless_iterator_pulls_a_bounded_number_of_inputs() {
            let pool = pool();
            let pulled = Arc::new(AtomicUsize::new(0));
            let counter = Arc::clone(&pulled);
            let inputs = (0u64..).inspect(move |_| {
                counter.fetch_add(1, Ordering::SeqCst);
            });
            let first: Vec<u64> = pool
                .map(|x| x, inputs)
                .chunk(4)
                .window(3)
                .take(100)
                .collect::<Result<_, _>>()
                .unwrap();
            assert_eq!(first, (0..100).collect::<Vec<_>>());
            // At most the consumed inputs plus one window of chunks ahead.
            let n = pulled.load(Ordering::SeqCst);
            assert!(n <= 100 + 3 * 4, "pulled {n} inputs");
        }

        #[test]
        fn scope_borrows_and_joins_everything() {
            let pool = pool();
            let data: Vec<u64> = (1..=1_000).collect();
            let total = AtomicUsize::new(0);
            pool.scope(|s| {
                for chunk in data.chunks(100) {
                    let total = &total;
                    s.submit(move || {
                        total.fetch_add(chunk.iter().sum::<u64>() as usize, Ordering::SeqCst);
                    })
                    .unwrap();
                }
            });
            assert_eq!(total.load(Ordering::SeqCst), 500_500);
        }

        #[test]
        fn on_done_runs_once_with_the_outcome() {
            let pool = pool();
            let (tx, rx) = std::sync::mpsc::channel();
            let fut = pool.submit(|| 9).unwrap();
            fut.on_done(move |r| {
                tx.send(*r.as_ref().unwrap()).unwrap();
            });
            assert_eq!(rx.recv().unwrap(), 9);
            // Registered after completion: runs at once, on this thread.
            let (tx2, rx2) = std::sync::mpsc::channel();
            fut.on_done(move |r| tx2.send(r.is_ok()).unwrap());
            assert!(rx2.try_recv().unwrap());
            assert_eq!(fut.wait().unwrap(), 9);
        }

        #[test]
        fn submitting_after_shutdown_is_an_error() {
            let pool = pool();
            pool.shutdown(martelli::Shutdown::Wait);
            assert!(pool.is_shut_down());
            assert!(matches!(pool.submit(|| 1), Err(martelli::Error::ShutDown)));
            let back = pool.try_submit(|| 5).unwrap_err();
            assert!(back.is_shut_down());
            assert_eq!((back.into_inner())(), 5);
            // Shutting down twice is harmless.
            pool.shutdown(martelli::Shutdown::CancelPending);
        }

        #[test]
        fn a_future_can_be_awaited() {
            let pool = pool();
            let fut = pool.submit(|| "done").unwrap();
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            assert_eq!(rt.block_on(fut).unwrap(), "done");
        }

        #[test]
        fn worker_local_state_is_per_worker() {
            let local = martelli::WorkerLocal::new(|_| 0u64);
            let pool = pool();
            let futures: Vec<_> = (0..200)
                .map(|_| {
                    let local = local.clone();
                    pool.submit(move || {
                        local.with(|n| {
                            *n += 1;
                            *n
                        })
                    })
                    .unwrap()
                })
                .collect();
            let counts: Vec<u64> = futures.into_iter().map(|f| f.wait().unwrap()).collect();
            // Each worker counts its own tasks from 1: the sum of per-worker maxima is the task count.
            assert!(counts.iter().all(|&c| c >= 1));
            assert!(counts.iter().filter(|&&c| c == 1).count() <= pool.workers());
        }

        #[test]
        fn task_ids_increase_in_submission_order() {
            let pool = pool();
            let a = pool.submit(|| ()).unwrap();
            let b = pool.submit(|| ()).unwrap();
            assert!(a.id() < b.id());
        }
    };
}

/// Runs an example binary that `cargo test` built beside the calling test, and returns its stdout.
/// Panics (failing the test) when it cannot run or exits unsuccessfully.
#[allow(dead_code)] // not every test binary that includes this module runs examples
pub(crate) fn run_example(name: &str, args: &[&str]) -> String {
    let mut dir = std::env::current_exe().expect("the test binary has a path");
    dir.pop(); // the test binary
    if dir.ends_with("deps") {
        dir.pop();
    }
    let exe = dir.join("examples").join(name);
    let out = std::process::Command::new(&exe)
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {} ({e}); build the examples with the tests: cargo test",
                exe.display()
            )
        });
    assert!(
        out.status.success(),
        "{name} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}
