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

/// The default `-s`: close to what GNU parallel finds on Linux (its probe of the longest line
/// `sh -c` accepts, 128 KiB, less the environment), and below the kernel's limit for one argument.
pub(crate) const DEFAULT_MAX_CHARS: usize = 130_000;

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
    let max_chars = match o.max_chars {
        None => DEFAULT_MAX_CHARS,
        Some(s) => match count("-s/--max-chars", s)? {
            0 => {
                return Err(RunError::Usage(
                    "invalid -s/--max-chars '0': a command line needs at least one byte".into(),
                ));
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
        spread: (o.context || o.multi) && !o.xargs,
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
