//! Shell quoting, and telling a shell line simple enough to run without the shell.

/// Quotes `s` for a POSIX shell as GNU parallel does: as it is when it is made only of
/// `[-_.+a-zA-Z0-9/]`, `''` when empty, otherwise in single quotes with each `'` written `'"'"'`.
pub(crate) fn shell_quote(s: &[u8]) -> Vec<u8> {
    if s.is_empty() {
        return b"''".to_vec();
    }
    let safe = |b: &u8| b.is_ascii_alphanumeric() || b"-_.+/".contains(b);
    if s.iter().all(safe) {
        return s.to_vec();
    }
    let mut out = Vec::with_capacity(s.len() + 2);
    out.push(b'\'');
    for &b in s {
        if b == b'\'' {
            out.extend_from_slice(b"'\"'\"'");
        } else {
            out.push(b);
        }
    }
    out.push(b'\'');
    // GNU parallel drops the empty '' that a leading or trailing quote leaves.
    if out.starts_with(b"''") {
        out.drain(..2);
    }
    if out.ends_with(b"''") {
        out.truncate(out.len() - 2);
    }
    out
}

/// Words of `sh`'s grammar that a program of the same name would not replace: reserved words and
/// the builtins of POSIX shells (dash's set and a few of bash's).
const SHELL_WORDS: &[&[u8]] = &[
    b"!",
    b"{",
    b"}",
    b"case",
    b"do",
    b"done",
    b"elif",
    b"else",
    b"esac",
    b"fi",
    b"for",
    b"if",
    b"in",
    b"then",
    b"until",
    b"while",
    b"function",
    b"select",
    b"time",
    b"[[",
    b".",
    b":",
    b"[",
    b"alias",
    b"bg",
    b"break",
    b"builtin",
    b"cd",
    b"chdir",
    b"command",
    b"continue",
    b"declare",
    b"echo",
    b"eval",
    b"exec",
    b"exit",
    b"export",
    b"false",
    b"fc",
    b"fg",
    b"getopts",
    b"hash",
    b"jobs",
    b"kill",
    b"let",
    b"local",
    b"printf",
    b"pwd",
    b"read",
    b"readonly",
    b"return",
    b"set",
    b"shift",
    b"source",
    b"test",
    b"times",
    b"trap",
    b"true",
    b"type",
    b"typeset",
    b"ulimit",
    b"umask",
    b"unalias",
    b"unset",
    b"wait",
];

/// The words of a shell line that is one simple command with nothing for the shell to do: words
/// of plain characters (`[A-Za-z0-9_./,:@%+=-]`) and single-quoted strings, separated by spaces.
/// `None` when the line holds anything else (the shell is needed to read it) or no word.
pub(crate) fn plain_words(line: &[u8]) -> Option<Vec<Vec<u8>>> {
    let plain = |b: u8| b.is_ascii_alphanumeric() || b"_./,:@%+=-".contains(&b);
    let mut words = Vec::new();
    let mut word: Option<Vec<u8>> = None;
    let mut i = 0;
    while i < line.len() {
        match line[i] {
            b' ' => {
                words.extend(word.take());
                i += 1;
            }
            b'\'' => {
                let close = i + 1 + line[i + 1..].iter().position(|&b| b == b'\'')?;
                word.get_or_insert_with(Vec::new)
                    .extend_from_slice(&line[i + 1..close]);
                i = close + 1;
            }
            b if plain(b) => {
                word.get_or_insert_with(Vec::new).push(b);
                i += 1;
            }
            _ => return None,
        }
    }
    words.extend(word);
    (!words.is_empty()).then_some(words)
}

/// The program and arguments of a shell line that is one simple command with nothing for the
/// shell to do ([`plain_words`]) whose first word is not a shell builtin, reserved word or
/// assignment. Running such a line with `sh -c` would only have the shell split it into these
/// words and run the program, so it can be run directly, saving a shell. `None` when the shell is
/// needed.
pub(crate) fn simple_command(line: &[u8]) -> Option<Vec<Vec<u8>>> {
    let words = plain_words(line)?;
    let program = words.first()?;
    if program.is_empty() || program.contains(&b'=') || SHELL_WORDS.contains(&program.as_slice()) {
        return None;
    }
    Some(words)
}
