//! Pool::consume: daemon consumers, chained stages, failure reporting, and stopping cleanly on queue
//! close, on stop() and on pool shutdown.

use martelli::{ConsumeError, ItemError, JoinableQueue, Pool, Shutdown};
use martelli_testkit::poll::within;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(20);

fn drain<T>(q: &JoinableQueue<T>) -> Vec<T> {
    std::iter::from_fn(|| {
        let item = q.try_get().ok()?;
        q.task_done().unwrap();
        Some(item)
    })
    .collect()
}

#[test]
fn consumers_process_every_item_and_results_reach_the_output() {
    let pool = Pool::threads(3).unwrap();
    let input = JoinableQueue::bounded(8);
    let output = JoinableQueue::new();
    let consumers = pool
        .consume(|n: u64| n * n, &input)
        .consumers(3)
        .output(&output)
        .start()
        .unwrap();
    assert_eq!(consumers.count(), 3);
    for n in 0..1_000 {
        input.put(n).unwrap();
    }
    input.join();
    // Rule of the module: input.join() returning means every result is already in the output.
    let mut squares = drain(&output);
    squares.sort_unstable();
    assert_eq!(squares, (0..1_000).map(|n| n * n).collect::<Vec<_>>());
    assert_eq!(consumers.processed(), 1_000);
    assert_eq!(consumers.failed(), 0);
}

#[test]
fn two_stages_chain_with_backpressure_end_to_end() {
    let fetchers = Pool::threads(4).unwrap();
    let parsers = Pool::threads(1).unwrap();
    let urls = JoinableQueue::bounded(2);
    let pages = JoinableQueue::bounded(2);
    let records = JoinableQueue::new();
    let most_pages = Arc::new(AtomicUsize::new(0));
    fetchers
        .consume(|url: String| format!("<html>{url}</html>"), &urls)
        .output(&pages)
        .start()
        .unwrap();
    let seen = Arc::clone(&most_pages);
    let pages_handle = pages.clone();
    parsers
        .consume(
            move |page: String| {
                seen.fetch_max(pages_handle.len(), Ordering::Relaxed);
                thread::sleep(Duration::from_micros(300)); // a slow last stage under test
                page.len()
            },
            &pages,
        )
        .output(&records)
        .start()
        .unwrap();
    for i in 0..100 {
        urls.put(format!("u{i}")).unwrap();
        assert!(urls.len() <= 2);
    }
    urls.join();
    pages.join();
    let lengths = drain(&records);
    assert_eq!(lengths.len(), 100);
    assert!(
        most_pages.load(Ordering::Relaxed) <= 2,
        "the middle queue stayed within its bound"
    );
}

#[test]
fn failing_items_go_to_the_error_queue_and_the_worker_goes_on() {
    let pool = Pool::threads(2).unwrap();
    let input = JoinableQueue::new();
    let output = JoinableQueue::new();
    let errors = JoinableQueue::new();
    let consumers = pool
        .consume_fallible(
            |n: i32| {
                if n == 13 {
                    panic!("unlucky {n}");
                }
                if n % 10 == 0 {
                    return Err(format!("{n} is round"));
                }
                Ok(n)
            },
            &input,
        )
        .consumers(1)
        .output(&output)
        .errors(&errors)
        .start()
        .unwrap();
    for n in 1..=40 {
        input.put(n).unwrap();
    }
    input.join();
    assert_eq!(
        drain(&output).len(),
        40 - 5,
        "35 items succeeded on the one consumer"
    );
    let failures: Vec<ItemError> = drain(&errors);
    assert_eq!(failures.len(), 5);
    let panics: Vec<_> = failures.iter().filter(|f| f.error().is_panic()).collect();
    assert_eq!(panics.len(), 1);
    assert!(
        panics[0].to_string().contains("unlucky 13"),
        "{}",
        panics[0]
    );
    let failed: Vec<_> = failures.iter().filter(|f| f.error().is_failed()).collect();
    assert_eq!(failed.len(), 4);
    assert!(failed.iter().all(|f| f.consumer() == 0));
    assert!(
        failures.iter().all(|f| !f.has_item()),
        "a closure takes its item: the failure cannot hold it"
    );
    assert_eq!(consumers.failed(), 5);
    assert_eq!(consumers.processed(), 40);
    assert_eq!(consumers.running(), 1, "the worker survived every failure");
}

/// Fails on round numbers, panics on 13, and halves the rest.
#[martelli::task]
fn halve_unless_round(n: u64, label: String) -> Result<u64, String> {
    assert!(n != 13, "unlucky {label}");
    if n % 10 == 0 {
        return Err(format!("{label} is round"));
    }
    Ok(n / 2)
}

#[test]
fn consume_task_failures_carry_their_item() {
    let pool = Pool::threads(2).unwrap();
    let input = JoinableQueue::new();
    let output = JoinableQueue::new();
    let errors: JoinableQueue<ItemError> = JoinableQueue::new();
    pool.consume_task(halve_unless_round, &input)
        .output(&output)
        .errors(&errors)
        .start()
        .unwrap();
    for n in 1..=30u64 {
        input.put((n, format!("item {n}"))).unwrap();
    }
    input.join();
    assert_eq!(drain(&output).len(), 30 - 4);
    let mut failed: Vec<(u64, String, bool)> = drain(&errors)
        .into_iter()
        .map(|mut failure| {
            assert!(failure.has_item(), "{failure}");
            assert_eq!(
                failure.take_item::<u64>(),
                None,
                "another type gives nothing"
            );
            let (n, label) = failure
                .take_item::<(u64, String)>()
                .expect("the task's argument tuple");
            assert!(!failure.has_item(), "taken once");
            assert!(failure.to_string().contains(&label), "{failure}");
            (n, label, failure.error().is_panic())
        })
        .collect();
    failed.sort();
    let expected: Vec<(u64, String, bool)> = [10, 13, 20, 30]
        .into_iter()
        .map(|n| (n, format!("item {n}"), n == 13))
        .collect();
    assert_eq!(failed, expected);
}

#[test]
fn failures_reach_an_on_error_callback() {
    let pool = Pool::threads(1).unwrap();
    let input = JoinableQueue::new();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&seen);
    pool.consume(
        |s: &'static str| {
            assert!(!s.is_empty(), "empty document");
        },
        &input,
    )
    .on_error(move |failure| sink.lock().unwrap().push(failure.to_string()))
    .start()
    .unwrap();
    for s in ["a", "", "b", ""] {
        input.put(s).unwrap();
    }
    input.join();
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 2);
    assert!(seen[0].contains("empty document"), "{}", seen[0]);
}

#[test]
fn closing_the_queue_stops_the_consumers() {
    let pool = Pool::threads(2).unwrap();
    let input = JoinableQueue::new();
    let consumers = pool.consume(|_: u8| (), &input).start().unwrap();
    assert_eq!(consumers.count(), 2, "default: every free worker");
    input.put(1).unwrap();
    input.close();
    within(LIMIT, move || consumers.wait());
    // The workers are free again: the pool runs ordinary tasks.
    assert_eq!(pool.submit(|| 5).unwrap().wait().unwrap(), 5);
}

#[test]
fn pool_drop_does_not_hang_on_idle_consumers() {
    let input: JoinableQueue<u32> = JoinableQueue::new();
    let q = input.clone();
    within(LIMIT, move || {
        let pool = Pool::threads(2).unwrap();
        pool.consume(|_| (), &q).start().unwrap();
        drop(pool); // consumers wait on an empty queue; the shutdown must stop them
    });
    assert!(
        !input.is_closed(),
        "the pool's shutdown leaves the queue to its owner"
    );
}

#[test]
fn shutdown_cancel_pending_stops_consumers_too() {
    within(LIMIT, || {
        let pool = Pool::threads(1).unwrap();
        let input: JoinableQueue<u32> = JoinableQueue::new();
        pool.consume(|_| (), &input).start().unwrap();
        pool.shutdown(Shutdown::CancelPending);
        assert!(pool.is_shut_down());
    });
}

#[test]
fn shutdown_while_a_consumer_blocks_on_a_full_output_loses_no_result() {
    let output = JoinableQueue::bounded(1);
    let input = JoinableQueue::new();
    let (i, o) = (input.clone(), output.clone());
    within(LIMIT, move || {
        let pool = Pool::threads(1).unwrap();
        let consumers = pool.consume(|n: u32| n, &i).output(&o).start().unwrap();
        i.put(1).unwrap();
        i.put(2).unwrap();
        // The first result fills the output; the consumer then blocks putting the second.
        while consumers.processed() < 1 || o.is_empty() {
            thread::yield_now();
        }
        drop(pool);
    });
    // The second result went in over the bound rather than being lost; the item was marked done.
    assert_eq!(drain(&output), [1, 2]);
    input.join();
}

#[test]
fn items_left_when_the_pool_stops_stay_in_the_queue() {
    let input = JoinableQueue::new();
    let (started_tx, started_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let release_rx = Mutex::new(release_rx);
    let pool = Arc::new(Pool::threads(1).unwrap());
    pool.consume(
        move |n: u32| {
            if n == 0 {
                started_tx.send(()).unwrap();
                release_rx.lock().unwrap().recv().unwrap();
            }
        },
        &input,
    )
    .start()
    .unwrap();
    for n in 0..5 {
        input.put(n).unwrap();
    }
    started_rx.recv().unwrap(); // item 0 in hand
    let stopper = {
        let pool = Arc::clone(&pool);
        thread::spawn(move || pool.shutdown(Shutdown::Wait))
    };
    // The pool reports shut down only after its consumers were told to stop; then release item 0.
    while !pool.is_shut_down() {
        thread::yield_now();
    }
    release_tx.send(()).unwrap();
    within(LIMIT, move || stopper.join().unwrap());
    // Item 0 finished and was marked done; items 1..5 were never taken and are still unfinished.
    assert_eq!(input.len(), 4);
    assert_eq!(input.unfinished(), 4);
    assert_eq!(drain(&input), [1, 2, 3, 4]);
}

#[test]
fn stop_then_wait() {
    let pool = Pool::threads(2).unwrap();
    let input: JoinableQueue<u32> = JoinableQueue::new();
    let consumers = pool.consume(|_| (), &input).consumers(2).start().unwrap();
    consumers.stop();
    within(LIMIT, move || consumers.wait());
    input.put(1).unwrap();
    assert_eq!(input.len(), 1, "stopped consumers take nothing");
    // Their workers are free: new consumers can start.
    let again = pool.consume(|_| (), &input).consumers(2).start().unwrap();
    input.join();
    assert_eq!(again.processed(), 1);
}

#[test]
fn an_inline_pool_refuses_daemon_consumers() {
    let pool = Pool::inline();
    let input: JoinableQueue<u8> = JoinableQueue::new();
    let err = pool.consume(|_| (), &input).start().unwrap_err();
    assert!(matches!(
        err,
        ConsumeError::Unsupported {
            backend: "inline",
            ..
        }
    ));
    assert!(err.to_string().contains("Pool::threads"), "{err}");
}

#[cfg(feature = "async")]
#[test]
fn an_event_loop_pool_refuses_daemon_consumers() {
    let pool = Pool::event_loop().unwrap();
    let input: JoinableQueue<u8> = JoinableQueue::new();
    let err = pool.consume(|_| (), &input).start().unwrap_err();
    assert!(matches!(
        err,
        ConsumeError::Unsupported {
            backend: "async",
            ..
        }
    ));
    assert!(err.to_string().contains("event-loop"), "{err}");
}

#[test]
fn consumers_never_outnumber_free_workers() {
    let pool = Pool::threads(3).unwrap();
    let a: JoinableQueue<u8> = JoinableQueue::new();
    let b: JoinableQueue<u8> = JoinableQueue::new();
    pool.consume(|_| (), &a).consumers(2).start().unwrap();
    match pool.consume(|_| (), &b).consumers(2).start() {
        Err(ConsumeError::NotEnoughWorkers {
            asked: 2,
            free: 1,
            workers: 3,
        }) => {}
        other => panic!("expected NotEnoughWorkers, got {other:?}"),
    }
    assert!(matches!(
        pool.consume(|_| (), &b).consumers(0).start(),
        Err(ConsumeError::NoConsumers)
    ));
    // The default takes the one free worker; then none is left.
    assert_eq!(pool.consume(|_| (), &b).start().unwrap().count(), 1);
    assert!(matches!(
        pool.consume(|_| (), &b).start(),
        Err(ConsumeError::NotEnoughWorkers { free: 0, .. })
    ));
}

#[test]
fn consume_after_shutdown_is_refused() {
    let pool = Pool::threads(1).unwrap();
    pool.shutdown(Shutdown::Wait);
    let input: JoinableQueue<u8> = JoinableQueue::new();
    assert!(matches!(
        pool.consume(|_| (), &input).start(),
        Err(ConsumeError::ShutDown)
    ));
}

#[test]
fn pool_task_timeout_does_not_apply_to_the_daemon_itself() {
    let pool = Pool::builder()
        .threads(1)
        .task_timeout(Duration::from_millis(20))
        .build()
        .unwrap();
    let input = JoinableQueue::new();
    let output = JoinableQueue::new();
    // Each item reports whether the consumer's cancellation token has fired: a daemon under the
    // pool's task timeout would see it fire 20 ms after it started.
    pool.consume(|()| martelli::is_cancelled(), &input)
        .output(&output)
        .start()
        .unwrap();
    input.put(()).unwrap();
    input.join();
    thread::sleep(Duration::from_millis(60)); // longer than the pool's task timeout
    input.put(()).unwrap();
    input.join();
    assert_eq!(drain(&output), [false, false]);
}

#[test]
fn consumer_types_are_send_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<martelli::Consumers>();
    assert_send_sync::<ItemError>();
    assert_send_sync::<ConsumeError>();
}
