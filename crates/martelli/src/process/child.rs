//! Spawning a supervised child and watching it to the end.

use std::ffi::OsStr;
use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{ChildStderr, ChildStdin, ChildStdout, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec, poll};
use rustix::io::Errno;
use rustix::process::{
    Pid, PidfdFlags, Rlimit, WaitId, WaitIdOptions, getpid, getppid, pidfd_open,
    set_parent_process_death_signal, setrlimit, waitid,
};

use super::group::{self, signal_group};
use super::signal::{Resource, Signal};

/// How long [`Child::communicate`] sleeps between checks when the kernel has no `pidfd_open`.
const FALLBACK_TICK: Duration = Duration::from_millis(10);

/// The default grace period between `SIGTERM` and `SIGKILL`.
const DEFAULT_GRACE: Duration = Duration::from_millis(500);

/// Builds a child process that leads its own process group.
///
/// Wraps a [`std::process::Command`]; everything not covered here (environment, working directory,
/// stdin) is set through [`Spawn::command_mut`].
///
/// ```
/// use martelli::process::Spawn;
///
/// let mut child = Spawn::new("true").nice(5).spawn()?;
/// assert_eq!(child.pgid(), child.pid()); // it leads its own group
/// assert!(child.wait()?.success());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Spawn {
    command: Command,
    nice: Option<i32>,
    rlimits: Vec<(rustix::process::Resource, Rlimit)>,
    death_signal: Option<Signal>,
    capture: bool,
    stdin_piped: bool,
}

impl Spawn {
    /// A child that runs `program` (looked up in `PATH` like [`Command::new`]).
    pub fn new(program: impl AsRef<OsStr>) -> Self {
        Self::from_command(Command::new(program))
    }

    /// A child that runs `line` with `/bin/sh -c`.
    pub fn shell(line: impl AsRef<OsStr>) -> Self {
        let mut command = Command::new("/bin/sh");
        command.arg("-c").arg(line);
        Self::from_command(command)
    }

    /// A child built from a prepared [`Command`].
    pub fn from_command(command: Command) -> Self {
        Spawn {
            command,
            nice: None,
            rlimits: Vec::new(),
            death_signal: Some(Signal::KILL),
            capture: false,
            stdin_piped: false,
        }
    }

    /// Adds one argument.
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.command.arg(arg);
        self
    }

    /// Adds arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.command.args(args);
        self
    }

    /// The underlying command, for the environment, working directory and stdio.
    pub fn command_mut(&mut self) -> &mut Command {
        &mut self.command
    }

    /// Lowers (positive) or raises (negative, needs privilege) the child's priority by `increment`
    /// before it runs, as `nice(1)` does.
    pub fn nice(mut self, increment: i32) -> Self {
        self.nice = Some(increment);
        self
    }

    /// Sets a resource limit in the child (`setrlimit`); `None` means unlimited.
    pub fn rlimit(mut self, resource: Resource, soft: Option<u64>, hard: Option<u64>) -> Self {
        self.rlimits.push((
            resource.to_rustix(),
            Rlimit {
                current: soft,
                maximum: hard,
            },
        ));
        self
    }

    /// The signal the child gets when the thread that spawned it dies; `SIGKILL` by default,
    /// `None` to let the child outlive its parent.
    ///
    /// Asking for a signal (like [`nice`](Spawn::nice) and [`rlimit`](Spawn::rlimit)) makes the
    /// spawn use `fork` instead of `posix_spawn`, which costs the parent about 0.2 ms more CPU per
    /// child on a small process, more on a large one. A supervisor that spawns many short children
    /// and protects them with a [`Guardian`](super::Guardian) may turn it off.
    pub fn parent_death_signal(mut self, signal: Option<Signal>) -> Self {
        self.death_signal = signal;
        self
    }

    /// Pipes the child's stdout and stderr (read them with [`Child::communicate`]) and gives it an
    /// empty stdin. Without this the child inherits all three.
    pub fn capture_output(mut self, capture: bool) -> Self {
        self.capture = capture;
        self
    }

    /// Gives the child a pipe as stdin (take it with [`Child::take_stdin`]) instead of an empty
    /// or inherited one.
    pub fn stdin_piped(mut self, piped: bool) -> Self {
        self.stdin_piped = piped;
        self
    }

    /// Starts the child.
    ///
    /// Fails with the `exec` error when the program cannot be run (not found, not executable) and
    /// with the system call's error when a limit or the priority cannot be set.
    pub fn spawn(mut self) -> io::Result<Child> {
        if self.capture {
            self.command
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
        }
        if self.stdin_piped {
            self.command.stdin(Stdio::piped());
        }
        self.command.process_group(0);
        // Without a hook, std spawns with posix_spawn (a vfork-like clone), which costs the parent
        // far less than fork; a hook forces fork. So install one only when it has work to do.
        if self.death_signal.is_some() || self.nice.is_some() || !self.rlimits.is_empty() {
            let parent = getpid();
            let nice = self.nice;
            let rlimits = std::mem::take(&mut self.rlimits);
            let death_signal = self.death_signal.map(Signal::to_rustix);
            let hook = move || -> io::Result<()> {
                // Only system calls from here on: this runs between fork and exec.
                if let Some(signal) = death_signal {
                    set_parent_process_death_signal(Some(signal))?;
                    // The parent may have died before the line above took effect.
                    if getppid() != Some(parent) {
                        return Err(Errno::SRCH.into());
                    }
                }
                if let Some(increment) = nice {
                    rustix::process::nice(increment)?;
                }
                for (resource, limit) in &rlimits {
                    setrlimit(*resource, *limit)?;
                }
                Ok(())
            };
            // SAFETY: the hook runs in the forked child before exec. It only makes system calls
            // (prctl, getppid, setpriority, setrlimit) through rustix, which neither allocate nor
            // take locks, and it builds its error from a raw errno, which does not allocate either.
            unsafe { self.command.pre_exec(hook) };
        }
        let child = self.command.spawn()?;
        let pidfd = Pid::from_raw(child.id() as i32)
            .and_then(|pid| pidfd_open(pid, PidfdFlags::empty()).ok());
        Ok(Child {
            inner: child,
            pidfd,
            status: None,
        })
    }
}

/// Which output stream a chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stream {
    /// The child's standard output.
    Stdout,
    /// The child's standard error.
    Stderr,
}

/// Limits for [`Child::communicate`].
#[derive(Debug, Clone)]
pub struct Supervision {
    timeout: Option<Duration>,
    grace: Duration,
    kill_leftovers: bool,
    /// The signals a timeout sends, each with the longest wait for the child before the next;
    /// `None`: `SIGTERM`, the grace period, `SIGKILL`.
    sequence: Option<Vec<(Signal, Duration)>>,
}

impl Default for Supervision {
    fn default() -> Self {
        Supervision {
            timeout: None,
            grace: DEFAULT_GRACE,
            kill_leftovers: true,
            sequence: None,
        }
    }
}

impl Supervision {
    /// After `timeout` from the call, the child's group gets `SIGTERM`, then `SIGKILL` after the
    /// grace period. `None` (the default) waits for ever.
    pub fn timeout(mut self, timeout: Option<Duration>) -> Self {
        self.timeout = timeout;
        self
    }

    /// Time between `SIGTERM` and `SIGKILL` (500 ms by default).
    pub fn grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// The signals a timeout sends to the child's group, in turn, each followed by up to its wait
    /// for the child to exit, instead of `SIGTERM`, the grace period and `SIGKILL`: GNU parallel's
    /// `--termseq`, whose default is `TERM` 200 ms, `TERM` 100 ms, `TERM` 50 ms, `KILL` 25 ms. A
    /// child that outlives a sequence without `SIGKILL` is waited for as if no timeout had fired;
    /// an empty sequence sends nothing.
    ///
    /// ```
    /// use std::time::Duration;
    /// use martelli::process::{Signal, Supervision};
    ///
    /// let ms = Duration::from_millis;
    /// let gentle = Supervision::default()
    ///     .timeout(Some(Duration::from_secs(60)))
    ///     .kill_sequence([(Signal::INT, ms(200)), (Signal::TERM, ms(100)), (Signal::KILL, ms(25))]);
    /// # drop(gentle);
    /// ```
    pub fn kill_sequence(mut self, steps: impl IntoIterator<Item = (Signal, Duration)>) -> Self {
        self.sequence = Some(steps.into_iter().collect());
        self
    }

    /// The `index`th step of the timeout's kill sequence.
    fn step(&self, index: usize) -> Option<(Signal, Duration)> {
        match &self.sequence {
            Some(steps) => steps.get(index).copied(),
            None => [(Signal::TERM, self.grace), (Signal::KILL, Duration::ZERO)]
                .get(index)
                .copied(),
        }
    }

    /// Whether processes left in the group when the child exits are killed (the default): the
    /// child's group is its job, and a job ends when its main process ends.
    pub fn kill_leftovers(mut self, kill: bool) -> Self {
        self.kill_leftovers = kill;
        self
    }
}

/// How a supervised child ended.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct Finished {
    /// Exit code or terminating signal of the child.
    pub status: ExitStatus,
    /// Whether the timeout fired (the child was then signalled).
    pub timed_out: bool,
    /// Whether processes were left in the group after the child exited and had to be killed.
    pub killed_leftovers: bool,
}

/// A running child that leads its own process group. See the [module docs](super).
///
/// Dropping a `Child` does not kill or reap it; call [`Child::kill_tree`] or a waiting method.
#[derive(Debug)]
pub struct Child {
    inner: std::process::Child,
    pidfd: Option<OwnedFd>,
    status: Option<ExitStatus>,
}

impl Child {
    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.inner.id()
    }

    /// The child's process group id (equal to its pid: it leads the group).
    pub fn pgid(&self) -> u32 {
        self.inner.id()
    }

    /// Sends `signal` to the child's whole process group.
    pub fn signal_group(&self, signal: Signal) -> io::Result<()> {
        signal_group(self.pgid(), signal)
    }

    /// Takes the child's stdin pipe, when it was asked for ([`Spawn::stdin_piped`]) and not taken
    /// yet. Dropping it closes the child's stdin.
    pub fn take_stdin(&mut self) -> Option<ChildStdin> {
        self.inner.stdin.take()
    }

    /// Takes the child's stdout pipe, when output is captured and it was not taken yet.
    pub fn take_stdout(&mut self) -> Option<ChildStdout> {
        self.inner.stdout.take()
    }

    /// Takes the child's stderr pipe, when output is captured and it was not taken yet.
    pub fn take_stderr(&mut self) -> Option<ChildStderr> {
        self.inner.stderr.take()
    }

    /// Waits for the child to exit and reaps it.
    pub fn wait(&mut self) -> io::Result<ExitStatus> {
        if let Some(status) = self.status {
            return Ok(status);
        }
        let status = self.inner.wait()?;
        self.status = Some(status);
        Ok(status)
    }

    /// Reaps the child if it has exited.
    pub fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        if self.status.is_none() {
            self.status = self.inner.try_wait()?;
        }
        Ok(self.status)
    }

    /// Kills the child's whole group as a tree: `SIGTERM`, up to `grace` for the child to exit,
    /// then `SIGKILL`; reaps the child and waits for the rest of the group to go.
    pub fn kill_tree(&mut self, grace: Duration) -> io::Result<ExitStatus> {
        if self.status.is_none() {
            self.signal_group(Signal::TERM)?;
            if !self.wait_exit_until(Instant::now() + grace)? {
                self.signal_group(Signal::KILL)?;
            }
        }
        let status = self.wait()?;
        self.clean_group(grace);
        Ok(status)
    }

    /// Reads the child's captured output into `sink` as it arrives, enforces the timeout of
    /// `supervision`, and reaps the child.
    ///
    /// Returns once the child has exited and the output it wrote is read. Output that processes
    /// left in the group write after the child exited is not waited for; those processes are
    /// killed unless [`Supervision::kill_leftovers`] says otherwise.
    pub fn communicate(
        &mut self,
        supervision: &Supervision,
        mut sink: impl FnMut(Stream, &[u8]),
    ) -> io::Result<Finished> {
        let mut stdout = self.inner.stdout.take();
        let mut stderr = self.inner.stderr.take();
        let mut buf = [0u8; 32 * 1024];
        // The next step of the kill sequence, and when it is due.
        let mut next_step = supervision.timeout.map(|t| (0, Instant::now() + t));
        let mut timed_out = false;
        loop {
            let exited = self.status.is_some();
            if exited && stdout.is_none() && stderr.is_none() {
                break;
            }
            let now = Instant::now();
            let wake = if exited {
                // Drain what the child left in the pipes, without waiting for more.
                Some(Duration::ZERO)
            } else {
                let deadline = next_step.map(|(_, at)| at.saturating_duration_since(now));
                match (&self.pidfd, deadline) {
                    (Some(_), d) => d,
                    (None, Some(d)) => Some(d.min(FALLBACK_TICK)),
                    (None, None) => Some(FALLBACK_TICK),
                }
            };
            let (out_ready, err_ready, child_ready) = {
                let mut fds = Vec::with_capacity(3);
                let readable = PollFlags::IN;
                if let Some(s) = &stdout {
                    fds.push(PollFd::new(s, readable));
                }
                if let Some(s) = &stderr {
                    fds.push(PollFd::new(s, readable));
                }
                if let (false, Some(pidfd)) = (exited, &self.pidfd) {
                    fds.push(PollFd::from_borrowed_fd(pidfd.as_fd(), readable));
                }
                let timeout = wake.map(|d| Timespec {
                    tv_sec: d.as_secs() as i64,
                    tv_nsec: i64::from(d.subsec_nanos()),
                });
                match poll(&mut fds, timeout.as_ref()) {
                    Ok(_) | Err(Errno::INTR) => {}
                    Err(e) => return Err(e.into()),
                }
                let mut ready = fds.iter().map(|fd| !fd.revents().is_empty());
                let out = stdout.is_some() && ready.next().unwrap_or(false);
                let err = stderr.is_some() && ready.next().unwrap_or(false);
                let child = ready.next().unwrap_or(false);
                (out, err, child)
            };
            if out_ready {
                read_chunk(&mut stdout, Stream::Stdout, &mut buf, &mut sink)?;
            }
            if err_ready {
                read_chunk(&mut stderr, Stream::Stderr, &mut buf, &mut sink)?;
            }
            if exited && !out_ready && !err_ready {
                break; // nothing more without waiting: the pipes are held by leftovers
            }
            if !exited && (child_ready || self.pidfd.is_none()) {
                self.try_wait()?;
            }
            if self.status.is_none() {
                let now = Instant::now();
                if let Some((index, _)) = next_step.filter(|&(_, at)| now >= at) {
                    timed_out = true;
                    next_step = match supervision.step(index) {
                        Some((signal, wait)) => {
                            self.signal_group(signal)?;
                            supervision.step(index + 1).map(|_| (index + 1, now + wait))
                        }
                        None => None,
                    };
                }
            }
        }
        drop((stdout, stderr));
        let status = self.wait()?;
        // A timeout's kill sequence goes on while the group has members: a shell that dies at the
        // first SIGTERM leaves its children to the next steps, as GNU parallel's `--termseq` does.
        if let Some((index, at)) = next_step.filter(|_| timed_out) {
            self.finish_sequence(supervision, index, at);
        }
        let killed_leftovers = supervision.kill_leftovers && self.clean_group(supervision.grace);
        Ok(Finished {
            status,
            timed_out,
            killed_leftovers,
        })
    }

    /// The rest of a timeout's kill sequence, from step `index` due at `at`, sent to the group
    /// (its leader reaped) while it has members.
    fn finish_sequence(&self, supervision: &Supervision, mut index: usize, mut at: Instant) {
        let pgid = self.pgid();
        loop {
            reap_adopted(pgid);
            if !group::group_alive(pgid) {
                return;
            }
            let now = Instant::now();
            if now < at {
                std::thread::sleep((at - now).min(Duration::from_millis(5)));
                continue;
            }
            let Some((signal, wait)) = supervision.step(index) else {
                return;
            };
            let _ = signal_group(pgid, signal);
            index += 1;
            // After the last step, its wait for the group to go.
            at = now + wait;
            if supervision.step(index).is_none() {
                while Instant::now() < at && group::group_alive(pgid) {
                    reap_adopted(pgid);
                    std::thread::sleep(Duration::from_millis(5));
                }
                return;
            }
        }
    }

    /// Waits for the child to exit until `deadline`; returns whether it did (and reaps it).
    fn wait_exit_until(&mut self, deadline: Instant) -> io::Result<bool> {
        loop {
            if self.try_wait()?.is_some() {
                return Ok(true);
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(false);
            }
            let left = deadline - now;
            match &self.pidfd {
                Some(pidfd) => {
                    let mut fds = [PollFd::from_borrowed_fd(pidfd.as_fd(), PollFlags::IN)];
                    let timeout = Timespec {
                        tv_sec: left.as_secs() as i64,
                        tv_nsec: i64::from(left.subsec_nanos()),
                    };
                    match poll(&mut fds, Some(&timeout)) {
                        Ok(_) | Err(Errno::INTR) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                None => std::thread::sleep(left.min(FALLBACK_TICK)),
            }
        }
    }

    /// After the child is reaped: kills what is left of its group, and reaps any of those that
    /// were handed to this process (see [`become_subreaper`]). Returns whether anything was left.
    fn clean_group(&self, grace: Duration) -> bool {
        let pgid = self.pgid();
        reap_adopted(pgid);
        if !group::group_alive(pgid) {
            return false;
        }
        let _ = signal_group(pgid, Signal::TERM);
        let deadline = Instant::now() + grace;
        let mut emptied = false;
        while Instant::now() < deadline {
            reap_adopted(pgid);
            if !group::group_alive(pgid) {
                emptied = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        if !emptied {
            let _ = signal_group(pgid, Signal::KILL);
            // The killed processes may be our adopted children: reap them as they die.
            let deadline = Instant::now() + grace;
            while Instant::now() < deadline && group::group_alive(pgid) {
                reap_adopted(pgid);
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        true
    }
}

/// Reads one chunk from `pipe` into `sink`; closes the pipe at end of file.
fn read_chunk<R: Read>(
    pipe: &mut Option<R>,
    stream: Stream,
    buf: &mut [u8],
    sink: &mut impl FnMut(Stream, &[u8]),
) -> io::Result<()> {
    let Some(reader) = pipe else { return Ok(()) };
    match reader.read(buf) {
        Ok(0) => *pipe = None,
        Ok(n) => sink(stream, &buf[..n]),
        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
        Err(e) => return Err(e),
    }
    Ok(())
}

/// Reaps exited processes of group `pgid` that this process adopted as a subreaper.
///
/// Only called once the group's leader (our own child) has been reaped, so it never takes the
/// exit status a [`Child`] is waiting for.
fn reap_adopted(pgid: u32) {
    let Some(pid) = Pid::from_raw(pgid as i32) else {
        return;
    };
    while let Ok(Some(_)) = waitid(
        WaitId::Pgid(Some(pid)),
        WaitIdOptions::EXITED | WaitIdOptions::NOHANG,
    ) {}
}

/// Makes this process the reaper of its orphaned descendants (`PR_SET_CHILD_SUBREAPER`).
///
/// Processes that a supervised child leaves behind then become children of this process rather
/// than of init, so [`Child`] can reap them when it cleans up the child's group, and they never
/// linger as zombies of an init that does not reap (as in some containers).
pub fn become_subreaper() -> io::Result<()> {
    rustix::process::set_child_subreaper(Some(getpid())).map_err(Into::into)
}
