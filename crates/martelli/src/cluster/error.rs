//! [`ClusterError`]: why a cluster client or worker could not start or take a task.

/// Why a cluster [`Client`](super::Client) or [`Worker`](super::Worker) could not connect, start, or
/// take a task. How a *task* ended is a [`TaskError`](crate::TaskError), as on every backend.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    /// The broker URL could not be parsed.
    #[error(
        "invalid broker URL {url:?}: {source} (expected redis://[user:password@]host[:port][/db], or rediss:// for TLS)"
    )]
    InvalidUrl {
        /// The URL as given, with any password replaced by `***`.
        url: String,
        /// What the Redis client said.
        #[source]
        source: redis::RedisError,
    },
    /// Nothing answered at the broker's address.
    #[error(
        "cannot reach the Redis broker at {url}: {source} (is redis-server running there, is the \
         host and port right, and does the scheme match: rediss:// for a TLS port?)"
    )]
    Unreachable {
        /// The URL, with any password replaced by `***`.
        url: String,
        /// The connection error.
        #[source]
        source: redis::RedisError,
    },
    /// The broker refused the credentials.
    #[error(
        "the Redis broker at {url} refused the credentials: {detail} (put the right password in the URL: \
         redis://:PASSWORD@host:port, or redis://USER:PASSWORD@host:port for an ACL user)"
    )]
    Auth {
        /// The URL, with any password replaced by `***`.
        url: String,
        /// What the broker said.
        detail: String,
    },
    /// A TLS connection (`rediss://`) could not be set up: the CA file, the broker's certificate, or
    /// TLS support missing from this build.
    #[error("TLS to the Redis broker at {url} failed: {detail}")]
    Tls {
        /// The URL, with any password replaced by `***`.
        url: String,
        /// What went wrong and what to do.
        detail: String,
    },
    /// The broker is older than the commands the protocol uses.
    #[error(
        "the Redis broker at {url} runs version {version}; martelli's cluster needs Redis 7.0 or newer \
         (for XAUTOCLAIM and BLMPOP)"
    )]
    BrokerTooOld {
        /// The URL, with any password replaced by `***`.
        url: String,
        /// The server's `redis_version`.
        version: String,
    },
    /// The broker answered a command with an error.
    #[error("the Redis broker failed to {action}: {source}")]
    Broker {
        /// What was being done.
        action: &'static str,
        /// The error.
        #[source]
        source: redis::RedisError,
    },
    /// A payload is larger than the configured limit.
    #[error(
        "the task's envelope is {size} bytes, over the limit of {limit} bytes (send a reference to the \
         data instead of the data, or raise max_payload on the client and on every worker)"
    )]
    PayloadTooLarge {
        /// The envelope's size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The task's arguments could not be encoded as MessagePack.
    #[error("could not encode the task's arguments as MessagePack: {0}")]
    Encode(#[from] rmp_serde::encode::Error),
    /// An option is out of range.
    #[error("invalid cluster option: {0}")]
    InvalidOption(String),
    /// The client was closed; it takes no more tasks.
    #[error("the cluster client is closed and takes no more tasks (connect a new one)")]
    Closed,
    /// A task record in the broker could not be read (docs/protocol.md, "Addition 1").
    #[error(
        "{0} (was it written by another program, or by a newer martelli? see docs/protocol.md, \
         \"Addition 1: task records\")"
    )]
    BadRecord(String),
    /// The worker's local process pool ([`WorkerOptions::processes`](super::WorkerOptions::processes))
    /// did not start.
    #[error(
        "could not start the worker's process pool: {0} (a worker that runs tasks on processes must \
         call martelli::init() on the first line of main)"
    )]
    ProcessPool(#[source] Box<crate::Error>),
    /// A thread or signal handler could not be set up.
    #[error("could not start the cluster {what}: {source}")]
    Setup {
        /// What was being started.
        what: &'static str,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
}

impl ClusterError {
    /// True when the broker could not be reached.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, ClusterError::Unreachable { .. })
    }

    /// True when TLS could not be set up (CA file, untrusted certificate, no TLS support).
    pub fn is_tls(&self) -> bool {
        matches!(self, ClusterError::Tls { .. })
    }

    /// True when the broker refused the credentials.
    pub fn is_auth(&self) -> bool {
        matches!(self, ClusterError::Auth { .. })
    }

    /// The Redis error behind a failure to reach or to talk to the broker, when that is what this
    /// is (a lost connection may be worth retrying; see `Broker::setup`).
    pub(crate) fn connection_error(&self) -> Option<&redis::RedisError> {
        match self {
            ClusterError::Unreachable { source, .. } => Some(source),
            ClusterError::Broker { source, .. } if super::conn::is_connection_error(source) => {
                Some(source)
            }
            _ => None,
        }
    }
}
