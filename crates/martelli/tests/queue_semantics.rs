//! JoinableQueue semantics: orderings, bounds, timeouts, task_done/join accounting, close and
//! close_now, the Taken guard.

use martelli::{
    GetTimeoutError, JoinableQueue, Order, PutTimeoutError, QueueConfigError, TaskDoneError,
    TryGetError, TryPutError,
};
use martelli_testkit::poll::within;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::thread;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(20);

fn drain<T>(q: &JoinableQueue<T>) -> Vec<T> {
    std::iter::from_fn(|| q.try_get().ok()).collect()
}

#[test]
fn fifo_lifo_and_priority_orders() {
    let fifo = JoinableQueue::new();
    let lifo = JoinableQueue::builder().lifo().build().unwrap();
    let prio = JoinableQueue::builder().priority().build().unwrap();
    for n in [3, 1, 4, 1, 5] {
        fifo.put(n).unwrap();
        lifo.put(n).unwrap();
        prio.put(n).unwrap();
    }
    assert_eq!(drain(&fifo), [3, 1, 4, 1, 5]);
    assert_eq!(drain(&lifo), [5, 1, 4, 1, 3]);
    assert_eq!(drain(&prio), [1, 1, 3, 4, 5]);
    assert_eq!(fifo.order(), Order::Fifo);
    assert_eq!(lifo.order(), Order::Lifo);
    assert_eq!(prio.order(), Order::Priority);
}

#[test]
fn priority_is_fifo_among_equal_priorities() {
    let q = JoinableQueue::builder()
        .priority()
        .capacity(16)
        .build()
        .unwrap();
    // Tuples compare by priority first; the names are equal-priority items in arrival order.
    #[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
    struct Job {
        priority: u8,
        #[allow(dead_code)]
        name: Named,
    }
    #[derive(Debug, Eq)]
    struct Named(&'static str);
    impl PartialEq for Named {
        fn eq(&self, _: &Self) -> bool {
            true
        }
    }
    impl PartialOrd for Named {
        fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
            Some(self.cmp(other))
        }
    }
    impl Ord for Named {
        fn cmp(&self, _: &Self) -> std::cmp::Ordering {
            std::cmp::Ordering::Equal
        }
    }
    for (priority, name) in [(2, "a"), (0, "b"), (2, "c"), (0, "d"), (1, "e")] {
        q.put(Job {
            priority,
            name: Named(name),
        })
        .unwrap();
    }
    let names: Vec<_> = drain(&q).into_iter().map(|j| j.name.0).collect();
    assert_eq!(names, ["b", "d", "e", "a", "c"]);
}

#[test]
fn try_put_on_a_full_queue_hands_the_item_back() {
    let q = JoinableQueue::bounded(2);
    q.try_put("a").unwrap();
    q.try_put("b").unwrap();
    assert!(q.is_full());
    let err = q.try_put("c").unwrap_err();
    assert!(err.is_full());
    assert_eq!(err.into_inner(), "c");
    assert_eq!(q.len(), 2);
    assert_eq!(q.unfinished(), 2, "a refused put is not counted");
}

#[test]
fn put_timeout_gives_up_and_hands_the_item_back() {
    let q = JoinableQueue::bounded(1);
    q.put(1).unwrap();
    match q.put_timeout(2, Duration::from_millis(20)) {
        Err(PutTimeoutError::Timeout(2)) => {}
        other => panic!("expected a timeout with the item back, got {other:?}"),
    }
    assert_eq!(q.unfinished(), 1);
}

#[test]
fn put_timeout_succeeds_when_room_appears() {
    let q = JoinableQueue::bounded(1);
    q.put(1).unwrap();
    let consumer = {
        let q = q.clone();
        thread::spawn(move || q.get().unwrap())
    };
    q.put_timeout(2, LIMIT).unwrap();
    assert_eq!(consumer.join().unwrap(), 1);
    assert_eq!(q.get().unwrap(), 2);
}

#[test]
fn get_variants_on_an_empty_queue() {
    let q: JoinableQueue<u8> = JoinableQueue::new();
    assert_eq!(q.try_get(), Err(TryGetError::Empty));
    assert_eq!(
        q.get_timeout(Duration::from_millis(10)),
        Err(GetTimeoutError::Timeout)
    );
    q.close();
    assert_eq!(q.try_get(), Err(TryGetError::Closed));
    assert_eq!(q.get_timeout(LIMIT), Err(GetTimeoutError::Closed));
    assert!(q.get().is_err());
}

#[test]
fn get_timeout_returns_an_item_put_while_waiting() {
    let q = JoinableQueue::new();
    let getter = {
        let q = q.clone();
        thread::spawn(move || q.get_timeout(LIMIT))
    };
    q.put(7).unwrap();
    assert_eq!(getter.join().unwrap(), Ok(7));
}

#[test]
fn task_done_too_many_is_an_error_that_changes_nothing() {
    let q = JoinableQueue::new();
    assert_eq!(q.task_done(), Err(TaskDoneError));
    q.put(1).unwrap();
    q.put(2).unwrap();
    q.get().unwrap();
    q.task_done().unwrap();
    q.get().unwrap();
    q.task_done().unwrap();
    assert_eq!(q.task_done(), Err(TaskDoneError));
    assert_eq!(q.unfinished(), 0);
    // The count did not go negative: the next item is still awaited by join.
    q.put(3).unwrap();
    assert_eq!(
        q.join_timeout(Duration::from_millis(10))
            .unwrap_err()
            .unfinished,
        1
    );
    q.get().unwrap();
    q.task_done().unwrap();
    q.join();
}

#[test]
fn join_waits_for_task_done_not_for_get() {
    let q = JoinableQueue::new();
    q.put(1).unwrap();
    let item = q.get().unwrap();
    assert!(q.is_empty());
    let err = q.join_timeout(Duration::from_millis(10)).unwrap_err();
    assert_eq!(err.unfinished, 1, "taken but not done is unfinished");
    let joiner = {
        let q = q.clone();
        thread::spawn(move || q.join())
    };
    assert_eq!(item, 1);
    q.task_done().unwrap();
    within(LIMIT, move || joiner.join().unwrap());
}

#[test]
fn join_on_a_fresh_queue_returns_at_once() {
    let q: JoinableQueue<()> = JoinableQueue::new();
    q.join();
    q.join_timeout(Duration::ZERO).unwrap();
}

#[test]
fn close_drains_what_is_left_then_reports_closed() {
    let q = JoinableQueue::new();
    q.put(1).unwrap();
    q.put(2).unwrap();
    q.close();
    assert!(q.is_closed());
    let err = q.put(3).unwrap_err();
    assert_eq!(err.into_inner(), 3, "a put after close hands the item back");
    assert!(q.try_put(4).unwrap_err().is_closed());
    assert!(q.put_timeout(5, LIMIT).unwrap_err().is_closed());
    assert_eq!(q.get(), Ok(1));
    assert_eq!(q.get(), Ok(2));
    assert!(q.get().is_err());
    assert_eq!(q.unfinished(), 2, "close does not mark anything done");
    q.task_done().unwrap();
    q.task_done().unwrap();
    q.join();
    q.close(); // idempotent
}

#[test]
fn close_wakes_blocked_getters_and_putters() {
    let empty: JoinableQueue<u32> = JoinableQueue::new();
    let full = JoinableQueue::bounded(1);
    full.put(0).unwrap();
    let started = martelli::Barrier::new(9);
    let getters: Vec<_> = (0..4)
        .map(|_| {
            let (q, started) = (empty.clone(), started.clone());
            thread::spawn(move || {
                started.wait().unwrap();
                q.get()
            })
        })
        .collect();
    let putters: Vec<_> = (0..4)
        .map(|i| {
            let (q, started) = (full.clone(), started.clone());
            thread::spawn(move || {
                started.wait().unwrap();
                q.put(i + 1).map_err(|e| e.into_inner())
            })
        })
        .collect();
    started.wait().unwrap();
    empty.close();
    full.close();
    within(LIMIT, move || {
        for g in getters {
            assert!(g.join().unwrap().is_err());
        }
        let mut handed_back: Vec<u32> = putters
            .into_iter()
            .map(|p| p.join().unwrap().unwrap_err())
            .collect();
        handed_back.sort_unstable();
        assert_eq!(
            handed_back,
            [1, 2, 3, 4],
            "every blocked put got its item back"
        );
    });
    assert_eq!(full.get(), Ok(0));
}

#[test]
fn close_now_discards_hands_items_back_and_releases_join() {
    let q = JoinableQueue::new();
    for n in 0..5 {
        q.put(n).unwrap();
    }
    let in_progress = q.get().unwrap();
    assert_eq!(in_progress, 0);
    let discarded = q.close_now();
    assert_eq!(discarded, [1, 2, 3, 4], "handed back in get order");
    assert!(q.is_empty());
    assert!(q.get().is_err());
    // Only the item already taken is still awaited.
    assert_eq!(
        q.join_timeout(Duration::from_millis(10))
            .unwrap_err()
            .unfinished,
        1
    );
    let joiner = {
        let q = q.clone();
        thread::spawn(move || q.join())
    };
    q.task_done().unwrap();
    within(LIMIT, move || joiner.join().unwrap());
    assert!(q.close_now().is_empty());
}

#[test]
fn close_now_wakes_a_blocked_joiner() {
    let q = JoinableQueue::new();
    q.put("queued").unwrap();
    let joiner = {
        let q = q.clone();
        thread::spawn(move || q.join())
    };
    assert_eq!(q.close_now(), ["queued"]);
    within(LIMIT, move || joiner.join().unwrap());
}

#[test]
fn close_now_of_a_lifo_and_a_priority_queue_hands_back_in_get_order() {
    let lifo = JoinableQueue::builder().lifo().build().unwrap();
    let prio = JoinableQueue::builder().priority().build().unwrap();
    for n in [2, 3, 1] {
        lifo.put(n).unwrap();
        prio.put(n).unwrap();
    }
    assert_eq!(lifo.close_now(), [1, 3, 2]);
    assert_eq!(prio.close_now(), [1, 2, 3]);
    lifo.join();
    prio.join();
}

#[test]
fn a_taken_guard_marks_done_on_drop() {
    let q = JoinableQueue::new();
    q.put(String::from("doc")).unwrap();
    {
        let mut doc = q.take().unwrap();
        doc.push_str(".pdf");
        assert_eq!(&*doc, "doc.pdf");
        assert_eq!(q.unfinished(), 1);
    }
    assert_eq!(q.unfinished(), 0);
    q.join();
}

#[test]
fn a_panicking_consumer_with_a_guard_does_not_hang_join() {
    let q = JoinableQueue::new();
    for n in 0..3 {
        q.put(n).unwrap();
    }
    let consumer = {
        let q = q.clone();
        thread::spawn(move || {
            while let Ok(item) = q.try_take() {
                if *item == 1 {
                    panic!("bad item");
                }
            }
        })
    };
    assert!(consumer.join().is_err(), "the consumer panicked");
    // Item 0 done normally, item 1 done by the guard during the unwind, item 2 still queued.
    assert_eq!(q.unfinished(), 1);
    let result = catch_unwind(AssertUnwindSafe(|| {
        let _item = q.take().unwrap();
        panic!("another bad item");
    }));
    assert!(result.is_err());
    within(LIMIT, move || q.join());
}

#[test]
fn taken_done_reports_a_miscount() {
    let q = JoinableQueue::new();
    q.put(1).unwrap();
    let item = q.take().unwrap();
    q.task_done().unwrap(); // wrong: the guard owns this item's task_done
    assert_eq!(item.done(), Err(TaskDoneError));
    assert_eq!(q.unfinished(), 0);
}

#[test]
fn zero_capacity_is_refused() {
    assert_eq!(
        JoinableQueue::<u8>::builder()
            .capacity(0)
            .build()
            .unwrap_err(),
        QueueConfigError
    );
    let message = QueueConfigError.to_string();
    assert!(message.contains("at least 1"), "{message}");
}

#[test]
#[should_panic(expected = "at least 1")]
fn bounded_zero_panics_with_a_clear_message() {
    let _ = JoinableQueue::<u8>::bounded(0);
}

#[test]
fn errors_say_what_to_do() {
    let full = TryPutError::Full(()).to_string();
    assert!(full.contains("use put"), "{full}");
    let done = TaskDoneError.to_string();
    assert!(done.contains("exactly once"), "{done}");
}

#[test]
fn bounded_memory_with_a_slow_consumer() {
    const CAP: usize = 4;
    const ITEMS: usize = 200;
    let q = JoinableQueue::bounded(CAP);
    let consumer = {
        let q = q.clone();
        thread::spawn(move || {
            let mut most = 0;
            let mut seen = 0;
            while let Ok(item) = q.get() {
                most = most.max(q.len());
                assert_eq!(item, seen, "FIFO order");
                seen += 1;
                thread::sleep(Duration::from_micros(200)); // the slow work under test
                q.task_done().unwrap();
            }
            (most, seen)
        })
    };
    for n in 0..ITEMS {
        q.put(n).unwrap();
        assert!(q.len() <= CAP);
    }
    q.join();
    q.close();
    let (most, seen) = consumer.join().unwrap();
    assert_eq!(seen, ITEMS);
    assert!(
        most <= CAP,
        "the queue held {most} items, above its capacity {CAP}"
    );
}

#[test]
fn join_with_many_producers_and_consumers() {
    const PRODUCERS: u64 = 4;
    const CONSUMERS: usize = 4;
    const PER_PRODUCER: u64 = if cfg!(miri) { 20 } else { 5_000 };
    let q = JoinableQueue::bounded(64);
    let consumers: Vec<_> = (0..CONSUMERS)
        .map(|_| {
            let q = q.clone();
            thread::spawn(move || {
                let (mut sum, mut count) = (0u64, 0u64);
                while let Ok(n) = q.get() {
                    sum += n;
                    count += 1;
                    q.task_done().unwrap();
                }
                (sum, count)
            })
        })
        .collect();
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            let q = q.clone();
            thread::spawn(move || {
                for i in 0..PER_PRODUCER {
                    q.put(p * PER_PRODUCER + i).unwrap();
                }
            })
        })
        .collect();
    for p in producers {
        p.join().unwrap();
    }
    q.join();
    assert_eq!(q.unfinished(), 0);
    q.close();
    let (sum, count) = consumers
        .into_iter()
        .map(|c| c.join().unwrap())
        .fold((0, 0), |(s, c), (s2, c2)| (s + s2, c + c2));
    let n = PRODUCERS * PER_PRODUCER;
    assert_eq!(count, n);
    assert_eq!(sum, n * (n - 1) / 2);
}

#[test]
fn handles_are_one_queue_and_types_are_send_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<JoinableQueue<String>>();
    assert_send_sync::<martelli::Taken<'static, String>>();
    assert_send_sync::<martelli::PutError<String>>();
    let a = JoinableQueue::new();
    let b = a.clone();
    a.put(1).unwrap();
    assert_eq!(b.get(), Ok(1));
    assert!(a.same_queue(&b));
    assert!(!a.same_queue(&JoinableQueue::new()));
    assert_eq!(a.capacity(), None);
    assert_eq!(JoinableQueue::<u8>::bounded(3).capacity(), Some(3));
    let debug = format!("{a:?}");
    assert!(debug.contains("unfinished: 1"), "{debug}");
}
