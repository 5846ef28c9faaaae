//! The per-test time limit, checked on libtest's own harness: `scripts/test.sh` runs the ignored
//! test below with cargo-nextest's `time-limit-check` profile (`.config/nextest.toml`, a limit of a
//! few seconds) and requires the run to fail with this test stopped at its limit and named
//! (`time_limit_runner.rs` is the same check on the runner of the `harness = false` binaries).
//! Outside that step it is ignored.

/// Starts a child that the limit must stop too, then never returns: only the time limit can end it.
#[test]
#[ignore = "hangs on purpose: scripts/test.sh runs it to check that the time limit stops it"]
fn hangs_on_purpose() {
    martelli_testkit::runner::hang_on_purpose()
}
