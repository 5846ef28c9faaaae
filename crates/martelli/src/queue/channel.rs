//! The FIFO flavour: items travel through a crossbeam channel (lock-free on the fast path), and the
//! [`Accounting`] word adds `task_done`/`join` and `close` on top.
//!
//! A blocking `put` or `get` waits in a `Select` that also watches the *close* channel, whose only
//! sender is dropped by `close`, so every blocked caller wakes; a consumer's get also watches its
//! [`StopSignal`]. A consumer told to stop while its output is full *spills* the result into a side
//! list that gets read after the channel, rather than lose it or keep the shutdown waiting.

use super::accounting::Accounting;
use super::{Block, Refusal, StopSignal};
use crate::sync::{AtomicU64, Mutex, Ordering};
use crossbeam_channel::{Receiver, Select, Sender, TrySendError};
use crossbeam_utils::Backoff;
use std::collections::VecDeque;
use std::convert::Infallible;

pub(super) struct Channel<T> {
    tx: Sender<T>,
    rx: Receiver<T>,
    /// Dropped by `close`: a disconnected receiver is always ready, which wakes every `Select`.
    close_tx: Mutex<Option<Sender<Infallible>>>,
    close_rx: Receiver<Infallible>,
    /// Results spilled by stopping consumers (see the module docs), and a wake-up for getters.
    spill: Mutex<VecDeque<T>>,
    spilled: AtomicU64,
    spill_tx: Sender<()>,
    spill_rx: Receiver<()>,
}

impl<T> Channel<T> {
    pub(super) fn new(capacity: Option<usize>) -> Self {
        let (tx, rx) = match capacity {
            Some(cap) => crossbeam_channel::bounded(cap),
            None => crossbeam_channel::unbounded(),
        };
        let (close_tx, close_rx) = crossbeam_channel::bounded(0);
        let (spill_tx, spill_rx) = crossbeam_channel::bounded(1);
        Channel {
            tx,
            rx,
            close_tx: Mutex::new(Some(close_tx)),
            close_rx,
            spill: Mutex::new(VecDeque::new()),
            spilled: AtomicU64::new(0),
            spill_tx,
            spill_rx,
        }
    }

    pub(super) fn len(&self) -> usize {
        self.rx.len() + self.spilled.load(Ordering::Acquire) as usize
    }

    pub(super) fn put(
        &self,
        acct: &Accounting,
        item: T,
        block: Block,
        stop: Option<&StopSignal>,
    ) -> Result<(), (T, Refusal)> {
        if !acct.begin_put() {
            return Err((item, Refusal::Closed));
        }
        // Like crossbeam's own `send`: retry with a short exponential backoff before blocking, which
        // costs far less than a `Select` when the consumers are about to make room.
        let backoff = Backoff::new();
        let mut item = item;
        loop {
            item = match self.tx.try_send(item) {
                Ok(()) => {
                    acct.end_put();
                    return Ok(());
                }
                Err(TrySendError::Full(item)) => item,
                // The queue holds a receiver, so the channel cannot disconnect.
                Err(TrySendError::Disconnected(item)) => {
                    acct.abort_put();
                    return Err((item, Refusal::Closed));
                }
            };
            if matches!(block, Block::Never) || backoff.is_completed() {
                break;
            }
            backoff.snooze();
        }
        if stop.is_some_and(StopSignal::is_fired) {
            self.spill(item);
            acct.end_put();
            return Ok(());
        }
        let deadline = match block {
            Block::Never => {
                acct.abort_put();
                return Err((item, Refusal::WouldBlock));
            }
            Block::Until(deadline) => Some(deadline),
            Block::Forever => None,
        };
        let mut sel = Select::new();
        let send = sel.send(&self.tx);
        let close = sel.recv(&self.close_rx);
        let stopped = stop.map(|s| sel.recv(&s.rx));
        let oper = match deadline {
            None => sel.select(),
            Some(deadline) => match sel.select_deadline(deadline) {
                Ok(oper) => oper,
                Err(_) => {
                    acct.abort_put();
                    return Err((item, Refusal::Timeout));
                }
            },
        };
        let index = oper.index();
        if index == send {
            match oper.send(&self.tx, item) {
                Ok(()) => {
                    acct.end_put();
                    Ok(())
                }
                Err(err) => {
                    acct.abort_put();
                    Err((err.into_inner(), Refusal::Closed))
                }
            }
        } else if index == close {
            let _ = oper.recv(&self.close_rx);
            acct.abort_put();
            Err((item, Refusal::Closed))
        } else {
            // The stop signal fired while the output was full.
            if let (Some(signal), Some(_)) = (stop, stopped) {
                let _ = oper.recv(&signal.rx);
            }
            self.spill(item);
            acct.end_put();
            Ok(())
        }
    }

    fn spill(&self, item: T) {
        self.spill.lock().push_back(item);
        self.spilled.fetch_add(1, Ordering::AcqRel);
        let _ = self.spill_tx.try_send(());
    }

    fn take_spilled(&self) -> Option<T> {
        if self.spilled.load(Ordering::Acquire) == 0 {
            return None;
        }
        let mut spill = self.spill.lock();
        let item = spill.pop_front()?;
        self.spilled.fetch_sub(1, Ordering::AcqRel);
        if !spill.is_empty() {
            // Pass the wake-up on, so another sleeping getter takes the next one.
            let _ = self.spill_tx.try_send(());
        }
        Some(item)
    }

    pub(super) fn get(
        &self,
        acct: &Accounting,
        block: Block,
        stop: Option<&StopSignal>,
    ) -> Result<T, Refusal> {
        let mut spun = false;
        loop {
            if stop.is_some_and(StopSignal::is_fired) {
                return Err(Refusal::Stopped);
            }
            if let Ok(item) = self.rx.try_recv() {
                return Ok(item);
            }
            if let Some(item) = self.take_spilled() {
                return Ok(item);
            }
            if acct.is_closed() {
                if acct.is_sealed() {
                    // Rule 4: nothing can land any more; one last look, then the queue is done.
                    return match self.rx.try_recv() {
                        Ok(item) => Ok(item),
                        Err(_) => self.take_spilled().ok_or(Refusal::Closed),
                    };
                }
                // A put that began before the close is landing or giving up: let it.
                std::thread::yield_now();
                continue;
            }
            let deadline = match block {
                Block::Never => return Err(Refusal::WouldBlock),
                Block::Until(deadline) => Some(deadline),
                Block::Forever => None,
            };
            if !spun {
                // As in `put`: a short backoff before the costlier `Select`.
                spun = true;
                let backoff = Backoff::new();
                while !backoff.is_completed() {
                    backoff.snooze();
                    if let Ok(item) = self.rx.try_recv() {
                        return Ok(item);
                    }
                }
                continue;
            }
            let mut sel = Select::new();
            let recv = sel.recv(&self.rx);
            let close = sel.recv(&self.close_rx);
            let spill = sel.recv(&self.spill_rx);
            if let Some(signal) = stop {
                sel.recv(&signal.rx);
            }
            let oper = match deadline {
                None => sel.select(),
                Some(deadline) => match sel.select_deadline(deadline) {
                    Ok(oper) => oper,
                    Err(_) => return Err(Refusal::Timeout),
                },
            };
            let index = oper.index();
            if index == recv {
                if let Ok(item) = oper.recv(&self.rx) {
                    return Ok(item);
                }
            } else if index == close {
                let _ = oper.recv(&self.close_rx);
            } else if index == spill {
                let _ = oper.recv(&self.spill_rx);
            } else if let Some(signal) = stop {
                let _ = oper.recv(&signal.rx);
            }
            // Loop: the top re-checks the stop signal, the channel, the spill and `closed`.
        }
    }

    pub(super) fn close(&self, acct: &Accounting, discard: bool) -> Vec<T> {
        acct.close();
        drop(self.close_tx.lock().take());
        if !discard {
            return Vec::new();
        }
        // Rule 4: wait out the puts in flight (a blocked one was just woken and gives up).
        while !acct.is_sealed() {
            std::thread::yield_now();
        }
        let mut items: Vec<T> = self.rx.try_iter().collect();
        {
            let mut spill = self.spill.lock();
            self.spilled.fetch_sub(spill.len() as u64, Ordering::AcqRel);
            items.extend(spill.drain(..));
        }
        acct.discard(items.len());
        items
    }
}
