//! The helper processes the probe measures against.
//!
//! `martelli probe` re-executes its own binary as `martelli probe --child MODE ARGS…` whenever a row
//! needs a second process: an echo partner for ping-pong and IPC, an idle process whose memory is read,
//! a CPU worker for the speedup curve, and a fresh process for each memory-sensitive run, so that no
//! measurement inherits another's heap. Children talk over their stdin and stdout only (pipes, a Unix
//! socket, or a memfd given as stdout), so no descriptor has to be inherited by number.

use super::ProbeError;
use super::workload::{self, IoKind};
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitCode, Stdio};

/// The hidden flag that turns `martelli probe` into a helper.
pub(crate) const CHILD_FLAG: &str = "--child";

/// Where the probe's own binary is, to re-execute it.
#[derive(Debug, Clone)]
pub(crate) struct Helper {
    exe: PathBuf,
}

impl Helper {
    pub(crate) fn new() -> Result<Helper, ProbeError> {
        let exe = std::env::current_exe().map_err(ProbeError::CurrentExe)?;
        Ok(Helper { exe })
    }

    /// A command that starts a helper in `mode` with `args`; stderr is inherited so that a helper's
    /// failure is seen.
    pub(crate) fn command(&self, mode: &str, args: &[String]) -> Command {
        let mut cmd = Command::new(&self.exe);
        cmd.arg("probe")
            .arg(CHILD_FLAG)
            .arg(mode)
            .args(args)
            .stderr(Stdio::inherit());
        cmd
    }

    /// Starts a helper whose stdin and stdout are pipes to this process.
    pub(crate) fn spawn_piped(&self, mode: &str, args: &[String]) -> Result<Piped, ProbeError> {
        let mut child = self
            .command(mode, args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| ProbeError::spawn(mode, e))?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(ProbeError::Measure(format!(
                "helper `{mode}` started without pipes"
            )));
        };
        Ok(Piped {
            child,
            stdin: Some(stdin),
            stdout: BufReader::new(stdout),
        })
    }

    /// Runs a helper to the end and parses the JSON line it prints.
    pub(crate) fn run_json<T: serde::de::DeserializeOwned>(
        &self,
        mode: &str,
        args: &[String],
    ) -> Result<T, ProbeError> {
        let out = self
            .command(mode, args)
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .map_err(|e| ProbeError::spawn(mode, e))?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            return Err(ProbeError::Measure(format!(
                "helper `{mode} {}` failed ({}): {}",
                args.join(" "),
                out.status,
                stderr.trim()
            )));
        }
        serde_json::from_slice(&out.stdout).map_err(|e| {
            ProbeError::Measure(format!(
                "helper `{mode}` printed something that is not its report: {e}"
            ))
        })
    }
}

/// A running helper with piped stdin and stdout. Dropping it closes stdin (the helper's signal to
/// exit) and reaps it.
#[derive(Debug)]
pub(crate) struct Piped {
    pub(crate) child: Child,
    pub(crate) stdin: Option<ChildStdin>,
    pub(crate) stdout: BufReader<ChildStdout>,
}

impl Piped {
    pub(crate) fn stdin(&mut self) -> io::Result<&mut ChildStdin> {
        self.stdin
            .as_mut()
            .ok_or_else(|| io::Error::new(io::ErrorKind::BrokenPipe, "helper stdin closed"))
    }

    /// Reads one line the helper wrote.
    pub(crate) fn read_line(&mut self) -> io::Result<String> {
        let mut line = String::new();
        if self.stdout.read_line(&mut line)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "helper exited before answering",
            ));
        }
        Ok(line)
    }
}

impl Drop for Piped {
    fn drop(&mut self) {
        drop(self.stdin.take());
        if self.child.wait().is_err() {
            let _ = self.child.kill();
        }
    }
}

/// Runs this process as a helper (`martelli probe --child MODE ARGS…`).
pub(crate) fn run(args: &[String]) -> Result<ExitCode, ProbeError> {
    let bad = || ProbeError::Measure(format!("unknown helper invocation: {}", args.join(" ")));
    let num = |i: usize| -> Result<u64, ProbeError> {
        args.get(i).and_then(|s| s.parse().ok()).ok_or_else(bad)
    };
    let mode = args.first().ok_or_else(bad)?;
    match mode.as_str() {
        "echo" => echo()?,
        "idle" => idle()?,
        "sink" => sink(usize::try_from(num(1)?).map_err(|_| bad())?)?,
        "shm" => shm(usize::try_from(num(1)?).map_err(|_| bad())?)?,
        "spin" => spin()?,
        "mem-threads" => print_json(&workload::idle_threads(num(1)?)?)?,
        "mem-async" => print_json(&workload::idle_async_tasks(num(1)?)?)?,
        "mem-event-loop" => print_json(&workload::idle_event_loop_tasks(num(1)?)?)?,
        "foreground" => {
            // `foreground KEY WINDOW_MS WORKERS`: one scenario, its latency as JSON (the
            // benchmark script runs the scenarios this way, beside Python's).
            let background = args
                .get(1)
                .and_then(|k| super::foreground::Background::from_key(k))
                .ok_or_else(bad)?;
            let window = std::time::Duration::from_millis(num(2)?);
            let mut samples = Vec::new();
            super::foreground::run_scenario(background, num(3)?, window, &mut samples)?;
            let latency = super::foreground::Latency::from_samples(&samples)
                .ok_or_else(|| ProbeError::Measure("no sleep was timed".into()))?;
            print_json(&latency)?
        }
        "io" => {
            let kind = match args.get(1).map(String::as_str) {
                Some("threads") => IoKind::Threads,
                Some("async") => IoKind::Async,
                _ => return Err(bad()),
            };
            print_json(&workload::io_run(kind, num(2)?, num(3)?)?)?
        }
        _ => return Err(bad()),
    }
    Ok(ExitCode::SUCCESS)
}

fn print_json(value: &impl serde::Serialize) -> Result<(), ProbeError> {
    let line = serde_json::to_string(value)
        .map_err(|e| ProbeError::Measure(format!("cannot encode a helper report: {e}")))?;
    println!("{line}");
    Ok(())
}

/// An unbuffered handle on one of this process's standard descriptors.
fn own(fd: std::os::fd::BorrowedFd<'_>) -> io::Result<File> {
    Ok(File::from(fd.try_clone_to_owned()?))
}

/// Ping-pong partner: answers every byte read with one byte, until end of input.
fn echo() -> io::Result<()> {
    let mut input = own(io::stdin().as_fd())?;
    let mut output = own(io::stdout().as_fd())?;
    let mut byte = [0u8; 1];
    loop {
        match input.read(&mut byte)? {
            0 => return Ok(()),
            _ => output.write_all(&byte)?,
        }
    }
}

/// An idle process: says it is ready, then waits for end of input.
fn idle() -> io::Result<()> {
    let mut output = own(io::stdout().as_fd())?;
    output.write_all(b"ready\n")?;
    let mut input = own(io::stdin().as_fd())?;
    let mut sink = [0u8; 64];
    while input.read(&mut sink)? > 0 {}
    Ok(())
}

/// IPC receiver: reads messages of `size` bytes from stdin and acknowledges each with one byte on
/// stdout (stdin and stdout may be the same socket).
fn sink(size: usize) -> io::Result<()> {
    let mut input = own(io::stdin().as_fd())?;
    let mut output = own(io::stdout().as_fd())?;
    let mut buf = vec![0u8; size];
    loop {
        match input.read_exact(&mut buf) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        }
        std::hint::black_box(&buf);
        output.write_all(b"k")?;
    }
}

/// Shared-memory receiver: stdout is a memfd of `size` bytes, stdin a socket that carries one-byte
/// doorbells. On each doorbell the message is copied out of the mapping and acknowledged.
fn shm(size: usize) -> Result<(), ProbeError> {
    let map = super::ipc::SharedMap::map(io::stdout().as_fd(), size)?;
    let mut bell = own(io::stdin().as_fd())?;
    let mut buf = vec![0u8; size];
    let mut byte = [0u8; 1];
    loop {
        if bell.read(&mut byte)? == 0 {
            return Ok(());
        }
        map.copy_out(&mut buf);
        std::hint::black_box(&buf);
        bell.write_all(b"k")?;
    }
}

/// CPU worker: says it is ready; then, for each line `N` on stdin, spins N work units and answers
/// `done`.
fn spin() -> io::Result<()> {
    let mut output = own(io::stdout().as_fd())?;
    output.write_all(b"ready\n")?;
    for line in io::stdin().lock().lines() {
        let units: u64 = line?.trim().parse().map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "spin helper expects a number per line",
            )
        })?;
        std::hint::black_box(workload::spin(units));
        output.write_all(b"done\n")?;
    }
    Ok(())
}
