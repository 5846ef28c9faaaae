//! One error type per queue operation. Errors of operations that carry an item hand the item back, so
//! a refused `put` loses nothing.

use std::fmt;

/// [`JoinableQueue::put`](super::JoinableQueue::put) failed because the queue is closed. The item is
/// handed back.
#[derive(PartialEq, Eq, Clone, Copy, thiserror::Error)]
#[error("the queue is closed and takes no more items (the item was handed back; see into_inner)")]
pub struct PutError<T>(pub T);

impl<T> PutError<T> {
    /// The item that was not put.
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> fmt::Debug for PutError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PutError(..)")
    }
}

/// Why [`JoinableQueue::try_put`](super::JoinableQueue::try_put) did not put an item. The item is
/// handed back.
#[derive(PartialEq, Eq, Clone, Copy, thiserror::Error)]
pub enum TryPutError<T> {
    /// The queue is at its capacity; try again later, or use `put`, which waits for room.
    #[error("the queue is full (use put, which waits for room, or put_timeout)")]
    Full(T),
    /// The queue is closed.
    #[error("the queue is closed and takes no more items")]
    Closed(T),
}

/// Why [`JoinableQueue::put_timeout`](super::JoinableQueue::put_timeout) did not put an item. The
/// item is handed back.
#[derive(PartialEq, Eq, Clone, Copy, thiserror::Error)]
pub enum PutTimeoutError<T> {
    /// The queue stayed full for the whole timeout; the consumers are slower than the producers.
    #[error(
        "the queue stayed full until the timeout (consumers are behind: add consumers or wait longer)"
    )]
    Timeout(T),
    /// The queue is closed.
    #[error("the queue is closed and takes no more items")]
    Closed(T),
}

macro_rules! item_error_methods {
    ($name:ident, $busy:ident, $is_busy:ident, $busy_doc:literal) => {
        impl<T> $name<T> {
            /// The item that was not put.
            pub fn into_inner(self) -> T {
                match self {
                    $name::$busy(item) | $name::Closed(item) => item,
                }
            }

            #[doc = $busy_doc]
            pub fn $is_busy(&self) -> bool {
                matches!(self, $name::$busy(_))
            }

            /// True when the queue was closed.
            pub fn is_closed(&self) -> bool {
                matches!(self, $name::Closed(_))
            }
        }

        impl<T> fmt::Debug for $name<T> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self {
                    $name::$busy(_) => write!(f, "{}(..)", stringify!($busy)),
                    $name::Closed(_) => f.write_str("Closed(..)"),
                }
            }
        }
    };
}

item_error_methods!(TryPutError, Full, is_full, "True when the queue was full.");
item_error_methods!(
    PutTimeoutError,
    Timeout,
    is_timeout,
    "True when the timeout elapsed."
);

/// [`JoinableQueue::get`](super::JoinableQueue::get) failed: the queue is closed and every item has
/// been taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the queue is closed and empty: no item will come")]
pub struct GetError;

/// Why [`JoinableQueue::try_get`](super::JoinableQueue::try_get) returned no item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TryGetError {
    /// The queue is empty now; items may come later.
    #[error("the queue is empty (use get, which waits for an item, or get_timeout)")]
    Empty,
    /// The queue is closed and empty: no item will come.
    #[error("the queue is closed and empty: no item will come")]
    Closed,
}

impl TryGetError {
    /// True when the queue was empty but open.
    pub fn is_empty(&self) -> bool {
        matches!(self, TryGetError::Empty)
    }
    /// True when the queue is closed and empty.
    pub fn is_closed(&self) -> bool {
        matches!(self, TryGetError::Closed)
    }
}

/// Why [`JoinableQueue::get_timeout`](super::JoinableQueue::get_timeout) returned no item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum GetTimeoutError {
    /// No item came before the timeout.
    #[error("no item came before the timeout")]
    Timeout,
    /// The queue is closed and empty: no item will come.
    #[error("the queue is closed and empty: no item will come")]
    Closed,
}

impl GetTimeoutError {
    /// True when the timeout elapsed.
    pub fn is_timeout(&self) -> bool {
        matches!(self, GetTimeoutError::Timeout)
    }
    /// True when the queue is closed and empty.
    pub fn is_closed(&self) -> bool {
        matches!(self, GetTimeoutError::Closed)
    }
}

/// [`JoinableQueue::task_done`](super::JoinableQueue::task_done) was called more times than items were
/// put: a miscount that would let `join` return before the work is done. Nothing was changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "task_done called more times than items were put (call it exactly once per item taken with get; \
     a Taken guard from take() does it for you)"
)]
pub struct TaskDoneError;

/// [`JoinableQueue::join_timeout`](super::JoinableQueue::join_timeout) gave up before every item was
/// marked done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{unfinished} item(s) were still not marked done when the join timed out")]
pub struct JoinTimeoutError {
    /// Items put and not yet marked done when the timeout elapsed.
    pub unfinished: usize,
}
