//! Validation: parsed options into a [`Config`] the engine can trust.

use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::time::Duration;

use martelli::process::Signal;

use super::RunError;
use super::args::{Parsed, Source};
use super::gnu;
use super::template::{Mode, Template, Tokens};

/// How job output reaches the terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OutputMode {
    /// Each job's output printed in one piece when it ends (the default).
    Group,
    /// Complete lines printed as they arrive.
    LineBuffer,
    /// Not captured: jobs inherit stdout and stderr.
    Ungroup,
    /// One JSON line per job on stdout.
    Json,
}

/// What a `--halt` condition counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HaltOn {
    Fail,
    Success,
    Done,
}

/// A threshold: a count of jobs, or a percentage of the finished ones.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Threshold {
    Count(u64),
    Percent(f64),
}

/// `--halt`: when to stop, and whether running jobs are killed (`now`) or finish (`soon`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Halt {
    pub(crate) now: bool,
    pub(crate) on: HaltOn,
    pub(crate) threshold: Threshold,
}

/// Progress display on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Progress {
    pub(crate) bar: bool,
    pub(crate) counts: bool,
    pub(crate) eta: bool,
}

impl Progress {
    pub(crate) fn any(self) -> bool {
        self.bar || self.counts || self.eta
    }
}

/// `--cluster`: where the jobs go.
#[derive(Debug, Clone)]
pub(crate) struct ClusterTarget {
    pub(crate) url: String,
    pub(crate) queue: String,
    pub(crate) prefix: String,
    pub(crate) tls_ca: Option<PathBuf>,
    /// `--countdown` or `--start-at`: when the jobs may start.
    pub(crate) start_at: Option<StartAt>,
    /// `--result-ttl`: keep each job's record this long after it ends.
    pub(crate) result_ttl: Option<Duration>,
}

/// When cluster jobs may start.
#[derive(Debug, Clone, Copy)]
pub(crate) enum StartAt {
    /// `--countdown`: this long after each job is sent.
    After(Duration),
    /// `--start-at`: at this time.
    At(std::time::SystemTime),
}

/// Everything the engine needs, checked.
#[derive(Debug)]
pub(crate) struct Config {
    pub(crate) jobs: usize,
    /// Whether `-j` was given (with `--cluster`, the default is the workers' slots).
    pub(crate) jobs_given: bool,
    /// `--cluster`: run the jobs on cluster workers.
    pub(crate) cluster: Option<ClusterTarget>,
    pub(crate) template: Template,
    pub(crate) sources: Vec<Source>,
    pub(crate) link: bool,
    pub(crate) separator: u8,
    pub(crate) output: OutputMode,
    pub(crate) keep_order: bool,
    pub(crate) tag: bool,
    pub(crate) results: Option<PathBuf>,
    pub(crate) timeout: Option<Duration>,
    pub(crate) grace: Duration,
    pub(crate) tries: u32,
    pub(crate) halt: Option<Halt>,
    pub(crate) delay: Option<Duration>,
    /// How a job is killed (`--timeout`, `--halt now`, `--memfree`, a second Ctrl-C): each signal
    /// sent to its process group, then up to its wait for the group to go.
    pub(crate) kill_sequence: Vec<(Signal, Duration)>,
    /// `--timeout N%`: kill a job that runs longer than N % of the median runtime of the jobs that
    /// succeeded so far (as a fraction: 2.0 for 200 %).
    pub(crate) timeout_percent: Option<f64>,
    /// `--delay …auto`: the delay grows by 30 % after a failed job and shrinks by 10 % after one
    /// that succeeded, as in GNU parallel.
    pub(crate) delay_auto: bool,
    /// `--load`, `--memfree`, `--noswap`: start jobs only while the machine has room.
    pub(crate) limits: super::limits::Limits,
    pub(crate) nice: Option<i32>,
    pub(crate) dry_run: bool,
    pub(crate) joblog: Option<PathBuf>,
    pub(crate) resume: Resume,
    pub(crate) progress: Progress,
    /// `-v`: print each job's command before its output.
    pub(crate) verbose: bool,
    /// `-t`, `--verbose`: print each job's command on stderr as it starts.
    pub(crate) verbose_stderr: bool,
    /// `--tagstring`: the tag's template (the arguments when `None`).
    pub(crate) tagstring: Option<Template>,
    /// `-E`: an input source ends at this argument.
    pub(crate) eof: Option<Vec<u8>>,
    /// `-r`: skip jobs whose arguments are all blank.
    pub(crate) skip_empty: bool,
    /// `--cat`: each job's block in a temporary file in this directory, named by `{}`.
    pub(crate) cat: Option<PathBuf>,
    /// `--skip-first-line`: the first input source's first line is left out.
    pub(crate) skip_first_line: bool,
    pub(crate) trim: Trim,
    /// `--shuf`: run the jobs in a random order.
    pub(crate) shuf: bool,
    /// `--files`: store each job's stdout in a file in this directory and print the file's name.
    pub(crate) files: Option<PathBuf>,
    /// `--shellquote`: print the arguments quoted; run nothing.
    pub(crate) shellquote: bool,
    /// `--retry-failed`: the jobs are the failed commands of the joblog.
    pub(crate) retry_failed: bool,
    /// `--process-slot-var NAME`: set NAME to the slot number in each job.
    pub(crate) process_slot_var: Option<String>,
    /// The shell jobs run in (GNU parallel's rule, [`gnu::shell`]).
    pub(crate) shell: PathBuf,
    /// Functions bash exports: a line starting with one is never run without the shell.
    pub(crate) functions: Vec<Vec<u8>>,
    /// Builtins whose lines may run as the system's program of the same name (`builtins`).
    pub(crate) shell_free: super::builtins::ShellFree,
    /// Several arguments per job (`-N`, `-X`, `-m`, …); `None`: one record per job.
    pub(crate) grouping: Option<super::multi::Grouping>,
    /// `--colsep`, `--csv`, `--header`: how arguments are split into columns.
    pub(crate) columns: Option<super::columns::Columns>,
    /// `--header`: the columns' names (for `--results`).
    pub(crate) column_names: super::columns::ColumnNames,
    /// `--pipe`/`--pipepart`: jobs read blocks of the input on stdin.
    pub(crate) pipe: Option<super::pipe::PipeConfig>,
}

/// `--trim`: which ends of each argument lose their blanks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Trim {
    pub(crate) left: bool,
    pub(crate) right: bool,
}

impl Trim {
    pub(crate) fn apply(self, mut arg: &[u8]) -> &[u8] {
        // Perl's \s: space, \t, \n, \r, \f, \v.
        let blank = |b: &u8| b" \t\n\r\x0c\x0b".contains(b);
        if self.left {
            while arg.first().is_some_and(blank) {
                arg = &arg[1..];
            }
        }
        if self.right {
            while arg.last().is_some_and(blank) {
                arg = &arg[..arg.len() - 1];
            }
        }
        arg
    }

    pub(crate) fn any(self) -> bool {
        self.left || self.right
    }
}

/// Which jobs of an earlier run the joblog lets us skip.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Resume {
    No,
    /// `--resume`: every job in the log.
    Done,
    /// `--resume-failed`: the jobs that succeeded.
    Succeeded,
}

/// Checks the parsed command line.
pub(crate) fn validate(parsed: Parsed, cores: usize) -> Result<Config, RunError> {
    let o = parsed.options;
    let mut words: Vec<Vec<u8>> = o.command.iter().map(|w| w.as_bytes().to_vec()).collect();
    for name in &o.env {
        // Jobs inherit the whole environment; a name that is not set is most likely a typo.
        let function = format!("BASH_FUNC_{name}%%");
        if name != "_" && std::env::var_os(name).is_none() && std::env::var_os(&function).is_none()
        {
            return Err(RunError::Usage(format!(
                "--env {name}: no variable or exported function of that name is set; export it first"
            )));
        }
    }
    let mut sources = parsed.sources;
    let separator = match (&o.delimiter, o.null) {
        (Some(d), _) => parse_delimiter(d)?,
        (None, true) => 0,
        (None, false) => b'\n',
    };
    // --colsep, --csv, --header: the headers name columns in the command before it is parsed.
    let mut column_names = super::columns::ColumnNames::default();
    let columns = super::columns::prepare(
        &super::columns::ColumnOptions {
            colsep: o.colsep.as_deref(),
            csv: o.csv,
            header: o.header.as_deref(),
        },
        &mut sources,
        &mut words,
        separator,
        o.pipe || o.pipepart,
        &mut column_names,
    )?;
    // No command (and not --retry-failed, whose commands come from the joblog): each input line is
    // a command, as in GNU parallel.
    let mode = match (o.quote, o.no_shell, words.is_empty() || o.retry_failed) {
        (_, _, true) => Mode::Lines,
        (true, _, _) => Mode::Quote,
        (_, true, _) => Mode::NoShell,
        _ => Mode::Shell,
    };
    let jobs = match &o.jobs {
        // --tee: every job runs at once; GNU parallel's default is -j 0.
        None if o.tee => MAX_JOBS,
        None => cores,
        Some(spec) => parse_jobs(spec, cores)?,
    };
    let tokens = tokens(&o)?;
    let mut rpls = o.rpl.clone();
    if o.plus {
        rpls.extend(
            super::perl::PLUS
                .iter()
                .map(|(tag, expr)| format!("{tag} {expr}")),
        );
    }
    let parens = match o.parens.as_deref() {
        None => super::perl::Parens::default(),
        Some(spec) => super::perl::Parens::parse(spec)?,
    };
    let perl = !rpls.is_empty() || words.iter().any(|w| parens.opens(w));
    let mut template = if !perl || mode == Mode::Lines {
        Template::parse_with(&words, mode, &tokens)
    } else if tokens != Tokens::default() {
        return Err(RunError::Usage(
            "perl expressions ({= =}, --rpl, --plus) with renamed replacement strings (-I, \
             --extensionreplace, …) are not supported together; use the default {} strings"
                .into(),
        ));
    } else {
        Template::parse_with_perl(
            &super::perl::merge_words(&words, &parens),
            mode,
            &rpls,
            &parens,
            jobs,
        )?
    };
    let mut tagstring = o
        .tagstring
        .as_ref()
        .map(|t| Template::parse_with(&[t.as_bytes().to_vec()], Mode::NoShell, &tokens));
    let trim = match o.trim.as_deref() {
        None | Some("n") => Trim::default(),
        Some("l") => Trim {
            left: true,
            right: false,
        },
        Some("r") => Trim {
            left: false,
            right: true,
        },
        Some("lr" | "rl") => Trim {
            left: true,
            right: true,
        },
        Some(other) => {
            return Err(RunError::Usage(format!(
                "invalid --trim '{other}': expected n, l, r, lr or rl"
            )));
        }
    };
    // --compress only changes GNU parallel's temporary files, which martelli run does not have;
    // the files of --files and --results DIR GNU parallel leaves compressed, which would differ.
    let results_dir = o
        .results
        .as_ref()
        .is_some_and(|r| !matches!(r.extension().and_then(|e| e.to_str()), Some("csv" | "tsv")));
    if o.compress && (o.files || results_dir) {
        return Err(RunError::Usage(
            "--compress with --files or --results DIR: GNU parallel leaves those files compressed, and martelli run writes them plain; leave out --compress".into(),
        ));
    }
    let files = o.files.then(|| temp_dir(o.tmpdir.as_ref()));
    let (grouping, context) = super::multi::grouping(&super::multi::MultiOptions {
        max_replace_args: o.max_replace_args.as_deref(),
        max_args: o.max_args.as_deref(),
        context: o.context_replace,
        multi: o.multi,
        xargs: o.xargs,
        lines_upper: o.lines_upper.as_deref(),
        lines_lower: o.lines_lower.as_deref(),
        max_chars: o.max_chars.as_deref(),
    })?;
    let pipe = super::pipe::config(&super::pipe::PipeOptions {
        pipe: o.pipe,
        pipepart: o.pipepart,
        block: o.block.as_deref(),
        recstart: o.recstart.as_deref(),
        recend: o.recend.as_deref(),
        regexp: o.regexp,
        round_robin: o.round_robin,
        tee: o.tee,
        header: o.header.as_deref(),
        records: o.max_replace_args.as_deref().or(o.max_args.as_deref()),
        lines: o.lines_upper.as_deref().or(o.lines_lower.as_deref()),
        files: sources
            .iter()
            .filter_map(|s| match &s.spec {
                super::args::SourceSpec::File(f) => Some(f.clone()),
                super::args::SourceSpec::Values(_) => None,
            })
            .collect(),
    })?;
    // With --pipe, -N and -L count records of the blocks, not arguments.
    let (grouping, context) = if pipe.is_some() {
        (None, false)
    } else {
        (grouping, context)
    };
    if let Some(p) = pipe.as_ref().filter(|p| p.tee) {
        // --tee: the jobs are the arguments, given to the command only where it names them.
        template.never_append();
        if p.part.is_some() {
            // The file every job reads is not an argument.
            if let Some(i) = sources
                .iter()
                .position(|s| matches!(s.spec, super::args::SourceSpec::File(_)))
            {
                sources.remove(i);
            }
        }
        if sources.is_empty() {
            return Err(RunError::Usage(
                "--tee runs one job per argument, all reading the whole input: give the arguments with :::, such as --tee wc {} ::: -l -c".into(),
            ));
        }
    }
    let limits = super::limits::Limits::parse(
        &super::limits::LimitOptions {
            load: o.load.as_deref(),
            memfree: o.memfree.as_deref(),
            memsuspend: o.memsuspend.as_deref(),
            noswap: o.noswap,
            limit: o.limit.as_deref(),
        },
        cores,
    )?;
    if limits.any() && o.cluster.is_some() {
        return Err(RunError::Usage(
            "--load, --memfree, --memsuspend, --noswap and --limit look at this machine, and with --cluster the jobs run on the workers: leave them out, or start the workers with a lower `martelli worker -j`".into(),
        ));
    }
    if o.termseq.is_some() && o.cluster.is_some() {
        return Err(RunError::Usage(
            "--termseq is for jobs run here; with --cluster the workers kill a job with SIGTERM, then SIGKILL after --kill-grace SECS".into(),
        ));
    }
    if o.timeout.as_deref().is_some_and(|t| t.ends_with('%')) && o.cluster.is_some() {
        return Err(RunError::Usage(
            "--timeout N% follows the runtimes of the jobs run here; with --cluster give it in seconds (--timeout 60)".into(),
        ));
    }
    if o.cat && !(o.pipe || o.pipepart) {
        return Err(RunError::Usage(
            "--cat puts each job's block of standard input in a file: it needs --pipe (or --pipepart)".into(),
        ));
    }
    if o.cat && (o.round_robin || o.tee || o.cluster.is_some()) {
        return Err(RunError::Usage(
            "--cat with --round-robin, --tee or --cluster is not built: leave out --cat and read the block on stdin".into(),
        ));
    }
    let cat_dir = o.cat.then(|| temp_dir(o.tmpdir.as_ref()));
    if o.skip_first_line && (o.pipe || o.pipepart || o.header.is_some() || o.csv) {
        return Err(RunError::Usage(
            "--skip-first-line with --pipe, --header or --csv is not built: leave the first line out of the input (tail -n +2)".into(),
        ));
    }
    if pipe.is_some() && o.cluster.is_some() {
        return Err(RunError::Usage(
            "--pipe with --cluster is not supported: cluster jobs take arguments, not standard input".into(),
        ));
    }
    template.set_context_replace(context);
    // The tag's template is a command word as GNU parallel sees it: with several arguments per
    // job, a word around `{}` is repeated for each (`-N2 --tagstring T{}` tags `Ta Tb`).
    // A tag without replacement strings is only its text: the arguments are not appended.
    if let Some(tag) = tagstring.as_mut() {
        tag.set_context_replace(context);
        tag.never_append();
    }
    let source_count = sources.len().max(1);
    // With several records per job, {n} counts the job's arguments: a short job leaves it empty.
    let split = columns.as_ref().is_some_and(|c| c.split.is_some());
    if let Some(n) = template
        .max_source()
        .filter(|_| grouping.is_none() && !split)
    {
        if n as usize > source_count {
            return Err(RunError::Usage(format!(
                "the command uses {{{n}}} but there {} only {source_count} input source{}; add sources with `:::` or `::::`",
                if source_count == 1 { "is" } else { "are" },
                if source_count == 1 { "" } else { "s" },
            )));
        }
    }
    let output = if o.json {
        OutputMode::Json
    } else if o.ungroup {
        OutputMode::Ungroup
    } else if o.line_buffer {
        OutputMode::LineBuffer
    } else {
        OutputMode::Group
    };
    let retries = match &o.retries {
        None => 1,
        Some(n) => n.parse::<u32>().map_err(|_| {
            RunError::Usage(format!(
                "invalid --retries '{n}': expected a whole number of tries, such as 3"
            ))
        })?,
    };
    let nice = match &o.nice {
        None => None,
        Some(n) => Some(
            n.parse::<i32>()
                .ok()
                .filter(|n| (-20..=19).contains(n))
                .ok_or_else(|| {
                    RunError::Usage(format!(
                        "invalid --nice '{n}': expected a niceness from -20 to 19"
                    ))
                })?,
        ),
    };
    let start_at = match (&o.countdown, &o.start_at) {
        (Some(s), _) => Some(StartAt::After(parse_seconds("--countdown", s)?)),
        (None, Some(s)) => Some(StartAt::At(
            std::time::UNIX_EPOCH + parse_seconds("--start-at", s)?,
        )),
        (None, None) => None,
    };
    let result_ttl = match &o.result_ttl {
        Some(s) => {
            let ttl = parse_seconds("--result-ttl", s)?;
            if ttl < Duration::from_millis(1) {
                return Err(RunError::Usage(format!(
                    "invalid --result-ttl '{s}': a record must be kept at least 0.001 seconds"
                )));
            }
            Some(ttl)
        }
        None => None,
    };
    let cluster = o.cluster.map(|url| ClusterTarget {
        start_at,
        result_ttl,
        url,
        queue: o
            .queue
            .unwrap_or_else(|| martelli::cluster::DEFAULT_QUEUE.to_owned()),
        prefix: o
            .prefix
            .unwrap_or_else(|| martelli::cluster::DEFAULT_PREFIX.to_owned()),
        tls_ca: o.tls_ca,
    });
    let shell = gnu::shell();
    let functions = gnu::exported_functions();
    Ok(Config {
        jobs,
        jobs_given: o.jobs.is_some(),
        cluster,
        template,
        sources,
        link: o.link,
        separator,
        output,
        keep_order: o.keep_order,
        tag: o.tag || tagstring.is_some(),
        results: o.results,
        timeout: o
            .timeout
            .as_deref()
            .filter(|s| !s.ends_with('%'))
            .map(|s| parse_seconds("--timeout", s))
            .transpose()?,
        timeout_percent: o
            .timeout
            .as_deref()
            .and_then(|s| s.strip_suffix('%'))
            .map(parse_percent_timeout)
            .transpose()?,
        grace: o
            .kill_grace
            .as_deref()
            .map(|s| parse_seconds("--kill-grace", s))
            .transpose()?
            .unwrap_or(Duration::from_millis(500)),
        kill_sequence: match (&o.termseq, &o.kill_grace) {
            (Some(seq), _) => parse_termseq(seq)?,
            // --kill-grace: SIGTERM, the grace, SIGKILL.
            (None, Some(g)) => vec![
                (Signal::TERM, parse_seconds("--kill-grace", g)?),
                (Signal::KILL, KILL_WAIT),
            ],
            (None, None) => default_termseq(),
        },
        // GNU parallel: --retries 0 tries for ever.
        tries: if retries == 0 { u32::MAX } else { retries },
        halt: o.halt.as_deref().map(parse_halt).transpose()?.flatten(),
        delay: o
            .delay
            .as_deref()
            .map(|s| parse_seconds("--delay", s.strip_suffix("auto").unwrap_or(s)))
            .transpose()?,
        delay_auto: o.delay.as_deref().is_some_and(|s| s.ends_with("auto")),
        limits,
        nice,
        dry_run: o.dry_run,
        joblog: o.joblog,
        resume: match (o.resume, o.resume_failed || o.retry_failed) {
            (true, _) => Resume::Done,
            (_, true) => Resume::Succeeded,
            _ => Resume::No,
        },
        progress: Progress {
            bar: o.bar,
            counts: o.progress,
            eta: o.eta,
        },
        verbose: o.verbose > 0,
        verbose_stderr: o.verbose_stderr,
        tagstring,
        eof: o.eof.map(String::into_bytes),
        skip_empty: o.no_run_if_empty,
        skip_first_line: o.skip_first_line,
        cat: cat_dir,
        trim,
        shuf: o.shuf,
        files,
        shellquote: o.shellquote,
        retry_failed: o.retry_failed,
        process_slot_var: o.process_slot_var,
        shell_free: super::builtins::ShellFree::detect(&shell, &functions),
        shell,
        functions,
        grouping,
        pipe,
        columns,
        column_names,
    })
}

/// The replacement strings, renamed by `-I` and its siblings.
fn tokens(o: &super::args::RawOptions) -> Result<Tokens, RunError> {
    let mut t = Tokens::default();
    for (option, value, slot) in [
        ("-I", &o.replace, &mut t.whole),
        ("--extensionreplace", &o.extension_replace, &mut t.no_ext),
        ("--basenamereplace", &o.basename_replace, &mut t.base),
        ("--dirnamereplace", &o.dirname_replace, &mut t.dir),
        (
            "--basenameextensionreplace",
            &o.basename_extension_replace,
            &mut t.base_no_ext,
        ),
        ("--seqreplace", &o.seq_replace, &mut t.seq),
        ("--slotreplace", &o.slot_replace, &mut t.slot),
    ] {
        if let Some(v) = value {
            if v.is_empty() {
                return Err(RunError::Usage(format!(
                    "{option} needs a replacement string that is not empty, such as {option} ,,"
                )));
            }
            *slot = v.as_bytes().to_vec();
        }
    }
    Ok(t)
}

/// `-d`: one byte, written as itself or as an escape (`\n`, `\t`, `\0`, `\\`, `\xHH`, `\NNN`
/// octal).
pub(crate) fn parse_delimiter(d: &str) -> Result<u8, RunError> {
    let bad = || {
        RunError::Usage(format!(
            "invalid -d '{d}': expected one character or an escape such as \\n, \\t, \\0 or \\x1f"
        ))
    };
    let b = d.as_bytes();
    match b {
        [c] => Ok(*c),
        [b'\\', rest @ ..] => match rest {
            b"n" => Ok(b'\n'),
            b"t" => Ok(b'\t'),
            b"r" => Ok(b'\r'),
            b"a" => Ok(7),
            b"b" => Ok(8),
            b"f" => Ok(12),
            b"v" => Ok(11),
            b"\\" => Ok(b'\\'),
            [b'x', hex @ ..] if !hex.is_empty() && hex.len() <= 2 => {
                u8::from_str_radix(std::str::from_utf8(hex).map_err(|_| bad())?, 16)
                    .map_err(|_| bad())
            }
            oct if !oct.is_empty()
                && oct.len() <= 3
                && oct.iter().all(|c| (b'0'..=b'7').contains(c)) =>
            {
                u8::from_str_radix(std::str::from_utf8(oct).map_err(|_| bad())?, 8)
                    .map_err(|_| bad())
            }
            _ => Err(bad()),
        },
        _ => Err(bad()),
    }
}

/// The largest number of jobs at once; `-j 0` means this many.
pub(crate) const MAX_JOBS: usize = 1024;

/// `-j`: `N`, `N%` of the cores, `+N`/`-N` cores, `0` for as many as possible.
pub(crate) fn parse_jobs(spec: &str, cores: usize) -> Result<usize, RunError> {
    let bad = || {
        RunError::Usage(format!(
            "invalid -j '{spec}': expected a number of jobs (4), a percentage of the cores (50%), +N or -N cores, or 0"
        ))
    };
    let cores_f = cores as f64;
    let n = if let Some(p) = spec.strip_suffix('%') {
        let p: f64 = p.parse().map_err(|_| bad())?;
        if !p.is_finite() || p < 0.0 {
            return Err(bad());
        }
        (cores_f * p / 100.0).floor() as usize
    } else if let Some(plus) = spec.strip_prefix('+') {
        cores + plus.parse::<usize>().map_err(|_| bad())?
    } else if let Some(minus) = spec.strip_prefix('-') {
        cores.saturating_sub(minus.parse::<usize>().map_err(|_| bad())?)
    } else {
        match spec.parse::<usize>().map_err(|_| bad())? {
            0 => MAX_JOBS,
            n => n,
        }
    };
    Ok(n.clamp(1, MAX_JOBS))
}

/// Where temporary files go (`--files`, `--cat`): `--tmpdir`, else `$TMPDIR`, else `/tmp`.
fn temp_dir(tmpdir: Option<&PathBuf>) -> PathBuf {
    tmpdir
        .cloned()
        .or_else(|| {
            std::env::var_os("TMPDIR")
                .filter(|d| !d.is_empty())
                .map(PathBuf::from)
        })
        .unwrap_or_else(|| PathBuf::from("/tmp"))
}

/// How long the last step of a kill sequence waits when it is `--kill-grace`'s `SIGKILL`.
const KILL_WAIT: Duration = Duration::from_millis(25);

/// GNU parallel's `--termseq` default: `TERM,200,TERM,100,TERM,50,KILL,25`.
pub(crate) fn default_termseq() -> Vec<(Signal, Duration)> {
    let ms = Duration::from_millis;
    vec![
        (Signal::TERM, ms(200)),
        (Signal::TERM, ms(100)),
        (Signal::TERM, ms(50)),
        (Signal::KILL, ms(25)),
    ]
}

/// `--termseq`: `SIGNAL,MS,SIGNAL,MS,…`, a signal by name (`TERM`, `SIGINT`) or number, each
/// followed by the milliseconds to wait for the job to die (the last wait may be left out).
pub(crate) fn parse_termseq(spec: &str) -> Result<Vec<(Signal, Duration)>, RunError> {
    let bad = |why: String| {
        RunError::Usage(format!(
            "invalid --termseq '{spec}': {why}; expected signals and milliseconds, such as TERM,200,TERM,100,KILL,25"
        ))
    };
    let words: Vec<&str> = spec.split(',').map(str::trim).collect();
    let mut steps = Vec::new();
    for pair in words.chunks(2) {
        let signal =
            signal_named(pair[0]).ok_or_else(|| bad(format!("'{}' is not a signal", pair[0])))?;
        let wait = match pair.get(1) {
            None => Duration::ZERO,
            Some(ms) => ms
                .parse::<f64>()
                .ok()
                .filter(|ms| *ms >= 0.0)
                .and_then(|ms| Duration::try_from_secs_f64(ms / 1000.0).ok())
                .ok_or_else(|| bad(format!("'{ms}' is not a number of milliseconds")))?,
        };
        steps.push((signal, wait));
    }
    Ok(steps)
}

/// A signal by its name (`TERM`, `SIGTERM`, `term`) or number (`15`).
fn signal_named(name: &str) -> Option<Signal> {
    if let Ok(n) = name.parse::<i32>() {
        return Signal::from_raw(n);
    }
    let upper = name.to_ascii_uppercase();
    let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
    (1..=64)
        .filter_map(Signal::from_raw)
        .find(|s| s.name() == Some(bare))
}

/// `--timeout N%`'s N (GNU parallel: digits, with a fraction), as a fraction.
fn parse_percent_timeout(n: &str) -> Result<f64, RunError> {
    decimal_number(n)
        .filter(|p| *p > 0.0 && !n.starts_with('.'))
        .map(|p| p / 100.0)
        .ok_or_else(|| {
            RunError::Usage(format!(
                "invalid --timeout '{n}%': expected a percentage of the median runtime, such as 200%"
            ))
        })
}

/// A number of seconds such as `2` or `0.5`, or with GNU parallel's time postfixes: `1m30s`,
/// `1d3.5h16.6m4s` (s, m, h, d, in either case; a number without one is seconds).
pub(crate) fn parse_seconds(option: &str, s: &str) -> Result<Duration, RunError> {
    s.parse::<f64>()
        .ok()
        .or_else(|| time_units(s))
        .and_then(|f| Duration::try_from_secs_f64(f).ok())
        .ok_or_else(|| {
            RunError::Usage(format!(
                "invalid {option} '{s}': expected a number of seconds, such as 2 or 0.5, or with s, m, h or d, such as 1m30s"
            ))
        })
}

/// Seconds in `1d3.5h16.6m4s`: numbers each followed by a unit, the last one's unit optional.
fn time_units(s: &str) -> Option<f64> {
    let mut total = 0.0;
    let mut rest = s;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number = decimal_number(&rest[..end])?;
        rest = &rest[end..];
        let unit = match rest.chars().next() {
            None => 1.0,
            Some('s' | 'S') => 1.0,
            Some('m' | 'M') => 60.0,
            Some('h' | 'H') => 3600.0,
            Some('d' | 'D') => 86400.0,
            Some(_) => return None,
        };
        rest = rest.get(1..).unwrap_or("");
        total += number * unit;
    }
    total.is_finite().then_some(total)
}

/// `2`, `1.5`, `.5`: digits with at most one point.
fn decimal_number(s: &str) -> Option<f64> {
    let digits = s.bytes().filter(u8::is_ascii_digit).count();
    (digits > 0 && s.bytes().filter(|&b| b == b'.').count() <= 1)
        .then(|| s.parse().ok())
        .flatten()
}

/// `--halt`; `None` for `never`.
pub(crate) fn parse_halt(spec: &str) -> Result<Option<Halt>, RunError> {
    let bad = || {
        RunError::Usage(format!(
            "invalid --halt '{spec}': expected never, or now|soon,fail|success|done=N or N% (such as now,fail=1)"
        ))
    };
    match spec {
        "never" | "0" => return Ok(None),
        "1" => {
            return Ok(Some(Halt {
                now: false,
                on: HaltOn::Fail,
                threshold: Threshold::Count(1),
            }));
        }
        "2" => {
            return Ok(Some(Halt {
                now: true,
                on: HaltOn::Fail,
                threshold: Threshold::Count(1),
            }));
        }
        "-1" | "-2" => {
            return Ok(Some(Halt {
                now: spec == "-2",
                on: HaltOn::Success,
                threshold: Threshold::Count(1),
            }));
        }
        // GNU parallel: `--halt 5%` is `soon,fail=5%`.
        p if p.ends_with('%') && !p.contains([',', '=']) => {
            return parse_halt(&format!("soon,fail={p}"));
        }
        _ => {}
    }
    let (when, condition) = match spec.split_once(',') {
        Some((when, condition)) => (when, condition),
        None => ("soon", spec),
    };
    let now = match when {
        "now" => true,
        "soon" => false,
        _ => return Err(bad()),
    };
    let (on, value) = condition.split_once('=').ok_or_else(bad)?;
    let on = match on {
        "fail" => HaltOn::Fail,
        "success" => HaltOn::Success,
        "done" => HaltOn::Done,
        _ => return Err(bad()),
    };
    let threshold = if let Some(p) = value.strip_suffix('%') {
        let p: f64 = p.parse().map_err(|_| bad())?;
        if !(p > 0.0 && p <= 100.0) {
            return Err(bad());
        }
        Threshold::Percent(p)
    } else {
        match value.parse::<u64>().map_err(|_| bad())? {
            0 => return Err(bad()),
            n => Threshold::Count(n),
        }
    };
    Ok(Some(Halt { now, on, threshold }))
}

#[cfg(test)]
mod tests;
