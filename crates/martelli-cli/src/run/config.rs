//! Validation: parsed options into a [`Config`] the engine can trust.

use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::time::Duration;

use super::RunError;
use super::args::{Parsed, Source};
use super::template::{Mode, Template};

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
    pub(crate) nice: Option<i32>,
    pub(crate) dry_run: bool,
    pub(crate) joblog: Option<PathBuf>,
    pub(crate) resume: Resume,
    pub(crate) progress: Progress,
    /// Several arguments per job (`-N`, `-X`, `-m`, …); `None`: one record per job.
    pub(crate) grouping: Option<super::multi::Grouping>,
    /// `--colsep`, `--csv`, `--header`: how arguments are split into columns.
    pub(crate) columns: Option<super::columns::Columns>,
    /// `--pipe`/`--pipepart`: jobs read blocks of the input on stdin.
    pub(crate) pipe: Option<super::pipe::PipeConfig>,
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
    if o.command.is_empty() {
        return Err(RunError::Usage(
            "no command given; write it before the arguments, as in `martelli run echo ::: a b`"
                .into(),
        ));
    }
    let mut words: Vec<Vec<u8>> = o.command.iter().map(|w| w.as_bytes().to_vec()).collect();
    let mut sources = parsed.sources;
    let separator = if o.null { 0 } else { b'\n' };
    // --colsep, --csv, --header: the headers name columns in the command before it is parsed.
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
    )?;
    let mode = match (o.quote, o.no_shell) {
        (true, _) => Mode::Quote,
        (_, true) => Mode::NoShell,
        _ => Mode::Shell,
    };
    let jobs = match &o.jobs {
        None => cores,
        Some(spec) => parse_jobs(spec, cores)?,
    };
    let mut rpls = o.rpl.clone();
    if o.plus {
        rpls.extend(
            super::perl::PLUS
                .iter()
                .map(|(tag, expr)| format!("{tag} {expr}")),
        );
    }
    let mut template = if rpls.is_empty() && !words.iter().any(|w| w.windows(2).any(|p| p == b"{="))
    {
        Template::parse(&words, mode)
    } else {
        Template::parse_with_perl(&super::perl::merge_words(&words), mode, &rpls, jobs)?
    };
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
    if pipe.is_some() && o.cluster.is_some() {
        return Err(RunError::Usage(
            "--pipe with --cluster is not supported: cluster jobs take arguments, not standard input".into(),
        ));
    }
    template.set_context_replace(context);
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
        tag: o.tag,
        results: o.results,
        timeout: o
            .timeout
            .as_deref()
            .map(|s| parse_seconds("--timeout", s))
            .transpose()?,
        grace: o
            .kill_grace
            .as_deref()
            .map(|s| parse_seconds("--kill-grace", s))
            .transpose()?
            .unwrap_or(Duration::from_millis(500)),
        tries: retries.max(1),
        halt: o.halt.as_deref().map(parse_halt).transpose()?.flatten(),
        delay: o
            .delay
            .as_deref()
            .map(|s| parse_seconds("--delay", s))
            .transpose()?,
        nice,
        dry_run: o.dry_run,
        joblog: o.joblog,
        resume: match (o.resume, o.resume_failed) {
            (true, _) => Resume::Done,
            (_, true) => Resume::Succeeded,
            _ => Resume::No,
        },
        progress: Progress {
            bar: o.bar,
            counts: o.progress,
            eta: o.eta,
        },
        grouping,
        pipe,
        columns,
    })
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

/// A number of seconds such as `2` or `0.5`.
fn parse_seconds(option: &str, s: &str) -> Result<Duration, RunError> {
    s.parse::<f64>()
        .ok()
        .and_then(|f| Duration::try_from_secs_f64(f).ok())
        .ok_or_else(|| {
            RunError::Usage(format!(
                "invalid {option} '{s}': expected a number of seconds, such as 2 or 0.5"
            ))
        })
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
mod tests {
    use super::*;

    #[test]
    fn jobs_specs() {
        assert_eq!(parse_jobs("3", 2).unwrap(), 3);
        assert_eq!(parse_jobs("50%", 8).unwrap(), 4);
        assert_eq!(parse_jobs("+1", 2).unwrap(), 3);
        assert_eq!(parse_jobs("-1", 2).unwrap(), 1);
        assert_eq!(parse_jobs("-5", 2).unwrap(), 1);
        assert_eq!(parse_jobs("0", 2).unwrap(), MAX_JOBS);
        assert!(parse_jobs("two", 2).is_err());
        assert!(parse_jobs("", 2).is_err());
    }

    #[test]
    fn halt_specs() {
        let h = parse_halt("now,fail=1").unwrap().unwrap();
        assert_eq!(
            h,
            Halt {
                now: true,
                on: HaltOn::Fail,
                threshold: Threshold::Count(1)
            }
        );
        let h = parse_halt("soon,success=20%").unwrap().unwrap();
        assert_eq!(
            h,
            Halt {
                now: false,
                on: HaltOn::Success,
                threshold: Threshold::Percent(20.0)
            }
        );
        assert_eq!(parse_halt("never").unwrap(), None);
        assert!(parse_halt("2").unwrap().unwrap().now);
        for bad in [
            "now",
            "now,fail",
            "later,fail=1",
            "now,fail=0",
            "now,oops=1",
            "now,fail=x%",
        ] {
            assert!(parse_halt(bad).is_err(), "{bad}");
        }
    }
}
