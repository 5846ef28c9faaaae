//! Cancelling submitted tasks: a future's token fires, the future resolves as cancelled, and the
//! sender writes the task's tombstone.

use super::Inner;
use super::send::{Outgoing, Target};
use crate::cancel::CancelToken;
use crate::cluster::sink::SharedSink;
use crate::error::TaskError;
use crate::sync::Mutex;
use std::sync::Arc;

/// Fires when a task's future is cancelled (its token), queued or running: has the sender resolve
/// the futures of `ids` as cancelled and write their tombstones. Registered as the waker of the
/// token (`wake_on_cancel`), so that it costs nothing until the token fires.
struct OnCancel {
    inner: std::sync::Weak<Inner>,
    ids: Mutex<Option<Vec<String>>>,
}

impl std::task::Wake for OnCancel {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let ids = self.ids.lock().take();
        if let (Some(ids), Some(inner)) = (ids, self.inner.upgrade()) {
            // This may run under the future's lock (`Future::cancel` fires the token of a queued
            // task with it held): the sender resolves the futures, on its own thread.
            inner.queue_tombstones(ids);
        }
    }
}

impl Inner {
    /// Cancels the tasks `ids` when `token` fires (see [`OnCancel`]).
    pub(super) fn watch_cancel(self: &Arc<Self>, token: &CancelToken, ids: Vec<String>) {
        let on_cancel = Arc::new(OnCancel {
            inner: Arc::downgrade(self),
            ids: Mutex::new(Some(ids)),
        });
        let waker = std::task::Waker::from(on_cancel);
        // A registration that outlives this call (a `cancelled()` future would leave the token's
        // list when dropped here, and the tombstone would never be written).
        if token.host().state().wake_on_cancel(&waker).is_ready() {
            waker.wake_by_ref();
        }
    }

    pub(super) fn queue_tombstones(&self, ids: Vec<String>) {
        let mut outbox = self.outbox.lock();
        let was_empty = outbox.items.is_empty();
        outbox.items.extend(ids.into_iter().map(|id| Outgoing {
            id,
            target: Target::Tombstone,
            bytes: Arc::default(),
            record: None,
        }));
        if was_empty {
            self.outbox_ready.notify_one();
        }
    }

    /// Resolves the futures of the cancelled tasks `ids` still pending as cancelled; they stay
    /// counted (`cancelling`) until [`forget`](Inner::forget) says their tombstones are written.
    pub(super) fn resolve_cancelled(&self, ids: &[&str]) {
        let taken: Vec<SharedSink> = {
            let mut state = self.state.lock();
            let mut taken = Vec::new();
            for id in ids {
                if let Some(pending) = state.pending.remove(*id) {
                    taken.push(pending.sink);
                }
                state.cancelling.insert((*id).to_owned());
            }
            state.completing += taken.len();
            taken
        };
        let n = taken.len();
        for sink in taken {
            sink.complete(Err(TaskError::Cancelled));
        }
        self.completed(n);
    }

    pub(super) fn cancel_pending(&self) -> usize {
        let ids: Vec<String> = {
            let mut state = self.state.lock();
            state.deadlines.clear();
            state.pending.keys().cloned().collect()
        };
        let n = ids.len();
        let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        self.resolve_cancelled(&refs);
        self.queue_tombstones(ids);
        n
    }

    /// Forgets cancelled tasks whose tombstones are written.
    pub(super) fn forget(&self, ids: &[&str]) {
        let mut state = self.state.lock();
        for id in ids {
            state.cancelling.remove(*id);
        }
        if state.idle() {
            self.idle.notify_all();
        }
    }
}
