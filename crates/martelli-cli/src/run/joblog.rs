//! The joblog, in GNU parallel's tab-separated format, and `--resume` from it.
//!
//! ```text
//! Seq<TAB>Host<TAB>Starttime<TAB>JobRuntime<TAB>Send<TAB>Receive<TAB>Exitval<TAB>Signal<TAB>Command
//! 1<TAB>:<TAB>1795657432.926<TAB>     0.003<TAB>0<TAB>2<TAB>0<TAB>0<TAB>echo a
//! ```
//!
//! Host is `:` (this machine), or the worker's host for `run --cluster`; Send is 0; Receive is the number of bytes the job wrote to stdout;
//! Exitval is -1 for a job killed by `--timeout`.

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use super::RunError;
use super::config::Resume;
use super::output::Outcome;

const HEADER: &str = "Seq\tHost\tStarttime\tJobRuntime\tSend\tReceive\tExitval\tSignal\tCommand\n";

/// An open joblog.
#[derive(Debug)]
pub(crate) struct Joblog {
    file: File,
    path: PathBuf,
}

impl Joblog {
    /// Opens the joblog: truncated with a fresh header, or appended to when resuming.
    /// Returns the job numbers to skip.
    pub(crate) fn open(path: &Path, resume: Resume) -> Result<(Joblog, HashSet<u64>), RunError> {
        let err = |message: String| RunError::Joblog {
            path: path.to_owned(),
            message,
        };
        let skip = match resume {
            Resume::No => HashSet::new(),
            _ => match File::open(path) {
                Ok(file) => read_skip(BufReader::new(file), resume).map_err(err)?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => HashSet::new(),
                Err(e) => return Err(err(format!("{e}; check that it is readable"))),
            },
        };
        let mut options = OpenOptions::new();
        if resume == Resume::No {
            options.write(true).create(true).truncate(true);
        } else {
            options.append(true).create(true);
        }
        let mut file = options.open(path).map_err(|e| {
            err(format!(
                "{e}; check that its directory exists and is writable"
            ))
        })?;
        let empty = file.metadata().map(|m| m.len() == 0).unwrap_or(true);
        if empty {
            file.write_all(HEADER.as_bytes())
                .map_err(|e| err(e.to_string()))?;
        }
        Ok((
            Joblog {
                file,
                path: path.to_owned(),
            },
            skip,
        ))
    }

    /// Appends one finished job (one `write` per line, so an interrupted run keeps whole lines).
    pub(crate) fn record(&mut self, outcome: &Outcome) -> Result<(), RunError> {
        let line = format_line(outcome);
        self.file.write_all(&line).map_err(|e| RunError::Joblog {
            path: self.path.clone(),
            message: e.to_string(),
        })
    }
}

/// One joblog line.
pub(crate) fn format_line(o: &Outcome) -> Vec<u8> {
    let start = o
        .start
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64();
    // A host name never holds a tab or a newline; replaced all the same, so a line stays a line.
    let host = o
        .host
        .as_deref()
        .map_or_else(|| ":".to_owned(), |h| h.replace(['\t', '\n'], " "));
    let mut line = format!(
        "{}\t{host}\t{:.3}\t{:10.3}\t0\t{}\t{}\t{}\t",
        o.seq,
        start,
        o.runtime.as_secs_f64(),
        o.stdout_bytes,
        o.exitval(),
        o.signal
    )
    .into_bytes();
    line.extend_from_slice(&o.command);
    line.push(b'\n');
    line
}

/// The jobs `--retry-failed` runs again.
#[derive(Debug, Default)]
pub(crate) struct Failed {
    /// Job number and command of each job whose last entry failed, in job order.
    pub(crate) jobs: Vec<(u64, Vec<u8>)>,
    /// The highest job number the joblog holds.
    pub(crate) max_seq: u64,
}

/// `--retry-failed`: the jobs whose last entry in the joblog at `path` failed.
pub(crate) fn failed_commands(path: &Path) -> Result<Failed, RunError> {
    let err = |message: String| RunError::Joblog {
        path: path.to_owned(),
        message,
    };
    let file = File::open(path).map_err(|e| {
        err(format!(
            "{e}; --retry-failed reruns the failed jobs of an existing joblog"
        ))
    })?;
    let mut last: HashMap<u64, (bool, Vec<u8>)> = HashMap::new();
    for (n, line) in BufReader::new(file).split(b'\n').enumerate() {
        let line = line.map_err(|e| err(e.to_string()))?;
        if line.is_empty() || line.starts_with(b"Seq\t") {
            continue;
        }
        let (seq, ok, command) = parse_line(&line).ok_or_else(|| err(not_a_joblog_line(n)))?;
        last.insert(seq, (ok, command));
    }
    let max = last.keys().copied().max().unwrap_or(0);
    let mut failed: Vec<(u64, Vec<u8>)> = last
        .into_iter()
        .filter(|(_, (ok, _))| !ok)
        .map(|(seq, (_, command))| (seq, command))
        .collect();
    failed.sort_unstable();
    Ok(Failed {
        jobs: failed,
        max_seq: max,
    })
}

fn not_a_joblog_line(n: usize) -> String {
    format!(
        "line {} is not a joblog line (Seq, Host, Starttime, JobRuntime, Send, Receive, Exitval, Signal, Command); \
         give --joblog a joblog written by martelli run or GNU parallel",
        n + 1
    )
}

/// One joblog line: the job number, whether it succeeded, and its command.
fn parse_line(line: &[u8]) -> Option<(u64, bool, Vec<u8>)> {
    let fields: Vec<&[u8]> = line.splitn(9, |&b| b == b'\t').collect();
    let number = |i: usize| -> Option<i64> {
        std::str::from_utf8(fields.get(i)?)
            .ok()?
            .trim()
            .parse()
            .ok()
    };
    let (seq, exitval, signal) = (number(0)?, number(6)?, number(7)?);
    let seq = u64::try_from(seq).ok()?;
    Some((seq, exitval == 0 && signal == 0, fields.get(8)?.to_vec()))
}

/// Reads an earlier joblog: the jobs `--resume` skips (all logged), or `--resume-failed` skips
/// (those whose last entry succeeded).
fn read_skip(reader: impl BufRead, resume: Resume) -> Result<HashSet<u64>, String> {
    let mut last_ok: HashMap<u64, bool> = HashMap::new();
    for (n, line) in reader.split(b'\n').enumerate() {
        let line = line.map_err(|e| e.to_string())?;
        if line.is_empty() || line.starts_with(b"Seq\t") {
            continue;
        }
        let Some((seq, ok, _)) = parse_line(&line) else {
            return Err(not_a_joblog_line(n));
        };
        last_ok.insert(seq, ok);
    }
    Ok(last_ok
        .into_iter()
        .filter(|&(_, ok)| resume == Resume::Done || ok)
        .map(|(seq, _)| seq)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = "Seq\tHost\tStarttime\tJobRuntime\tSend\tReceive\tExitval\tSignal\tCommand\n\
        1\t:\t1.000\t     0.001\t0\t0\t0\t0\techo a\n\
        2\t:\t1.000\t     0.001\t0\t0\t3\t0\texit 3\n\
        3\t:\t1.000\t     0.001\t0\t0\t0\t9\tkill\n\
        2\t:\t2.000\t     0.001\t0\t0\t0\t0\texit 0\n";

    #[test]
    fn resume_skips_logged_jobs() {
        let skip = read_skip(LOG.as_bytes(), Resume::Done).unwrap();
        assert_eq!(skip, HashSet::from([1, 2, 3]));
    }

    #[test]
    fn resume_failed_skips_jobs_whose_last_run_succeeded() {
        let skip = read_skip(LOG.as_bytes(), Resume::Succeeded).unwrap();
        assert_eq!(skip, HashSet::from([1, 2]));
    }

    #[test]
    fn retry_failed_reads_the_failed_commands() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        std::fs::write(&path, LOG).unwrap();
        let failed = failed_commands(&path).unwrap();
        assert_eq!(failed.jobs, vec![(3, b"kill".to_vec())]);
        assert_eq!(failed.max_seq, 3);
        assert!(failed_commands(&dir.path().join("none")).is_err());
    }

    #[test]
    fn garbage_is_a_clear_error() {
        let e = read_skip("hello world\n".as_bytes(), Resume::Done).unwrap_err();
        assert!(e.contains("line 1"), "{e}");
    }
}
