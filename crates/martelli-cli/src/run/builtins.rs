//! Shell builtins run as the system's program of the same name, without starting the shell.
//!
//! A job line such as `true 1` or `echo a b` needs the shell only because `true` and `echo` are
//! builtins: [`simple_command`](super::template::simple_command) sends every line whose first word
//! is a builtin to the shell, since a program of the same name may behave differently. For a few
//! builtins and arguments, it cannot: POSIX specifies the result exactly, and the shell's builtin
//! and the system's program both follow it. Such a line is run as the program, which saves
//! starting a shell per job (the most common of GNU parallel's examples is `parallel echo ::: …`).
//!
//! Rules, each one a condition for running a line without the shell:
//!
//! 1. The builtin is `true`, `false` or `echo`, and no argument starts with `-` (coreutils' `true
//!    --help` prints its help where the builtin prints nothing, and `echo -n`, `-e`, `-E` differ
//!    between shells and programs).
//! 2. For `echo`, no argument holds a backslash (POSIX leaves echo's handling of backslashes to the
//!    implementation: bash prints them, dash and `POSIXLY_CORRECT` coreutils interpret them).
//!    What remains is specified exactly: the arguments separated by spaces, and a newline.
//! 3. The shell is one that reads no start-up file for `-c`: bash (unless `$BASH_ENV` names one),
//!    dash or sh. zsh reads `.zshenv`, fish `config.fish`, csh and tcsh `.cshrc`: any of those may
//!    redefine a builtin, so with those shells every builtin runs in the shell.
//! 4. bash imports no options from the environment (`$SHELLOPTS`, `$BASHOPTS` are unset): an
//!    exported `SHELLOPTS=xtrace` makes bash trace every command to stderr.
//! 5. No function of the builtin's name is exported (`export -f echo`): bash would run the function.
//! 6. The program is in `/usr/bin` or `/bin`, the system's own, looked up there rather than on
//!    `PATH`: the shell runs its builtin whatever `PATH` holds, so a user's own `echo` earlier on
//!    `PATH` is not what the shell would run either. It is started with `argv[0]` the builtin's name.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The builtins that may run as programs (rules 1 and 2 say with which arguments).
const BUILTINS: [&[u8]; 3] = [b"true", b"false", b"echo"];

/// Where the system's programs are looked for (rule 6).
const SYSTEM_DIRS: [&str; 2] = ["/usr/bin", "/bin"];

/// Which builtins this run may start as programs, and where those programs are.
#[derive(Debug, Clone, Default)]
pub(crate) struct ShellFree {
    /// `(name, program)` for each builtin that may run without the shell.
    programs: Vec<(&'static [u8], PathBuf)>,
}

impl ShellFree {
    /// None: every builtin runs in the shell.
    pub(crate) fn none() -> Self {
        ShellFree::default()
    }

    /// The builtins that jobs run by `shell` may run as programs, given the functions bash
    /// exports and this process's environment (rules 3 to 6).
    pub(crate) fn detect(shell: &Path, functions: &[Vec<u8>]) -> Self {
        let set = |name: &str| std::env::var_os(name).is_some_and(|v| !v.is_empty());
        let name = shell.file_name().map(OsStr::as_bytes).unwrap_or_default();
        let quiet_shell = match name {
            b"bash" => !set("BASH_ENV") && !set("SHELLOPTS") && !set("BASHOPTS"),
            // /bin/sh may be bash too, which in POSIX mode reads `$ENV` only when interactive.
            b"sh" | b"dash" => !set("SHELLOPTS") && !set("BASHOPTS"),
            _ => false,
        };
        if !quiet_shell {
            return ShellFree::none();
        }
        let programs = BUILTINS
            .into_iter()
            .filter(|name| !functions.iter().any(|f| f == name))
            .filter_map(|name| system_program(name).map(|path| (name, path)))
            .collect();
        ShellFree { programs }
    }

    /// The program to run for the plain words of a job line (see `plain_words`) whose first word
    /// is a builtin, when rules 1 and 2 allow it; its arguments are the other words.
    pub(crate) fn program<'a>(&'a self, words: &[Vec<u8>]) -> Option<&'a Path> {
        let (name, args) = words.split_first()?;
        let (_, path) = self.programs.iter().find(|(n, _)| *n == name.as_slice())?;
        if args.iter().any(|a| a.first() == Some(&b'-')) {
            return None;
        }
        if name == b"echo" && args.iter().any(|a| a.contains(&b'\\')) {
            return None;
        }
        Some(path)
    }
}

/// `name` in the system's directories, when it is an executable file there.
fn system_program(name: &[u8]) -> Option<PathBuf> {
    SYSTEM_DIRS.iter().find_map(|dir| {
        let path = Path::new(dir).join(OsStr::from_bytes(name));
        let meta = std::fs::metadata(&path).ok()?;
        (meta.is_file() && meta.permissions().mode() & 0o111 != 0).then_some(path)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(line: &[&str]) -> Vec<Vec<u8>> {
        line.iter().map(|w| w.as_bytes().to_vec()).collect()
    }

    fn all() -> ShellFree {
        ShellFree {
            programs: BUILTINS
                .into_iter()
                .map(|n| (n, Path::new("/usr/bin").join(OsStr::from_bytes(n))))
                .collect(),
        }
    }

    #[test]
    fn arguments_that_keep_the_shell() {
        let free = all();
        let runs = |line: &[&str]| free.program(&words(line)).is_some();
        assert!(runs(&["true"]));
        assert!(runs(&["true", "1", "a b"]));
        assert!(runs(&["false", "x"]));
        assert!(runs(&["echo"]));
        assert!(runs(&["echo", "", "a b", "it's", "%d", "x=y"]));
        // Options, or what an implementation may take for one.
        assert!(!runs(&["true", "--help"]));
        assert!(!runs(&["false", "--version"]));
        assert!(!runs(&["echo", "-n", "a"]));
        assert!(!runs(&["echo", "a", "-e"]));
        assert!(!runs(&["echo", "-"]));
        // Backslashes: echo's own business.
        assert!(!runs(&["echo", "a\\tb"]));
        assert!(!runs(&["echo", "\\"]));
        assert!(runs(&["true", "a\\tb"]));
        // Not a builtin of the list.
        assert!(!runs(&["printf", "a"]));
        assert!(!runs(&["cd", "a"]));
        assert!(!runs(&[]));
    }

    #[test]
    fn shells_that_read_start_up_files_keep_every_builtin() {
        for shell in [
            "/usr/bin/zsh",
            "/usr/bin/fish",
            "/bin/tcsh",
            "/bin/csh",
            "/x/ksh",
        ] {
            let free = ShellFree::detect(Path::new(shell), &[]);
            assert!(free.programs.is_empty(), "{shell}");
        }
    }

    #[test]
    fn an_exported_function_keeps_its_builtin_in_the_shell() {
        let free = ShellFree::detect(Path::new("/bin/bash"), &[b"echo".to_vec()]);
        assert!(free.program(&words(&["echo", "a"])).is_none());
    }

    #[test]
    fn the_program_is_the_systems_own() {
        let free = ShellFree::detect(Path::new("/bin/sh"), &[]);
        let options = ["SHELLOPTS", "BASHOPTS"].map(std::env::var_os);
        if options.iter().all(Option::is_none) && Path::new("/usr/bin/true").is_file() {
            assert!(free.program(&words(&["true"])).is_some());
        }
        for (name, path) in &free.programs {
            assert!(
                SYSTEM_DIRS.iter().any(|d| path.starts_with(d)),
                "{}: {}",
                String::from_utf8_lossy(name),
                path.display()
            );
        }
    }
}
