//! Barrier: rounds, leaders and indexes; timeout, abort, reset; a panicking participant breaks it for
//! every waiter — on plain threads and inside a martelli pool.

use martelli::{Barrier, BarrierError, Pool};
use martelli_testkit::poll::within;
use std::thread;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(20);

/// Waits until `n` threads wait at `barrier` (polling its state: the waiters are blocked, so there is
/// no event to wait on).
fn until_waiting(barrier: &Barrier, n: usize) {
    while barrier.n_waiting() < n {
        thread::yield_now();
    }
}

#[test]
fn rounds_have_one_leader_and_distinct_indexes() {
    const PARTIES: usize = 4;
    const ROUNDS: usize = 200;
    let barrier = Barrier::new(PARTIES);
    let per_thread: Vec<Vec<(usize, bool)>> = within(LIMIT, move || {
        thread::scope(|s| {
            let handles: Vec<_> = (0..PARTIES)
                .map(|_| {
                    s.spawn(|| {
                        (0..ROUNDS)
                            .map(|_| {
                                let r = barrier.wait().unwrap();
                                (r.index(), r.is_leader())
                            })
                            .collect()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        })
    });
    for round in 0..ROUNDS {
        let mut indexes: Vec<usize> = per_thread.iter().map(|t| t[round].0).collect();
        indexes.sort_unstable();
        assert_eq!(indexes, (0..PARTIES).collect::<Vec<_>>(), "round {round}");
        let leaders = per_thread.iter().filter(|t| t[round].1).count();
        assert_eq!(leaders, 1, "round {round}");
    }
}

#[test]
fn a_timeout_breaks_the_barrier_for_every_waiter() {
    let barrier = Barrier::new(3);
    let other = {
        let b = barrier.clone();
        thread::spawn(move || b.wait())
    };
    until_waiting(&barrier, 1);
    assert_eq!(
        barrier.wait_timeout(Duration::from_millis(20)),
        Err(BarrierError::Timeout)
    );
    assert_eq!(
        within(LIMIT, move || other.join().unwrap()),
        Err(BarrierError::Broken)
    );
    assert!(barrier.is_broken());
    assert_eq!(
        barrier.wait(),
        Err(BarrierError::Broken),
        "later arrivals too"
    );
    barrier.reset();
    assert!(!barrier.is_broken());
    // Usable again after reset.
    let b = barrier.clone();
    let t = thread::spawn(move || b.wait());
    let b2 = barrier.clone();
    let t2 = thread::spawn(move || b2.wait());
    assert!(barrier.wait().is_ok());
    assert!(t.join().unwrap().is_ok());
    assert!(t2.join().unwrap().is_ok());
}

#[test]
fn abort_wakes_every_waiter() {
    let barrier = Barrier::new(4);
    let waiters: Vec<_> = (0..3)
        .map(|_| {
            let b = barrier.clone();
            thread::spawn(move || b.wait())
        })
        .collect();
    until_waiting(&barrier, 3);
    barrier.abort();
    within(LIMIT, move || {
        for w in waiters {
            assert_eq!(w.join().unwrap(), Err(BarrierError::Broken));
        }
    });
}

#[test]
fn reset_while_threads_wait_gives_them_broken_and_then_works() {
    let barrier = Barrier::new(2);
    let waiter = {
        let b = barrier.clone();
        thread::spawn(move || b.wait())
    };
    until_waiting(&barrier, 1);
    barrier.reset();
    assert_eq!(
        within(LIMIT, move || waiter.join().unwrap()),
        Err(BarrierError::Broken)
    );
    assert!(!barrier.is_broken());
    let b = barrier.clone();
    let t = thread::spawn(move || b.wait());
    assert!(barrier.wait().is_ok());
    assert!(t.join().unwrap().is_ok());
}

#[test]
fn a_panicking_participant_breaks_the_barrier() {
    let barrier = Barrier::new(3);
    let waiters: Vec<_> = (0..2)
        .map(|_| {
            let b = barrier.clone();
            thread::spawn(move || b.participant().wait())
        })
        .collect();
    until_waiting(&barrier, 2);
    let crasher = {
        let b = barrier.clone();
        thread::spawn(move || {
            let _me = b.participant();
            panic!("this party fails before it arrives");
        })
    };
    assert!(crasher.join().is_err());
    within(LIMIT, move || {
        for w in waiters {
            assert_eq!(w.join().unwrap(), Err(BarrierError::Broken));
        }
    });
}

#[test]
fn a_participant_dropped_without_a_panic_does_not_break_it() {
    let barrier = Barrier::new(1);
    drop(barrier.participant());
    assert!(!barrier.is_broken());
    assert!(barrier.participant().wait().unwrap().is_leader());
}

#[test]
fn a_task_panicking_in_a_pool_breaks_the_barrier_for_the_others() {
    let pool = Pool::threads(3).unwrap();
    let barrier = Barrier::new(3);
    let futures: Vec<_> = (0..3)
        .map(|i| {
            let b = barrier.clone();
            pool.submit(move || {
                let me = b.participant();
                if i == 2 {
                    panic!("task {i} failed");
                }
                me.wait()
            })
            .unwrap()
        })
        .collect();
    let outcomes: Vec<_> = within(LIMIT, move || {
        futures.into_iter().map(|f| f.wait()).collect()
    });
    assert!(outcomes[2].as_ref().unwrap_err().is_panic());
    for outcome in &outcomes[..2] {
        assert_eq!(outcome.as_ref().unwrap(), &Err(BarrierError::Broken));
    }
}

#[test]
fn zero_parties_behave_as_one() {
    let barrier = Barrier::new(0);
    assert_eq!(barrier.parties(), 1);
    assert!(barrier.wait().unwrap().is_leader());
}

#[test]
fn errors_say_what_to_do() {
    assert!(BarrierError::Broken.to_string().contains("reset"));
    assert!(BarrierError::Timeout.is_timeout());
    assert!(BarrierError::Broken.is_broken());
}

#[test]
fn many_rounds_with_random_aborts_never_hang() {
    // Each round either trips or breaks; a broken round is reset by the parties themselves.
    within(LIMIT, || {
        let barrier = Barrier::new(3);
        thread::scope(|s| {
            for t in 0..3u64 {
                let b = &barrier;
                s.spawn(move || {
                    let mut seed = t + 1;
                    let mut ok = 0;
                    for _ in 0..300 {
                        seed = seed
                            .wrapping_mul(6364136223846793005)
                            .wrapping_add(1442695040888963407);
                        let result = if seed >> 60 == 0 {
                            b.wait_timeout(Duration::from_micros(50))
                        } else {
                            b.wait_timeout(Duration::from_millis(200))
                        };
                        match result {
                            Ok(_) => ok += 1,
                            Err(_) => b.reset(),
                        }
                    }
                    ok
                });
            }
        });
        // After the storm the barrier still works: reset, then one clean round.
        barrier.reset();
        let mut indexes: Vec<usize> = thread::scope(|s| {
            let handles: Vec<_> = (0..3).map(|_| s.spawn(|| barrier.wait())).collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap().unwrap().index())
                .collect()
        });
        indexes.sort_unstable();
        assert_eq!(indexes, [0, 1, 2]);
    });
}

#[test]
fn barrier_types_are_send_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Barrier>();
    assert_send_sync::<martelli::Participant>();
}
