//! Chaos mode: makes hidden races show up.
//!
//! "Some lines run so fast that it takes a million runs for an error to appear — but put a sleep in and
//! it shows up." With chaos on, every internal synchronisation point of martelli (a submission, a worker
//! taking a job, a task starting and completing, a wait, an async spawn) injects a seeded, bounded
//! perturbation: nothing, a yield, or a sleep of up to half a millisecond. Code whose correctness
//! depends on how fast martelli hands work over — a check-then-act across a submit, an assumption that a
//! sub-task runs "later" — then fails within a few seeds instead of once in a million runs.
//!
//! The points: a submission and a worker taking a job (thread pool), a task starting and completing, a
//! `Future::wait`, an async spawn, a joinable queue's `put`, `get` and `task_done`, a process pool's
//! frame sent or received, and the cluster's submission, task execution and result delivery.
//!
//! Turn it on with the environment variable `MARTELLI_CHAOS=<seed>` (read on first use) or
//! [`enable`]; [`check`] reruns a scenario under many seeds and reports the one that breaks it. Off,
//! each point costs one relaxed atomic load.
//!
//! ```
//! use martelli::{chaos, Pool};
//! use std::sync::atomic::{AtomicU64, Ordering};
//! use std::sync::Arc;
//!
//! // A correct scenario: an atomic read-modify-write holds under every seed.
//! let outcome = chaos::check(10, |_seed| {
//!     let pool = Pool::threads(2).map_err(|e| e.to_string())?;
//!     let n = Arc::new(AtomicU64::new(0));
//!     let futures: Vec<_> = (0..4)
//!         .map(|_| {
//!             let n = Arc::clone(&n);
//!             pool.submit(move || n.fetch_add(1, Ordering::SeqCst))
//!         })
//!         .collect::<Result<_, _>>()
//!         .map_err(|e| e.to_string())?;
//!     for f in futures {
//!         f.wait().map_err(|e| e.to_string())?;
//!     }
//!     if n.load(Ordering::SeqCst) == 4 { Ok(()) } else { Err("lost an update".to_string()) }
//! });
//! assert!(outcome.is_ok());
//! ```
//!
//! Reproducibility: the perturbation at each point is a function of the seed, the thread's name and
//! how many points that thread has passed. The operating system's scheduler still adds its own noise, so
//! a failing seed reproduces the failure with high probability, not with certainty.

use std::cell::Cell;
use std::fmt;
use std::hash::Hasher;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::Duration;

/// Whether chaos is on: one byte read per point, so that off costs one relaxed load.
static STATE: AtomicU8 = AtomicU8::new(UNREAD);
/// `MARTELLI_CHAOS` not read yet.
const UNREAD: u8 = 0;
const OFF: u8 = 1;
const ON: u8 = 2;
static SEED: AtomicU64 = AtomicU64::new(0);
/// Bumped by every `enable`, so each thread restarts its sequence for a new seed.
static EPOCH: AtomicU64 = AtomicU64::new(0);
static FROM_ENV: OnceLock<()> = OnceLock::new();

/// The longest sleep chaos injects.
const MAX_SLEEP: Duration = Duration::from_micros(500);

thread_local! {
    /// (epoch, rng state) of this thread.
    static RNG: Cell<(u64, u64)> = const { Cell::new((u64::MAX, 0)) };
}

/// Turns chaos on with `seed` for the whole process.
pub fn enable(seed: u64) {
    // The environment is read first, so that it cannot switch chaos on over this call later.
    init_from_env();
    switch_on(seed);
}

fn switch_on(seed: u64) {
    SEED.store(seed, Ordering::SeqCst);
    EPOCH.fetch_add(1, Ordering::SeqCst);
    STATE.store(ON, Ordering::SeqCst);
}

/// Turns chaos off.
pub fn disable() {
    init_from_env();
    STATE.store(OFF, Ordering::SeqCst);
}

/// The seed in force, when chaos is on.
pub fn seed() -> Option<u64> {
    init_from_env();
    (STATE.load(Ordering::SeqCst) == ON).then(|| SEED.load(Ordering::SeqCst))
}

fn init_from_env() {
    FROM_ENV.get_or_init(|| {
        let seed = std::env::var("MARTELLI_CHAOS").ok().and_then(|value| {
            let seed = value.trim().parse::<u64>().ok();
            if seed.is_none() {
                eprintln!(
                    "martelli: ignoring MARTELLI_CHAOS={value:?}: the seed must be a whole number"
                );
            }
            seed
        });
        match seed {
            Some(seed) => switch_on(seed),
            None => {
                let _ = STATE.compare_exchange(UNREAD, OFF, Ordering::SeqCst, Ordering::SeqCst);
            }
        }
    });
}

/// A synchronisation point: perturbs the schedule when chaos is on.
#[inline]
pub(crate) fn point() {
    match STATE.load(Ordering::Relaxed) {
        OFF => {}
        ON => perturb(),
        _ => {
            init_from_env();
            if STATE.load(Ordering::Relaxed) == ON {
                perturb();
            }
        }
    }
}

#[cold]
fn perturb() {
    let r = next_random();
    match r % 16 {
        0..=7 => {}
        8..=12 => std::thread::yield_now(),
        _ => {
            let micros = (r >> 8) % (MAX_SLEEP.as_micros() as u64 + 1);
            std::thread::sleep(Duration::from_micros(micros));
        }
    }
}

fn next_random() -> u64 {
    RNG.with(|cell| {
        let epoch = EPOCH.load(Ordering::Relaxed);
        let (seen, mut state) = cell.get();
        if seen != epoch {
            state = SEED.load(Ordering::Relaxed) ^ thread_key() ^ 0x9E37_79B9_7F4A_7C15;
        }
        // splitmix64: a good, tiny generator.
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        cell.set((epoch, state));
        z ^ (z >> 31)
    })
}

/// A stable key for this thread: a hash of its name (workers are named `{prefix}-{index}`), or for an
/// unnamed thread the order in which it first reached a chaos point.
fn thread_key() -> u64 {
    static NEXT_UNNAMED: AtomicU64 = AtomicU64::new(1);
    thread_local! {
        static ORDINAL: u64 = NEXT_UNNAMED.fetch_add(1, Ordering::Relaxed);
    }
    // `DefaultHasher::new` has fixed keys: the same name hashes the same in every run.
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    match std::thread::current().name() {
        Some(name) => hasher.write(name.as_bytes()),
        None => hasher.write_u64(ORDINAL.with(|o| *o)),
    }
    hasher.finish()
}

/// A scenario that failed under chaos, and the seed that made it fail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChaosFailure {
    /// The seed to reproduce the failure with (`MARTELLI_CHAOS=<seed>` or [`enable`]).
    pub seed: u64,
    /// How many seeds ran, the failing one included.
    pub runs: u64,
    /// The scenario's error, or its panic message.
    pub message: String,
}

impl fmt::Display for ChaosFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the scenario failed under chaos seed {} (run {}): {}; reproduce it with \
             MARTELLI_CHAOS={} or martelli::chaos::enable({})",
            self.seed, self.runs, self.message, self.seed, self.seed
        )
    }
}

impl std::error::Error for ChaosFailure {}

/// Runs `scenario` under chaos seeds `1..=runs` (each run gets its seed as argument) and stops at the
/// first that fails — by returning `Err` or by panicking — reporting that seed. Chaos is off again
/// when it returns. Seeds start elsewhere with [`check_from`].
pub fn check<F, E>(runs: u64, scenario: F) -> Result<(), ChaosFailure>
where
    F: FnMut(u64) -> Result<(), E>,
    E: fmt::Display,
{
    check_from(1, runs, scenario)
}

/// [`check`] over seeds `first..first + runs`.
pub fn check_from<F, E>(first: u64, runs: u64, mut scenario: F) -> Result<(), ChaosFailure>
where
    F: FnMut(u64) -> Result<(), E>,
    E: fmt::Display,
{
    for (i, seed) in (first..first.saturating_add(runs)).enumerate() {
        enable(seed);
        let outcome = catch_unwind(AssertUnwindSafe(|| scenario(seed)));
        disable();
        let message = match outcome {
            Ok(Ok(())) => continue,
            Ok(Err(e)) => e.to_string(),
            Err(payload) => format!(
                "panicked: {}",
                crate::error::panic_message(payload.as_ref())
            ),
        };
        return Err(ChaosFailure {
            seed,
            runs: i as u64 + 1,
            message,
        });
    }
    Ok(())
}
