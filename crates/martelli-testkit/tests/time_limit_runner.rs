//! The per-test time limit, checked on the runner of the self-hosting test binaries
//! ([`martelli_testkit::runner`], `harness = false`): `scripts/test.sh` runs the ignored test below
//! with cargo-nextest's `time-limit-check` profile (`.config/nextest.toml`, a limit of a few
//! seconds) and requires the run to fail with this test stopped at its limit and named
//! (`time_limit_libtest.rs` is the same check on libtest's own harness). Outside that step it is
//! ignored.

fn main() {
    martelli_testkit::runner::run_with_ignored(&[], &[("hangs_on_purpose", hangs_on_purpose)]);
}

/// Starts a child that the limit must stop too, then never returns: only the time limit can end it.
fn hangs_on_purpose() {
    martelli_testkit::runner::hang_on_purpose()
}
