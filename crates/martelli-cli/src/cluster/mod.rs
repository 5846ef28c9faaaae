//! The cluster commands: `martelli worker` runs shell-command tasks from a queue, `martelli status`
//! shows a queue and its workers, and `martelli run --cluster` sends its jobs to the workers (see
//! [`crate::run`]). [`shell`] is the shell-command task both sides speak (`docs/protocol.md`,
//! "Shell-command tasks").

pub(crate) mod ratelimit;
pub(crate) mod result;
pub(crate) mod shell;
pub(crate) mod status;
pub(crate) mod worker;

use std::path::PathBuf;

use clap::Args;

/// Where the broker is and which queue: the options every cluster command shares.
#[derive(Debug, Clone, Args)]
pub(crate) struct BrokerArgs {
    /// The Redis broker: redis://[user:password@]host[:port][/db], or rediss://… for TLS.
    #[arg(long = "cluster", value_name = "URL")]
    pub(crate) url: String,

    /// The queue.
    #[arg(long = "queue", value_name = "NAME", default_value = martelli::cluster::DEFAULT_QUEUE)]
    pub(crate) queue: String,

    /// The prefix of every Redis key; clients and workers must agree on it.
    #[arg(long = "prefix", value_name = "PREFIX", default_value = martelli::cluster::DEFAULT_PREFIX)]
    pub(crate) prefix: String,

    /// For a rediss:// broker: trust the CA certificate(s) in this PEM file [env: MARTELLI_TLS_CA].
    #[arg(long = "tls-ca", value_name = "FILE")]
    pub(crate) tls_ca: Option<PathBuf>,
}
