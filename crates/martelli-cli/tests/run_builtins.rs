//! Builtins run as the system's programs (`true`, `false`, `echo`; docs/run.md, "Quoting and the
//! shell"): a line such as `echo a b` may run as `/usr/bin/echo` without a shell only where that
//! gives exactly what the shell's builtin gives.
//!
//! Every case is one job, run three ways: by the shell itself (`SHELL -c LINE`, the reference), by
//! `martelli run`, and by GNU parallel where it is installed; stdout, stderr and the exit status
//! must be the same. The shell both tools run is a wrapper named after the shell that logs each
//! start and then runs the real one, so each case also checks whether the shell was started: not
//! for the arguments the rules allow, once for every other.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

mod util;
use util::gnu_present;

/// A private directory with a shell wrapper `name` (logging to `starts`) for `real`.
struct Place {
    dir: tempfile::TempDir,
    wrapper: PathBuf,
    starts: PathBuf,
    real: PathBuf,
    /// Whether GNU parallel runs the cases too.
    gnu: bool,
}

impl Place {
    fn new(name: &str, real: &str) -> Place {
        let dir = tempfile::tempdir().expect("temp dir");
        let starts = dir.path().join("starts");
        let wrapper = dir.path().join(name);
        // In perl, not in a shell: it must pass exported functions on (dash drops variables whose
        // names are not identifiers) and trace nothing itself (`SHELLOPTS=xtrace`).
        fs::write(
            &wrapper,
            format!(
                "#!/usr/bin/perl\nopen(my $f, '>>', '{}') or die;\nprint $f \"started\\n\";\nclose $f;\nexec {{ '{real}' }} '{real}', @ARGV;\ndie \"cannot run {real}\";\n",
                starts.display()
            ),
        )
        .expect("wrapper written");
        fs::set_permissions(&wrapper, fs::Permissions::from_mode(0o755)).expect("executable");
        Place {
            dir,
            wrapper,
            starts,
            real: PathBuf::from(real),
            gnu: gnu_present(),
        }
    }

    /// How many times the wrapper started the shell since the last call.
    fn take_starts(&self) -> usize {
        let n = fs::read_to_string(&self.starts)
            .map(|s| s.lines().count())
            .unwrap_or(0);
        let _ = fs::remove_file(&self.starts);
        n
    }

    /// A command with the environment of every run: `env` added, the place's shell as
    /// `PARALLEL_SHELL`.
    fn command(&self, program: &Path, env: &[(&str, &str)]) -> Command {
        let mut c = Command::new(program);
        c.current_dir(self.dir.path())
            .env("PARALLEL_SHELL", &self.wrapper)
            .env("HOME", self.dir.path())
            .env_remove("BASH_ENV")
            .env_remove("SHELLOPTS")
            .env_remove("BASHOPTS")
            .env_remove("POSIXLY_CORRECT")
            .stdin(Stdio::null());
        for (k, v) in env {
            c.env(k, v);
        }
        c
    }
}

/// What is compared of a run: stdout, stderr, and the job's exit status (the shell's own, or the
/// `Exitval` the tool's joblog gives, with its `Signal`).
fn view(o: &Output, status: &str) -> String {
    format!(
        "stdout: {:?}\nstderr: {:?}\nstatus: {status}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    )
}

/// `Exitval/Signal` of the one job in a joblog; checks that the tool's own exit status says
/// whether the job failed (GNU parallel's: the number of failed jobs).
#[track_caller]
fn job_status(tool: &str, o: &Output, joblog: &Path) -> String {
    let log = fs::read_to_string(joblog).expect("the joblog is written");
    let row: Vec<&str> = log.lines().nth(1).expect("one job").split('\t').collect();
    let status = format!("{}/{}", row[6], row[7]);
    assert_eq!(
        o.status.code(),
        Some(i32::from(status != "0/0")),
        "{tool}: exit status beside job status {status}"
    );
    fs::remove_file(joblog).expect("joblog removed");
    status
}

/// Single quotes for the shell, as both tools quote a plain argument.
fn quote(arg: &str) -> String {
    format!("'{}'", arg.replace('\'', "'\"'\"'"))
}

/// Runs `command ARG` as one job through the shell itself, `martelli run` and GNU parallel, and
/// checks that they agree and whether `martelli run` started the shell.
#[track_caller]
fn check(place: &Place, env: &[(&str, &str)], command: &str, arg: &str, shell_free: bool) {
    let line = format!("{command} {}", quote(arg));
    let reference = place
        .command(&place.real, env)
        .args(["-c", &line])
        .output()
        .expect("the shell runs");
    let reference_status = match (reference.status.code(), reference.status.signal()) {
        (Some(code), _) => format!("{code}/0"),
        (None, signal) => format!("0/{}", signal.unwrap_or(0)),
    };
    let reference = view(&reference, &reference_status);
    let joblog = place.dir.path().join("joblog");
    let tool_args = |c: &mut Command| {
        c.args(["-j1", "-k", "--joblog"]).arg(&joblog);
        c.args(command.split(' '));
        c.args([":::", arg]);
    };
    let mut m = place.command(Path::new(env!("CARGO_BIN_EXE_martelli")), env);
    m.arg("run");
    tool_args(&mut m);
    let _ = place.take_starts();
    let ours = m.output().expect("martelli runs");
    let starts = place.take_starts();
    let status = job_status("martelli run", &ours, &joblog);
    assert_eq!(
        view(&ours, &status),
        reference,
        "martelli run beside `{} -c {line}`",
        place.real.display()
    );
    assert_eq!(
        starts,
        usize::from(!shell_free),
        "`{line}`: shell starts by martelli run (expected {})",
        if shell_free { "none" } else { "one" }
    );
    // GNU parallel starts shells of its own, which would trace or read a start-up file too.
    let own_shells = env
        .iter()
        .any(|(k, _)| ["BASH_ENV", "SHELLOPTS", "BASHOPTS"].contains(k));
    if place.gnu && !own_shells {
        let mut g = place.command(Path::new("parallel"), env);
        g.arg("--will-cite");
        tool_args(&mut g);
        let gnu = g.output().expect("GNU parallel runs");
        let status = job_status("GNU parallel", &gnu, &joblog);
        assert_eq!(
            view(&gnu, &status),
            reference,
            "GNU parallel beside the shell: `{line}`"
        );
    }
}

/// Arguments of `echo` that the rules let run without the shell, and that they do not.
const ECHO_FREE: &[&str] = &[
    "a", "", "a b", "a  b", "%s %d", "*", "$HOME", "`x`", "é ü", "a\nb", "x=y", "a-", "a --help",
];
const ECHO_SHELL: &[&str] = &[
    "-n",
    "-e",
    "-E",
    "-neE",
    "-",
    "--",
    "--help",
    "--version",
    "-x",
    "a\\tb",
    "\\c",
    "a\\nb",
    "\\\\",
    "\\0101",
    "-n a",
    // Not for the builtin's sake: the quoting of `'` (`'it'"'"'s'`) is more than the plain words
    // that a line run without the shell may hold (`simple_command`).
    "it's",
];
/// Arguments of `true` and `false`, likewise.
const TRUE_FREE: &[&str] = &["", "1", "a b", "x\\y", "help"];
const TRUE_SHELL: &[&str] = &["--help", "--version", "-", "-x"];

fn cases(place: &Place) {
    for arg in ECHO_FREE {
        check(place, &[], "echo", arg, true);
    }
    for arg in ECHO_SHELL {
        check(place, &[], "echo", arg, false);
    }
    for builtin in ["true", "false"] {
        for arg in TRUE_FREE {
            check(place, &[], builtin, arg, true);
        }
        for arg in TRUE_SHELL {
            check(place, &[], builtin, arg, false);
        }
    }
    // Not on the list: printf and test run in the shell whatever their arguments.
    check(place, &[], "printf", "a", false);
    check(place, &[], "test", "a", false);
}

#[test]
fn builtins_in_bash_as_the_shell_runs_them() {
    cases(&Place::new("bash", "/bin/bash"));
}

#[test]
fn builtins_in_dash_as_the_shell_runs_them() {
    // dash's echo interprets backslashes, bash's does not: lines with one stay in the shell.
    if !Path::new("/bin/dash").exists() {
        eprintln!("dash is not installed: skipped");
        return;
    }
    cases(&Place::new("dash", "/bin/dash"));
}

#[test]
fn shells_with_start_up_files_keep_their_builtins() {
    // zsh reads ~/.zshenv for `zsh -c`, which may redefine any builtin.
    let mut place = Place::new("zsh", "/bin/bash");
    // GNU parallel would treat the wrapper as zsh, which it is not.
    place.gnu = false;
    check(&place, &[], "echo", "a", false);
    check(&place, &[], "true", "a", false);
}

#[test]
fn an_exported_function_runs_as_the_function() {
    let place = Place::new("bash", "/bin/bash");
    let function = ("BASH_FUNC_echo%%", "() {  builtin echo \"fn:$*\"\n}");
    check(&place, &[function], "echo", "a", false);
    let function = ("BASH_FUNC_true%%", "() {  return 3\n}");
    check(&place, &[function], "true", "a", false);
}

#[test]
fn bash_start_up_file_and_options_keep_the_shell() {
    let place = Place::new("bash", "/bin/bash");
    let env_file = place.dir.path().join("bashenv");
    fs::write(&env_file, "echo() { builtin echo \"env:$*\"; }\n").expect("BASH_ENV file");
    let env_file = env_file.to_str().expect("a UTF-8 temp path");
    check(&place, &[("BASH_ENV", env_file)], "echo", "a", false);
    // bash traces the line on stderr; so must the run.
    check(&place, &[("SHELLOPTS", "xtrace")], "echo", "a", false);
    check(&place, &[("BASHOPTS", "xpg_echo")], "echo", "a", false);
}

#[test]
fn a_users_echo_earlier_on_path_is_not_what_runs() {
    // The shell runs its builtin whatever PATH holds, so the line runs the system's program.
    let place = Place::new("bash", "/bin/bash");
    let bin = place.dir.path().join("bin");
    fs::create_dir(&bin).expect("bin");
    fs::write(bin.join("echo"), "#!/bin/sh\nprintf 'mine\\n'\n").expect("own echo");
    fs::set_permissions(bin.join("echo"), fs::Permissions::from_mode(0o755)).expect("mode");
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    check(&place, &[("PATH", &path)], "echo", "a", true);
}

#[test]
fn several_jobs_and_arguments() {
    // The usual example, many jobs at once: same lines as bash gives, no shell started.
    let place = Place::new("bash", "/bin/bash");
    let _ = place.take_starts();
    let out = place
        .command(Path::new(env!("CARGO_BIN_EXE_martelli")), &[])
        .args([
            "run", "-k", "-j4", "echo", "x", "{}", ":::", "A", "B C", "-D",
        ])
        .output()
        .expect("martelli runs");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "x A\nx B C\nx -D\n");
    assert_eq!(out.status.code(), Some(0));
    // Only the job with `-D` needed the shell.
    assert_eq!(place.take_starts(), 1);
}
