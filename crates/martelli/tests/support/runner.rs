//! The runner of the test binaries that are their own worker programs (`harness = false`): their
//! `main` calls `martelli::init()` first, then hands its tests to [`run`]. It speaks libtest's
//! command line, so cargo-nextest runs each test alone, with its time limit
//! (`martelli_testkit::runner`).

pub(crate) use martelli_testkit::runner::run;
