//! Test support shared by the tests of `martelli` and `martelli-cli` (a path-only
//! dev-dependency; never published):
//!
//! - [`redis`]: a private `redis-server` on a free port, plain or TLS, killed when dropped;
//! - [`envelope`]: task envelopes as a producer writes them;
//! - [`tls`]: a CA and a server certificate made with the `openssl` command;
//! - [`proc`]: children killed when dropped, and whether a process is dead;
//! - [`poll`]: polling for a condition with a time limit.

pub mod envelope;
pub mod poll;
pub mod proc;
pub mod redis;
pub mod tls;
