//! `--pipe` and `--pipepart`: standard input (or a file) split into blocks of whole records, each
//! block the stdin of one job, as GNU parallel does.
//!
//! The input is streamed: a block is read when a job slot is free to take it, so `martelli run`
//! holds at most one block per running job plus the part of a record that straddles two reads,
//! never the whole input. The splitting follows GNU parallel's `spreadstdin`:
//!
//! - A block is read up to `--block` bytes (default 1M) and cut after the last record end
//!   (`--recend`, default a newline) that is followed by a record start (`--recstart`); the rest
//!   begins the next block. A record is never split: when a block holds no record boundary, the
//!   block size grows (×1.3 + 1, as GNU parallel's) until it does. At the end of the input, what is
//!   left is the last block.
//! - `--regexp`: `--recstart` and `--recend` are regular expressions.
//! - `-N n`: blocks of exactly n records; `-L n`: blocks of a multiple of n lines.
//! - `-N n` with `--regexp`: when the input does not begin with a record start, what comes before
//!   the first record is a block of its own, as in GNU parallel.
//! - `--header REGEXP`: the text at the start of the input that the regular expression matches
//!   (read a block at a time until it matches) is put before every block; `--header N` is N lines
//!   (`(.*\n)` N times, as GNU parallel rewrites it) and `--header :` one line.
//! - `--round-robin`: as many jobs as job slots, each fed blocks from the one input in turn for
//!   as long as it lasts (the order in which they get blocks is not promised).
//! - `--tee`: every job reads the whole input; the jobs are the arguments (`:::`), all running at
//!   once. One thread reads the input a block at a time and hands each block to every job (the
//!   slowest job sets the pace), so the input is never held whole either.
//! - `--pipepart -a FILE`: the file is cut into parts of at least `--block` bytes, each ending at
//!   the first record boundary after that (GNU's seek-based split, here read in order); a negative
//!   `--block -n` makes n parts per job slot, and `--pipepart` without `--block` makes 10.

use std::fs::File;
use std::io::{self, Read};
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};

use regex::bytes::Regex;

use super::RunError;
use super::input::{Args, Inputs};

/// The default `--block` of `--pipe`: 1 MiB.
pub(crate) const DEFAULT_BLOCK: u64 = 1 << 20;

/// The largest block (GNU parallel's 2 GiB − 1).
const MAX_BLOCK: usize = (1 << 31) - 1;

/// Where records start and end.
#[derive(Debug, Clone)]
pub(crate) enum Boundary {
    /// `--recend` followed by `--recstart`, fixed strings.
    Fixed { recend: Vec<u8>, recstart: Vec<u8> },
    /// `--regexp`: a regex whose first group is the record end (the cut is after it), followed by
    /// the record start.
    Regex(Regex),
}

impl Boundary {
    /// The cut positions (after a record end that a record start follows) in `buf`, from `from`.
    fn cuts(&self, buf: &[u8], from: usize) -> Vec<usize> {
        match self {
            Boundary::Fixed { recend, recstart } => {
                let pattern: Vec<u8> = [recend.as_slice(), recstart.as_slice()].concat();
                if pattern.is_empty() {
                    return vec![buf.len()];
                }
                let mut out = Vec::new();
                let mut i = from;
                while let Some(p) = find(&buf[i..], &pattern) {
                    out.push(i + p + recend.len());
                    i += p + 1;
                }
                out
            }
            Boundary::Regex(re) => re
                .captures_iter(&buf[from..])
                .filter_map(|c| c.get(1).map(|m| from + m.end()))
                .collect(),
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || haystack.len() < needle.len() {
        return None;
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// `--pipe`/`--pipepart`, validated.
#[derive(Debug, Clone)]
pub(crate) struct PipeConfig {
    /// `--pipepart`: the file to split (`-a FILE` or `:::: FILE`).
    pub(crate) part: Option<PathBuf>,
    /// `--block` in bytes; negative: parts per job slot (`--pipepart`).
    pub(crate) block: i64,
    pub(crate) boundary: Boundary,
    /// `-N n`: n records per block.
    pub(crate) records: Option<usize>,
    /// `-L n`: a multiple of n lines per block.
    pub(crate) lines: Option<usize>,
    /// `--header`: what this regex matches at the start of the input goes before every block.
    pub(crate) header: Option<Regex>,
    /// `--regexp` with a `--recstart`: matches a record start at the beginning of the input (for
    /// `-N`, whose first block is what comes before the first record, if anything).
    pub(crate) starts_record: Option<Regex>,
    pub(crate) round_robin: bool,
    /// `--tee`: the whole input to every job.
    pub(crate) tee: bool,
}

/// The `--pipe` options as given.
#[derive(Debug)]
pub(crate) struct PipeOptions<'a> {
    pub(crate) pipe: bool,
    pub(crate) pipepart: bool,
    pub(crate) block: Option<&'a str>,
    pub(crate) recstart: Option<&'a str>,
    pub(crate) recend: Option<&'a str>,
    pub(crate) regexp: bool,
    pub(crate) round_robin: bool,
    pub(crate) tee: bool,
    pub(crate) header: Option<&'a str>,
    pub(crate) records: Option<&'a str>,
    pub(crate) lines: Option<&'a str>,
    pub(crate) files: Vec<PathBuf>,
}

/// `--block`: bytes with GNU parallel's suffixes (K M G T P powers of 1024, k m g t p of 1000).
pub(crate) fn parse_size(s: &str) -> Option<i64> {
    let (number, factor) = match s.chars().last()? {
        'K' => (&s[..s.len() - 1], 1024f64),
        'M' => (&s[..s.len() - 1], 1024f64.powi(2)),
        'G' => (&s[..s.len() - 1], 1024f64.powi(3)),
        'T' => (&s[..s.len() - 1], 1024f64.powi(4)),
        'P' => (&s[..s.len() - 1], 1024f64.powi(5)),
        'k' => (&s[..s.len() - 1], 1e3),
        'm' => (&s[..s.len() - 1], 1e6),
        'g' => (&s[..s.len() - 1], 1e9),
        't' => (&s[..s.len() - 1], 1e12),
        'p' => (&s[..s.len() - 1], 1e15),
        _ => (s, 1.0),
    };
    let n: f64 = number.parse().ok()?;
    let bytes = n * factor;
    (bytes.is_finite() && bytes.abs() < 9e18 && bytes != 0.0).then_some(bytes as i64)
}

/// Validates the options; `None` without `--pipe`/`--pipepart`.
pub(crate) fn config(o: &PipeOptions<'_>) -> Result<Option<PipeConfig>, RunError> {
    if !o.pipe && !o.pipepart {
        for (given, name) in [
            (o.block.is_some(), "--block"),
            (o.recstart.is_some(), "--recstart"),
            (o.recend.is_some(), "--recend"),
            (o.regexp, "--regexp"),
            (o.round_robin, "--round-robin"),
            (o.tee, "--tee"),
        ] {
            if given {
                return Err(RunError::Usage(format!(
                    "{name} splits standard input among jobs and needs --pipe (or --pipepart)"
                )));
            }
        }
        return Ok(None);
    }
    let block = match o.block {
        None if o.pipepart && !o.round_robin => -10,
        None if o.pipepart => -1,
        None => DEFAULT_BLOCK as i64,
        Some(s) => parse_size(s)
            .filter(|&b| b > 0 || o.pipepart)
            .ok_or_else(|| {
                RunError::Usage(format!(
                    "invalid --block '{s}': expected a size in bytes such as 1M, 512k or 4096 (negative, parts per job slot, only with --pipepart)"
                ))
            })?,
    };
    // As GNU parallel: the default is a newline at the end of a record; given alone, the other
    // side is empty.
    let (recstart, recend) = match (o.recstart, o.recend) {
        (None, None) => ("", "\n"),
        (Some(s), None) => (s, ""),
        (None, Some(e)) => ("", e),
        (Some(s), Some(e)) => (s, e),
    };
    let boundary = if o.regexp {
        let recend = if recend.is_empty() { "(?s:.)" } else { recend };
        let pattern = format!("(?ms)({recend})(?:{recstart})");
        Boundary::Regex(Regex::new(&pattern).map_err(|e| {
            RunError::Usage(format!(
                "invalid --recstart/--recend with --regexp: {e}; write them as regular expressions, or leave out --regexp for fixed strings"
            ))
        })?)
    } else {
        Boundary::Fixed {
            recend: recend.as_bytes().to_vec(),
            recstart: recstart.as_bytes().to_vec(),
        }
    };
    let count = |option: &str, v: &str| {
        v.parse::<usize>().ok().filter(|&n| n > 0).ok_or_else(|| {
            RunError::Usage(format!(
                "invalid {option} '{v}' with --pipe: expected a number of records, such as 100"
            ))
        })
    };
    let records = o.records.map(|v| count("-N", v)).transpose()?;
    let lines = o.lines.map(|v| count("-L", v)).transpose()?;
    let starts_record = match (o.regexp, o.recstart) {
        (true, Some(start)) if !start.is_empty() => {
            Some(Regex::new(&format!("(?ms)\\A(?:{start})")).map_err(|e| {
                RunError::Usage(format!(
                    "invalid --recstart '{start}' with --regexp: {e}; write it as a regular expression, or leave out --regexp for a fixed string"
                ))
            })?)
        }
        _ => None,
    };
    let header = match o.header {
        // "0" is false to GNU parallel: no header.
        None | Some("0") => None,
        Some(spec) => {
            // As GNU parallel: `:` is one line and a number N is N lines, written as a regex.
            let pattern = if spec == ":" {
                "(.*\n)".to_owned()
            } else if !spec.is_empty() && spec.bytes().all(|b| b.is_ascii_digit()) {
                let n: usize = spec.parse().map_err(|_| {
                    RunError::Usage(format!(
                        "invalid --header '{spec}' with --pipe: too many lines"
                    ))
                })?;
                "(.*\n)".repeat(n)
            } else {
                spec.to_owned()
            };
            // Perl matches bytes: `.` is any byte but a newline.
            Some(Regex::new(&format!("(?-u)\\A(?:{pattern})")).map_err(|e| {
                RunError::Usage(format!(
                    "invalid --header '{spec}' with --pipe: {e}; give a number of lines, `:` for one, or a regular expression that matches the header at the start of the input"
                ))
            })?)
        }
    };
    if o.tee && (o.round_robin || records.is_some() || lines.is_some() || header.is_some()) {
        return Err(RunError::Usage(
            "--tee gives the whole input to every job: it does not split it, so -N, -L, --header and --round-robin do not go with it".into(),
        ));
    }
    let part = if o.pipepart {
        match o.files.as_slice() {
            // --tee: the first file is the one every job reads; the others are arguments.
            [file, ..] if o.tee => Some(file.clone()),
            [file] => Some(file.clone()),
            _ => {
                return Err(RunError::Usage(
                    "--pipepart splits one file: give it with -a FILE or :::: FILE".into(),
                ));
            }
        }
    } else {
        None
    };
    Ok(Some(PipeConfig {
        part,
        block,
        boundary,
        records,
        lines,
        header,
        starts_record,
        round_robin: o.round_robin,
        tee: o.tee,
    }))
}

/// Reads the input and cuts it into blocks.
pub(crate) struct Splitter {
    reader: Box<dyn Read + Send>,
    config: PipeConfig,
    block: usize,
    buf: Vec<u8>,
    /// Blocks cut and not yet handed out.
    ready: std::collections::VecDeque<Vec<u8>>,
    header: Vec<u8>,
    eof: bool,
    done: bool,
    /// `--pipepart`: bytes handed out so far, and where the current part may end at the earliest.
    offset: usize,
    /// `-N` with `--regexp`: whether the start of the input was looked at for a record start.
    start_checked: bool,
}

impl std::fmt::Debug for Splitter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Splitter")
            .field("block", &self.block)
            .finish_non_exhaustive()
    }
}

impl Splitter {
    /// A splitter of stdin (`--pipe`) or of the file (`--pipepart`).
    pub(crate) fn open(config: PipeConfig, jobs: usize) -> Result<Splitter, RunError> {
        let (reader, block): (Box<dyn Read + Send>, usize) = match &config.part {
            Some(path) => {
                let file = File::open(path).map_err(|source| RunError::Input {
                    path: path.clone(),
                    source,
                })?;
                let size = file.metadata().map(|m| m.len()).unwrap_or(0);
                let block = if config.block < 0 {
                    // GNU parallel: 1 + size / slots / parts-per-slot.
                    1 + size / jobs.max(1) as u64 / config.block.unsigned_abs()
                } else {
                    config.block as u64
                };
                (Box::new(file), usize::try_from(block).unwrap_or(MAX_BLOCK))
            }
            None => (
                Box::new(io::stdin()),
                usize::try_from(config.block.max(1)).unwrap_or(MAX_BLOCK),
            ),
        };
        let mut splitter = Splitter {
            reader,
            block: block.clamp(1, MAX_BLOCK),
            config,
            buf: Vec::new(),
            ready: std::collections::VecDeque::new(),
            header: Vec::new(),
            eof: false,
            done: false,
            offset: 0,
            start_checked: false,
        };
        splitter.read_header().map_err(|source| RunError::Input {
            path: splitter.path(),
            source,
        })?;
        Ok(splitter)
    }

    fn path(&self) -> PathBuf {
        self.config.part.clone().unwrap_or_else(|| "-".into())
    }

    /// `--header`: reads a block at a time (one read each, as GNU parallel's `sysread`) until the
    /// header's regex matches at the start of what was read; the match is put before every block
    /// and the rest is the input. An input that ends first has no header.
    fn read_header(&mut self) -> io::Result<()> {
        let Some(re) = self.config.header.clone() else {
            return Ok(());
        };
        let mut chunk = vec![0u8; self.block.min(1 << 20)];
        loop {
            let n = match self.reader.read(&mut chunk) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if n == 0 {
                break;
            }
            self.buf.extend_from_slice(&chunk[..n]);
            if let Some(m) = re.find(&self.buf) {
                self.header = self.buf.drain(..m.end()).collect();
                break;
            }
        }
        self.offset = 0;
        Ok(())
    }

    /// Reads up to the next multiple of the block size (GNU's `read_block`); sets `eof`.
    fn read_block(&mut self) -> io::Result<()> {
        let mut want = self.block - self.buf.len() % self.block;
        while want > 0 {
            let start = self.buf.len();
            self.buf.resize(start + want, 0);
            let n = match self.reader.read(&mut self.buf[start..]) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => 0,
                Err(e) => {
                    self.buf.truncate(start);
                    return Err(e);
                }
            };
            self.buf.truncate(start + n);
            if n == 0 {
                self.eof = true;
                break;
            }
            want -= n;
        }
        Ok(())
    }

    fn emit(&mut self, len: usize) {
        let rest = self.buf.split_off(len);
        let block = std::mem::replace(&mut self.buf, rest);
        self.offset += block.len();
        if block.is_empty() {
            return;
        }
        if self.header.is_empty() {
            self.ready.push_back(block);
        } else {
            self.ready
                .push_back([self.header.as_slice(), &block].concat());
        }
    }

    /// Cuts what the buffer holds; returns whether anything was cut.
    fn cut(&mut self) -> bool {
        if self.config.part.is_some() {
            // --pipepart: a part ends at the first boundary at least a block after its start.
            let mut any = false;
            loop {
                if self.buf.len() < self.block {
                    return any;
                }
                let Some(&at) = self.config.boundary.cuts(&self.buf, self.block).first() else {
                    return any;
                };
                self.emit(at);
                any = true;
            }
        }
        if let Some(n) = self.config.lines {
            // A multiple of n lines.
            let newlines: Vec<usize> = self
                .buf
                .iter()
                .enumerate()
                .filter(|&(_, &b)| b == b'\n')
                .map(|(i, _)| i + 1)
                .collect();
            let whole = newlines.len() / n * n;
            if whole == 0 {
                return false;
            }
            self.emit(newlines[whole - 1]);
            return true;
        }
        if let Some(n) = self.config.records {
            let mut any = false;
            if !self.start_checked && !self.buf.is_empty() {
                // GNU's `pass_n_regexps`: what comes before the first record start is a block
                // of its own.
                self.start_checked = true;
                if let Some(start) = &self.config.starts_record
                    && !start.is_match(&self.buf)
                    && let Some(&at) = self.config.boundary.cuts(&self.buf, 0).first()
                    && at > 0
                    && at < self.buf.len()
                {
                    self.emit(at);
                    any = true;
                }
            }
            // Blocks of n records each.
            let cuts = self.config.boundary.cuts(&self.buf, 0);
            let ends: Vec<usize> = cuts
                .iter()
                .copied()
                .skip(n - 1)
                .step_by(n)
                .filter(|&c| c > 0 && c < self.buf.len())
                .collect();
            let mut done = 0;
            for end in &ends {
                self.emit(end - done);
                done = *end;
            }
            return any || !ends.is_empty();
        }
        // GNU's `pass`: at the end of the input, the rest is one block.
        if self.eof {
            return false;
        }
        match self
            .config
            .boundary
            .cuts(&self.buf, 0)
            .into_iter()
            .rfind(|&c| c > 0 && c <= self.buf.len())
        {
            Some(at) => {
                self.emit(at);
                true
            }
            None => false,
        }
    }

    /// The next block; `None` at the end of the input.
    pub(crate) fn next_block(&mut self) -> io::Result<Option<Vec<u8>>> {
        while self.ready.is_empty() && !self.done {
            if self.eof {
                let len = self.buf.len();
                self.emit(len);
                self.done = true;
                break;
            }
            self.read_block()?;
            let any = self.cut();
            if !any && !self.eof && self.config.part.is_none() {
                // No whole record in the block: the block grows, as GNU parallel's.
                let old = self.block;
                self.block = ((old as f64 * 1.3 + 1.0).ceil() as usize).min(MAX_BLOCK);
                eprintln!(
                    "martelli run: warning: a record was longer than {old} bytes; increasing --block to {}",
                    self.block
                );
            }
        }
        Ok(self.ready.pop_front())
    }
}

/// A job's standard input under `--pipe`.
#[derive(Debug, Clone)]
pub(crate) enum JobInput {
    /// One block.
    Block(Vec<u8>),
    /// `--round-robin`: blocks taken from the shared splitter until the input ends.
    Shared(Arc<Mutex<Splitter>>),
    /// `--pipe --tee`: the blocks the reading thread hands to this job (taken by the first run of
    /// the job; a retry reads nothing).
    Tee(Arc<Mutex<Option<Receiver<Block>>>>),
    /// `--pipepart --tee`: the whole file.
    File(PathBuf),
}

/// A block of input shared by the jobs of `--tee`.
type Block = Arc<Vec<u8>>;

/// `--tee`: the jobs' ends of the reading thread's channels, in the jobs' order.
#[derive(Debug)]
pub(crate) struct Tee {
    receivers: Mutex<std::collections::VecDeque<Receiver<Block>>>,
    part: Option<PathBuf>,
}

impl Tee {
    /// Starts the thread that reads standard input (`--pipe`) and hands every block to each of
    /// `jobs` jobs; with `--pipepart` each job reads the file itself.
    pub(crate) fn start(config: &PipeConfig, jobs: usize) -> Result<Tee, RunError> {
        if let Some(path) = &config.part {
            // Refuse a file that cannot be read before any job starts.
            File::open(path).map_err(|source| RunError::Input {
                path: path.clone(),
                source,
            })?;
            return Ok(Tee {
                receivers: Mutex::new(Default::default()),
                part: Some(path.clone()),
            });
        }
        // A few blocks in flight per job: the blocks are shared, so at most these few are held.
        const IN_FLIGHT: usize = 4;
        let (senders, receivers): (Vec<_>, std::collections::VecDeque<_>) =
            (0..jobs).map(|_| sync_channel(IN_FLIGHT)).unzip();
        let block = usize::try_from(config.block.max(1))
            .unwrap_or(MAX_BLOCK)
            .min(1 << 20);
        std::thread::Builder::new()
            .name("tee".into())
            .spawn(move || tee_stdin(io::stdin(), block, senders))
            .map_err(|source| RunError::System {
                what: "cannot start the thread that reads the input for --tee",
                source,
            })?;
        Ok(Tee {
            receivers: Mutex::new(receivers),
            part: None,
        })
    }

    /// The next job's input (jobs take them in their order).
    pub(crate) fn next_input(&self) -> JobInput {
        match &self.part {
            Some(path) => JobInput::File(path.clone()),
            None => {
                let receiver = self
                    .receivers
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .pop_front();
                JobInput::Tee(Arc::new(Mutex::new(receiver)))
            }
        }
    }
}

/// Reads `input` a block at a time and sends each block to every job still reading; ends at the
/// end of the input, or when no job reads any more.
fn tee_stdin(mut input: impl Read, block: usize, mut senders: Vec<SyncSender<Block>>) {
    loop {
        let mut buf = vec![0u8; block];
        let n = match input.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            // The jobs see the input end; the error cannot be told to them.
            Err(_) => return,
        };
        buf.truncate(n);
        let buf = Arc::new(buf);
        // A job that ended (or stopped reading) has dropped its end: it gets no more.
        senders.retain(|s| s.send(Arc::clone(&buf)).is_ok());
        if senders.is_empty() {
            return;
        }
    }
}

impl JobInput {
    /// Writes the input to the job's stdin, then closes it. A job that stops reading (or exits)
    /// ends the writing: the rest of its block is dropped, as GNU parallel does.
    pub(crate) fn feed(self, mut stdin: impl io::Write) {
        match self {
            JobInput::Block(block) => {
                let _ = stdin.write_all(&block);
            }
            JobInput::Shared(splitter) => loop {
                let block = match splitter.lock() {
                    Ok(mut s) => s.next_block(),
                    Err(e) => e.into_inner().next_block(),
                };
                match block {
                    Ok(Some(block)) => {
                        if stdin.write_all(&block).is_err() {
                            break;
                        }
                    }
                    _ => break,
                }
            },
            JobInput::Tee(receiver) => {
                let receiver = receiver.lock().unwrap_or_else(|e| e.into_inner()).take();
                if let Some(receiver) = receiver {
                    for block in receiver {
                        if stdin.write_all(&block).is_err() {
                            break;
                        }
                    }
                }
            }
            JobInput::File(path) => {
                if let Ok(mut file) = File::open(&path) {
                    let _ = io::copy(&mut file, &mut stdin);
                }
            }
        }
    }
}

/// The jobs' inputs: one job per block; with `--round-robin`, one per job slot, all reading the
/// same splitter (none when the input is empty). Each job's `Args` is empty: the engine takes its
/// input from [`PipeFeed`].
pub(crate) fn inputs(
    config: &PipeConfig,
    jobs: usize,
) -> Result<(Inputs, Arc<Mutex<Splitter>>), RunError> {
    let mut splitter = Splitter::open(config.clone(), jobs)?;
    let path = splitter.path();
    if config.round_robin {
        let first = splitter.next_block().map_err(|source| RunError::Input {
            path: path.clone(),
            source,
        })?;
        let count = if first.is_some() { jobs } else { 0 };
        if let Some(first) = first {
            splitter.ready.push_front(first);
        }
        let shared = Arc::new(Mutex::new(splitter));
        let iter = (0..count).map(|_| Ok(Vec::new()));
        return Ok((
            Inputs {
                iter: Box::new(iter),
                total: Some(count as u64),
            },
            shared,
        ));
    }
    let shared = Arc::new(Mutex::new(splitter));
    let reader = Arc::clone(&shared);
    let iter = std::iter::from_fn(move || {
        let mut s = reader.lock().unwrap_or_else(|e| e.into_inner());
        match s.next_block() {
            Ok(Some(block)) => Some(Ok::<Args, RunError>(vec![block])),
            Ok(None) => None,
            Err(source) => Some(Err(RunError::Input {
                path: path.clone(),
                source,
            })),
        }
    });
    Ok((
        Inputs {
            iter: Box::new(iter),
            total: None,
        },
        shared,
    ))
}

#[cfg(test)]
mod tests;
