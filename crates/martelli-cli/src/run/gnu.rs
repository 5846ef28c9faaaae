//! GNU parallel's conventions around the command line: the `$PARALLEL` options variable, the
//! argument separators (`--arg-sep`, `--arg-file-sep`), the shell jobs run in, and the options and
//! constructs `martelli run` does not implement, which are refused by their GNU name before any
//! job starts rather than misread.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::RunError;

/// The words GNU parallel puts before the command line: those of its profiles, then those of
/// `$PARALLEL`; none with `--plain`. `args` is the command line, looked at for `--profile`/`-J`
/// and `--plain` among its options (before the command).
///
/// Profiles, as GNU parallel reads them: without `--profile`, the files `/etc/parallel/config`,
/// `config` in each configuration directory (`$PARALLEL_HOME`, `$XDG_CONFIG_HOME/parallel`,
/// `parallel` in each of `$XDG_CONFIG_DIRS`, `~/.parallel`; those that exist) and `~/.parallelrc`,
/// when they exist; with `--profile NAME` (repeatable), only the files it names: a path starting
/// with `/` or `./`, or NAME in the configuration directories, which must exist. Each line is
/// shell words; a line starting with `#` is a comment.
pub(crate) fn prefix_options(args: &[OsString]) -> Result<Vec<OsString>, RunError> {
    let (profiles, plain) = profile_flags(args);
    if plain {
        return Ok(Vec::new());
    }
    let mut words = Vec::new();
    for path in profile_files(&profiles)? {
        words.extend(read_profile(&path)?);
    }
    words.extend(env_options()?);
    Ok(words)
}

/// The `--profile`/`-J` names and whether `--plain` was given, among the options at the head of
/// `args` (up to the first word that is not an option, as GNU parallel's option parser stops).
fn profile_flags(args: &[OsString]) -> (Vec<OsString>, bool) {
    let mut profiles = Vec::new();
    let mut plain = false;
    let mut words = args.iter();
    while let Some(word) = words.next() {
        let w = word.as_bytes();
        if w == b"--" || !w.starts_with(b"-") || w == b"-" {
            break;
        }
        if w == b"--plain" {
            plain = true;
        } else if w == b"--profile" || w == b"-J" {
            profiles.extend(words.next().cloned());
        } else if let Some(name) = w.strip_prefix(b"--profile=") {
            profiles.push(OsStr::from_bytes(name).to_owned());
        } else if let Some(name) = w.strip_prefix(b"-J").filter(|n| !n.is_empty()) {
            profiles.push(OsStr::from_bytes(name).to_owned());
        }
    }
    (profiles, plain)
}

/// GNU parallel's configuration directories that exist.
fn config_dirs() -> Vec<PathBuf> {
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    let mut dirs: Vec<PathBuf> = Vec::new();
    dirs.extend(var("PARALLEL_HOME").map(PathBuf::from));
    dirs.extend(var("XDG_CONFIG_HOME").map(|d| Path::new(&d).join("parallel")));
    if let Some(list) = var("XDG_CONFIG_DIRS") {
        dirs.extend(std::env::split_paths(&list).map(|d| d.join("parallel")));
    }
    dirs.extend(var("HOME").map(|h| Path::new(&h).join(".parallel")));
    dirs.retain(|d| d.is_dir());
    dirs
}

/// The profile files to read, in order.
fn profile_files(names: &[OsString]) -> Result<Vec<PathBuf>, RunError> {
    let dirs = config_dirs();
    if names.is_empty() {
        let mut files = vec![PathBuf::from("/etc/parallel/config")];
        files.extend(dirs.iter().map(|d| d.join("config")));
        files.extend(std::env::var_os("HOME").map(|h| Path::new(&h).join(".parallelrc")));
        // The default files need not exist.
        files.retain(|f| f.is_file());
        return Ok(files);
    }
    let mut files = Vec::new();
    for name in names {
        let path = Path::new(name);
        let found: Vec<PathBuf> = if path.starts_with("/") || path.starts_with("./") {
            vec![path.to_owned()]
        } else {
            dirs.iter().map(|d| d.join(path)).collect()
        };
        let found: Vec<PathBuf> = found.into_iter().filter(|f| f.is_file()).collect();
        if found.is_empty() {
            return Err(RunError::Usage(format!(
                "--profile {}: no such readable file (looked for it in {})",
                path.display(),
                if path.is_absolute() || path.starts_with("./") {
                    "that path".to_owned()
                } else if dirs.is_empty() {
                    "~/.parallel, which does not exist".to_owned()
                } else {
                    dirs.iter()
                        .map(|d| d.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            )));
        }
        files.extend(found);
    }
    Ok(files)
}

/// A profile's words: each line's shell words, comment lines left out. Its options are checked
/// on their own, so that an error names the file.
fn read_profile(path: &Path) -> Result<Vec<OsString>, RunError> {
    let text = std::fs::read(path)
        .map_err(|e| RunError::Usage(format!("cannot read the profile {}: {e}", path.display())))?;
    let mut words = Vec::new();
    for line in text.split(|&b| b == b'\n') {
        if line.trim_ascii_start().starts_with(b"#") {
            continue;
        }
        let line_words = shell_words(line).ok_or_else(|| {
            RunError::Usage(format!(
                "the profile {} has an unterminated quote in the line {:?}",
                path.display(),
                String::from_utf8_lossy(line)
            ))
        })?;
        words.extend(
            line_words
                .into_iter()
                .map(|w| OsString::from(OsStr::from_bytes(&w))),
        );
    }
    if let Err(e) = super::args::parse_args(words.clone()) {
        return Err(RunError::Usage(format!(
            "in the profile {} (GNU parallel's options file; leave it out with --plain): {e}",
            path.display()
        )));
    }
    Ok(words)
}

/// Ends the words of a `#!` line (main puts it there when the kernel passed the line as one
/// word), so that `--shebang-wrap` knows where the script's path begins.
pub(crate) const SHEBANG_END: &str = "--_shebang-end";

/// `--shebang` and `--shebang-wrap`, which must come first, rewritten as GNU parallel rewrites
/// them:
///
/// - `#!/usr/bin/martelli run --shebang OPTIONS COMMAND`, then lines of arguments: the script (the
///   last word) is read as `-a SCRIPT` with its first line, the `#!` line, skipped;
/// - `#!/usr/bin/martelli run --shebang-wrap OPTIONS PROGRAM`: each argument the script is run
///   with becomes a job, `PROGRAM SCRIPT ARG` (none, no job); with `--pipe` the arguments are
///   input files (none: stdin).
///
/// When the `#!` line's words come apart from the script's (`#!/usr/bin/env -S martelli run …`, or
/// typed), `--shebang-wrap` takes one word for the program, as GNU parallel does on Linux.
pub(crate) fn shebang(args: Vec<OsString>) -> Result<Vec<OsString>, RunError> {
    let first = args.first().map(|a| a.as_bytes());
    let wrap = matches!(first, Some(b"--shebang-wrap" | b"--shebangwrap"));
    if !wrap && !matches!(first, Some(b"--shebang" | b"--hashbang")) {
        return Ok(args);
    }
    let mut words: Vec<OsString> = args.into_iter().skip(1).collect();
    let end = words.iter().position(|w| w == SHEBANG_END);
    if let Some(end) = end {
        words.remove(end);
    }
    if !wrap {
        let script = words.pop().ok_or_else(|| {
            RunError::Usage(
                "--shebang goes on a script's #! line (#!/usr/bin/martelli run --shebang -r echo): no script was given".into(),
            )
        })?;
        let mut out: Vec<OsString> = vec!["--skip-first-line".into(), "-a".into(), script];
        out.extend(words);
        return Ok(out);
    }
    // The #! line's words: up to the end marker, else one word (the program).
    let line_len = end.unwrap_or(1.min(words.len()));
    if line_len == 0 || words.len() <= line_len {
        return Err(RunError::Usage(
            "--shebang-wrap goes on a script's #! line (#!/usr/bin/martelli run --shebang-wrap /usr/bin/python3): no program or no script was given".into(),
        ));
    }
    let script_args = words.split_off(line_len + 1);
    let pipe = words[..line_len]
        .iter()
        .any(|w| w == "--pipe" || w == "--spreadstdin");
    if pipe {
        let mut out = Vec::new();
        for file in script_args {
            out.push(OsString::from("-a"));
            out.push(file);
        }
        out.extend(words);
        return Ok(out);
    }
    if script_args.is_empty() {
        // No argument, no job, as with GNU parallel.
        return Ok(vec!["true".into(), "::::".into(), "/dev/null".into()]);
    }
    words.push(":::".into());
    words.extend(script_args);
    Ok(words)
}

/// `$PARALLEL`'s words, which GNU parallel puts before the command line's options.
fn env_options() -> Result<Vec<OsString>, RunError> {
    match std::env::var_os("PARALLEL") {
        Some(value) if !value.is_empty() => shell_words(value.as_bytes())
            .map(|words| {
                words
                    .into_iter()
                    .map(|w| OsString::from(OsStr::from_bytes(&w)))
                    .collect()
            })
            .ok_or_else(|| {
                RunError::Usage(
                    "the variable PARALLEL has an unterminated quote; fix or unset it".into(),
                )
            }),
        _ => Ok(Vec::new()),
    }
}

/// Splits `s` into words as a POSIX shell would (blanks, single and double quotes, backslashes);
/// `None` when a quote is not closed.
pub(crate) fn shell_words(s: &[u8]) -> Option<Vec<Vec<u8>>> {
    let mut words = Vec::new();
    let mut word: Option<Vec<u8>> = None;
    let mut i = 0;
    while i < s.len() {
        let b = s[i];
        match b {
            b' ' | b'\t' | b'\n' => words.extend(word.take()),
            b'\'' => {
                let end = i + 1 + s[i + 1..].iter().position(|&c| c == b'\'')?;
                word.get_or_insert_with(Vec::new)
                    .extend_from_slice(&s[i + 1..end]);
                i = end;
            }
            b'"' => {
                let w = word.get_or_insert_with(Vec::new);
                i += 1;
                loop {
                    match *s.get(i)? {
                        b'"' => break,
                        b'\\' if matches!(s.get(i + 1), Some(b'"' | b'\\' | b'$' | b'`')) => {
                            w.push(s[i + 1]);
                            i += 2;
                        }
                        c => {
                            w.push(c);
                            i += 1;
                        }
                    }
                }
            }
            b'\\' => {
                if let Some(&c) = s.get(i + 1) {
                    if c != b'\n' {
                        word.get_or_insert_with(Vec::new).push(c);
                    }
                    i += 1;
                }
            }
            _ => word.get_or_insert_with(Vec::new).push(b),
        }
        i += 1;
    }
    words.extend(word);
    Some(words)
}

/// The argument separators: `:::` and `::::` unless `--arg-sep`/`--arg-file-sep` say otherwise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Separators {
    pub(crate) arg: String,
    pub(crate) file: String,
}

impl Separators {
    /// Finds `--arg-sep SEP` and `--arg-file-sep SEP` among the options (before the first
    /// separator), so that the input sources can be split off before the options are parsed.
    /// Returns them and the index of the first separator (`args.len()` when there is none).
    pub(crate) fn find(args: &[OsString]) -> (Separators, usize) {
        let mut seps = Separators {
            arg: ":::".into(),
            file: "::::".into(),
        };
        let mut i = 0;
        while i < args.len() {
            let Some(a) = args[i].to_str() else {
                i += 1;
                continue;
            };
            if seps.is_marker(a) {
                return (seps, i);
            }
            let next = args.get(i + 1).and_then(|n| n.to_str());
            match a.split_once('=') {
                Some(("--arg-sep", v)) => seps.arg = v.into(),
                Some(("--arg-file-sep", v)) => seps.file = v.into(),
                _ => match (a, next) {
                    ("--arg-sep", Some(v)) => {
                        seps.arg = v.into();
                        i += 1;
                    }
                    ("--arg-file-sep", Some(v)) => {
                        seps.file = v.into();
                        i += 1;
                    }
                    _ => {}
                },
            }
            i += 1;
        }
        (seps, args.len())
    }

    /// Whether `a` starts an input source (`:::`, `:::+`, `::::`, `::::+` or their replacements).
    pub(crate) fn is_marker(&self, a: &str) -> bool {
        self.kind(a).is_some()
    }

    /// `(is_file, linked)` for a marker.
    pub(crate) fn kind(&self, a: &str) -> Option<(bool, bool)> {
        let plus = |sep: &str| a.strip_suffix('+') == Some(sep);
        if a == self.arg {
            Some((false, false))
        } else if plus(&self.arg) {
            Some((false, true))
        } else if a == self.file {
            Some((true, false))
        } else if plus(&self.file) {
            Some((true, true))
        } else {
            None
        }
    }
}

/// GNU parallel options `martelli run` does not implement, and what to do instead. An option
/// clap does not know is looked up here, so that the error names it as GNU parallel's.
const NOT_BUILT: &[(&str, &str)] = &[
    (
        "-S",
        "remote execution over ssh is not built; send jobs to `martelli worker`s with --cluster URL instead",
    ),
    (
        "--sshlogin",
        "remote execution over ssh is not built; send jobs to `martelli worker`s with --cluster URL instead",
    ),
    (
        "--slf",
        "remote execution over ssh is not built; send jobs to `martelli worker`s with --cluster URL instead",
    ),
    (
        "--sshloginfile",
        "remote execution over ssh is not built; send jobs to `martelli worker`s with --cluster URL instead",
    ),
    (
        "--onall",
        "remote execution over ssh is not built; use --cluster URL",
    ),
    (
        "--nonall",
        "remote execution over ssh is not built; use --cluster URL",
    ),
    (
        "--transferfile",
        "file transfer to remote hosts is not built; with --cluster, workers need a shared file system",
    ),
    (
        "--trc",
        "file transfer to remote hosts is not built; with --cluster, workers need a shared file system",
    ),
    (
        "--return",
        "file transfer to remote hosts is not built; with --cluster, workers need a shared file system",
    ),
    (
        "--basefile",
        "file transfer to remote hosts is not built; with --cluster, workers need a shared file system",
    ),
    ("--semaphore", "martelli run is not a semaphore (`sem`)"),
    ("--tmux", "martelli run does not start a terminal per job"),
    (
        "--tmuxpane",
        "martelli run does not start a terminal per job",
    ),
    (
        "--tty",
        "martelli run gives jobs no terminal; stdin is /dev/null",
    ),
    ("--interactive", "martelli run does not ask before each job"),
    (
        "--sqlmaster",
        "martelli run has no SQL table; use --cluster URL to share jobs",
    ),
    (
        "--sqlworker",
        "martelli run has no SQL table; use --cluster URL to share jobs",
    ),
    (
        "--sqlandworker",
        "martelli run has no SQL table; use --cluster URL to share jobs",
    ),
    (
        "--latest-line",
        "--latest-line is not built; use --line-buffer",
    ),
    (
        "--ctag",
        "coloured tags are not built; use --tag or --tagstring",
    ),
    ("--color", "coloured output is not built"),
    (
        "--fifo",
        "a fifo per job is not built; --cat gives each job its block in a file named by {}",
    ),
    (
        "--record-env",
        "martelli run runs jobs in its own environment; nothing to record",
    ),
    ("--fg", "martelli run is not a semaphore (`sem`)"),
    ("--bg", "martelli run is not a semaphore (`sem`)"),
    ("--ungroup-stderr", "not built"),
    ("--keep-order-stderr", "not built"),
    ("--embed", "not built"),
    ("--citation", "not needed"),
];

/// An explanation for a GNU parallel option clap rejected, when it is one `martelli run` knows
/// it does not implement.
pub(crate) fn not_built(arg: &str) -> Option<String> {
    let name = arg.split_once('=').map_or(arg, |(n, _)| n);
    // A bundle of short options (`-S2`) or a short option with its value.
    // `get` and not `[..2]`: the second character may be more than one byte.
    let short = if name.starts_with('-') && !name.starts_with("--") && name.len() > 2 {
        name.get(..2).unwrap_or(name)
    } else {
        name
    };
    NOT_BUILT
        .iter()
        .find(|(n, _)| *n == name || *n == short)
        .map(|(n, why)| format!("GNU parallel's {n} is not supported by martelli run: {why}"))
}

/// Shells GNU parallel recognises as the parent shell.
const SHELLS: &[&str] = &[
    "ash",
    "bash",
    "bsd-csh",
    "csh",
    "dash",
    "fdsh",
    "fish",
    "fizsh",
    "ksh",
    "ksh93",
    "lksh",
    "mksh",
    "pdksh",
    "posh",
    "rbash",
    "rc",
    "rush",
    "rzsh",
    "sash",
    "sh",
    "static-sh",
    "tcsh",
    "yash",
    "zsh",
];

/// The shell jobs run in, by GNU parallel's rule: `$PARALLEL_SHELL`; else the nearest ancestor
/// process that is a shell; else `$SHELL`; else `/bin/sh`.
pub(crate) fn shell() -> PathBuf {
    if let Some(s) = std::env::var_os("PARALLEL_SHELL").filter(|s| !s.is_empty()) {
        return PathBuf::from(s);
    }
    if let Some(s) = parent_shell() {
        return s;
    }
    if let Some(s) = std::env::var_os("SHELL").filter(|s| !s.is_empty()) {
        return PathBuf::from(s);
    }
    PathBuf::from("/bin/sh")
}

/// The nearest ancestor that is a shell, found through /proc.
fn parent_shell() -> Option<PathBuf> {
    let mut pid = std::os::unix::process::parent_id();
    // A chain of processes is short; the bound only guards against a loop.
    for _ in 0..64 {
        if pid <= 1 {
            return None;
        }
        let dir = PathBuf::from(format!("/proc/{pid}"));
        let cmdline = std::fs::read(dir.join("cmdline")).ok()?;
        let arg0 = cmdline.split(|&b| b == 0).next().unwrap_or_default();
        let name = Path::new(OsStr::from_bytes(arg0))
            .file_name()
            .map(|n| n.as_bytes())
            .unwrap_or_default();
        // A login shell shows itself as `-bash`.
        let name = name.strip_prefix(b"-").unwrap_or(name);
        if SHELLS.iter().any(|s| s.as_bytes() == name) {
            return std::fs::read_link(dir.join("exe")).ok().or_else(|| {
                Some(PathBuf::from(OsStr::from_bytes(
                    arg0.strip_prefix(b"-").unwrap_or(arg0),
                )))
            });
        }
        pid = ppid(&dir)?;
    }
    None
}

/// The parent of the process whose /proc directory is `dir`.
fn ppid(dir: &Path) -> Option<u32> {
    let stat = std::fs::read(dir.join("stat")).ok()?;
    // `pid (comm) state ppid …`; comm may hold spaces and parentheses, so read after the last ')'.
    let close = stat.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(&stat[close + 1..]).ok()?;
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// Functions bash exports (`export -f NAME` puts `BASH_FUNC_NAME%%` in the environment): a job
/// line starting with one of these names must go through the shell, which runs the function.
pub(crate) fn exported_functions() -> Vec<Vec<u8>> {
    std::env::vars_os()
        .filter_map(|(k, _)| {
            let k = k.as_bytes();
            k.strip_prefix(b"BASH_FUNC_")
                .and_then(|n| n.strip_suffix(b"%%").or_else(|| n.strip_suffix(b"()")))
                .map(<[u8]>::to_vec)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        shell_words(s.as_bytes())
            .unwrap()
            .into_iter()
            .map(|w| String::from_utf8(w).unwrap())
            .collect()
    }

    #[test]
    fn shell_words_like_a_shell() {
        assert_eq!(words("-k  --tag"), ["-k", "--tag"]);
        assert_eq!(
            words(r#"-j 2 --tagstring 'a b' "c \"d\"" e\ f"#),
            ["-j", "2", "--tagstring", "a b", "c \"d\"", "e f"]
        );
        assert_eq!(words("''"), [""]);
        assert!(shell_words(b"'open").is_none());
        assert!(shell_words(b"\"open").is_none());
    }

    #[test]
    fn separators_are_found_among_the_options() {
        let args = |v: &[&str]| v.iter().map(OsString::from).collect::<Vec<_>>();
        let (s, at) = Separators::find(&args(&["--arg-sep", ",,", "echo", ",,", "a"]));
        assert_eq!(s.arg, ",,");
        assert_eq!(at, 3);
        assert_eq!(s.kind(",,+"), Some((false, true)));
        assert_eq!(s.kind(":::"), None);
        assert_eq!(s.kind("::::"), Some((true, false)));
        let (s, at) = Separators::find(&args(&[
            "--arg-file-sep=//",
            "echo",
            ":::",
            "--arg-sep",
            "x",
        ]));
        assert_eq!(at, 2);
        assert_eq!(s.file, "//");
        assert_eq!(s.arg, ":::");
    }

    #[test]
    fn gnu_options_not_built_are_named() {
        assert!(not_built("-S").unwrap().contains("--cluster"));
        assert!(not_built("--sshlogin=host").unwrap().contains("--cluster"));
        assert!(not_built("-Sserver").unwrap().contains("-S"));
        assert!(not_built("--tmux").unwrap().contains("terminal"));
        // Built: not looked up here.
        assert_eq!(not_built("--load"), None);
        assert_eq!(not_built("--limit"), None);
        assert_eq!(not_built("--jbos"), None);
        assert_eq!(not_built("-\u{103c8}"), None);
    }
}
