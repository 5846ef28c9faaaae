//! The command template: replacement strings, shell quoting, and composing one job's command.

mod shell;

pub(crate) use shell::{plain_words, shell_quote, simple_command};

/// What a replacement string takes from an argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    /// `{}`: the whole argument.
    Whole,
    /// `{.}`: without its extension.
    NoExt,
    /// `{/}`: its basename.
    Base,
    /// `{//}`: its directory.
    Dir,
    /// `{/.}`: its basename without extension.
    BaseNoExt,
    /// `{= perl expression =}` (the index of the expression in the run's perl process).
    Perl(usize),
}

/// One piece of a command word.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Literal(Vec<u8>),
    /// An argument; `source` is 1-based (negative counts from the end), `None` means all of them.
    Arg {
        source: Option<i64>,
        part: Part,
    },
    /// `{#}`
    Seq,
    /// `{%}`
    Slot,
}

/// How the composed command is run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Words joined as they are, arguments shell-quoted, run with `sh -c` (GNU parallel's default).
    Shell,
    /// `-q`: every word, arguments included, shell-quoted, run with `sh -c`.
    Quote,
    /// `--no-shell`: the words are the program and its arguments; no shell runs.
    NoShell,
    /// No command was given: each job's arguments, joined by spaces, are the shell line (GNU
    /// parallel's "no command means arguments are commands").
    Lines,
}

/// The replacement strings, as GNU parallel lets `-I`, `--extensionreplace`, … rename them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Tokens {
    /// `{}`
    pub(crate) whole: Vec<u8>,
    /// `{.}`
    pub(crate) no_ext: Vec<u8>,
    /// `{/}`
    pub(crate) base: Vec<u8>,
    /// `{//}`
    pub(crate) dir: Vec<u8>,
    /// `{/.}`
    pub(crate) base_no_ext: Vec<u8>,
    /// `{#}`
    pub(crate) seq: Vec<u8>,
    /// `{%}`
    pub(crate) slot: Vec<u8>,
}

impl Default for Tokens {
    fn default() -> Self {
        Tokens {
            whole: b"{}".to_vec(),
            no_ext: b"{.}".to_vec(),
            base: b"{/}".to_vec(),
            dir: b"{//}".to_vec(),
            base_no_ext: b"{/.}".to_vec(),
            seq: b"{#}".to_vec(),
            slot: b"{%}".to_vec(),
        }
    }
}

impl Tokens {
    /// The renamed replacement strings and what they stand for, longest first.
    fn renamed(&self) -> Vec<(&[u8], Piece)> {
        let d = Tokens::default();
        let whole = |part| Piece::Arg { source: None, part };
        let mut list: Vec<(&[u8], Piece)> = [
            (&self.whole, &d.whole, whole(Part::Whole)),
            (&self.no_ext, &d.no_ext, whole(Part::NoExt)),
            (&self.base, &d.base, whole(Part::Base)),
            (&self.dir, &d.dir, whole(Part::Dir)),
            (&self.base_no_ext, &d.base_no_ext, whole(Part::BaseNoExt)),
            (&self.seq, &d.seq, Piece::Seq),
            (&self.slot, &d.slot, Piece::Slot),
        ]
        .into_iter()
        .filter(|(t, d, _)| t != d && !t.is_empty())
        .map(|(t, _, p)| (t.as_slice(), p))
        .collect();
        list.sort_by_key(|(t, _)| std::cmp::Reverse(t.len()));
        list
    }

    /// The part a positional replacement string's suffix names: `{2.}` is `{2` + `.}`, the
    /// suffix of the current spelling of `{.}`. As in GNU parallel, positional forms follow the
    /// renamed strings: with `--er {e}` it is `{2e}` (and `{2.}` is text), with `-I {in}` `{2in}`,
    /// and a name without braces (`-I XX`) has no positional form.
    fn positional_part(&self, suffix: &[u8]) -> Option<Part> {
        [
            (&self.whole, Part::Whole),
            (&self.no_ext, Part::NoExt),
            (&self.base, Part::Base),
            (&self.dir, Part::Dir),
            (&self.base_no_ext, Part::BaseNoExt),
        ]
        .into_iter()
        .find(|(token, _)| {
            token
                .strip_prefix(b"{")
                .and_then(|t| t.strip_suffix(b"}"))
                .is_some_and(|inner| inner == suffix)
        })
        .map(|(_, part)| part)
    }

    /// Whether the default spelling of `piece` still means it (it was not renamed).
    fn default_kept(&self, piece: &Piece) -> bool {
        let d = Tokens::default();
        match piece {
            Piece::Arg { source: None, part } => match part {
                Part::Whole => self.whole == d.whole,
                Part::NoExt => self.no_ext == d.no_ext,
                Part::Base => self.base == d.base,
                Part::Dir => self.dir == d.dir,
                Part::BaseNoExt => self.base_no_ext == d.base_no_ext,
                Part::Perl(_) => true,
            },
            Piece::Seq => self.seq == d.seq,
            Piece::Slot => self.slot == d.slot,
            _ => true,
        }
    }
}

/// What one job runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Composed {
    /// A line for `sh -c`.
    Shell(Vec<u8>),
    /// A program and its arguments.
    Argv(Vec<Vec<u8>>),
}

impl Composed {
    /// The command as a person reads it (and as the joblog and `--dry-run` show it).
    pub(crate) fn display(&self) -> Vec<u8> {
        match self {
            Composed::Shell(line) => line.clone(),
            Composed::Argv(argv) => {
                let quoted: Vec<Vec<u8>> = argv.iter().map(|w| shell_quote(w)).collect();
                quoted.join(&b' ')
            }
        }
    }
}

/// What rendering one job's command keeps: perl values by (expression, argument), and whether
/// an expression called `skip()`.
#[derive(Debug, Default)]
struct RenderState {
    cache: std::collections::HashMap<(usize, usize), super::perl::Value>,
    skip: bool,
}

/// A parsed command template.
#[derive(Debug, Clone)]
pub(crate) struct Template {
    words: Vec<Vec<Piece>>,
    mode: Mode,
    /// Whether a replacement string takes input; without one, the arguments are appended.
    takes_input: bool,
    /// `-X`: a word holding `{}` (or `{.}`, …) is repeated for each argument of the job.
    context: bool,
    /// The perl process that evaluates `{= … =}`, when the command has one.
    perl: Option<std::sync::Arc<super::perl::Perl>>,
    /// The number of jobs, when known (perl's `total_jobs()`).
    total: Option<u64>,
}

impl Template {
    /// Parses the command words. Braces that are not a replacement string stay literal, as in GNU
    /// parallel.
    #[cfg(test)]
    pub(crate) fn parse(words: &[Vec<u8>], mode: Mode) -> Template {
        Self::parse_with(words, mode, &Tokens::default())
    }

    /// Parses the command words with replacement strings renamed by `tokens`.
    pub(crate) fn parse_with(words: &[Vec<u8>], mode: Mode, tokens: &Tokens) -> Template {
        if mode == Mode::Lines {
            return Template {
                words: vec![vec![Piece::Arg {
                    source: None,
                    part: Part::Whole,
                }]],
                mode,
                takes_input: true,
                context: false,
                perl: None,
                total: None,
            };
        }
        let renamed = tokens.renamed();
        let words: Vec<Vec<Piece>> = words
            .iter()
            .map(|w| parse_word(w, tokens, &renamed))
            .collect();
        // As in GNU parallel, any replacement string ({#} and {%} too) means nothing is appended.
        let takes_input = words
            .iter()
            .flatten()
            .any(|p| !matches!(p, Piece::Literal(_)));
        Template {
            words,
            mode,
            takes_input,
            context: false,
            perl: None,
            total: None,
        }
    }

    /// Parses the command words with perl expressions: `{= … =}`, and the tags of `rpls`
    /// (`--rpl`, `--plus`: `TAG EXPRESSION`) turned into expressions. Starts the one perl process
    /// of the run when the command has an expression, and fails (before any job) when perl is
    /// missing or an expression does not compile.
    pub(crate) fn parse_with_perl(
        words: &[Vec<u8>],
        mode: Mode,
        rpls: &[String],
        parens: &super::perl::Parens,
        jobs: usize,
    ) -> Result<Template, super::RunError> {
        use super::perl::{self, Segment};
        // Perl expressions come with GNU's default replacement strings (validate refuses -I and
        // its siblings beside them).
        let plain = Tokens::default();
        let plain_renamed = plain.renamed();
        let mut exprs: Vec<String> = Vec::new();
        let mut parsed: Vec<Vec<Piece>> = Vec::with_capacity(words.len());
        for word in words {
            let mut pieces = Vec::new();
            for segment in perl::segments(word, rpls, parens)? {
                match segment {
                    Segment::Text(text) => pieces.extend(parse_word(&text, &plain, &plain_renamed)),
                    Segment::Perl { source, expr } => {
                        let index = match exprs.iter().position(|e| *e == expr) {
                            Some(i) => i,
                            None => {
                                exprs.push(expr);
                                exprs.len() - 1
                            }
                        };
                        pieces.push(Piece::Arg {
                            source,
                            part: Part::Perl(index),
                        });
                    }
                }
            }
            parsed.push(pieces);
        }
        let perl = if exprs.is_empty() {
            None
        } else {
            Some(std::sync::Arc::new(perl::Perl::start(exprs, jobs)?))
        };
        // As in GNU parallel, any replacement string ({#} and {%} too) means nothing is appended.
        let takes_input = parsed
            .iter()
            .flatten()
            .any(|p| !matches!(p, Piece::Literal(_)));
        Ok(Template {
            words: parsed,
            mode,
            takes_input,
            context: false,
            perl,
            total: None,
        })
    }

    /// The arguments are never appended (`--tee`: they go only where the command names them).
    pub(crate) fn never_append(&mut self) {
        self.takes_input = true;
    }

    /// The number of jobs, for perl's `total_jobs()`.
    pub(crate) fn set_total(&mut self, total: Option<u64>) {
        self.total = total;
    }

    /// A perl piece's value(s): for each argument it reads, the expression's value, quoted for the
    /// shell (unless `uq()` was called) when `quote`. `ctx`: the argument a context word repeats.
    #[allow(clippy::too_many_arguments)]
    fn render_perl(
        &self,
        expr: usize,
        source: Option<i64>,
        args: &[Vec<u8>],
        ctx: Option<usize>,
        seq: u64,
        slot: usize,
        quote: bool,
        out: &mut Vec<u8>,
        state: &mut RenderState,
    ) -> Result<(), String> {
        let Some(perl) = &self.perl else {
            return Err("a perl expression without its perl process".into());
        };
        let indices: Vec<usize> = match (source, ctx) {
            (None, Some(j)) => vec![j + 1],
            (None, None) if args.is_empty() => vec![0],
            (None, None) => (1..=args.len()).collect(),
            (Some(n), _) => {
                let i = if n > 0 {
                    usize::try_from(n).unwrap_or(0)
                } else {
                    (args.len() + 1).saturating_sub(n.unsigned_abs() as usize)
                };
                vec![if i <= args.len() { i } else { 0 }]
            }
        };
        for (k, argi) in indices.into_iter().enumerate() {
            if k > 0 {
                out.push(b' ');
            }
            // As GNU parallel, an expression is evaluated once per argument of a job.
            let value = match state.cache.get(&(expr, argi)) {
                Some(v) => v.clone(),
                None => {
                    let v = perl.eval(expr, args, argi, seq, slot, self.total)?;
                    state.cache.insert((expr, argi), v.clone());
                    v
                }
            };
            state.skip |= value.skip;
            if quote && !value.unquoted {
                out.extend_from_slice(&shell_quote(&value.bytes));
            } else {
                out.extend_from_slice(&value.bytes);
            }
        }
        Ok(())
    }

    /// `-X`: repeat each word that holds `{}` (or `{.}`, `{/}`, …) once per argument, with the
    /// rest of the word around each (GNU parallel's context replace).
    pub(crate) fn set_context_replace(&mut self, on: bool) {
        self.context = on;
    }

    /// The words of the command for these arguments, replacement strings rendered (quoted for the
    /// shell when `quote`); with context replace, a word holding `{}` becomes one word per argument
    /// (none when the job has no argument). Sets `skip` when a perl expression called `skip()`.
    fn rendered_words(
        &self,
        args: &[Vec<u8>],
        seq: u64,
        slot: usize,
        quote: bool,
        state: &mut RenderState,
    ) -> Result<Vec<Vec<u8>>, String> {
        let mut words = Vec::with_capacity(self.words.len());
        let mut piece_into = |piece: &Piece, ctx: Option<usize>, out: &mut Vec<u8>| match piece {
            Piece::Arg {
                source,
                part: Part::Perl(expr),
            } => self.render_perl(*expr, *source, args, ctx, seq, slot, quote, out, state),
            Piece::Arg { source: None, .. } => {
                let these = match ctx {
                    Some(j) => std::slice::from_ref(&args[j]),
                    None => args,
                };
                render(piece, these, seq, slot, quote, out);
                Ok(())
            }
            _ => {
                render(piece, args, seq, slot, quote, out);
                Ok(())
            }
        };
        for word in &self.words {
            let repeat = self.context
                && word
                    .iter()
                    .any(|p| matches!(p, Piece::Arg { source: None, .. }));
            if repeat {
                for j in 0..args.len() {
                    let mut out = Vec::new();
                    for piece in word {
                        piece_into(piece, Some(j), &mut out)?;
                    }
                    words.push(out);
                }
            } else {
                let mut out = Vec::new();
                for piece in word {
                    piece_into(piece, None, &mut out)?;
                }
                words.push(out);
            }
        }
        Ok(words)
    }

    /// The largest source number a replacement string names (`{3}` → 3), to check it exists.
    pub(crate) fn max_source(&self) -> Option<i64> {
        self.words
            .iter()
            .flatten()
            .filter_map(|p| match p {
                Piece::Arg {
                    source: Some(n), ..
                } => Some(n.abs()),
                _ => None,
            })
            .max()
    }

    /// The command of job number `seq` running in `slot`, with `args` (one per input source).
    /// A perl expression that fails renders nothing here; the engine uses [`Template::try_compose`].
    pub(crate) fn compose(&self, args: &[Vec<u8>], seq: u64, slot: usize) -> Composed {
        self.try_compose(args, seq, slot)
            .ok()
            .flatten()
            .unwrap_or(Composed::Shell(Vec::new()))
    }

    /// As [`Template::compose`]; `Ok(None)` when a perl expression called `skip()` (the job is not
    /// run), `Err` when a perl expression died or the perl process failed.
    pub(crate) fn try_compose(
        &self,
        args: &[Vec<u8>],
        seq: u64,
        slot: usize,
    ) -> Result<Option<Composed>, String> {
        let mut state = RenderState::default();
        let composed = match self.mode {
            Mode::Shell => {
                let mut line = self
                    .rendered_words(args, seq, slot, true, &mut state)?
                    .join(&b' ');
                if !self.takes_input {
                    for arg in args {
                        line.push(b' ');
                        line.extend_from_slice(&shell_quote(arg));
                    }
                }
                Composed::Shell(line)
            }
            Mode::Lines => Composed::Shell(args.join(&b' ')),
            Mode::Quote => {
                let mut words = self.rendered_words(args, seq, slot, false, &mut state)?;
                if !self.takes_input {
                    words.extend(args.iter().cloned());
                }
                let quoted: Vec<Vec<u8>> = words.iter().map(|w| shell_quote(w)).collect();
                Composed::Shell(quoted.join(&b' '))
            }
            Mode::NoShell => {
                let mut words = self.rendered_words(args, seq, slot, false, &mut state)?;
                if !self.takes_input {
                    words.extend(args.iter().cloned());
                }
                Composed::Argv(words)
            }
        };
        Ok((!state.skip).then_some(composed))
    }
}

fn render(piece: &Piece, args: &[Vec<u8>], seq: u64, slot: usize, quote: bool, out: &mut Vec<u8>) {
    let emit = |value: &[u8], out: &mut Vec<u8>| {
        if quote {
            out.extend_from_slice(&shell_quote(value));
        } else {
            out.extend_from_slice(value);
        }
    };
    match piece {
        Piece::Literal(text) => out.extend_from_slice(text),
        Piece::Seq => out.extend_from_slice(seq.to_string().as_bytes()),
        Piece::Slot => out.extend_from_slice(slot.to_string().as_bytes()),
        Piece::Arg { source: None, part } => {
            for (i, arg) in args.iter().enumerate() {
                if i > 0 {
                    out.push(b' ');
                }
                emit(&transform(arg, *part), out);
            }
        }
        Piece::Arg {
            source: Some(n),
            part,
        } => {
            let index = if *n > 0 {
                usize::try_from(*n - 1).ok()
            } else {
                args.len().checked_sub(n.unsigned_abs() as usize)
            };
            // An argument the job does not have (the last job of `-N`, a short line of a linked
            // source) renders as nothing: in a shell line not even an empty quoted word, as GNU
            // parallel gives it (`-n2 echo {1} {2} ::: a b c` runs `echo c `).
            if let Some(value) = index.and_then(|i| args.get(i)) {
                emit(&transform(value, *part), out);
            }
        }
    }
}

/// Parses one command word into literals and replacement strings.
fn parse_word(word: &[u8], tokens: &Tokens, renamed: &[(&[u8], Piece)]) -> Vec<Piece> {
    let mut pieces = Vec::new();
    let mut literal = Vec::new();
    let mut i = 0;
    while i < word.len() {
        if let Some((token, piece)) = renamed.iter().find(|(t, _)| word[i..].starts_with(t)) {
            if !literal.is_empty() {
                pieces.push(Piece::Literal(std::mem::take(&mut literal)));
            }
            pieces.push(piece.clone());
            i += token.len();
            continue;
        }
        if word[i] == b'{' {
            if let Some(len) = word[i + 1..].iter().position(|&b| b == b'}') {
                if let Some(piece) = parse_replacement(&word[i + 1..i + 1 + len], tokens) {
                    if !literal.is_empty() {
                        pieces.push(Piece::Literal(std::mem::take(&mut literal)));
                    }
                    pieces.push(piece);
                    i += len + 2;
                    continue;
                }
            }
        }
        literal.push(word[i]);
        i += 1;
    }
    if !literal.is_empty() {
        pieces.push(Piece::Literal(literal));
    }
    pieces
}

/// Parses the inside of `{…}` with the replacement strings `tokens` define; `None` when it is
/// not a replacement string.
fn parse_replacement(inner: &[u8], tokens: &Tokens) -> Option<Piece> {
    let piece = match inner {
        b"#" => Piece::Seq,
        b"%" => Piece::Slot,
        _ => parse_arg(inner, tokens)?,
    };
    // A default spelling that was renamed is text (`{}` after `-I XX`).
    tokens.default_kept(&piece).then_some(piece)
}

/// `{N…}` and the unnumbered `{…}` of an argument.
fn parse_arg(inner: &[u8], tokens: &Tokens) -> Option<Piece> {
    let digits = inner
        .iter()
        .enumerate()
        .take_while(|&(i, &b)| b.is_ascii_digit() || (i == 0 && b == b'-'))
        .count();
    let (number, rest) = inner.split_at(digits);
    let source = if number.is_empty() {
        None
    } else {
        let n: i64 = std::str::from_utf8(number).ok()?.parse().ok()?;
        if n == 0 {
            return None;
        }
        Some(n)
    };
    let part = match source {
        // Numbered: the suffix of the current spelling (`positional_part`).
        Some(_) => tokens.positional_part(rest)?,
        None => match rest {
            b"" => Part::Whole,
            b"." => Part::NoExt,
            b"/" => Part::Base,
            b"//" => Part::Dir,
            b"/." => Part::BaseNoExt,
            _ => return None,
        },
    };
    Some(Piece::Arg { source, part })
}

fn transform(arg: &[u8], part: Part) -> Vec<u8> {
    match part {
        Part::Whole => arg.to_vec(),
        Part::NoExt => strip_ext(arg).to_vec(),
        Part::Base => basename(arg).to_vec(),
        Part::Dir => dirname(arg),
        Part::BaseNoExt => strip_ext(basename(arg)).to_vec(),
        // Evaluated by the template, which holds the perl process (`render_perl`).
        Part::Perl(_) => arg.to_vec(),
    }
}

/// GNU parallel's `{.}`: removes `\.[^/.]*$`.
fn strip_ext(s: &[u8]) -> &[u8] {
    match s.iter().rposition(|&b| b == b'.' || b == b'/') {
        Some(i) if s[i] == b'.' => &s[..i],
        _ => s,
    }
}

/// GNU parallel's `{/}`: removes `.*/`.
fn basename(s: &[u8]) -> &[u8] {
    match s.iter().rposition(|&b| b == b'/') {
        Some(i) => &s[i + 1..],
        None => s,
    }
}

/// GNU parallel's `{//}`: Perl's `File::Basename::dirname` (`a/b` → `a`, `a` → `.`, `/a` → `/`,
/// `a/b/` → `a`).
fn dirname(s: &[u8]) -> Vec<u8> {
    fn fileparse(p: &[u8]) -> (Vec<u8>, Vec<u8>) {
        match p.iter().rposition(|&b| b == b'/') {
            Some(i) => (p[..=i].to_vec(), p[i + 1..].to_vec()),
            None => (b"./".to_vec(), p.to_vec()),
        }
    }
    fn strip_trailing_slashes(d: &mut Vec<u8>) {
        while d.len() > 1 && d.last() == Some(&b'/') {
            d.pop();
        }
    }
    let (mut dir, base) = fileparse(s);
    strip_trailing_slashes(&mut dir);
    if base.is_empty() {
        dir = fileparse(&dir).0;
        strip_trailing_slashes(&mut dir);
    }
    dir
}

#[cfg(test)]
mod tests;
