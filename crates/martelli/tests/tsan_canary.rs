//! ThreadSanitizer's canary: a data race on purpose, run only by `scripts/tsan.sh`, which requires
//! ThreadSanitizer to report it before it trusts a run that reports nothing. Ignored in ordinary
//! runs: outside ThreadSanitizer a data race is undefined behaviour and proves nothing.

use std::thread;

/// A pointer that crosses threads with no synchronisation at all.
#[derive(Clone, Copy)]
struct Shared(*mut u64);

// SAFETY: deliberately unsound: this type exists to let two threads race on one `u64`, which is
// what the canary must show ThreadSanitizer catching. It is used only by the ignored test below.
unsafe impl Send for Shared {}

#[test]
#[ignore = "a data race on purpose: scripts/tsan.sh runs it under ThreadSanitizer, which must report it"]
fn two_threads_write_one_counter_without_synchronisation() {
    let mut counter = Box::new(0u64);
    let shared = Shared(&mut *counter);
    let writers: Vec<_> = (0..2)
        .map(|_| {
            thread::spawn(move || {
                let shared = shared;
                for _ in 0..1_000 {
                    // SAFETY: not safe — the two threads write the same location unsynchronised,
                    // on purpose (see the module's note). The box outlives both threads (joined
                    // below), so the pointer stays valid; only the race is wrong.
                    unsafe { *shared.0 += 1 };
                }
            })
        })
        .collect();
    for writer in writers {
        writer.join().expect("a writer thread");
    }
    assert!(*counter <= 2_000);
}
