//! `martelli run`: a GNU-parallel-compatible command runner.
//!
//! The flow follows ripgrep's: [`args`] parses the command line (clap for the options, by hand for
//! GNU parallel's `:::` sources), [`config`] validates it into a [`config::Config`], and
//! [`engine`] runs the jobs. Every job runs as a supervised process group through
//! [`martelli::process`], the same machinery the process pool uses; with `--cluster URL`, [`remote`]
//! sends each job instead to the workers of a cluster queue as a shell-command task, and the engine
//! treats its result as it would a local job's.
//!
//! Exit status, as GNU parallel's: 0 when every job succeeded; otherwise the number of failed jobs,
//! at most 101; with `--halt`, the exit status of the job that triggered it (0 for `success`); 255
//! for errors of `martelli run` itself; 128 + the signal number when interrupted (130 for Ctrl-C).

mod args;
mod builtins;
mod columns;
mod config;
mod engine;
#[cfg(test)]
mod fuzz;
mod gnu;
mod input;
mod joblog;
mod limits;
mod multi;
mod output;
mod perl;
mod pipe;
mod remote;
mod template;

use std::ffi::{OsStr, OsString};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::process::ExitCode;

/// Exit status for errors of `martelli run` itself.
pub(crate) const EXIT_OWN_ERROR: u8 = 255;

/// Errors of `martelli run` itself (not of its jobs). Each message says what to change.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RunError {
    /// A bad command line.
    #[error("{0}")]
    Usage(String),
    /// An input file could not be read.
    #[error("cannot read arguments from '{}': {source}; check that the file exists and is readable", path.display())]
    Input {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The joblog could not be read, parsed or written.
    #[error("joblog '{}': {message}", path.display())]
    Joblog { path: PathBuf, message: String },
    /// `--results` could not be written.
    #[error("cannot write results under '{}': {source}; check that the directory is writable", path.display())]
    Results {
        path: PathBuf,
        source: std::io::Error,
    },
    /// `--cluster`: the broker could not be used.
    #[error("--cluster: {0}")]
    Cluster(#[from] martelli::cluster::ClusterError),
    /// A perl expression died, or the perl process that evaluates them failed.
    #[error("{0}")]
    Perl(String),
    /// Anything else the runner needs from the system.
    #[error("{what}: {source}")]
    System {
        what: &'static str,
        source: std::io::Error,
    },
}

/// Runs `martelli run` with the arguments after `run`.
pub(crate) fn main(args: Vec<OsString>) -> ExitCode {
    match try_main(args) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            let _ = writeln!(std::io::stderr().lock(), "martelli run: error: {e}");
            ExitCode::from(EXIT_OWN_ERROR)
        }
    }
}

/// The number of CPUs this process may run on, as GNU parallel counts cores for `-j`. (Cheaper at
/// start-up than `available_parallelism`, which also reads cgroup files.)
fn cores() -> usize {
    rustix::thread::sched_getaffinity(None)
        .map(|set| set.count() as usize)
        .ok()
        .filter(|&n| n > 0)
        .or_else(|| std::thread::available_parallelism().map(usize::from).ok())
        .unwrap_or(1)
}

/// Whether `word` is the rest of a `#!` line naming `martelli run --shebang…` (or `--hashbang`,
/// `--shebang-wrap`), which Linux passes as one word.
pub(crate) fn is_shebang_line(word: &OsStr) -> bool {
    let word = word.as_bytes();
    [&b"run --shebang"[..], b"run --hashbang"]
        .iter()
        .any(|prefix| word.starts_with(prefix))
}

/// The words of a `#!` line after `martelli` and `run`, and the mark of their end.
pub(crate) fn shebang_words(line: &OsStr) -> impl Iterator<Item = OsString> + '_ {
    line.as_bytes()
        .split(u8::is_ascii_whitespace)
        .filter(|w| !w.is_empty())
        .skip(1)
        .map(|w| OsStr::from_bytes(w).to_owned())
        .chain(std::iter::once(OsString::from(gnu::SHEBANG_END)))
}

fn try_main(args: Vec<OsString>) -> Result<u8, RunError> {
    let args = gnu::shebang(args)?;
    let parsed = match args::parse(args)? {
        args::Request::Help(text) => {
            let _ = write!(std::io::stdout().lock(), "{text}");
            return Ok(0);
        }
        args::Request::Run(parsed) => *parsed,
    };
    let cores = cores();
    let config = config::validate(parsed, cores)?;
    engine::run(config)
}
