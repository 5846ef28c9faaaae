//! Job outcomes and how their output is printed: grouped per job (whole, never interleaved),
//! in input order with `-k`, line by line with `--line-buffer`, tagged, as JSON Lines, and stored
//! under `--results`.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::RunError;
use super::columns::ColumnNames;
use super::input::Args;

/// How one job ended.
#[derive(Debug)]
pub(crate) struct Outcome {
    /// Position among the jobs started (for `-k`).
    pub(crate) order: u64,
    /// Job number (`{#}`).
    pub(crate) seq: u64,
    pub(crate) args: Args,
    /// The command as shown in the joblog.
    pub(crate) command: Vec<u8>,
    pub(crate) start: SystemTime,
    pub(crate) runtime: Duration,
    /// Exit code; `None` when killed by a signal or not started.
    pub(crate) code: Option<i32>,
    /// Terminating signal, 0 if none.
    pub(crate) signal: i32,
    pub(crate) timed_out: bool,
    /// Why the job could not start, if it could not.
    pub(crate) spawn_error: Option<String>,
    pub(crate) stdout: Vec<u8>,
    pub(crate) stderr: Vec<u8>,
    pub(crate) stdout_bytes: u64,
    /// Killed by `--halt now`: logged, not printed.
    pub(crate) suppressed: bool,
    /// The host that ran the job (`run --cluster`); `None` for this machine.
    pub(crate) host: Option<String>,
    /// What `--tag` or `--tagstring` puts before each output line, tab included.
    pub(crate) tag: Vec<u8>,
}

impl Outcome {
    pub(crate) fn failed(&self) -> bool {
        self.code != Some(0) || self.signal != 0 || self.timed_out
    }

    /// The joblog's Exitval: -1 for a timeout (as GNU parallel), 127 when the job could not
    /// start (as a shell), the exit code otherwise (0 when killed by a signal).
    pub(crate) fn exitval(&self) -> i32 {
        if self.timed_out {
            -1
        } else if self.spawn_error.is_some() {
            127
        } else {
            self.code.unwrap_or(0)
        }
    }

    /// The status a `--halt … fail` exit reports for this job.
    pub(crate) fn exit_status(&self) -> u8 {
        match (self.code, self.signal) {
            (Some(c), _) if c != 0 => u8::try_from(c & 0xff).unwrap_or(1),
            (_, s) if s != 0 => u8::try_from(128 + s).unwrap_or(1),
            _ if self.spawn_error.is_some() => 127,
            _ => 1,
        }
    }

    fn tag(&self) -> Vec<u8> {
        if !self.tag.is_empty() {
            return self.tag.clone();
        }
        let mut tag = self.args.join(&b' ');
        tag.push(b'\t');
        tag
    }
}

/// Writes `data` with `prefix` before every line (none when `prefix` is empty).
pub(crate) fn write_prefixed(w: &mut impl Write, prefix: &[u8], data: &[u8]) -> io::Result<()> {
    if prefix.is_empty() {
        return w.write_all(data);
    }
    for line in data.split_inclusive(|&b| b == b'\n') {
        w.write_all(prefix)?;
        w.write_all(line)?;
    }
    Ok(())
}

/// What the printer does with an outcome's captured output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Print {
    /// Output printed already (`--line-buffer`) or never captured (`-u`).
    Nothing,
    /// stdout to stdout, stderr to stderr, each job in one piece.
    Grouped { tag: bool },
    /// One JSON line per job.
    Json,
}

/// Prints outcomes on the main thread, in completion or input order.
#[derive(Debug)]
pub(crate) struct Printer {
    print: Print,
    keep_order: bool,
    pending: BTreeMap<u64, Outcome>,
    next: u64,
    results: Option<PathBuf>,
    /// `-v`: the command before the output.
    verbose: bool,
    /// `--files`: stdout goes to a file in this directory; its name is printed.
    files: Option<PathBuf>,
    /// `--results FILE.csv|FILE.tsv`: the table, once its header is written.
    table: Option<std::fs::File>,
    /// `--header`: names of the columns, for `--results`.
    names: ColumnNames,
}

impl Printer {
    pub(crate) fn new(print: Print, keep_order: bool, results: Option<PathBuf>) -> Self {
        Printer {
            print,
            keep_order,
            pending: BTreeMap::new(),
            next: 0,
            results,
            verbose: false,
            files: None,
            table: None,
            names: ColumnNames::default(),
        }
    }

    /// `--results FILE.csv|FILE.tsv`: stores the job's row (nothing for other `--results`).
    fn store_table(&mut self, o: &Outcome) -> Result<(), PrintError> {
        match self.results.as_deref().and_then(table_separator) {
            Some(sep) => self.store_row(sep, o).map_err(PrintError::Run),
            None => Ok(()),
        }
    }

    /// `--results FILE.csv` (or `.tsv`): appends the job's row, creating the file with GNU
    /// parallel's header for the first job.
    fn store_row(&mut self, sep: u8, o: &Outcome) -> Result<(), RunError> {
        let Some(path) = self.results.clone() else {
            return Ok(());
        };
        let err = |source| RunError::Results {
            path: path.clone(),
            source,
        };
        if self.table.is_none() {
            let mut file = std::fs::File::create(&path).map_err(err)?;
            let mut header: Vec<String> = [
                "Seq",
                "Host",
                "Starttime",
                "JobRuntime",
                "Send",
                "Receive",
                "Exitval",
                "Signal",
                "Command",
            ]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
            if self.names.from_lines {
                // As GNU parallel with --header: the columns' names.
                header.extend(
                    (1..=o.args.len())
                        .map(|i| String::from_utf8_lossy(&self.names.name(i)).into_owned()),
                );
            } else {
                header.extend((1..=o.args.len()).map(|i| format!("V{i}")));
            }
            header.extend(["Stdout".to_owned(), "Stderr".to_owned()]);
            let mut line = header.join(&(sep as char).to_string()).into_bytes();
            line.push(b'\n');
            file.write_all(&line).map_err(err)?;
            self.table = Some(file);
        }
        let start = o
            .start
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        let mut fields: Vec<Vec<u8>> = vec![
            o.seq.to_string().into_bytes(),
            o.host.clone().unwrap_or_else(|| ":".into()).into_bytes(),
            format!("{start:.3}").into_bytes(),
            format!("{:.3}", o.runtime.as_secs_f64()).into_bytes(),
            b"0".to_vec(),
            o.stdout_bytes.to_string().into_bytes(),
            o.exitval().to_string().into_bytes(),
            o.signal.to_string().into_bytes(),
            o.command.clone(),
        ];
        fields.extend(o.args.iter().cloned());
        fields.push(o.stdout.clone());
        fields.push(o.stderr.clone());
        let mut line = Vec::new();
        for (i, field) in fields.iter().enumerate() {
            if i > 0 {
                line.push(sep);
            }
            line.extend_from_slice(&table_field(field, sep));
        }
        line.push(b'\n');
        if let Some(file) = &mut self.table {
            file.write_all(&line).map_err(err)?;
        }
        Ok(())
    }

    /// `-v`: prints each job's command (tagged like its output) before its output.
    pub(crate) fn verbose(mut self, verbose: bool) -> Self {
        self.verbose = verbose;
        self
    }

    /// `--files DIR`: stores each job's stdout in a new file in DIR and prints the file's name.
    pub(crate) fn files(mut self, dir: Option<PathBuf>) -> Self {
        self.files = dir;
        self
    }

    /// `--header`: `--results` names directories (and table columns) by the columns' names.
    pub(crate) fn column_names(mut self, names: ColumnNames) -> Self {
        self.names = names;
        self
    }

    /// Takes one outcome; prints it and any outcomes it was holding back. `quiet` suppresses the
    /// output of jobs killed by `--halt now`. `around_stderr` wraps writes to stderr (to hide a
    /// progress bar meanwhile).
    pub(crate) fn push(
        &mut self,
        outcome: Outcome,
        quiet: bool,
        around_stderr: &dyn Fn(&mut dyn FnMut()),
    ) -> Result<(), PrintError> {
        if let Some(dir) = &self.results {
            if table_separator(dir).is_none() {
                store_results(dir, &outcome, &self.names).map_err(PrintError::Run)?;
            }
        }
        if !self.keep_order {
            self.store_table(&outcome)?;
            return self.print_one(&outcome, quiet, around_stderr);
        }
        self.pending.insert(outcome.order, outcome);
        while let Some(o) = self.pending.remove(&self.next) {
            self.next += 1;
            // A table's rows follow the order of the output: the input's with -k.
            self.store_table(&o)?;
            self.print_one(&o, quiet, around_stderr)?;
        }
        Ok(())
    }

    /// Prints what is still held back (after a halt or an interrupt left gaps in the order).
    pub(crate) fn flush(
        &mut self,
        around_stderr: &dyn Fn(&mut dyn FnMut()),
    ) -> Result<(), PrintError> {
        for (_, o) in std::mem::take(&mut self.pending) {
            self.store_table(&o)?;
            self.print_one(&o, false, around_stderr)?;
        }
        Ok(())
    }

    fn print_one(
        &self,
        o: &Outcome,
        quiet: bool,
        around_stderr: &dyn Fn(&mut dyn FnMut()),
    ) -> Result<(), PrintError> {
        if quiet {
            return Ok(());
        }
        match self.print {
            Print::Nothing => Ok(()),
            Print::Json => {
                let mut line = serde_json::to_vec(&json(o))
                    .map_err(|e| PrintError::Stdout(io::Error::other(e)))?;
                line.push(b'\n');
                io::stdout()
                    .lock()
                    .write_all(&line)
                    .map_err(PrintError::Stdout)
            }
            Print::Grouped { tag } => {
                let prefix = if tag { o.tag() } else { Vec::new() };
                let mut stdout = std::borrow::Cow::Borrowed(&o.stdout[..]);
                if let Some(dir) = &self.files {
                    let mut name = store_file(dir, &o.stdout).map_err(PrintError::Run)?;
                    name.push(b'\n');
                    stdout = std::borrow::Cow::Owned(name);
                } else if self.verbose {
                    let mut with = o.command.clone();
                    with.push(b'\n');
                    with.extend_from_slice(&o.stdout);
                    stdout = std::borrow::Cow::Owned(with);
                }
                if !stdout.is_empty() {
                    let mut out = io::stdout().lock();
                    write_prefixed(&mut out, &prefix, &stdout)
                        .and_then(|()| out.flush())
                        .map_err(PrintError::Stdout)?;
                }
                if !o.stderr.is_empty() {
                    around_stderr(&mut || {
                        // Hold the stdout lock too so that a job's two streams never interleave with
                        // another job's output on a shared terminal.
                        let _out = io::stdout().lock();
                        let _ = write_prefixed(&mut io::stderr().lock(), &prefix, &o.stderr);
                    });
                }
                Ok(())
            }
        }
    }
}

/// Printing failed: stdout went away (a closed pipe ends the run quietly) or results could not be
/// stored.
#[derive(Debug)]
pub(crate) enum PrintError {
    Stdout(io::Error),
    Run(RunError),
}

/// One `--json` line: `{"type":"job","data":{…}}`, the envelope leaving room for other kinds of
/// line later.
#[derive(Debug, serde::Serialize)]
struct JsonLine<'a> {
    r#type: &'static str,
    data: JsonJob<'a>,
}

/// The `data` of a `--json` line. Output that is not UTF-8 is shown with U+FFFD in its place.
#[derive(Debug, serde::Serialize)]
struct JsonJob<'a> {
    seq: u64,
    args: Vec<String>,
    command: String,
    exit_code: Option<i32>,
    signal: i32,
    timed_out: bool,
    /// Seconds since the Unix epoch.
    start: f64,
    /// Seconds.
    runtime: f64,
    stdout: String,
    stderr: String,
    error: Option<&'a str>,
    /// The worker's host, for a job run on a cluster.
    #[serde(skip_serializing_if = "Option::is_none")]
    host: Option<&'a str>,
}

fn json(o: &Outcome) -> JsonLine<'_> {
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    JsonLine {
        r#type: "job",
        data: JsonJob {
            seq: o.seq,
            args: o.args.iter().map(|a| text(a)).collect(),
            command: text(&o.command),
            exit_code: o.code,
            signal: o.signal,
            timed_out: o.timed_out,
            start: o
                .start
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs_f64(),
            runtime: o.runtime.as_secs_f64(),
            stdout: text(&o.stdout),
            stderr: text(&o.stderr),
            error: o.spawn_error.as_deref(),
            host: o.host.as_deref(),
        },
    }
}

/// `--results NAME.csv` writes a CSV table and `NAME.tsv` a tab-separated one, as GNU parallel
/// does; any other name is a directory tree.
fn table_separator(path: &Path) -> Option<u8> {
    match path.extension().and_then(|e| e.to_str()) {
        Some("csv") => Some(b','),
        Some("tsv") => Some(b'\t'),
        _ => None,
    }
}

/// One field of a `--results` table: in double quotes (a quote doubled) when it holds the
/// separator, a quote or a blank, as GNU parallel writes it.
fn table_field(field: &[u8], sep: u8) -> Vec<u8> {
    if !field
        .iter()
        .any(|&b| b == sep || b == b'"' || b.is_ascii_whitespace())
    {
        return field.to_vec();
    }
    let mut out = Vec::with_capacity(field.len() + 2);
    out.push(b'"');
    for &b in field {
        if b == b'"' {
            out.push(b'"');
        }
        out.push(b);
    }
    out.push(b'"');
    out
}

/// `--results DIR`: DIR/1/ARG1/2/ARG2/…/{stdout,stderr,seq}, with `\` written `\\` and `/`
/// written `\_` in arguments, as GNU parallel does. With `--header`, a column's name stands for
/// its number, and the columns go in the order of their names (numbers by value first), as GNU
/// parallel's `args_as_dirname`.
fn store_results(dir: &Path, o: &Outcome, names: &ColumnNames) -> Result<(), RunError> {
    use std::os::unix::ffi::OsStrExt;
    let mut columns: Vec<(Vec<u8>, &Vec<u8>)> = o
        .args
        .iter()
        .enumerate()
        .map(|(i, arg)| (names.name(i + 1), arg))
        .collect();
    // A stable sort, as perl's: numerically (a name that is no number counts as 0), then by bytes.
    columns.sort_by(|(a, _), (b, _)| {
        perl_number(a)
            .total_cmp(&perl_number(b))
            .then_with(|| a.cmp(b))
    });
    let mut path = dir.to_path_buf();
    for (name, arg) in columns {
        let mut escaped = Vec::with_capacity(arg.len());
        for &b in arg {
            match b {
                b'\\' => escaped.extend_from_slice(b"\\\\"),
                b'/' => escaped.extend_from_slice(b"\\_"),
                b'\t' => escaped.extend_from_slice(b"\\t"),
                0 => escaped.extend_from_slice(b"\\0"),
                _ => escaped.push(b),
            }
        }
        path.push(std::ffi::OsStr::from_bytes(&name));
        path.push(std::ffi::OsStr::from_bytes(&escaped));
    }
    let err = |source| RunError::Results {
        path: path.clone(),
        source,
    };
    std::fs::create_dir_all(&path).map_err(err)?;
    std::fs::write(path.join("stdout"), &o.stdout).map_err(err)?;
    std::fs::write(path.join("stderr"), &o.stderr).map_err(err)?;
    // GNU parallel writes the number without a newline.
    std::fs::write(path.join("seq"), o.seq.to_string()).map_err(err)?;
    Ok(())
}

/// A string's value as a number to perl: its leading decimal number (after blanks), else 0.
fn perl_number(s: &[u8]) -> f64 {
    let s = &s[s.iter().take_while(|b| b.is_ascii_whitespace()).count()..];
    let digits = |from: usize| s[from..].iter().take_while(|b| b.is_ascii_digit()).count();
    let mut end = usize::from(matches!(s.first(), Some(b'+' | b'-')));
    let whole = digits(end);
    end += whole;
    let mut fraction = 0;
    if s.get(end) == Some(&b'.') {
        fraction = digits(end + 1);
        if whole + fraction > 0 {
            end += 1 + fraction;
        }
    }
    if whole + fraction == 0 {
        return 0.0;
    }
    if matches!(s.get(end), Some(b'e' | b'E')) {
        let sign = usize::from(matches!(s.get(end + 1), Some(b'+' | b'-')));
        let exponent = digits(end + 1 + sign);
        if exponent > 0 {
            end += 1 + sign + exponent;
        }
    }
    std::str::from_utf8(&s[..end])
        .ok()
        .and_then(|t| t.parse::<f64>().ok())
        .filter(|n| n.is_finite())
        .unwrap_or(0.0)
}

/// `--files`: writes `data` to a new file `par…….par` in `dir` (as GNU parallel names them) and
/// returns its path.
fn store_file(dir: &Path, data: &[u8]) -> Result<Vec<u8>, RunError> {
    use std::os::unix::ffi::OsStrExt;
    const LETTERS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut last = None;
    for _ in 0..16 {
        let mut random = [0u8; 10];
        getrandom::fill(&mut random).map_err(|e| RunError::Results {
            path: dir.to_owned(),
            source: io::Error::other(e.to_string()),
        })?;
        let name: String = random
            .iter()
            .map(|b| LETTERS[usize::from(*b) % LETTERS.len()] as char)
            .collect();
        let path = dir.join(format!("par{name}.par"));
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(mut file) => {
                file.write_all(data).map_err(|source| RunError::Results {
                    path: path.clone(),
                    source,
                })?;
                return Ok(path.as_os_str().as_bytes().to_vec());
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
            Err(source) => return Err(RunError::Results { path, source }),
        }
    }
    Err(RunError::Results {
        path: dir.to_owned(),
        source: last.unwrap_or_else(|| io::Error::other("no free file name")),
    })
}

/// `--line-buffer`: passes complete lines on at once, holding a partial line until it ends.
#[derive(Debug)]
pub(crate) struct LineSink {
    prefix: Vec<u8>,
    partial: [Vec<u8>; 2],
}

impl LineSink {
    pub(crate) fn new(prefix: Vec<u8>) -> Self {
        LineSink {
            prefix,
            partial: [Vec::new(), Vec::new()],
        }
    }

    /// Takes a chunk of stream 0 (stdout) or 1 (stderr).
    pub(crate) fn push(&mut self, stream: usize, chunk: &[u8]) {
        let Some(last) = chunk.iter().rposition(|&b| b == b'\n') else {
            self.partial[stream].extend_from_slice(chunk);
            return;
        };
        let partial = std::mem::take(&mut self.partial[stream]);
        let mut lines = partial;
        lines.extend_from_slice(&chunk[..=last]);
        self.emit(stream, &lines);
        self.partial[stream].extend_from_slice(&chunk[last + 1..]);
    }

    /// Prints what is left of unterminated lines.
    pub(crate) fn finish(&mut self) {
        for stream in 0..2 {
            let rest = std::mem::take(&mut self.partial[stream]);
            if !rest.is_empty() {
                self.emit(stream, &rest);
            }
        }
    }

    fn emit(&self, stream: usize, data: &[u8]) {
        // A closed stdout is noticed by the printer; here output is best effort.
        if stream == 0 {
            let _ = write_prefixed(&mut io::stdout().lock(), &self.prefix, data);
        } else {
            let _ = write_prefixed(&mut io::stderr().lock(), &self.prefix, data);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_numbers_as_perl_reads_them() {
        assert_eq!(perl_number(b"12"), 12.0);
        assert_eq!(perl_number(b" 1a"), 1.0);
        assert_eq!(perl_number(b"-2.5e1x"), -25.0);
        assert_eq!(perl_number(b"f1"), 0.0);
        assert_eq!(perl_number(b"."), 0.0);
        assert_eq!(perl_number(b"inf"), 0.0);
    }
}
