//! Several arguments per job: `-N`/`-n`/`--max-args`, `-X`, `-m`, `--xargs`, `-L`/`--max-lines`
//! and `-s`/`--max-chars`, as GNU parallel has them.
//!
//! The input sources give *records* (one argument per source). Without these options a job gets one
//! record. With them, a job gets several records, flattened into one list of arguments, so that
//! `{1}`…`{n}` name the first … n-th argument of the job, `{}` all of them (space-separated), and
//! arguments without a replacement string are all appended:
//!
//! - `-N n` / `-n n`: at most n records per job (fewer when the line would be longer than `-s`);
//!   `-N 0` reads one record per job and passes none. `-N` also turns context replace on (below),
//!   as in GNU parallel.
//! - `-m`, `--xargs`: as many records as fit in the command line (`-s`), at most `-n`/`-N` if given.
//!   With `-m`, when the whole input fits in the first command line, it is spread evenly over the
//!   job slots (`-j`), as GNU parallel does; `--xargs` never spreads.
//! - `-X`: as `-m`, and a word of the command holding `{}` (or `{.}`, `{/}`, …) is repeated for
//!   each argument with its context: `-X echo pre{}post ::: a b` runs `echo preapost prebpost`.
//! - `-L n`: n input lines per job (a line ending in a blank continues on the next line);
//!   implies `-X` unless `-m` or `--xargs` is given. `-L 0` reads one line and passes none.
//!   `-l[n]`/`--max-lines[=n]` is the same without `-X` (n is 1 when left out).
//! - `-s n`: a command line (as passed to the shell) is shorter than n bytes; a single record that
//!   does not fit is an error, as in GNU parallel ("Command line too long").

use super::RunError;
use super::input::{Args, Inputs};
use super::template::Template;

/// The longest command line a job may have by default (and at most), as GNU parallel computes it
/// (`parallel --show-limits`, "Maximal usable size of command"): half of what is left of the
/// longest line the system runs once 3,000 bytes are kept for wrapping (63,664 bytes on Linux
/// with 4 KiB pages).
///
/// GNU parallel finds the longest line by running `echo` with one argument of growing length:
/// lengths 324, 5,184, 82,944… (×16) until one fails, then a binary search between the last two
/// that stops within 1 % (so its figure is a little below the real limit: 130,329 on Linux). The
/// same search is run here on the system's limit instead of on `echo`, which gives GNU's figure
/// without starting a process.
pub(crate) fn default_max_chars() -> usize {
    let longest = gnu_find_max(|len| len <= longest_exec_line());
    longest.saturating_sub(3000) / 2
}

/// The longest line GNU parallel's probe would find accepted: its probe runs `/usr/bin/echo`
/// with one argument of `len - 1 - 13` bytes, in an environment of a few variables. On Linux one
/// argument may not be longer than 32 pages (`MAX_ARG_STRLEN`, the NUL included), and all of them
/// together not longer than a quarter of the stack limit.
fn longest_exec_line() -> usize {
    const ECHO: usize = "/usr/bin/echo".len();
    if cfg!(target_os = "linux") {
        let one_arg = 32 * rustix::param::page_size() - 1 + 1 + ECHO;
        let stack = rustix::process::getrlimit(rustix::process::Resource::Stack)
            .current
            .map_or(u64::MAX, |s| s / 4);
        // The kernel never allows less than 32 pages for all arguments; keep 4 KiB for the probe's
        // environment.
        let all = usize::try_from(stack)
            .unwrap_or(usize::MAX)
            .max(32 * rustix::param::page_size())
            .saturating_sub(4096);
        one_arg.min(all)
    } else {
        // No limit per argument: POSIX systems take at least 256 KiB of arguments (macOS takes
        // 1 MiB); keep 4 KiB for the environment.
        256 * 1024 - 4096
    }
}

/// GNU parallel's `find_max`: the longest accepted length, found by ×16 steps from 324 and then a
/// binary search that stops within 1 %.
fn gnu_find_max(accepted: impl Fn(usize) -> bool) -> usize {
    const UPPER: usize = 100_000_000;
    let mut len = 324;
    loop {
        if len > UPPER {
            return len;
        }
        len *= 16;
        if !accepted(len) {
            break;
        }
    }
    let (mut lower, mut upper) = (len / 16, len);
    loop {
        if lower == upper || lower + 1 == upper || lower as f64 / upper as f64 > 0.99 {
            return lower;
        }
        let middle = (upper - lower) / 2 + lower;
        if accepted(middle) {
            lower = middle;
        } else {
            upper = middle;
        }
    }
}

/// How many records a job takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Grouping {
    /// At most this many records per job; `None` means as many as fit.
    pub(crate) max_records: Option<usize>,
    /// Spread the input evenly over the slots when it ends with a line (`-m`, `-X`).
    pub(crate) spread: bool,
    /// Pass no argument (`-N 0`, `-L 0`): each job consumes one record.
    pub(crate) none: bool,
    /// A command line is shorter than this (`-s`).
    pub(crate) max_chars: usize,
    /// `-L`, `-l`: a line ending in a blank continues on the next line.
    pub(crate) continue_lines: bool,
}

/// The options of this module, as given on the command line.
#[derive(Debug, Default)]
pub(crate) struct MultiOptions<'a> {
    pub(crate) max_replace_args: Option<&'a str>,
    pub(crate) max_args: Option<&'a str>,
    pub(crate) context: bool,
    pub(crate) multi: bool,
    pub(crate) xargs: bool,
    /// `-L n`
    pub(crate) lines_upper: Option<&'a str>,
    /// `-l[n]`, `--max-lines[=n]`
    pub(crate) lines_lower: Option<&'a str>,
    pub(crate) max_chars: Option<&'a str>,
}

fn count(option: &str, value: &str) -> Result<usize, RunError> {
    value.parse::<usize>().map_err(|_| {
        RunError::Usage(format!(
            "invalid {option} '{value}': expected a whole number of arguments, such as 2"
        ))
    })
}

/// Validates the options; `None` when a job takes one record (the default). The bool says whether
/// the template must use context replacement (`-X`, `-N`, or `-L` without `-m`/`--xargs`, as in
/// GNU parallel).
pub(crate) fn grouping(o: &MultiOptions<'_>) -> Result<(Option<Grouping>, bool), RunError> {
    let usable = default_max_chars();
    let max_chars = match o.max_chars {
        None => usable,
        Some(s) => match count("-s/--max-chars", s)? {
            0 => {
                return Err(RunError::Usage(
                    "invalid -s/--max-chars '0': a command line needs at least one byte".into(),
                ));
            }
            n if n > usable => {
                // As GNU parallel: a warning, and the system's limit.
                eprintln!(
                    "martelli run: warning: -s/--max-chars {n} is above the longest command line \
                     this system takes ({usable} bytes, as GNU parallel computes it); using {usable}"
                );
                usable
            }
            n => n,
        },
    };
    let replace = o
        .max_replace_args
        .map(|s| count("-N/--max-replace-args", s))
        .transpose()?;
    let args = o.max_args.map(|s| count("-n/--max-args", s)).transpose()?;
    let upper = o.lines_upper.map(|s| count("-L", s)).transpose()?;
    // `-l` without a number, or with 0, is one line.
    let lower = o
        .lines_lower
        .map(|s| count("-l/--max-lines", s).map(|n| n.max(1)))
        .transpose()?;
    let lines = upper.or(lower);
    let multi = o.context || o.multi || o.xargs;
    let context = o.context || replace.is_some() || (upper.is_some() && !o.multi && !o.xargs);
    if !multi && replace.is_none() && args.is_none() && lines.is_none() && o.max_chars.is_none() {
        return Ok((None, false));
    }
    let max = replace.or(args).or(lines);
    let none = max == Some(0);
    let grouping = Grouping {
        max_records: match max {
            Some(0) => Some(1),
            Some(n) => Some(n),
            None if multi => None,
            None => Some(1),
        },
        // GNU parallel: -X or -m spread the arguments over the slots, --xargs beside them too.
        spread: o.context || o.multi,
        none,
        max_chars,
        continue_lines: lines.is_some(),
    };
    Ok((Some(grouping), context))
}

/// Groups the records of `inputs` into jobs' argument lists.
pub(crate) fn group(inputs: Inputs, grouping: Grouping, template: Template, jobs: usize) -> Inputs {
    let total = match (grouping.max_records, inputs.total) {
        (Some(n), Some(t)) if !grouping.spread && !grouping.continue_lines && n > 0 => {
            // Exact unless -s cuts a line short; then the count is a floor, which only the
            // progress display reads.
            Some(t.div_ceil(n as u64))
        }
        _ => None,
    };
    let records: Box<dyn Iterator<Item = Result<Args, RunError>> + Send> =
        if grouping.continue_lines {
            Box::new(Lines { inner: inputs.iter })
        } else {
            inputs.iter
        };
    Inputs {
        iter: Box::new(Grouper {
            records,
            pending: None,
            grouping,
            template,
            jobs: jobs.max(1),
            spread_done: false,
            spread: std::collections::VecDeque::new(),
            input_no: 0,
        }),
        total,
    }
}

/// `-L`, `-l`: a record (line) ending in a space or tab is continued by the next one.
struct Lines {
    inner: Box<dyn Iterator<Item = Result<Args, RunError>> + Send>,
}

impl Iterator for Lines {
    type Item = Result<Args, RunError>;

    fn next(&mut self) -> Option<Self::Item> {
        let mut record: Option<Args> = None;
        loop {
            let args = match self.inner.next() {
                None => return record.map(Ok),
                Some(Err(e)) => return Some(Err(e)),
                Some(Ok(args)) => args,
            };
            let merged = match record.take() {
                None => args,
                Some(mut head) => {
                    // One source: the line goes on; several: the records are kept side by side.
                    if let ([h], [a]) = (head.as_mut_slice(), args.as_slice()) {
                        h.extend_from_slice(a);
                    } else {
                        head.extend(args);
                    }
                    head
                }
            };
            let goes_on = merged
                .last()
                .is_some_and(|a| matches!(a.last(), Some(b' ' | b'\t')));
            if !goes_on {
                return Some(Ok(merged));
            }
            record = Some(merged);
        }
    }
}

/// Gathers records into jobs.
struct Grouper {
    records: Box<dyn Iterator<Item = Result<Args, RunError>> + Send>,
    pending: Option<Args>,
    grouping: Grouping,
    template: Template,
    jobs: usize,
    spread_done: bool,
    /// Jobs already cut by the spreading of the first line.
    spread: std::collections::VecDeque<Args>,
    /// Records read so far (for the error message).
    input_no: u64,
}

impl Grouper {
    fn next_record(&mut self) -> Option<Result<Args, RunError>> {
        if let Some(r) = self.pending.take() {
            return Some(Ok(r));
        }
        let r = self.records.next()?;
        if r.is_ok() {
            self.input_no += 1;
        }
        Some(r)
    }

    fn line_len(&self, args: &[Vec<u8>]) -> usize {
        self.template.compose(args, 1, 1).display().len()
    }
}

impl Iterator for Grouper {
    type Item = Result<Args, RunError>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(job) = self.spread.pop_front() {
            return Some(Ok(job));
        }
        let first = match self.next_record()? {
            Ok(r) => r,
            Err(e) => return Some(Err(e)),
        };
        let g = &self.grouping;
        if g.none {
            return Some(Ok(Vec::new()));
        }
        let limit = g.max_chars;
        let mut len = self.line_len(&first);
        if len >= limit {
            let shown: Vec<String> = first
                .iter()
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            return Some(Err(RunError::Usage(format!(
                "command line too long ({len} >= {limit}) at input {}: {}; raise -s/--max-chars or give shorter arguments",
                self.input_no.saturating_sub(1),
                shown.join(" ")
            ))));
        }
        // What one more record adds to the line: its rendering beside itself, less itself.
        let mut batch: Vec<Args> = vec![first];
        let max = g.max_records.unwrap_or(usize::MAX);
        let mut exhausted = false;
        while batch.len() < max {
            let record = match self.next_record() {
                None => {
                    exhausted = true;
                    break;
                }
                Some(Err(e)) => return Some(Err(e)),
                Some(Ok(r)) => r,
            };
            {
                let one = self.line_len(&record);
                let mut twice = record.clone();
                twice.extend(record.iter().cloned());
                let delta = self.line_len(&twice).saturating_sub(one);
                if len + delta >= limit {
                    self.pending = Some(record);
                    break;
                }
                len += delta;
            }
            batch.push(record);
        }
        if !exhausted && self.pending.is_none() {
            // GNU parallel looks whether the input has ended once a line is full, too.
            match self.next_record() {
                None => exhausted = true,
                Some(Err(e)) => return Some(Err(e)),
                Some(Ok(r)) => self.pending = Some(r),
            }
        }
        if exhausted && self.grouping.spread && !self.spread_done {
            // The input ended with this line: share it among the slots, once, as GNU parallel
            // does.
            self.spread_done = true;
            if batch.len() > 1 {
                let per_job = batch.len().div_ceil(self.jobs);
                let mut chunks = batch.chunks(per_job).map(|c| c.concat());
                let first_job = chunks.next().unwrap_or_default();
                self.spread.extend(chunks);
                return Some(Ok(first_job));
            }
        }
        Some(Ok(batch.concat()))
    }
}
