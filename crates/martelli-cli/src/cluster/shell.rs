//! The shell-command task, `martelli.shell`: its payload ([`ShellTask`]), its result
//! ([`ShellResult`]), and how a worker runs it ([`ShellRunner`]).
//!
//! Both are MessagePack maps with named fields, documented in `docs/protocol.md` ("Shell-command
//! tasks") so that programs in other languages can submit commands. Byte strings (`argv`, `shell`,
//! `cwd`, `env`, `stdin`, `stdout`, `stderr`) are MessagePack `bin`; a reader also accepts `str`.
//!
//! A command is not a task failure: a command that exits non-zero, is killed, times out or cannot
//! start still gives an `ok` result that says so. Only a payload the worker cannot use (malformed,
//! neither `argv` nor `shell`) gives a `failed` result.
//!
//! A command is cancelled with its task: while it runs, a watcher thread waits on the current
//! task's [`CancelToken`] (which the worker fires when the task's tombstone appears) and kills the
//! command's process group when it fires (`SIGTERM`, then `SIGKILL` after the grace). The result
//! then says `cancelled`.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::pin::pin;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Wake, Waker};
use std::thread::{self, JoinHandle, Thread};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use martelli::process::{self, Guardian, Signal, Spawn, Stream, Supervision};
use martelli::{CancelToken, TaskFailure};
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

/// The task name workers register the shell-command task under.
pub(crate) const TASK: &str = "martelli.shell";

/// The default cap on each of a command's stdout and stderr kept in its result: 1 MiB.
pub(crate) const DEFAULT_MAX_OUTPUT: u64 = 1 << 20;

/// The default time between SIGTERM and SIGKILL when a command's deadline passes.
const DEFAULT_GRACE: Duration = Duration::from_millis(500);

/// The payload of a shell-command task.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct ShellTask {
    /// A program and its arguments, run without a shell (the program is looked up in `PATH`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) argv: Option<Vec<ByteBuf>>,
    /// A command line run with `/bin/sh -c`. Exactly one of `argv` and `shell` is given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) shell: Option<ByteBuf>,
    /// The working directory; the worker's own when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) cwd: Option<ByteBuf>,
    /// Variables added to (or replacing those of) the worker's environment.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) env: BTreeMap<ByteBuf, ByteBuf>,
    /// Bytes given to the command's stdin; an empty stdin when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) stdin: Option<ByteBuf>,
    /// Milliseconds after the start at which the command's process group is killed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) timeout_ms: Option<u64>,
    /// Milliseconds between SIGTERM and SIGKILL when the deadline passes (default 500).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) grace_ms: Option<u64>,
    /// A niceness increment for the command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) nice: Option<i32>,
    /// The most bytes of each of stdout and stderr to return (the worker's own cap wins when lower).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) max_output: Option<u64>,
}

/// The result of a shell-command task.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct ShellResult {
    /// The exit code; nil when the command was killed by a signal or could not start.
    #[serde(default)]
    pub(crate) code: Option<i32>,
    /// The signal that ended the command, nil if none.
    #[serde(default)]
    pub(crate) signal: Option<i32>,
    /// Whether the deadline passed and the command's group was killed.
    #[serde(default)]
    pub(crate) timed_out: bool,
    /// Whether the task was cancelled while the command ran and the command's group was killed.
    #[serde(default)]
    pub(crate) cancelled: bool,
    /// Why the command could not start (or could not be watched), nil when it ran.
    #[serde(default)]
    pub(crate) error: Option<String>,
    /// The first `max_output` bytes of stdout.
    #[serde(default)]
    pub(crate) stdout: ByteBuf,
    /// The first `max_output` bytes of stderr.
    #[serde(default)]
    pub(crate) stderr: ByteBuf,
    /// The bytes the command wrote to stdout in all.
    #[serde(default)]
    pub(crate) stdout_bytes: u64,
    /// The bytes the command wrote to stderr in all.
    #[serde(default)]
    pub(crate) stderr_bytes: u64,
    /// Whether `stdout` holds less than the command wrote.
    #[serde(default)]
    pub(crate) stdout_truncated: bool,
    /// Whether `stderr` holds less than the command wrote.
    #[serde(default)]
    pub(crate) stderr_truncated: bool,
    /// When the command started (Unix ms).
    #[serde(default)]
    pub(crate) started_ms: u64,
    /// How long it ran (microseconds).
    #[serde(default)]
    pub(crate) duration_us: u64,
    /// The worker's host (or `--name`).
    #[serde(default)]
    pub(crate) host: String,
    /// The worker's process id.
    #[serde(default)]
    pub(crate) pid: u32,
}

/// Output kept up to a cap, with the total counted.
#[derive(Debug, Default)]
struct Capped {
    kept: Vec<u8>,
    total: u64,
}

impl Capped {
    fn push(&mut self, bytes: &[u8], cap: u64) {
        self.total += bytes.len() as u64;
        let room =
            usize::try_from(cap.saturating_sub(self.kept.len() as u64)).unwrap_or(usize::MAX);
        self.kept.extend_from_slice(&bytes[..bytes.len().min(room)]);
    }
}

/// Runs shell-command tasks for a worker: each command in its own process group, watched by a
/// [`Guardian`] so that the group dies with the worker even when the worker is killed with SIGKILL.
#[derive(Debug)]
pub(crate) struct ShellRunner {
    host: String,
    max_output: u64,
    guardian: Option<Guardian>,
}

impl ShellRunner {
    pub(crate) fn new(host: String, max_output: u64, guardian: Option<Guardian>) -> ShellRunner {
        ShellRunner {
            host,
            max_output,
            guardian,
        }
    }

    /// Decodes a payload, runs the command, and encodes its result.
    pub(crate) fn run_payload(&self, payload: &[u8]) -> Result<Vec<u8>, TaskFailure> {
        let task: ShellTask = rmp_serde::from_slice(payload).map_err(|e| {
            TaskFailure::from_message(format!(
                "the {TASK} payload is not a MessagePack map of argv|shell, cwd, env, stdin, \
                 timeout_ms, grace_ms, nice, max_output: {e}"
            ))
        })?;
        let result = self.run(&task)?;
        rmp_serde::to_vec_named(&result).map_err(|e| {
            TaskFailure::from_message(format!("could not encode the command's result: {e}"))
        })
    }

    /// Runs one command to its end.
    pub(crate) fn run(&self, task: &ShellTask) -> Result<ShellResult, TaskFailure> {
        let spawn = match (&task.argv, &task.shell) {
            (Some(argv), None) if !argv.is_empty() => Spawn::new(OsStr::from_bytes(&argv[0]))
                .args(argv[1..].iter().map(|a| OsStr::from_bytes(a))),
            (None, Some(line)) => Spawn::shell(OsStr::from_bytes(line)),
            _ => {
                return Err(TaskFailure::from_message(format!(
                    "a {TASK} payload needs exactly one of `argv` (non-empty) and `shell`"
                )));
            }
        };
        let cap = task
            .max_output
            .map_or(self.max_output, |m| m.min(self.max_output));
        let grace = task.grace_ms.map_or(DEFAULT_GRACE, Duration::from_millis);
        let supervision = Supervision::default()
            .timeout(task.timeout_ms.map(Duration::from_millis))
            .grace(grace);
        let mut result = ShellResult {
            host: self.host.clone(),
            pid: std::process::id(),
            ..ShellResult::default()
        };
        // The guardian kills the group if this worker dies; without one, the parent-death signal
        // reaches at least the command's first process.
        let mut spawn = spawn.parent_death_signal(if self.guardian.is_some() {
            None
        } else {
            Some(martelli::process::Signal::KILL)
        });
        if let Some(n) = task.nice {
            spawn = spawn.nice(n);
        }
        let stdin_bytes = task.stdin.as_ref().filter(|b| !b.is_empty());
        let mut stdin_writer = None;
        {
            let command = spawn.command_mut();
            command.stdout(Stdio::piped()).stderr(Stdio::piped());
            if let Some(cwd) = &task.cwd {
                command.current_dir(OsStr::from_bytes(cwd));
            }
            for (key, value) in &task.env {
                command.env(OsStr::from_bytes(key), OsStr::from_bytes(value));
            }
            match stdin_bytes {
                Some(_) => {
                    let (read, write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
                        .map_err(|e| {
                        TaskFailure::from_message(format!("cannot make a pipe for stdin: {e}"))
                    })?;
                    command.stdin(Stdio::from(read));
                    stdin_writer = Some(std::fs::File::from(write));
                }
                None => {
                    command.stdin(Stdio::null());
                }
            }
        }
        let started = SystemTime::now();
        let clock = Instant::now();
        result.started_ms = started
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let mut child = match spawn.spawn() {
            Ok(child) => child,
            Err(e) => {
                let program = match (&task.argv, &task.shell) {
                    (Some(argv), _) => String::from_utf8_lossy(&argv[0]).into_owned(),
                    _ => "/bin/sh".to_owned(),
                };
                result.error = Some(match &task.cwd {
                    Some(cwd) => format!(
                        "cannot run '{program}' in directory '{}': {e}",
                        String::from_utf8_lossy(cwd)
                    ),
                    None => format!("cannot run '{program}': {e}"),
                });
                result.duration_us = micros(clock.elapsed());
                return Ok(result);
            }
        };
        if let Some(guardian) = &self.guardian {
            // Best effort: the guardian only refuses beyond its capacity (the worker's slots).
            let _ = guardian.watch(child.pgid());
        }
        // The command's stdin is written by a thread of its own, so that a command that writes
        // before it reads never deadlocks against us; a command that stops reading ends the write.
        let feeder = match (stdin_writer, stdin_bytes) {
            (Some(mut write), Some(bytes)) => {
                let bytes = bytes.to_vec();
                std::thread::Builder::new()
                    .name("martelli-shell-stdin".into())
                    .spawn(move || {
                        let _ = write.write_all(&bytes);
                    })
                    .ok()
            }
            _ => None,
        };
        let canceller = martelli::cancel_token()
            .and_then(|token| CancelWatch::start(token, child.pgid(), grace));
        let mut out = Capped::default();
        let mut err = Capped::default();
        let watched = child.communicate(&supervision, |stream, bytes| match stream {
            Stream::Stdout => out.push(bytes, cap),
            Stream::Stderr => err.push(bytes, cap),
        });
        match watched {
            Ok(done) => {
                result.code = done.status.code();
                result.signal = done.status.signal();
                result.timed_out = done.timed_out;
            }
            Err(e) => {
                let _ = child.kill_tree(grace);
                result.error = Some(format!("lost track of the command: {e}"));
            }
        }
        result.cancelled = canceller.is_some_and(CancelWatch::finish);
        if let Some(guardian) = &self.guardian {
            guardian.forget(child.pgid());
        }
        if let Some(feeder) = feeder {
            let _ = feeder.join();
        }
        result.duration_us = micros(clock.elapsed());
        result.stdout_truncated = out.total > out.kept.len() as u64;
        result.stderr_truncated = err.total > err.kept.len() as u64;
        result.stdout_bytes = out.total;
        result.stderr_bytes = err.total;
        result.stdout = ByteBuf::from(out.kept);
        result.stderr = ByteBuf::from(err.kept);
        Ok(result)
    }
}

/// Kills a command's process group when its task's token fires: `SIGTERM`, then `SIGKILL` after
/// the grace unless the command ended first. A thread of its own waits on the token (woken by it,
/// not polling) from the command's spawn until [`finish`](CancelWatch::finish), which the runner
/// calls once the command's leader is reaped.
///
/// The group is signalled only before `finish`: after the leader is reaped, its group id could in
/// principle be reused, but only once the group is empty, and the runner calls `finish` right
/// after.
struct CancelWatch {
    state: Arc<WatchState>,
    thread: JoinHandle<()>,
}

#[derive(Default)]
struct WatchState {
    /// Set by `finish`: the command has ended, never signal its group again.
    done: AtomicBool,
    /// Set by the watcher when the token fired and it signalled the group.
    fired: AtomicBool,
}

/// Wakes a parked thread: the waker the watcher gives the token.
struct Unpark(Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

impl CancelWatch {
    /// Starts watching `token` for the group `pgid`. `None` when no thread can be started: the
    /// command then runs without being cancellable, as it would outside a worker.
    fn start(token: CancelToken, pgid: u32, grace: Duration) -> Option<CancelWatch> {
        let state = Arc::new(WatchState::default());
        let watched = Arc::clone(&state);
        let thread = thread::Builder::new()
            .name("martelli-shell-cancel".into())
            .stack_size(64 * 1024)
            .spawn(move || watch(&token, pgid, grace, &watched))
            .ok()?;
        Some(CancelWatch { state, thread })
    }

    /// Stops watching (the command has ended); returns whether the token fired and the group was
    /// signalled.
    fn finish(self) -> bool {
        self.state.done.store(true, Ordering::Release);
        self.thread.thread().unpark();
        let _ = self.thread.join();
        self.state.fired.load(Ordering::Acquire)
    }
}

/// The watcher thread: parks until the token fires or the command ends; on a fired token, kills
/// the group as a tree.
fn watch(token: &CancelToken, pgid: u32, grace: Duration, state: &WatchState) {
    let waker = Waker::from(Arc::new(Unpark(thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut cancelled = pin!(token.cancelled());
    loop {
        if state.done.load(Ordering::Acquire) {
            return;
        }
        if cancelled.as_mut().poll(&mut cx).is_ready() {
            break;
        }
        thread::park();
    }
    state.fired.store(true, Ordering::Release);
    let _ = process::signal_group(pgid, Signal::TERM);
    let kill_at = Instant::now() + grace;
    loop {
        if state.done.load(Ordering::Acquire) {
            return;
        }
        let now = Instant::now();
        if now >= kill_at {
            break;
        }
        thread::park_timeout(kill_at - now);
    }
    let _ = process::signal_group(pgid, Signal::KILL);
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runner(cap: u64) -> ShellRunner {
        ShellRunner::new("here".into(), cap, None)
    }

    fn shell(line: &str) -> ShellTask {
        ShellTask {
            shell: Some(ByteBuf::from(line.as_bytes().to_vec())),
            ..ShellTask::default()
        }
    }

    #[test]
    fn runs_a_shell_line_with_env_cwd_and_stdin() {
        let mut task = shell("cd . && pwd && echo \"$GREETING\" && cat && echo oops >&2 && exit 3");
        task.cwd = Some(ByteBuf::from(b"/tmp".to_vec()));
        task.env.insert(
            ByteBuf::from(b"GREETING".to_vec()),
            ByteBuf::from(b"hi there".to_vec()),
        );
        task.stdin = Some(ByteBuf::from(b"from stdin\n".to_vec()));
        let r = runner(1 << 20).run(&task).unwrap();
        assert_eq!(r.code, Some(3));
        assert_eq!(r.signal, None);
        assert_eq!(&r.stdout[..], b"/tmp\nhi there\nfrom stdin\n");
        assert_eq!(&r.stderr[..], b"oops\n");
        assert_eq!(r.host, "here");
    }

    #[test]
    fn argv_runs_without_a_shell_and_a_missing_program_is_reported() {
        let task = ShellTask {
            argv: Some(vec![
                ByteBuf::from(b"printf".to_vec()),
                ByteBuf::from(b"%s|".to_vec()),
                ByteBuf::from(b"a b".to_vec()),
                ByteBuf::from(b"$HOME".to_vec()),
            ]),
            ..ShellTask::default()
        };
        let r = runner(1 << 20).run(&task).unwrap();
        assert_eq!(&r.stdout[..], b"a b|$HOME|");
        let missing = ShellTask {
            argv: Some(vec![ByteBuf::from(b"/no/such/program".to_vec())]),
            ..ShellTask::default()
        };
        let r = runner(1 << 20).run(&missing).unwrap();
        assert!(r.error.unwrap().contains("/no/such/program"));
        assert_eq!(r.code, None);
        let mut elsewhere = shell("true");
        elsewhere.cwd = Some(ByteBuf::from(b"/no/such/dir".to_vec()));
        let r = runner(1 << 20).run(&elsewhere).unwrap();
        let error = r.error.unwrap();
        assert!(error.contains("in directory '/no/such/dir'"), "{error}");
    }

    #[test]
    fn output_over_the_cap_is_truncated_and_counted() {
        let r = runner(10).run(&shell("printf 0123456789abcdef")).unwrap();
        assert_eq!(&r.stdout[..], b"0123456789");
        assert!(r.stdout_truncated);
        assert_eq!(r.stdout_bytes, 16);
        assert!(!r.stderr_truncated);
    }

    #[test]
    fn the_deadline_kills_the_whole_group() {
        let mut task = shell("sleep 30 & sleep 30; echo never");
        task.timeout_ms = Some(200);
        task.grace_ms = Some(100);
        let started = Instant::now();
        let r = runner(1 << 20).run(&task).unwrap();
        assert!(r.timed_out);
        assert_eq!(r.signal, Some(15));
        assert!(started.elapsed() < Duration::from_secs(10));
        assert!(r.stdout.is_empty());
    }

    #[test]
    fn cancelling_the_task_kills_the_commands_group() {
        // A martelli task on a thread pool: its token is the current token while it runs, as on a
        // cluster worker.
        let pool = martelli::Pool::threads(1).unwrap();
        let pid_file =
            std::env::temp_dir().join(format!("martelli-shell-cancel-{}", std::process::id()));
        let _ = std::fs::remove_file(&pid_file);
        let mut task = shell(&format!(
            "sleep 30 & echo $! > {}; wait",
            pid_file.display()
        ));
        task.grace_ms = Some(200);
        let running = pool.submit(move || runner(1 << 20).run(&task)).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let pid: u32 = loop {
            let read = std::fs::read_to_string(&pid_file).unwrap_or_default();
            if let Ok(pid) = read.trim().parse() {
                break pid;
            }
            assert!(Instant::now() < deadline, "the command never started");
            std::thread::sleep(Duration::from_millis(10));
        };
        let _ = std::fs::remove_file(&pid_file);
        let cancelled_at = Instant::now();
        assert!(
            !running.cancel(),
            "a running task is asked to stop, not removed"
        );
        let r = running.wait().unwrap().unwrap();
        assert!(cancelled_at.elapsed() < Duration::from_secs(10));
        assert!(r.cancelled, "{r:?}");
        assert!(!r.timed_out, "{r:?}");
        assert_eq!(r.signal, Some(15), "{r:?}");
        martelli_testkit::proc::wait_dead(
            pid,
            Duration::from_secs(5),
            "the command's background sleep, after the cancel",
        );
        // Outside a task nothing watches: the command runs to its end.
        let r = runner(100).run(&shell("true")).unwrap();
        assert!(!r.cancelled);
        assert_eq!(r.code, Some(0));
    }

    #[test]
    fn a_payload_without_a_command_is_a_task_failure() {
        let bytes = rmp_serde::to_vec_named(&ShellTask::default()).unwrap();
        let e = runner(10).run_payload(&bytes).unwrap_err();
        assert!(e.message().contains("exactly one of"), "{}", e.message());
        let e = runner(10).run_payload(b"\xc1").unwrap_err();
        assert!(
            e.message().contains("not a MessagePack map"),
            "{}",
            e.message()
        );
    }

    #[test]
    fn strings_are_accepted_where_bytes_are_expected() {
        #[derive(Serialize)]
        struct FromElsewhere<'a> {
            shell: &'a str,
            env: BTreeMap<&'a str, &'a str>,
        }
        let bytes = rmp_serde::to_vec_named(&FromElsewhere {
            shell: "echo hi $WHO",
            env: BTreeMap::from([("WHO", "there")]),
        })
        .unwrap();
        let out = runner(100).run_payload(&bytes).unwrap();
        let r: ShellResult = rmp_serde::from_slice(&out).unwrap();
        assert_eq!(&r.stdout[..], b"hi there\n");
        assert_eq!(r.code, Some(0));
    }
}
