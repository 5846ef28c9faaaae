//! One slot of a process pool: a worker process, started, handshaken, fed one task at a time,
//! killed and replaced when it must be. The protocol is in the [module docs](super).

use super::worker::{self, WORKER_ENV, WORKER_FD};
use super::{ProcessConfig, Shared};
use crate::backend::{RemoteJob, Sink};
use crate::codec::{self, ErrorKind, FrameError, Header};
use crate::error::{Error, TaskError, TaskFailure, WorkerDeath};
use crate::process::{Child, Guardian, Signal, Spawn};
use crate::sync::Arc;
use rustix::event::{EventfdFlags, PollFd, PollFlags, Timespec, eventfd, poll};
use rustix::io::Errno;
use std::collections::VecDeque;
use std::io::{self, BufReader, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::pin::pin;
use std::process::Stdio;
use std::sync::Mutex as StdMutex;
use std::sync::mpsc::{self, Receiver};
use std::task::{Context, Wake, Waker};
use std::time::{Duration, Instant};

/// How much of a worker's stderr is kept for its death report.
const STDERR_TAIL_BYTES: usize = 4096;
/// How many lines of it the report shows.
const STDERR_TAIL_LINES: usize = 20;
/// How long a death report waits for the rest of a dead worker's stderr.
const STDERR_DRAIN: Duration = Duration::from_millis(200);

/// Wakes a slot's `poll` from another thread (a cancel, a timeout of the pool): writes its eventfd.
struct FdWaker(OwnedFd);

impl Wake for FdWaker {
    fn wake(self: std::sync::Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &std::sync::Arc<Self>) {
        let _ = rustix::io::write(&self.0, &1u64.to_ne_bytes());
    }
}

/// The last bytes a worker wrote to stderr, forwarded to ours as they come.
struct StderrTail {
    tail: std::sync::Arc<StdMutex<VecDeque<u8>>>,
    done: Receiver<()>,
}

impl StderrTail {
    fn start(mut pipe: impl Read + Send + 'static, pid: u32) -> StderrTail {
        let tail = std::sync::Arc::new(StdMutex::new(VecDeque::with_capacity(STDERR_TAIL_BYTES)));
        let (done_tx, done) = mpsc::channel();
        let keep = std::sync::Arc::clone(&tail);
        let spawned = std::thread::Builder::new()
            .name(format!("martelli-stderr-{pid}"))
            .spawn(move || {
                let mut buf = [0u8; 8192];
                loop {
                    match pipe.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => {
                            let _ = io::stderr().write_all(&buf[..n]);
                            if let Ok(mut t) = keep.lock() {
                                t.extend(&buf[..n]);
                                let excess = t.len().saturating_sub(STDERR_TAIL_BYTES);
                                t.drain(..excess);
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(_) => break,
                    }
                }
                let _ = done_tx.send(());
            });
        // Without a reader thread (the system refused one) the pipe's read end is closed with the
        // closure: the worker's stderr writes then fail instead of blocking, and `finish` (its sender
        // dropped too) returns at once with an empty tail.
        drop(spawned);
        StderrTail { tail, done }
    }

    /// The last lines, once the pipe is closed (or after a short wait when a leftover holds it).
    fn finish(&self) -> String {
        let _ = self.done.recv_timeout(STDERR_DRAIN);
        let bytes: Vec<u8> = match self.tail.lock() {
            Ok(t) => t.iter().copied().collect(),
            Err(_) => Vec::new(),
        };
        let text = String::from_utf8_lossy(&bytes);
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(STDERR_TAIL_LINES)..].join("\n")
    }
}

/// A live worker process.
struct Worker {
    child: Child,
    /// Kills the worker's group if this process dies (the parent-death signal reaches only the
    /// worker, not what its task started).
    guardian: Option<std::sync::Arc<Guardian>>,
    channel: UnixStream,
    reader: BufReader<UnixStream>,
    stderr: StderrTail,
    tasks: usize,
}

impl Worker {
    fn spawn(config: &ProcessConfig) -> Result<Worker, Error> {
        let start_error = |what: &str, e: &dyn std::fmt::Display| Error::WorkerStart {
            message: format!("{what}: {e}"),
        };
        let program = match &config.program {
            Some(p) => p.clone(),
            None => std::env::current_exe()
                .map_err(|e| start_error("cannot find this program's executable", &e))?,
        };
        let (ours, theirs) =
            UnixStream::pair().map_err(|e| start_error("cannot create a socketpair", &e))?;
        let mut spawn = Spawn::new(&program).args(&config.args);
        if let Some(n) = config.nice {
            spawn = spawn.nice(n);
        }
        for &(resource, soft, hard) in &config.rlimits {
            spawn = spawn.rlimit(resource, soft, hard);
        }
        let command = spawn.command_mut();
        command
            .env(WORKER_ENV, format!("{WORKER_FD} {}", config.max_frame))
            .stdin(Stdio::null())
            .stderr(Stdio::piped());
        let their_fd = theirs.as_raw_fd();
        let hook = move || -> io::Result<()> {
            // Only system calls here: this runs between fork and exec.
            if their_fd == WORKER_FD {
                // SAFETY: fcntl on a descriptor this process owns; it only clears FD_CLOEXEC.
                if unsafe { libc::fcntl(WORKER_FD, libc::F_SETFD, 0) } < 0 {
                    return Err(io::Error::last_os_error());
                }
            // SAFETY: dup2 onto WORKER_FD in the forked child; the copy has no FD_CLOEXEC, so the
            // worker program inherits it. Any descriptor at WORKER_FD was ours to replace.
            } else if unsafe { libc::dup2(their_fd, WORKER_FD) } < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        };
        // SAFETY: the hook runs in the forked child before exec and makes only async-signal-safe
        // system calls (fcntl, dup2); its error is built from errno without allocating.
        unsafe { command.pre_exec(hook) };
        let mut child = spawn.spawn().map_err(|e| {
            start_error(
                &format!("cannot start worker program {}", program.display()),
                &e,
            )
        })?;
        drop(theirs);
        let guardian = config.guardian.clone();
        if let Some(g) = &guardian {
            // Capacity is two per slot, more than a slot ever has alive: this cannot fail.
            let _ = g.watch(child.pgid());
        }
        let stderr = match child.take_stderr() {
            Some(pipe) => StderrTail::start(pipe, child.pid()),
            None => StderrTail::start(io::empty(), child.pid()),
        };
        let reader = match ours.try_clone() {
            Ok(r) => BufReader::with_capacity(64 * 1024, r),
            Err(e) => {
                let _ = child.signal_group(Signal::KILL);
                let _ = child.wait();
                if let Some(g) = &guardian {
                    g.forget(child.pgid());
                }
                return Err(start_error("cannot duplicate the worker channel", &e));
            }
        };
        let mut worker = Worker {
            child,
            guardian,
            channel: ours,
            reader,
            stderr,
            tasks: 0,
        };
        match worker.handshake(config) {
            Ok(()) => Ok(worker),
            Err(reason) => {
                let _ = worker.child.signal_group(Signal::KILL);
                let death = worker.death();
                Err(Error::Handshake {
                    program: program.display().to_string(),
                    reason,
                    death: death.to_string(),
                })
            }
        }
    }

    /// Waits for the worker's `Hello` and checks that it is the same build.
    fn handshake(&mut self, config: &ProcessConfig) -> Result<(), String> {
        let timeout = config.handshake_timeout;
        self.channel
            .set_read_timeout(Some(timeout))
            .map_err(|e| e.to_string())?;
        let mut frame = Vec::new();
        let read = codec::read_frame(&mut self.reader, &mut frame, config.max_frame);
        let _ = self.channel.set_read_timeout(None);
        match read {
            Ok(()) => {}
            Err(FrameError::Io(e))
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(format!(
                    "it did not answer the handshake within {timeout:?}; does its main call \
                     martelli::init() first?"
                ));
            }
            Err(FrameError::Closed) => {
                return Err(
                    "it exited before the handshake; its main must call martelli::init() \
                            first"
                        .to_owned(),
                );
            }
            Err(e) => return Err(format!("its handshake failed: {e}")),
        }
        let registry = crate::task::Registry::get().map_err(|e| e.to_string())?;
        match codec::decode(&frame) {
            Ok((
                Header::Hello {
                    fingerprint, exe, ..
                },
                _,
            )) => {
                if fingerprint != registry.fingerprint() {
                    return Err(
                        "it registers other tasks (or another martelli version) than this \
                                program: it is not the same build"
                            .to_owned(),
                    );
                }
                if config.program.is_none() && Some(exe) != worker::exe_identity() {
                    return Err(
                        "its executable is not this program's: the program was rebuilt or \
                                replaced while running; restart it"
                            .to_owned(),
                    );
                }
                Ok(())
            }
            Ok((other, _)) => Err(format!("it sent {other:?} instead of a handshake")),
            Err(e) => Err(format!("its handshake failed: {e}")),
        }
    }

    /// Kills the worker's group and reaps the worker, without waiting for the rest of its stderr.
    fn kill(&mut self) {
        let _ = self.child.signal_group(Signal::KILL);
        self.reap();
    }

    /// Waits for the worker to exit, reaps it, and stops guarding its group (rule 3 of the
    /// guardian: only unreaped groups are watched).
    fn reap(&mut self) -> Option<std::process::ExitStatus> {
        let status = self.child.wait().ok();
        if let Some(g) = &self.guardian {
            g.forget(self.child.pgid());
        }
        status
    }

    /// Reaps the worker (after its channel closed or its group was killed) and reports its end.
    fn death(&mut self) -> WorkerDeath {
        // The group may hold leftovers (a task's children): they go with their worker.
        let _ = self.child.signal_group(Signal::KILL);
        let status = self.reap();
        WorkerDeath {
            exit_code: status.and_then(|s| s.code()),
            signal: status.and_then(|s| s.signal()),
            stderr_tail: self.stderr.finish(),
        }
    }

    /// Closes the channel (the worker then exits) and reaps it.
    fn retire(mut self) {
        let _ = self.channel.shutdown(std::net::Shutdown::Both);
        self.reap();
    }
}

/// The resident memory of process `pid`, from `/proc/<pid>/statm`.
fn resident_bytes(pid: u32) -> Option<u64> {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf only reads a system constant.
    let page_size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page_size).ok()?)
}

/// How one task ended for its worker.
enum After {
    /// The worker is fine and takes the next task.
    Keep,
    /// The worker is dead or was killed; start another.
    Replace,
}

/// One slot: a worker and the thread that runs tasks on it.
pub(super) struct Slot {
    index: usize,
    config: Arc<ProcessConfig>,
    shared: Arc<Shared>,
    worker: Option<Worker>,
    wake_fd: std::sync::Arc<FdWaker>,
    waker: Waker,
    frame: Vec<u8>,
}

impl Slot {
    pub(super) fn start(
        index: usize,
        config: Arc<ProcessConfig>,
        shared: Arc<Shared>,
    ) -> Result<Slot, Error> {
        let fd = eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK).map_err(|e| {
            Error::WorkerStart {
                message: format!("cannot create an eventfd: {e}"),
            }
        })?;
        let wake_fd = std::sync::Arc::new(FdWaker(fd));
        let waker = Waker::from(std::sync::Arc::clone(&wake_fd));
        let worker = Worker::spawn(&config)?;
        Ok(Slot {
            index,
            config,
            shared,
            worker: Some(worker),
            wake_fd,
            waker,
            frame: Vec::new(),
        })
    }

    /// Runs jobs until the queue is closed and drained, then retires the worker.
    pub(super) fn serve(mut self) {
        while let Some(job) = self.shared.next_job() {
            self.run(job);
        }
        if let Some(worker) = self.worker.take() {
            worker.retire();
        }
    }

    fn run(&mut self, job: RemoteJob) {
        let RemoteJob {
            id, frame, sink, ..
        } = job;
        if !sink.start() {
            return; // cancelled while queued: dropping the sink leaves it cancelled
        }
        let worker = match self.worker.take() {
            Some(w) => w,
            None => match Worker::spawn(&self.config) {
                Ok(w) => w,
                Err(e) => {
                    sink.complete(Err(TaskError::WorkerDied(WorkerDeath {
                        exit_code: None,
                        signal: None,
                        stderr_tail: format!("no worker could be started for the task: {e}"),
                    })));
                    return;
                }
            },
        };
        let token = sink.token().clone();
        *self.shared.running[self.index].lock() = Some(token.clone());
        let (after, worker) = self.run_on(worker, id, &frame, sink, &token);
        *self.shared.running[self.index].lock() = None;
        let mut worker = Some(worker);
        if let After::Keep = after {
            if let Some(w) = worker.as_mut() {
                w.tasks += 1;
                let worn_out = self
                    .config
                    .max_tasks_per_worker
                    .is_some_and(|max| w.tasks >= max);
                let too_big = self
                    .config
                    .max_worker_memory
                    .is_some_and(|max| resident_bytes(w.child.pid()).is_some_and(|rss| rss > max));
                if worn_out || too_big {
                    if let Some(w) = worker.take() {
                        w.retire();
                    }
                }
            }
        } else {
            worker = None;
        }
        // A replacement starts now, not when the next task comes: that task should not wait for it.
        self.worker = match worker {
            Some(w) => Some(w),
            None => Worker::spawn(&self.config).ok(),
        };
    }

    /// Sends one task to `worker` and waits for its outcome, its deadline, its cancel or the
    /// worker's death (rule 2 and 3 of the module docs).
    fn run_on(
        &mut self,
        mut worker: Worker,
        id: u64,
        frame: &[u8],
        sink: Box<dyn Sink>,
        token: &crate::cancel::CancelToken,
    ) -> (After, Worker) {
        // Ask the token to wake us when it fires. (A stale wake-up left by an earlier task's token
        // only costs one more turn of the loop below, which checks this task's token.)
        let mut drain = [0u8; 8];
        {
            let cancelled = pin!(token.cancelled());
            let mut cx = Context::from_waker(&self.waker);
            if cancelled.poll(&mut cx).is_ready() {
                sink.complete(Err(TaskError::Cancelled));
                return (After::Keep, worker);
            }
        }
        let timeout = sink.timeout();
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));

        if (&worker.channel).write_all(frame).is_err() {
            let death = worker.death();
            sink.complete(Err(TaskError::WorkerDied(death)));
            return (After::Replace, worker);
        }
        loop {
            let wait = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            if wait == Some(Duration::ZERO) {
                worker.kill();
                sink.complete(Err(TaskError::TimedOut {
                    after: timeout.unwrap_or_default(),
                }));
                return (After::Replace, worker);
            }
            let (readable, woken) = if worker.reader.buffer().is_empty() {
                let mut fds = [
                    PollFd::new(&worker.channel, PollFlags::IN),
                    PollFd::from_borrowed_fd(self.wake_fd.0.as_fd(), PollFlags::IN),
                ];
                let ts = wait.map(|d| Timespec {
                    tv_sec: d.as_secs() as i64,
                    tv_nsec: i64::from(d.subsec_nanos()),
                });
                match poll(&mut fds, ts.as_ref()) {
                    Ok(_) | Err(Errno::INTR) => {}
                    Err(_) => {
                        let death = worker.death();
                        sink.complete(Err(TaskError::WorkerDied(death)));
                        return (After::Replace, worker);
                    }
                }
                (!fds[0].revents().is_empty(), !fds[1].revents().is_empty())
            } else {
                (true, false)
            };
            if readable {
                return self.answer(worker, id, sink);
            }
            if woken {
                while rustix::io::read(&self.wake_fd.0, &mut drain).is_ok() {}
                if token.is_cancelled() {
                    worker.kill();
                    sink.complete(Err(TaskError::Cancelled));
                    return (After::Replace, worker);
                }
            }
        }
    }

    /// Reads the worker's answer and resolves the task with it.
    fn answer(&mut self, mut worker: Worker, id: u64, sink: Box<dyn Sink>) -> (After, Worker) {
        match codec::read_frame(&mut worker.reader, &mut self.frame, self.config.max_frame) {
            Ok(()) => {}
            Err(FrameError::Closed | FrameError::Io(_)) => {
                let death = worker.death();
                sink.complete(Err(TaskError::WorkerDied(death)));
                return (After::Replace, worker);
            }
            Err(e) => {
                worker.kill();
                sink.complete(Err(TaskError::Codec(format!(
                    "the worker's answer was refused, and the worker replaced: {e}"
                ))));
                return (After::Replace, worker);
            }
        }
        let outcome = match codec::decode(&self.frame) {
            Ok((Header::Value { id: got }, body)) if got == id => Ok(body),
            Ok((
                Header::Error {
                    id: got,
                    kind,
                    message,
                },
                _,
            )) if got == id => Err(match kind {
                ErrorKind::Failed => TaskError::Failed(TaskFailure::from_message(message)),
                ErrorKind::Panicked => TaskError::Panicked {
                    message: message.to_owned(),
                },
                ErrorKind::UnknownTask => TaskError::UnknownTask {
                    name: message.to_owned(),
                },
                ErrorKind::BadArgs | ErrorKind::BadResult => TaskError::Codec(message.to_owned()),
            }),
            Ok((other, _)) => {
                let message = format!("the worker sent {other:?} instead of an answer");
                worker.kill();
                sink.complete(Err(TaskError::Codec(message)));
                return (After::Replace, worker);
            }
            Err(e) => {
                worker.kill();
                sink.complete(Err(TaskError::Codec(format!(
                    "the worker's answer does not decode, and the worker was replaced: {e}"
                ))));
                return (After::Replace, worker);
            }
        };
        sink.complete(outcome);
        if self.frame.capacity() > worker::KEEP_BUFFER {
            self.frame = Vec::new(); // do not hold a huge answer's buffer for ever
        }
        (After::Keep, worker)
    }
}
