//! Test support shared by the tests of `martelli` and `martelli-cli` (a path-only
//! dev-dependency; never published):
//!
//! - [`redis`]: a private `redis-server` on a free port, plain or TLS, killed when dropped;
//! - [`envelope`]: task envelopes as a producer writes them;
//! - [`tls`]: a CA and a server certificate made with the `openssl` command;
//! - [`proc`]: children killed when dropped, whether a process is dead, the live processes;
//! - [`poll`]: waits with a time limit: polling for a condition, a call that might hang;
//! - [`runner`]: the libtest-compatible runner of the test binaries that are their own worker
//!   programs (`harness = false`);
//! - [`shared`]: a fixture built once per test run and read by every test process of the run.

pub mod envelope;
pub mod poll;
pub mod proc;
pub mod redis;
pub mod runner;
pub mod shared;
pub mod tls;
