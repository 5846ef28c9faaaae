//! The test runner of the test binaries that are their own worker programs (`harness = false`):
//! their `main` calls `martelli::init()` first, then hands its tests to [`run`].
//!
//! It is built on libtest-mimic, so it speaks libtest's command line and both `cargo test` and
//! cargo-nextest drive it: a name filter, `--exact`, `--skip`, `--ignored` and
//! `--include-ignored`, `--list --format terse` (how nextest learns the tests), `--nocapture`,
//! `--test-threads`. cargo-nextest runs each test in a process of its own and stops it at the
//! time limit of `.config/nextest.toml`, naming it; plain `cargo test` runs the tests of one
//! binary one after the other (unless `--test-threads` says otherwise), as each may count, signal
//! and reap the processes of the whole binary.

use libtest_mimic::{Arguments, Trial};

/// Runs the `tests` (name, function) that the command line selects, prints one line per test as
/// libtest does, and exits: with 101 when any failed. A test fails by panicking.
pub fn run(tests: &[(&str, fn())]) -> ! {
    run_trials(tests, &[])
}

/// Like [`run`], with `ignored` tests too: listed, and run only when asked with `--ignored` or
/// `--include-ignored` (e.g. a test that must fail, which checks the runner's own machinery).
pub fn run_with_ignored(tests: &[(&str, fn())], ignored: &[(&str, fn())]) -> ! {
    run_trials(tests, ignored)
}

fn run_trials(tests: &[(&str, fn())], ignored: &[(&str, fn())]) -> ! {
    let mut args = Arguments::from_args();
    // One test at a time unless asked: the tests of one binary share its processes.
    args.test_threads.get_or_insert(1);
    // libtest-mimic catches a test's panic and reports it as the test's failure.
    let trial = |&(name, test): &(&str, fn())| {
        Trial::test(name, move || {
            test();
            Ok(())
        })
    };
    let trials = tests
        .iter()
        .map(trial)
        .chain(ignored.iter().map(|t| trial(t).with_ignored_flag(true)))
        .collect();
    libtest_mimic::run(&args, trials).exit()
}

/// Hangs on purpose, for the check that the time limit works (`scripts/check-time-limit.sh`):
/// starts a child, `sleep 3600.MARKER` (the marker from `MARTELLI_HANG_MARKER`), that the limit must
/// stop too, then never returns.
pub fn hang_on_purpose() -> ! {
    let marker = std::env::var("MARTELLI_HANG_MARKER").unwrap_or_else(|_| "0".into());
    let mut child = std::process::Command::new("sleep")
        .arg(format!("3600.{marker}"))
        .spawn()
        .expect("sleep starts");
    let _ = child.wait();
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}
