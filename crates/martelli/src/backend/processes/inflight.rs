//! The tasks a slot has given its worker and not had answered, in order, and the bytes of their
//! frames still to write (rules 2 and 3 of the [module docs](super)).
//!
//! Writing never blocks: frames go out with one `sendmsg(MSG_DONTWAIT)` per turn, as many as the
//! socket takes, and the rest waits for the socket to be writable again. A `Cancel` frame is written
//! at the next frame boundary, which is always after the `Run` frame of the task it cancels.

use crate::backend::RemoteJob;
use crate::codec::{self, Header};
use rustix::io::Errno;
use rustix::net::{SendAncillaryBuffer, SendFlags};
use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::os::fd::BorrowedFd;
use std::time::Instant;

/// At most this many buffers go into one `sendmsg`.
const MAX_IOV: usize = 64;

/// One task given to a worker.
pub(super) struct InFlight {
    pub(super) job: RemoteJob,
    /// When it started (rule 3): `None` while it waits behind another task in the worker.
    pub(super) started: Option<Instant>,
    /// When its timeout ends, counted from its start.
    pub(super) deadline: Option<Instant>,
    /// Set when it was cancelled before it started but after its frame was written: the slot waits
    /// this long for the worker to answer it as skipped before it takes it for running.
    pub(super) grace: Option<Instant>,
    /// A `Cancel` frame for it was queued.
    pub(super) cancel_sent: bool,
    /// Its stdout and stderr are captured.
    pub(super) captured: bool,
    /// How long it should take, when its task is known (see `estimates.rs`).
    pub(super) estimate: Option<std::time::Duration>,
}

/// The line of tasks on one worker.
#[derive(Default)]
pub(super) struct Pipeline {
    items: VecDeque<InFlight>,
    /// How many items at the front have their frames fully written.
    sent: usize,
    /// Bytes written of the frame of `items[sent]`.
    partial: usize,
    /// `Cancel` frames to write at the next frame boundary, and how much of them is written.
    control: Vec<u8>,
    control_sent: usize,
    /// Frame bytes of the items behind the front one.
    behind_bytes: usize,
}

impl Pipeline {
    pub(super) fn len(&self) -> usize {
        self.items.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The estimated work of the tasks waiting behind the front one.
    pub(super) fn behind_work(&self) -> std::time::Duration {
        self.items.iter().skip(1).filter_map(|i| i.estimate).sum()
    }

    /// Frame bytes of the tasks waiting behind the front one.
    pub(super) fn behind_bytes(&self) -> usize {
        self.behind_bytes
    }

    pub(super) fn front(&self) -> Option<&InFlight> {
        self.items.front()
    }

    pub(super) fn front_mut(&mut self) -> Option<&mut InFlight> {
        self.items.front_mut()
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = &InFlight> {
        self.items.iter()
    }

    /// Adds a task at the end of the line.
    pub(super) fn push(&mut self, job: RemoteJob, estimate: Option<std::time::Duration>) {
        let captured = job.sink.captures();
        if !self.items.is_empty() {
            self.behind_bytes += job.frame.len();
        }
        self.items.push_back(InFlight {
            job,
            started: None,
            deadline: None,
            grace: None,
            cancel_sent: false,
            captured,
            estimate,
        });
    }

    /// Takes the front task (answered, or lost with its worker).
    pub(super) fn pop_front(&mut self) -> Option<InFlight> {
        let item = self.items.pop_front()?;
        if self.sent > 0 {
            self.sent -= 1;
        } else {
            // Its frame was not fully written: the stream is out of step, and the caller replaces
            // the worker; what is behind is unwritten.
            self.partial = 0;
        }
        if let Some(next) = self.items.front() {
            self.behind_bytes -= next.job.frame.len();
        }
        Some(item)
    }

    /// True while the front task's frame is not fully written.
    pub(super) fn front_unwritten(&self) -> bool {
        self.sent == 0 && self.partial == 0
    }

    /// Everything behind the front task, in order, for the queue (its worker was lost). Writing
    /// starts afresh: the next worker gets a new stream.
    pub(super) fn take_behind(&mut self) -> Vec<RemoteJob> {
        let behind: Vec<RemoteJob> = self.items.drain(1..).map(|i| i.job).collect();
        self.behind_bytes = 0;
        self.reset_stream();
        behind
    }

    /// Forgets the stream (the worker is gone): every task left is unwritten to the next worker.
    pub(super) fn reset_stream(&mut self) {
        self.sent = 0;
        self.partial = 0;
        self.control.clear();
        self.control_sent = 0;
    }

    /// Everything, for dropping (`CancelPending`).
    pub(super) fn take_all(&mut self) -> Vec<InFlight> {
        self.reset_stream();
        self.behind_bytes = 0;
        self.items.drain(..).collect()
    }

    /// Handles the cancel of the task at `index`, which has not started (rule 3): an unwritten one
    /// is removed and returned (dropping it is all that is left to do); a written one gets a
    /// `Cancel` frame, once.
    pub(super) fn cancel_waiting(&mut self, index: usize) -> Option<RemoteJob> {
        let unwritten = index > self.sent || (index == self.sent && self.partial == 0);
        if unwritten {
            let item = self.items.remove(index)?;
            if index > 0 {
                self.behind_bytes -= item.job.frame.len();
            } else if let Some(next) = self.items.front() {
                self.behind_bytes -= next.job.frame.len();
            }
            return Some(item.job);
        }
        let item = self.items.get_mut(index)?;
        if !item.cancel_sent {
            item.cancel_sent = true;
            let id = item.job.id;
            if let Ok(at) = codec::begin_at(&mut self.control, &Header::Cancel { id }) {
                let _ = codec::finish_at(&mut self.control, at, usize::MAX);
            }
        }
        None
    }

    /// True while bytes wait to be written.
    pub(super) fn has_unwritten(&self) -> bool {
        self.sent < self.items.len() || self.control_sent < self.control.len()
    }

    /// Writes the rest of the front task's frame, waiting for the socket as it goes. Only for a front
    /// task not fully written: then the worker has answered everything before it and is reading, so
    /// this ends as fast as the worker reads (a large frame goes out at the speed of blocking
    /// writes, not of `poll` rounds). An error means the worker is gone.
    pub(super) fn write_front(&mut self, fd: BorrowedFd<'_>) -> io::Result<()> {
        if self.sent > 0 {
            return Ok(());
        }
        let Some(front) = self.items.front() else {
            return Ok(());
        };
        let frame = &front.job.frame;
        while self.partial < frame.len() {
            match rustix::net::send(fd, &frame[self.partial..], SendFlags::NOSIGNAL) {
                Ok(n) => self.partial += n,
                Err(Errno::INTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
        self.partial = 0;
        self.sent = 1;
        Ok(())
    }

    /// Writes what the socket takes now, without blocking. An error means the worker is gone.
    pub(super) fn write(&mut self, fd: BorrowedFd<'_>) -> io::Result<()> {
        while self.has_unwritten() {
            let mut iov: Vec<IoSlice<'_>> = Vec::with_capacity(MAX_IOV.min(self.items.len() + 1));
            let mut rest = self.sent;
            if self.partial > 0 {
                iov.push(IoSlice::new(
                    &self.items[self.sent].job.frame[self.partial..],
                ));
                rest += 1;
            }
            if self.control_sent < self.control.len() {
                iov.push(IoSlice::new(&self.control[self.control_sent..]));
            }
            for item in self.items.range(rest..) {
                if iov.len() == MAX_IOV {
                    break;
                }
                iov.push(IoSlice::new(&item.job.frame));
            }
            let offered: usize = iov.iter().map(|b| b.len()).sum();
            let flags = SendFlags::DONTWAIT | SendFlags::NOSIGNAL;
            let written =
                match rustix::net::sendmsg(fd, &iov, &mut SendAncillaryBuffer::default(), flags) {
                    Ok(n) => n,
                    Err(Errno::INTR) => continue,
                    Err(Errno::AGAIN) => return Ok(()),
                    Err(e) => return Err(e.into()),
                };
            drop(iov);
            self.advance(written);
            if written < offered {
                return Ok(()); // the socket is full; wait for it to be writable
            }
        }
        Ok(())
    }

    /// Moves the write position on by `n` bytes, in the order `write` offered them.
    fn advance(&mut self, mut n: usize) {
        if self.partial > 0 {
            let left = self.items[self.sent].job.frame.len() - self.partial;
            if n < left {
                self.partial += n;
                return;
            }
            n -= left;
            self.partial = 0;
            self.sent += 1;
        }
        let control_left = self.control.len() - self.control_sent;
        if control_left > 0 {
            if n < control_left {
                self.control_sent += n;
                return;
            }
            n -= control_left;
            self.control.clear();
            self.control_sent = 0;
        }
        while n > 0 && self.sent < self.items.len() {
            let len = self.items[self.sent].job.frame.len();
            if n < len {
                self.partial = n;
                return;
            }
            n -= len;
            self.sent += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Sink;
    use crate::cancel::CancelToken;
    use crate::codec::Inbox;
    use crate::error::TaskError;
    use crate::options::Priority;
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixStream;

    struct NoSink(CancelToken);

    impl Sink for NoSink {
        fn start(&self) -> bool {
            true
        }
        fn token(&self) -> &CancelToken {
            &self.0
        }
        fn timeout(&self) -> Option<std::time::Duration> {
            None
        }
        fn complete(self: Box<Self>, _outcome: Result<&[u8], TaskError>) {}
    }

    fn job(id: u64, body: usize) -> RemoteJob {
        let mut frame = Vec::new();
        codec::begin(&mut frame, &Header::Run { id, task: "t" }).unwrap();
        frame.extend(std::iter::repeat_n(id as u8, body));
        codec::finish(&mut frame, usize::MAX).unwrap();
        RemoteJob {
            id,
            priority: Priority::Normal,
            task: "t".into(),
            frame,
            sink: Box::new(NoSink(CancelToken::new())),
        }
    }

    /// Reads every frame the other end has written, as (header, body length).
    fn drain(theirs: &UnixStream, inbox: &mut Inbox, got: &mut Vec<(String, usize)>) {
        while inbox.fill(theirs.as_fd(), false).is_ok_and(|n| n > 0) {
            while let Some(envelope) = inbox.next().unwrap() {
                let (header, body) = codec::decode(envelope).unwrap();
                got.push((format!("{header:?}"), body.len()));
            }
        }
    }

    #[test]
    fn frames_and_cancels_go_out_whole_in_order_through_a_full_socket() {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let mut line = Pipeline::default();
        for id in 1..=4 {
            line.push(job(id, 300_000), None); // bigger than a socket buffer
        }
        assert_eq!(
            line.behind_bytes(),
            3 * line.front().unwrap().job.frame.len()
        );
        line.write(ours.as_fd()).unwrap();
        assert!(
            line.has_unwritten(),
            "the socket cannot take 1.2 MB at once"
        );
        // Task 1 is partly written: its cancel goes after it. Task 4 is not written at all: it is
        // handed back instead.
        assert!(line.cancel_waiting(0).is_none());
        assert_eq!(line.cancel_waiting(3).map(|j| j.id), Some(4));
        assert!(line.cancel_waiting(0).is_none(), "one Cancel frame only");
        let mut inbox = Inbox::new(1 << 20);
        let mut got = Vec::new();
        for _ in 0..1000 {
            drain(&theirs, &mut inbox, &mut got);
            line.write(ours.as_fd()).unwrap();
            if !line.has_unwritten() {
                break;
            }
        }
        drain(&theirs, &mut inbox, &mut got);
        let names: Vec<&str> = got.iter().map(|(h, _)| h.as_str()).collect();
        assert_eq!(
            names,
            [
                "Run { id: 1, task: \"t\" }",
                "Cancel { id: 1 }",
                "Run { id: 2, task: \"t\" }",
                "Run { id: 3, task: \"t\" }",
            ]
        );
        assert!(
            got.iter()
                .filter(|(h, _)| h.starts_with("Run"))
                .all(|&(_, len)| len == 300_000)
        );
        // Answered in order: the front goes, and the bytes behind are counted down.
        assert_eq!(line.pop_front().map(|i| i.job.id), Some(1));
        assert_eq!(line.behind_bytes(), line.front().unwrap().job.frame.len());
        assert_eq!(line.take_behind().len(), 1);
        assert_eq!(line.len(), 1);
    }
}
