//! Parsing: the raw command line into options, the command, and input sources.
//!
//! The options before the command are parsed with clap, so an unknown or misspelt option gets
//! clap's suggestion. Everything from the first `:::`, `:::+`, `::::` or `::::+` on is GNU
//! parallel's input-source syntax, which does not fit a derive parser; it is split off first and
//! parsed here.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;

use clap::Parser;

use super::{RunError, gnu};

/// Run a command for every argument, several at a time (GNU parallel's syntax).
///
/// martelli run [OPTIONS] COMMAND [ARG…] ::: ARGS… [::: ARGS…] [:::: FILE…]
///
/// Without an input source, arguments are read from stdin, one per line. Replacement strings:
/// {} {.} {/} {//} {/.} {#} {%} {N} {N.} {N/} {N//} {N/.}. Without one in COMMAND, the arguments are
/// appended.
#[derive(Debug, Parser)]
#[command(
    name = "martelli run",
    version,
    disable_version_flag = true,
    max_term_width = 100,
    // An option given twice (in a profile or $PARALLEL, then on the command line) takes its last
    // value, as in GNU parallel; options that collect (`-a`, `--env`, `--rpl`, …) keep collecting.
    args_override_self = true
)]
pub(crate) struct RawOptions {
    /// Number of jobs at once: N, N% of the cores, +N or -N cores, 0 for as many as possible
    /// [default: the number of cores].
    #[arg(
        short = 'j',
        short_alias = 'P',
        long = "jobs",
        visible_alias = "max-procs",
        value_name = "N",
        allow_hyphen_values = true
    )]
    pub(crate) jobs: Option<String>,

    /// Print the output of jobs in the order of their input, not of their completion.
    #[arg(short = 'k', long = "keep-order")]
    pub(crate) keep_order: bool,

    /// Print output line by line as it comes (lines of different jobs may mix, never split).
    #[arg(long = "line-buffer", visible_aliases = ["lb", "linebuffer"], conflicts_with_all = ["keep_order", "ungroup"])]
    pub(crate) line_buffer: bool,

    /// Do not capture output: jobs write straight to the terminal (output may interleave).
    #[arg(short = 'u', long = "ungroup", conflicts_with_all = ["keep_order", "tag", "json", "results"])]
    pub(crate) ungroup: bool,

    /// Prefix every output line with the job's arguments and a tab.
    #[arg(long = "tag")]
    pub(crate) tag: bool,

    /// Also store each job's stdout, stderr and sequence number in DIR/1/ARG/…/{stdout,stderr,seq}.
    #[arg(long = "results", visible_alias = "res", value_name = "DIR")]
    pub(crate) results: Option<PathBuf>,

    /// Print one JSON line per finished job (instead of its output) on stdout.
    #[arg(long = "json", conflicts_with_all = ["line_buffer", "tag"])]
    pub(crate) json: bool,

    /// Kill a job's process group after SECS seconds (1m30s: s, m, h, d), or after N% of the
    /// median runtime of the jobs that succeeded; by --termseq.
    #[arg(long = "timeout", value_name = "SECS")]
    pub(crate) timeout: Option<String>,

    /// Kill a job with SIGTERM, then SIGKILL after SECS seconds (instead of --termseq's
    /// sequence).
    #[arg(long = "kill-grace", value_name = "SECS", conflicts_with = "termseq")]
    pub(crate) kill_grace: Option<String>,

    /// The signals that kill a job, each with the milliseconds to wait for it to die before the
    /// next [default: TERM,200,TERM,100,TERM,50,KILL,25].
    #[arg(long = "termseq", visible_alias = "term-seq", value_name = "SEQ")]
    pub(crate) termseq: Option<String>,

    /// Run a failing job up to N times in all (0: until it succeeds).
    #[arg(long = "retries", value_name = "N")]
    pub(crate) retries: Option<String>,

    /// When to stop: never, now|soon,fail=N, fail=N%, success=N, done=N (or 0, 1, 2).
    #[arg(long = "halt", visible_alias = "halt-on-error", value_name = "SPEC")]
    pub(crate) halt: Option<String>,

    /// Wait SECS seconds between starting jobs; SECSauto: 30 % longer after a failed job, 10 %
    /// shorter after one that succeeded.
    #[arg(long = "delay", value_name = "SECS")]
    pub(crate) delay: Option<String>,

    /// Start a job only while the load (threads running or waiting for the disk now) is below MAX:
    /// a number, N% of the cores, +N or -N cores.
    #[arg(long = "load", value_name = "MAX", allow_hyphen_values = true)]
    pub(crate) load: Option<String>,

    /// Start a job only while SIZE is free (2G, 500M); kill the youngest job when less than half
    /// is (it runs again if --retries allows).
    #[arg(long = "memfree", value_name = "SIZE")]
    pub(crate) memfree: Option<String>,

    /// Stop the youngest jobs while less than twice SIZE is free (one job runs under SIZE);
    /// continue them when memory is back.
    #[arg(long = "memsuspend", value_name = "SIZE")]
    pub(crate) memsuspend: Option<String>,

    /// Start no job while the machine swaps (pages both in and out over the last second).
    #[arg(long = "noswap")]
    pub(crate) noswap: bool,

    /// Before each start run CMD: status 0 starts the job, 1 waits, 2 also kills the youngest
    /// job. Built in: "io N" (% busy disk), "load N", "mem SIZE".
    #[arg(long = "limit", value_name = "CMD")]
    pub(crate) limit: Option<String>,

    /// Run jobs with this niceness increment.
    #[arg(long = "nice", value_name = "N", allow_hyphen_values = true)]
    pub(crate) nice: Option<String>,

    /// Print the commands instead of running them.
    #[arg(long = "dry-run", visible_alias = "dryrun")]
    pub(crate) dry_run: bool,

    /// Log every finished job to FILE in GNU parallel's tab-separated format.
    #[arg(long = "joblog", value_name = "FILE")]
    pub(crate) joblog: Option<PathBuf>,

    /// Skip jobs already in the joblog.
    #[arg(long = "resume", requires = "joblog")]
    pub(crate) resume: bool,

    /// Skip jobs that succeeded in the joblog; run the failed ones again.
    #[arg(long = "resume-failed", requires = "joblog", conflicts_with = "resume")]
    pub(crate) resume_failed: bool,

    /// Show a progress bar on stderr.
    #[arg(long = "bar")]
    pub(crate) bar: bool,

    /// Show running, done and failed counts on stderr.
    #[arg(long = "progress")]
    pub(crate) progress: bool,

    /// Show the estimated time left on stderr.
    #[arg(long = "eta")]
    pub(crate) eta: bool,

    /// Quote the command: its words are passed to the shell as they are, not interpreted.
    #[arg(short = 'q', long = "quote", conflicts_with = "no_shell")]
    pub(crate) quote: bool,

    /// Run the command's words as a program and its arguments, without a shell (martelli only).
    #[arg(long = "no-shell")]
    pub(crate) no_shell: bool,

    /// Read arguments from FILE, one per line (like `:::: FILE`; `-` is stdin).
    #[arg(short = 'a', long = "arg-file", value_name = "FILE")]
    pub(crate) arg_file: Vec<PathBuf>,

    /// Pair the input sources element by element instead of combining every one with every other.
    #[arg(long = "link", visible_alias = "xapply")]
    pub(crate) link: bool,

    /// Arguments from files and stdin are separated by NUL instead of newline.
    #[arg(short = '0', long = "null")]
    pub(crate) null: bool,

    /// Send every job to the workers of a cluster queue (`martelli worker`) at this Redis broker
    /// (redis://[user:password@]host[:port][/db], rediss:// for TLS) instead of running it here.
    /// Without -j, as many jobs at once as the live workers have slots.
    #[arg(long = "cluster", value_name = "URL")]
    pub(crate) cluster: Option<String>,

    /// With --cluster: the queue [default: default].
    #[arg(long = "queue", value_name = "NAME", requires = "cluster")]
    pub(crate) queue: Option<String>,

    /// With --cluster: the prefix of every Redis key [default: martelli].
    #[arg(long = "prefix", value_name = "PREFIX", requires = "cluster")]
    pub(crate) prefix: Option<String>,

    /// With --cluster and a rediss:// URL: trust the CA certificate(s) in this PEM file
    /// [env: MARTELLI_TLS_CA].
    #[arg(long = "tls-ca", value_name = "FILE", requires = "cluster")]
    pub(crate) tls_ca: Option<PathBuf>,

    /// Several arguments per job: N input records per job, named {1}…{N} in the command
    /// (`-N 0`: one record per job, none passed).
    #[arg(short = 'N', long = "max-replace-args", value_name = "N")]
    pub(crate) max_replace_args: Option<String>,

    /// At most N input records per job (fewer when the command line would be longer than -s).
    #[arg(short = 'n', long = "max-args", value_name = "N")]
    pub(crate) max_args: Option<String>,

    /// As many arguments per job as the command line holds, with context: a word holding {} is
    /// repeated for each argument (`-X echo a{}b` → `echo a1b a2b`).
    #[arg(short = 'X')]
    pub(crate) context_replace: bool,

    /// As many arguments per job as the command line holds, spread evenly over the job slots.
    #[arg(short = 'm')]
    pub(crate) multi: bool,

    /// As many arguments per job as the command line holds (as xargs; not spread over slots).
    #[arg(long = "xargs")]
    pub(crate) xargs: bool,

    /// N input lines per job (a line ending in a blank continues on the next); implies -X unless
    /// -m or --xargs is given.
    #[arg(short = 'L', value_name = "N")]
    pub(crate) lines_upper: Option<String>,

    /// As -L, without -X; N is 1 when left out (-l2, --max-lines=2).
    #[arg(
        short = 'l',
        long = "max-lines",
        visible_alias = "maxlines",
        value_name = "N",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "1"
    )]
    pub(crate) lines_lower: Option<String>,

    /// A command line is shorter than N bytes [default and most: the system's limit as GNU
    /// parallel computes it, 63664 on Linux].
    #[arg(short = 's', long = "max-chars", value_name = "N")]
    pub(crate) max_chars: Option<String>,

    /// Define a replacement string: 'TAG PERL-EXPRESSION', such as --rpl '{..} s:\.[^.]+$::'.
    /// Parentheses in TAG capture text the expression reads as $$1, $$2… (needs perl).
    #[arg(long = "rpl", value_name = "'TAG PERL'")]
    pub(crate) rpl: Vec<String>,

    /// Add GNU parallel's extra replacement strings: {+/} {+.} {..} {...} {/..} {##} {:-str}
    /// {:n} {:n:m} {#str} {%str} {/a/b} {^str} {,str}, … (needs perl).
    #[arg(long = "plus")]
    pub(crate) plus: bool,

    /// The parentheses of a perl expression, left and right joined [default: {==}]: --parens
    /// ,,,, makes `,, expression ,,` what `{= expression =}` is.
    #[arg(long = "parens", value_name = "LEFTRIGHT")]
    pub(crate) parens: Option<String>,

    /// Split standard input into blocks of whole records, each the stdin of one job.
    #[arg(long = "pipe", visible_alias = "spreadstdin")]
    pub(crate) pipe: bool,

    /// As --pipe, splitting the file given with -a (or ::::) into parts.
    #[arg(
        long = "pipepart",
        visible_alias = "pipe-part",
        conflicts_with = "pipe"
    )]
    pub(crate) pipepart: bool,

    /// --pipe: block size in bytes (K, M, G: powers of 1024; k, m, g: of 1000) [default: 1M];
    /// negative with --pipepart: parts per job slot.
    #[arg(long = "block", visible_aliases = ["block-size", "bs"], value_name = "SIZE", allow_hyphen_values = true)]
    pub(crate) block: Option<String>,

    /// --pipe: a record starts with this string.
    #[arg(long = "recstart", value_name = "STRING")]
    pub(crate) recstart: Option<String>,

    /// --pipe: a record ends with this string [default: a newline].
    #[arg(long = "recend", value_name = "STRING")]
    pub(crate) recend: Option<String>,

    /// --pipe: --recstart and --recend are regular expressions.
    #[arg(long = "regexp")]
    pub(crate) regexp: bool,

    /// --pipe: start one job per job slot and give the blocks to them in turn.
    #[arg(long = "round-robin", visible_alias = "roundrobin")]
    pub(crate) round_robin: bool,

    /// --pipe: every job reads all of standard input (--pipepart: all of the file); one job per
    /// argument of :::, all running at once [-j default: 0, as many as needed].
    #[arg(long = "tee")]
    pub(crate) tee: bool,

    /// The first line of each input source is a header: its columns (split by --colsep, else a
    /// tab) name them, {colname}. `:` or 0 (the files' names). With --pipe: `:`, a number of
    /// lines or a regular expression matched at the start of the input, put before every block.
    #[arg(long = "header", value_name = ":|N|REGEXP")]
    pub(crate) header: Option<String>,

    /// Split each argument into columns at this regular expression: {1}, {2}, … are the columns.
    #[arg(short = 'C', long = "colsep", value_name = "REGEX")]
    pub(crate) colsep: Option<String>,

    /// Read the input as CSV (quoted fields may hold the separator and newlines); --colsep sets
    /// the separator [default: ,].
    #[arg(long = "csv")]
    pub(crate) csv: bool,

    /// With --cluster: queue each job to start no earlier than SECS from when it is sent (the
    /// job waits in the broker, not here).
    #[arg(
        long = "countdown",
        value_name = "SECS",
        requires = "cluster",
        conflicts_with = "start_at"
    )]
    pub(crate) countdown: Option<String>,

    /// With --cluster: queue each job to start no earlier than this time (an ETA), in seconds
    /// since the Unix epoch (`date -d 'tomorrow 02:00' +%s`).
    #[arg(long = "start-at", value_name = "UNIX_SECS", requires = "cluster")]
    pub(crate) start_at: Option<String>,

    /// With --cluster: keep each job's record (state and result) in the broker for SECS after it
    /// ends, readable by `martelli result ID` from anywhere; the run prints the ids on stderr.
    #[arg(long = "result-ttl", value_name = "SECS", requires = "cluster")]
    pub(crate) result_ttl: Option<String>,

    /// Accepted: GNU parallel compresses the temporary files that hold job output; martelli run
    /// holds job output in memory, so there is nothing to compress. Refused with --files and
    /// --results DIR, whose files GNU parallel would leave compressed.
    #[arg(long = "compress", hide = true)]
    pub(crate) compress: bool,

    /// Accepted and ignored, for drop-in compatibility with GNU parallel.
    #[arg(long = "will-cite", hide = true)]
    pub(crate) will_cite: bool,

    /// Read options from the profile NAME (a file in ~/.parallel, or a path) instead of GNU
    /// parallel's config files.
    #[arg(long = "profile", short = 'J', value_name = "NAME")]
    pub(crate) profile: Vec<String>,

    /// Read no profile and not $PARALLEL.
    #[arg(long = "plain")]
    pub(crate) plain: bool,

    /// Accepted: martelli run's default job count is already the number of CPUs this process may
    /// run on, which is what GNU parallel's option asks for instead of its count of cores.
    #[arg(long = "use-cpus-instead-of-cores", hide = true)]
    pub(crate) use_cpus_instead_of_cores: bool,

    /// Print each job's command on stdout, before its output.
    #[arg(short = 'v', action = clap::ArgAction::Count)]
    pub(crate) verbose: u8,

    /// Print each job's command on stderr as it starts.
    #[arg(short = 't', long = "verbose")]
    pub(crate) verbose_stderr: bool,

    /// Prefix every output line with STR (replacement strings allowed) and a tab.
    #[arg(long = "tagstring", value_name = "STR")]
    pub(crate) tagstring: Option<String>,

    /// Variables and bash functions jobs get: they inherit the whole environment already, so this
    /// only checks that NAME is set (GNU parallel needs it for remote jobs).
    #[arg(long = "env", value_name = "NAME")]
    pub(crate) env: Vec<String>,

    /// Use STR instead of `{}` as the replacement string.
    #[arg(short = 'I', value_name = "STR")]
    pub(crate) replace: Option<String>,

    /// Use STR instead of `{.}`.
    #[arg(long = "extensionreplace", alias = "er", value_name = "STR")]
    pub(crate) extension_replace: Option<String>,

    /// Use STR instead of `{/}`.
    #[arg(long = "basenamereplace", alias = "bnr", value_name = "STR")]
    pub(crate) basename_replace: Option<String>,

    /// Use STR instead of `{//}`.
    #[arg(long = "dirnamereplace", alias = "dnr", value_name = "STR")]
    pub(crate) dirname_replace: Option<String>,

    /// Use STR instead of `{/.}`.
    #[arg(long = "basenameextensionreplace", alias = "bner", value_name = "STR")]
    pub(crate) basename_extension_replace: Option<String>,

    /// Use STR instead of `{#}`.
    #[arg(long = "seqreplace", value_name = "STR")]
    pub(crate) seq_replace: Option<String>,

    /// Use STR instead of `{%}`.
    #[arg(long = "slotreplace", value_name = "STR")]
    pub(crate) slot_replace: Option<String>,

    /// Arguments from files and stdin end at DELIM instead of newline (`\n`, `\t`, `\0`, `\xHH`
    /// and `\NNN` escapes allowed).
    #[arg(short = 'd', long = "delimiter", value_name = "DELIM")]
    pub(crate) delimiter: Option<String>,

    /// Stop reading an input source at the argument EOF.
    #[arg(short = 'E', long = "eof", value_name = "EOF")]
    pub(crate) eof: Option<String>,

    /// Skip arguments that are empty or only blanks.
    #[arg(short = 'r', long = "no-run-if-empty")]
    pub(crate) no_run_if_empty: bool,

    /// With --pipe: each job's block in a temporary file, named by {} (instead of on stdin); the
    /// file is removed when the job ends.
    #[arg(long = "cat")]
    pub(crate) cat: bool,

    /// Leave out the first line of the first input source (`--shebang` uses it for the `#!` line).
    #[arg(long = "skip-first-line")]
    pub(crate) skip_first_line: bool,

    /// Trim blanks from arguments: n (none, the default), l (left), r (right), lr or rl (both).
    #[arg(long = "trim", value_name = "SIDES")]
    pub(crate) trim: Option<String>,

    /// Run the jobs in a random order (all input is read first).
    #[arg(long = "shuf")]
    pub(crate) shuf: bool,

    /// Store each job's stdout in a file under $TMPDIR (or --tmpdir) and print the file's name.
    #[arg(long = "files", conflicts_with_all = ["ungroup", "json", "line_buffer"])]
    pub(crate) files: bool,

    /// Where --files puts its files [default: $TMPDIR, else /tmp].
    #[arg(long = "tmpdir", value_name = "DIR")]
    pub(crate) tmpdir: Option<PathBuf>,

    /// Print the input lines (or the command) quoted for the shell; run nothing.
    #[arg(long = "shellquote", alias = "shell-quote")]
    pub(crate) shellquote: bool,

    /// Run again the failed jobs of the joblog, with the commands the joblog holds.
    #[arg(long = "retry-failed", requires = "joblog", conflicts_with_all = ["resume", "resume_failed"])]
    pub(crate) retry_failed: bool,

    /// Use SEP instead of `:::` (and SEP+ instead of `:::+`).
    #[arg(long = "arg-sep", value_name = "SEP")]
    pub(crate) arg_sep: Option<String>,

    /// Use SEP instead of `::::` (and SEP+ instead of `::::+`).
    #[arg(long = "arg-file-sep", value_name = "SEP")]
    pub(crate) arg_file_sep: Option<String>,

    /// Set the variable NAME in each job to its slot number (`{%}`).
    #[arg(long = "process-slot-var", value_name = "NAME")]
    pub(crate) process_slot_var: Option<String>,

    /// Group each job's output (the default).
    #[arg(long = "group")]
    pub(crate) group: bool,

    /// The command and its fixed arguments.
    #[arg(trailing_var_arg = true, value_name = "COMMAND")]
    pub(crate) command: Vec<OsString>,
}

/// Where one input source's arguments come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SourceSpec {
    /// `::: a b c`
    Values(Vec<Vec<u8>>),
    /// `:::: FILE` or `-a FILE` (`-` is stdin).
    File(PathBuf),
}

/// An input source and whether it is linked to the previous one (`:::+`, `::::+`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Source {
    pub(crate) spec: SourceSpec,
    pub(crate) linked: bool,
}

/// The command line, parsed but not yet validated.
#[derive(Debug)]
pub(crate) struct Parsed {
    pub(crate) options: RawOptions,
    pub(crate) sources: Vec<Source>,
}

/// What `martelli run` was asked to do.
#[derive(Debug)]
pub(crate) enum Request {
    /// Print this text (help) and exit 0.
    Help(String),
    /// Run.
    Run(Box<Parsed>),
}

/// Parses the arguments after `martelli run`, after the words of GNU parallel's profiles and of
/// `$PARALLEL` (as GNU parallel).
pub(crate) fn parse(args: Vec<OsString>) -> Result<Request, RunError> {
    let mut all = gnu::prefix_options(&args)?;
    all.extend(args);
    parse_args(all)
}

/// Parses the arguments (with `$PARALLEL`'s words already before them).
pub(crate) fn parse_args(args: Vec<OsString>) -> Result<Request, RunError> {
    let (seps, split) = gnu::Separators::find(&args);
    let mut head = args;
    let tail = head.split_off(split);
    attach_optional_values(&mut head);
    let argv = std::iter::once(OsString::from("martelli run")).chain(head);
    let options = match RawOptions::try_parse_from(argv) {
        Ok(options) => options,
        Err(e) if matches!(e.kind(), clap::error::ErrorKind::DisplayHelp) => {
            return Ok(Request::Help(e.render().to_string()));
        }
        Err(e) => {
            // A GNU parallel option that is not built is named as such, with what to do instead
            // (only for an option clap does not know: a conflict names a built one).
            if let (
                clap::error::ErrorKind::UnknownArgument,
                Some(clap::error::ContextValue::String(arg)),
            ) = (e.kind(), e.get(clap::error::ContextKind::InvalidArg))
            {
                if let Some(message) = gnu::not_built(arg) {
                    return Err(RunError::Usage(message));
                }
            }
            return Err(RunError::Usage(one_line(&e)));
        }
    };
    let mut sources: Vec<Source> = options
        .arg_file
        .iter()
        .map(|f| Source {
            spec: SourceSpec::File(f.clone()),
            linked: false,
        })
        .collect();
    // (is_file, linked) of the group being read.
    let mut group: Option<(bool, bool)> = None;
    for arg in tail {
        if let Some(kind) = arg.to_str().and_then(|s| seps.kind(s)) {
            if !kind.0 {
                sources.push(Source {
                    spec: SourceSpec::Values(Vec::new()),
                    linked: kind.1,
                });
            }
            group = Some(kind);
            continue;
        }
        match group {
            Some((false, _)) => {
                if let Some(Source {
                    spec: SourceSpec::Values(values),
                    ..
                }) = sources.last_mut()
                {
                    values.push(arg.into_vec());
                }
            }
            // Every file after `::::` is a source of its own; after `::::+` each is linked to
            // the one before it, as in GNU parallel.
            Some((true, linked)) => sources.push(Source {
                spec: SourceSpec::File(PathBuf::from(arg)),
                linked,
            }),
            None => unreachable!("the tail starts with a marker"),
        }
    }
    if sources
        .iter()
        .any(|s| s.spec == SourceSpec::Values(Vec::new()))
    {
        return Err(RunError::Usage(format!(
            "an input source `{}` has no arguments; give at least one after each `{}`",
            seps.arg, seps.arg
        )));
    }
    Ok(Request::Run(Box::new(Parsed { options, sources })))
}

/// GNU parallel's `-l2` (an optional value, attached): clap takes optional values only with `=`,
/// so the option words before the command are rewritten to `--max-lines=2`.
fn attach_optional_values(head: &mut [OsString]) {
    use clap::CommandFactory;
    let attached = |w: &OsString| {
        w.to_str()
            .and_then(|w| w.strip_prefix("-l"))
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    };
    // Building clap's command costs start-up time: only when a word looks like `-l2`.
    if !head.iter().any(attached) {
        return;
    }
    let command = RawOptions::command();
    let takes_value = |word: &str| -> bool {
        let arg = if let Some(long) = word.strip_prefix("--") {
            if long.contains('=') {
                return false;
            }
            command.get_arguments().find(|a| {
                a.get_long() == Some(long) || a.get_all_aliases().is_some_and(|v| v.contains(&long))
            })
        } else {
            let mut chars = word.chars().skip(1);
            match (chars.next(), chars.next()) {
                (Some(c), None) => command.get_arguments().find(|a| a.get_short() == Some(c)),
                _ => None,
            }
        };
        arg.is_some_and(|a| {
            a.get_action().takes_values() && a.get_num_args().is_none_or(|n| n.min_values() > 0)
        })
    };
    let mut i = 0;
    while i < head.len() {
        let Some(word) = head[i].to_str() else { break };
        if word == "--" || !word.starts_with('-') || word == "-" {
            break;
        }
        if let Some(n) = word.strip_prefix("-l") {
            if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) {
                head[i] = OsString::from(format!("--max-lines={n}"));
            }
        } else if takes_value(word) {
            i += 1;
        }
        i += 1;
    }
}

/// clap's error as one line: the problem, and clap's tip when it has one.
fn one_line(error: &clap::Error) -> String {
    let rendered = error.render().to_string();
    let mut parts: Vec<String> = Vec::new();
    for line in rendered.lines().map(str::trim) {
        if line.starts_with("Usage:") || line.starts_with("For more information") {
            break;
        }
        if line.is_empty() {
            continue;
        }
        let line = line
            .strip_prefix("error: ")
            .or_else(|| line.strip_prefix("tip: "))
            .unwrap_or(line);
        match parts.last_mut() {
            // A line ending in ':' introduces a list (such as missing arguments): keep it together.
            Some(last) if last.ends_with(':') => {
                last.push(' ');
                last.push_str(line);
            }
            _ => parts.push(line.to_string()),
        }
    }
    if parts.is_empty() {
        parts.push("invalid arguments".to_string());
    }
    parts.push("see `martelli run --help`".to_string());
    parts.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Result<Parsed, RunError> {
        match parse_args(args.iter().map(OsString::from).collect())? {
            Request::Run(parsed) => Ok(*parsed),
            Request::Help(_) => panic!("help"),
        }
    }

    #[test]
    fn splits_options_command_and_sources() {
        let p = run(&[
            "-j", "3", "-k", "echo", "-n", "{}", ":::", "a", "b", ":::+", "1", "::::", "f1", "f2",
        ])
        .unwrap();
        assert_eq!(p.options.jobs.as_deref(), Some("3"));
        assert!(p.options.keep_order);
        assert_eq!(p.options.command, ["echo", "-n", "{}"]);
        assert_eq!(
            p.sources,
            vec![
                Source {
                    spec: SourceSpec::Values(vec![b"a".to_vec(), b"b".to_vec()]),
                    linked: false
                },
                Source {
                    spec: SourceSpec::Values(vec![b"1".to_vec()]),
                    linked: true
                },
                Source {
                    spec: SourceSpec::File("f1".into()),
                    linked: false
                },
                Source {
                    spec: SourceSpec::File("f2".into()),
                    linked: false
                },
            ]
        );
    }

    #[test]
    fn unknown_option_is_one_line_with_a_tip() {
        let Err(RunError::Usage(message)) = run(&["--jbos", "2", "echo"]) else {
            panic!("accepted")
        };
        assert!(!message.contains('\n'), "{message}");
        assert!(
            message.contains("--jbos") && message.contains("--jobs"),
            "{message}"
        );
    }

    #[test]
    fn empty_source_is_an_error() {
        assert!(matches!(run(&["echo", ":::"]), Err(RunError::Usage(_))));
        assert!(matches!(
            run(&["echo", ":::", ":::", "a"]),
            Err(RunError::Usage(_))
        ));
    }
}
