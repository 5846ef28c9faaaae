//! Perl expressions: `{= perl expression =}`, `--rpl 'TAG perl expression'` and `--plus`, as in
//! GNU parallel.
//!
//! Every expression runs in ONE `perl` process, started once per run (before any job) and fed
//! over a pipe; slots take turns with it under a lock. The expression sees the argument in `$_`
//! and leaves the value there, as in GNU parallel, with `@arg` (the job's arguments from
//! `$arg[1]`), `seq()`, `slot()`, `total_jobs()`, `$job->seq()`, `$job->slot()`, `Q()`, `pQ()`,
//! `uq()` (leave the value unquoted), `hash()`, and the `yyyy_mm_dd…` date functions. Variables
//! keep their values from job to job, as in GNU parallel. Without `perl` on PATH the run is
//! refused before any job starts.
//!
//! # The pipe's protocol
//! Both directions frame every string with its length in bytes on a line of its own, so any byte
//! may appear in an argument or a value.
//! 1. martelli sends the number of expressions, then each (`LEN\nBYTES`); perl compiles each into
//!    a sub and answers `ok\n`, or `err LEN\nMESSAGE` for the first that does not compile.
//! 2. Per value: martelli sends `EXPR SEQ SLOT TOTAL ARGI NARGS\n` and NARGS arguments
//!    (`LEN\nBYTES`); perl answers `FLAGS LEN\nVALUE` (FLAGS: 1 uq() was called, 2 skip() was
//!    called, 4 the expression died and VALUE is perl's message).
//!
//! # Replacement-string tags
//! `--rpl` and `--plus` define tags that stand for an expression, such as `{..}` or `{:-(.+?)}`;
//! parentheses in a tag capture text that the expression reads as `$$1`, `$$2`…; `{3..}` uses the
//! tag on the 3rd argument. Tags are turned into expressions before the command is parsed, longest
//! tag first, never inside an expression, as GNU parallel does.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Mutex;

use regex::bytes::Regex;

use super::RunError;

/// The replacement strings `--plus` adds (GNU parallel 20221122's table).
pub(crate) const PLUS: &[(&str, &str)] = &[
    ("{+/}", "s:/[^/]*$:: || s:.*$::"),
    ("{+.}", "s:.*\\.:: || s:.*$::"),
    ("{+..}", "s:.*\\.([^/.]*\\.[^/.]*)$:$1: || s:.*$::"),
    (
        "{+...}",
        "s:.*\\.([^/.]*\\.[^/.]*\\.[^/.]*)$:$1: || s:.*$::",
    ),
    ("{..}", "s:\\.[^/.]*\\.[^/.]*$::"),
    ("{...}", "s:\\.[^/.]*\\.[^/.]*\\.[^/.]*$::"),
    ("{/..}", "s:.*/::; s:\\.[^/.]*\\.[^/.]*$::"),
    ("{/...}", "s:.*/::; s:\\.[^/.]*\\.[^/.]*\\.[^/.]*$::"),
    // n choose k: a job runs only when its arguments are in ascending order.
    (
        "{choose_k}",
        "for $t (2..$#arg){ if($arg[$t-1] ge $arg[$t]) { skip() } }",
    ),
    // A job runs only when no two of its arguments are the same.
    ("{uniq}", "if(::uniq(@arg) != @arg) { skip(); }"),
    ("{##}", "1 $_=total_jobs()"),
    (
        "{0%}",
        "1 $f=1+int((log($main::JOBSLOTS||1)/log(10)));$_=sprintf(\"%0${f}d\",slot())",
    ),
    (
        "{0#}",
        "1 $f=1+int((log(total_jobs())/log(10)));$_=sprintf(\"%0${f}d\",seq())",
    ),
    ("{:-([^}]+?)}", "$_ ||= $$1"),
    ("{:(\\d+?)}", "substr($_,0,$$1) = \"\""),
    ("{:(\\d+?):(\\d+?)}", "$_ = substr($_,$$1,$$2);"),
    (
        "{#([^#}][^}]*?)}",
        "$nongreedy=::make_regexp_ungreedy($$1);s/^$nongreedy(.*)/$1/;",
    ),
    ("{##([^#}][^}]*?)}", "s/^$$1//;"),
    (
        "{%([^}]+?)}",
        "$nongreedy=::make_regexp_ungreedy($$1);s/(.*)$nongreedy$/$1/;",
    ),
    ("{%%([^}]+?)}", "s/$$1$//;"),
    ("{/([^#%}/]+?)/([^}]*?)}", "s/$$1/$$2/;"),
    ("{/#([^}]+?)/([^}]*?)}", "s/^$$1/$$2/g;"),
    ("{/%([^}]+?)/([^}]*?)}", "s/$$1$/$$2/g;"),
    ("{//([^}]+?)/([^}]*?)}", "s/$$1/$$2/g;"),
    ("{^([^}]+?)}", "s/^($$1)/uc($1)/e;"),
    ("{^^([^}]+?)}", "s/($$1)/uc($1)/eg;"),
    ("{,([^}]+?)}", "s/^($$1)/lc($1)/e;"),
    ("{,,([^}]+?)}", "s/($$1)/lc($1)/eg;"),
    // The job slot, read by the shell from $PARALLEL_JOBSLOT.
    ("{slot}", "1 $_=\"\\${PARALLEL_JOBSLOT}\";uq()"),
    // The ssh host: GNU parallel's $PARALLEL_SSHHOST is ":" (this machine) for a local job, and
    // martelli run's jobs are all local.
    ("{host}", "1 $_=\":\""),
];

/// A piece of a command word before the native replacement strings are parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Segment {
    Text(Vec<u8>),
    /// `{=N expression =}`: the expression and the argument it reads (`None`: each argument).
    Perl {
        source: Option<i64>,
        expr: String,
    },
}

/// A `--rpl` tag compiled: the tag's regex, and its positional form (`{3..}`).
#[derive(Debug)]
struct Rpl {
    plain: Regex,
    positional: Option<Regex>,
    expr: String,
}

/// Splits `TAG EXPRESSION` (a `--rpl` value).
fn parse_rpl(spec: &str) -> Result<Rpl, RunError> {
    let (tag, expr) = spec
        .split_once(char::is_whitespace)
        .filter(|(t, e)| !t.is_empty() && !e.trim().is_empty())
        .ok_or_else(|| {
            RunError::Usage(format!(
                "invalid --rpl '{spec}': expected a tag, a space and a perl expression, such as --rpl '{{..}} s:\\.[^.]+$::'"
            ))
        })?;
    // As GNU parallel: a prefix without '(', an optional group of captures, a postfix without ')'.
    let (prefix, group, postfix) = match (tag.find('('), tag.rfind(')')) {
        (Some(open), Some(close)) if open < close => {
            (&tag[..open], &tag[open..=close], &tag[close + 1..])
        }
        _ => (tag, "", ""),
    };
    let bad = |e: regex::Error| {
        RunError::Usage(format!(
            "invalid --rpl tag '{tag}': its captures are not a regular expression ({e})"
        ))
    };
    let plain = Regex::new(&format!(
        "{}{group}{}",
        regex::escape(prefix),
        regex::escape(postfix)
    ))
    .map_err(bad)?;
    let positional = match prefix.strip_prefix('{') {
        Some(rest) => Some(
            Regex::new(&format!(
                r"\{{(-?\d+)\s*{}{group}{}",
                regex::escape(rest),
                regex::escape(postfix)
            ))
            .map_err(bad)?,
        ),
        None => None,
    };
    Ok(Rpl {
        plain,
        positional,
        expr: expr.trim_start().to_owned(),
    })
}

/// Perl's `"…"` quoting of a captured string, as GNU parallel's `perl_quote_scalar`.
fn perl_quote(s: &[u8]) -> String {
    let mut out = String::new();
    for c in String::from_utf8_lossy(s).chars() {
        if matches!(c, '\\' | '"' | '$' | '@') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The expression a tag match stands for: `$$n` read from captures set before it. An expression
/// that starts with a number (GNU's `{#}` is `1 $_=$job->seq()`) reads that argument only.
fn rpl_segment(expr: &str, captures: &[Option<&[u8]>], source: Option<i64>) -> Segment {
    let expr = rpl_expr(expr, captures);
    match (source, perl_segment(expr.as_bytes())) {
        (Some(n), Segment::Perl { expr, .. }) => Segment::Perl {
            source: Some(n),
            expr,
        },
        (None, segment) => segment,
        (Some(n), Segment::Text(_)) => Segment::Perl {
            source: Some(n),
            expr,
        },
    }
}

fn rpl_expr(expr: &str, captures: &[Option<&[u8]>]) -> String {
    let mut set = String::new();
    for (i, c) in captures.iter().enumerate() {
        if let Some(c) = c {
            set.push_str(&format!("$_pAr_gRp{} = \"{}\";", i + 1, perl_quote(c)));
        }
    }
    let body = Regex::new(r"\$\$(\d+)")
        .map(|re| {
            String::from_utf8_lossy(&re.replace_all(expr.as_bytes(), &b"$$_pAr_gRp${1}"[..]))
                .into_owned()
        })
        .unwrap_or_else(|_| expr.to_owned());
    set + &body
}

/// The parentheses around a perl expression: `{=` and `=}`, or what `--parens` gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Parens {
    pub(crate) left: Vec<u8>,
    pub(crate) right: Vec<u8>,
}

impl Default for Parens {
    fn default() -> Self {
        Parens {
            left: b"{=".to_vec(),
            right: b"=}".to_vec(),
        }
    }
}

impl Parens {
    /// `--parens LEFTRIGHT`: the first half of the string is the left parenthesis, the rest the
    /// right one, as GNU parallel splits it (`,,,,` gives `,,` and `,,`).
    pub(crate) fn parse(spec: &str) -> Result<Parens, RunError> {
        let bytes = spec.as_bytes();
        let half = bytes.len() / 2;
        if half == 0 {
            return Err(RunError::Usage(format!(
                "invalid --parens '{spec}': give the left and the right parenthesis joined, of the same length, such as --parens ,,,, (for ,, expression ,,) or the default {{==}}"
            )));
        }
        Ok(Parens {
            left: bytes[..half].to_vec(),
            right: bytes[half..].to_vec(),
        })
    }

    /// Whether `word` holds a left parenthesis.
    pub(crate) fn opens(&self, word: &[u8]) -> bool {
        find(word, &self.left).is_some()
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn rfind(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).rposition(|w| w == needle)
}

/// GNU parallel's `merge_rpl_parts`: a word with a `{=` left open is joined (with spaces) to the
/// words after it until the `=}` that closes it, so `echo {= s/a/b/ =}` is one expression.
pub(crate) fn merge_words(words: &[Vec<u8>], parens: &Parens) -> Vec<Vec<u8>> {
    let open = |word: &[u8]| -> bool {
        // Remove matched pairs (the rightmost `{=` first) and look for one left.
        let (l_len, r_len) = (parens.left.len(), parens.right.len());
        let mut w = word.to_vec();
        loop {
            let Some(l) = rfind(&w, &parens.left) else {
                return false;
            };
            match find(&w[l + l_len..], &parens.right) {
                Some(r) => {
                    w.drain(l..l + l_len + r + r_len);
                }
                None => return true,
            }
        }
    };
    let mut out: Vec<Vec<u8>> = Vec::with_capacity(words.len());
    let mut i = 0;
    while i < words.len() {
        let mut word = words[i].clone();
        i += 1;
        while open(&word) && i < words.len() {
            word.push(b' ');
            word.extend_from_slice(&words[i]);
            i += 1;
        }
        out.push(word);
    }
    out
}

/// Splits a command word at `{= … =}` (the innermost pair, as GNU parallel) and expands the
/// tags of `rpls` in the text outside them.
pub(crate) fn segments(
    word: &[u8],
    rpls: &[String],
    parens: &Parens,
) -> Result<Vec<Segment>, RunError> {
    let (l_len, r_len) = (parens.left.len(), parens.right.len());
    let mut out = Vec::new();
    let mut text = Vec::new();
    let mut i = 0;
    while i < word.len() {
        if word[i..].starts_with(&parens.left) {
            // The nearest `=}` with no `{=` between.
            let body = &word[i + l_len..];
            let close = find(body, &parens.right);
            let inner_open = find(body, &parens.left);
            match (close, inner_open) {
                (Some(c), Some(o)) if o < c => {
                    text.push(word[i]);
                    i += 1;
                    continue;
                }
                (Some(c), _) => {
                    if !text.is_empty() {
                        out.push(Segment::Text(std::mem::take(&mut text)));
                    }
                    out.push(perl_segment(&body[..c]));
                    i += l_len + c + r_len;
                    continue;
                }
                (None, _) => {}
            }
        }
        text.push(word[i]);
        i += 1;
    }
    if !text.is_empty() {
        out.push(Segment::Text(text));
    }
    if rpls.is_empty() {
        return Ok(out);
    }
    let mut compiled: Vec<(usize, Rpl)> = Vec::new();
    for spec in rpls {
        let tag_len = spec.split_whitespace().next().map_or(0, str::len);
        compiled.push((tag_len, parse_rpl(spec)?));
    }
    // Long tags first: a short one may be part of a long one.
    compiled.sort_by_key(|c| std::cmp::Reverse(c.0));
    for (_, rpl) in &compiled {
        out = expand(out, rpl);
    }
    Ok(out)
}

fn perl_segment(inner: &[u8]) -> Segment {
    let text = String::from_utf8_lossy(inner).into_owned();
    let digits = text
        .char_indices()
        .take_while(|&(i, c)| c.is_ascii_digit() || (i == 0 && c == '-'))
        .count();
    let source = text[..digits].parse::<i64>().ok().filter(|&n| n != 0);
    let expr = if source.is_some() {
        text[digits..].trim_start().to_owned()
    } else {
        text
    };
    Segment::Perl { source, expr }
}

fn expand(segments: Vec<Segment>, rpl: &Rpl) -> Vec<Segment> {
    let mut out = Vec::new();
    for segment in segments {
        let Segment::Text(text) = segment else {
            out.push(segment);
            continue;
        };
        // The positional form first (`{3..}`), then the plain one, each on what is left.
        let mut pieces = vec![Segment::Text(text)];
        if let Some(re) = &rpl.positional {
            pieces = split_matches(pieces, re, |caps| {
                let source = caps
                    .get(1)
                    .and_then(|m| std::str::from_utf8(m.as_bytes()).ok())
                    .and_then(|s| s.parse::<i64>().ok());
                let groups: Vec<Option<&[u8]>> = (2..caps.len())
                    .map(|i| caps.get(i).map(|m| m.as_bytes()))
                    .collect();
                rpl_segment(&rpl.expr, &groups, source)
            });
        }
        pieces = split_matches(pieces, &rpl.plain, |caps| {
            let groups: Vec<Option<&[u8]>> = (1..caps.len())
                .map(|i| caps.get(i).map(|m| m.as_bytes()))
                .collect();
            rpl_segment(&rpl.expr, &groups, None)
        });
        out.extend(pieces);
    }
    out
}

fn split_matches(
    segments: Vec<Segment>,
    re: &Regex,
    make: impl Fn(&regex::bytes::Captures<'_>) -> Segment,
) -> Vec<Segment> {
    let mut out = Vec::new();
    for segment in segments {
        let Segment::Text(text) = segment else {
            out.push(segment);
            continue;
        };
        let mut last = 0;
        for caps in re.captures_iter(&text) {
            let Some(whole) = caps.get(0) else { continue };
            if whole.start() > last {
                out.push(Segment::Text(text[last..whole.start()].to_vec()));
            }
            out.push(make(&caps));
            last = whole.end();
        }
        if last < text.len() {
            out.push(Segment::Text(text[last..].to_vec()));
        }
    }
    out
}

/// What an expression gave for one argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Value {
    pub(crate) bytes: Vec<u8>,
    /// `uq()` was called: the value goes into the command unquoted.
    pub(crate) unquoted: bool,
    /// `skip()` was called.
    pub(crate) skip: bool,
}

/// The one `perl` process of a run.
#[derive(Debug)]
pub(crate) struct Perl {
    exprs: Vec<String>,
    io: Mutex<PerlIo>,
}

#[derive(Debug)]
struct PerlIo {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    /// Set once the process failed: every later evaluation fails too.
    broken: Option<String>,
}

impl Drop for PerlIo {
    fn drop(&mut self) {
        // Closing stdin ends the loop; the process is reaped here, not left as a zombie.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const SCRIPT: &str = r#"
# First, before any lexical variable exists: the expressions must not see the script's own.
sub compile_expr { return eval("package main; sub { no strict; no warnings; my \$job = shift; " . $_[0] . "\n}") }
use strict; no warnings;
use POSIX ();
binmode STDIN; binmode STDOUT; $| = 1;
our ($JOBSEQ, $JOBSLOT, $TOTAL, $UQ, $SKIP, $JOBSLOTS, @arg);
{ package martelli::Job;
  sub seq { $main::JOBSEQ } sub slot { $main::JOBSLOT } sub skip { $main::SKIP = 1 } }
sub seq { $JOBSEQ } sub slot { $JOBSLOT } sub total_jobs { $TOTAL }
sub uq { $UQ = 1 } sub skip { $SKIP = 1 }
sub Q { local $_ = $_[0];
  if (/[^-_.+a-z0-9\/]/i) { s/'/'"'"'/g; $_ = "'$_'"; s/^''//; s/''$//; return $_ }
  elsif ($_ eq "") { return "''" } else { return $_ } }
sub pQ { my $a = $_[0]; if (defined $a) { $a =~ s/[\\\"\$\@]/\\$&/g } return $a }
sub hash { require B; B::hash(@_) }
sub uniq { my %seen = map { $_ => 1 } @_; return keys %seen }
sub yyyy_mm_dd_hh_mm_ss { POSIX::strftime("%Y-%m-%dT%H:%M:%S", localtime(time())) }
sub yyyy_mm_dd_hh_mm { POSIX::strftime("%Y-%m-%dT%H:%M", localtime(time())) }
sub yyyy_mm_dd { POSIX::strftime("%Y-%m-%d", localtime(time())) }
sub hh_mm_ss { POSIX::strftime("%H:%M:%S", localtime(time())) }
sub hh_mm { POSIX::strftime("%H:%M", localtime(time())) }
sub yyyymmddhhmmss { POSIX::strftime("%Y%m%d%H%M%S", localtime(time())) }
sub yyyymmddhhmm { POSIX::strftime("%Y%m%d%H%M", localtime(time())) }
sub yyyymmdd { POSIX::strftime("%Y%m%d", localtime(time())) }
sub hhmmss { POSIX::strftime("%H%M%S", localtime(time())) }
sub hhmm { POSIX::strftime("%H%M", localtime(time())) }
sub make_regexp_ungreedy {
  my $regexp = shift; my ($class, $escape, $found, $out) = (0, 0, 0, "");
  for my $c (split //, $regexp) {
    if ($found) { if ($c ne "?") { $out .= "?" } $found = 0 }
    $out .= $c;
    if ($escape) { $escape = 0; next } if ($c eq "\\") { $escape = 1; next }
    if ($c eq '[') { $class = 1; next } if ($class) { $class = 0 if $c eq ']'; next }
    if ($c =~ /[*}+]/) { $found = 1 } }
  $out .= '?' if $found; return $out }
sub rd_line { my $l = <STDIN>; exit 0 unless defined $l; chomp $l; return $l }
sub rd { my $n = shift; my $b = '';
  while (length($b) < $n) { my $r = read(STDIN, $b, $n - length($b), length($b)); exit 0 unless $r }
  return $b }
sub reply { my ($head, $s) = @_; utf8::encode($s) if utf8::is_utf8($s); print $head, length($s), "\n", $s }
$JOBSLOTS = $ENV{MARTELLI_JOBSLOTS} || 1;
my $n = rd_line(); my @subs;
for my $i (1..$n) {
  my $code = rd(rd_line());
  my $sub = compile_expr($code);
  if (!$sub) { reply("err ", "$@"); exit 0 }
  push @subs, $sub }
print "ok\n";
my $job = bless {}, 'martelli::Job';
while (1) {
  my ($e, $seq, $slot, $total, $argi, $nargs) = split / /, rd_line();
  my @a = (undef); for (1..$nargs) { push @a, rd(rd_line()) }
  @arg = @a; $JOBSEQ = $seq; $JOBSLOT = $slot; $TOTAL = $total; $UQ = 0; $SKIP = 0;
  local $_ = ($argi > 0 && defined $a[$argi]) ? $a[$argi] : '';
  my $ok = eval { $subs[$e]->($job); 1 };
  my $flags = ($UQ ? 1 : 0) | ($SKIP ? 2 : 0);
  if ($ok) { reply("$flags ", defined $_ ? "$_" : '') } else { reply(($flags | 4) . " ", "$@") }
}
"#;

fn pipe_error(e: std::io::Error) -> String {
    format!("the perl process that evaluates {{= =}} failed: {e}")
}

impl Perl {
    /// Starts `perl` and compiles the expressions. Refuses (before any job) when perl is missing
    /// or an expression does not compile.
    pub(crate) fn start(exprs: Vec<String>, jobs: usize) -> Result<Perl, RunError> {
        let mut child = Command::new("perl")
            .arg("-e")
            .arg(SCRIPT)
            .env("MARTELLI_JOBSLOTS", jobs.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| {
                RunError::Usage(format!(
                    "the command uses a perl expression ({{= … =}}, --rpl or --plus), which needs `perl` on PATH, and it cannot be started ({e}); install perl, or write the command without them"
                ))
            })?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(RunError::Usage("cannot talk to perl: no pipe".into()));
        };
        let mut io = PerlIo {
            child,
            stdin,
            stdout: BufReader::new(stdout),
            broken: None,
        };
        let mut hello = format!("{}\n", exprs.len()).into_bytes();
        for e in &exprs {
            hello.extend_from_slice(format!("{}\n", e.len()).as_bytes());
            hello.extend_from_slice(e.as_bytes());
        }
        let compiled = io
            .stdin
            .write_all(&hello)
            .and_then(|()| io.stdin.flush())
            .map_err(pipe_error)
            .and_then(|()| read_line(&mut io.stdout));
        match compiled {
            Ok(line) if line == "ok" => {}
            Ok(line) if line.starts_with("err ") => {
                let message = line[4..]
                    .parse::<usize>()
                    .map_err(|_| "a garbled reply".to_string())
                    .and_then(|n| read_bytes(&mut io.stdout, n))
                    .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
                    .unwrap_or_else(|e| e);
                return Err(RunError::Usage(format!(
                    "a perl expression in the command does not compile: {message}"
                )));
            }
            Ok(other) => {
                return Err(RunError::Usage(format!(
                    "perl did not start as expected (it said '{other}')"
                )));
            }
            Err(e) => return Err(RunError::Usage(e)),
        }
        Ok(Perl {
            exprs,
            io: Mutex::new(io),
        })
    }

    /// Evaluates expression `expr` with `$_` = argument `argi` (1-based; 0: none) of `args`.
    pub(crate) fn eval(
        &self,
        expr: usize,
        args: &[Vec<u8>],
        argi: usize,
        seq: u64,
        slot: usize,
        total: Option<u64>,
    ) -> Result<Value, String> {
        let mut io = self.io.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = &io.broken {
            return Err(e.clone());
        }
        let result = Self::exchange(&mut io, expr, args, argi, seq, slot, total);
        match result {
            Ok((flags, bytes)) if flags & 4 != 0 => Err(format!(
                "the perl expression `{}` died: {}",
                self.exprs.get(expr).map_or("?", String::as_str).trim(),
                String::from_utf8_lossy(&bytes).trim()
            )),
            Ok((flags, bytes)) => Ok(Value {
                bytes,
                unquoted: flags & 1 != 0,
                skip: flags & 2 != 0,
            }),
            Err(e) => {
                io.broken = Some(e.clone());
                Err(e)
            }
        }
    }

    fn exchange(
        io: &mut PerlIo,
        expr: usize,
        args: &[Vec<u8>],
        argi: usize,
        seq: u64,
        slot: usize,
        total: Option<u64>,
    ) -> Result<(u32, Vec<u8>), String> {
        let total = total.map_or_else(|| "0".to_string(), |t| t.to_string());
        let mut request =
            format!("{expr} {seq} {slot} {total} {argi} {}\n", args.len()).into_bytes();
        for a in args {
            request.extend_from_slice(format!("{}\n", a.len()).as_bytes());
            request.extend_from_slice(a);
        }
        io.stdin
            .write_all(&request)
            .and_then(|()| io.stdin.flush())
            .map_err(pipe_error)?;
        let head = read_line(&mut io.stdout)?;
        let (flags, len) = head
            .split_once(' ')
            .and_then(|(f, l)| Some((f.parse::<u32>().ok()?, l.parse::<usize>().ok()?)))
            .ok_or_else(|| format!("the perl process sent a garbled reply '{head}'"))?;
        Ok((flags, read_bytes(&mut io.stdout, len)?))
    }
}

fn read_line(r: &mut BufReader<ChildStdout>) -> Result<String, String> {
    let mut line = String::new();
    match r.read_line(&mut line) {
        Ok(0) => Err("the perl process that evaluates {= =} ended".to_string()),
        Ok(_) => Ok(line.trim_end_matches('\n').to_owned()),
        Err(e) => Err(pipe_error(e)),
    }
}

fn read_bytes(r: &mut BufReader<ChildStdout>, n: usize) -> Result<Vec<u8>, String> {
    let mut buf = vec![0; n];
    r.read_exact(&mut buf).map_err(pipe_error)?;
    Ok(buf)
}

#[cfg(test)]
mod tests;
