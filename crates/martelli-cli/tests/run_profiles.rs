//! GNU parallel's option files beside GNU parallel itself: `~/.parallel/config`, `~/.parallelrc`,
//! `/etc/parallel/config` (not touched here), `$PARALLEL_HOME`, `--profile`/`-J`, `--plain`, and
//! the order in which their options, `$PARALLEL`'s and the command line's apply (the last wins).
//!
//! Each case runs with a home directory of its own; where GNU parallel is installed, through it
//! too, and both must give the expected output.

mod util;

use std::fs;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use util::{gnu_present, martelli};

/// A home directory with GNU parallel's citation notice acknowledged.
fn home() -> tempfile::TempDir {
    let home = tempfile::tempdir().expect("a temporary home");
    fs::create_dir_all(home.path().join(".parallel")).expect(".parallel");
    fs::write(home.path().join(".parallel/will-cite"), "").expect("will-cite");
    home
}

/// Runs `tool ARGS…` with `home` as HOME, in `home`, with `env` set and none of the variables
/// that point elsewhere.
fn run_in(tool: Command, home: &Path, env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut cmd = tool;
    cmd.args(args)
        .current_dir(home)
        .env("HOME", home)
        .env_remove("PARALLEL")
        .env_remove("PARALLEL_HOME")
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("XDG_CONFIG_DIRS")
        .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("the tool runs")
}

/// Runs the case through martelli and GNU parallel (when present); both must print `want` and
/// exit with `code`.
#[track_caller]
fn check(home: &Path, env: &[(&str, &str)], args: &[&str], want: &str, code: i32) {
    let mut m = martelli();
    m.arg("run");
    let got = run_in(m, home, env, args);
    assert_eq!(
        (
            String::from_utf8_lossy(&got.stdout).as_ref(),
            got.status.code()
        ),
        (want, Some(code)),
        "martelli run {args:?} (env {env:?}); stderr: {}",
        String::from_utf8_lossy(&got.stderr)
    );
    if gnu_present() {
        let gnu = run_in(Command::new("parallel"), home, env, args);
        assert_eq!(
            (
                String::from_utf8_lossy(&gnu.stdout).as_ref(),
                gnu.status.code()
            ),
            (want, Some(code)),
            "GNU parallel {args:?} (env {env:?}) differs from the expectation; stderr: {}",
            String::from_utf8_lossy(&gnu.stderr)
        );
    }
}

#[test]
fn the_config_file_and_parallelrc_are_read() {
    let home = home();
    let h = home.path();
    fs::write(
        h.join(".parallel/config"),
        "# my defaults\n-k\n  # indented comment\n--tag\n",
    )
    .unwrap();
    check(h, &[], &["echo", ":::", "b", "a"], "b\tb\na\ta\n", 0);
    fs::remove_file(h.join(".parallel/config")).unwrap();
    fs::write(h.join(".parallelrc"), "--tagstring 'rc {}'\n").unwrap();
    check(h, &[], &["echo", ":::", "x"], "rc x\tx\n", 0);
}

#[test]
fn profiles_replace_the_config_files() {
    let home = home();
    let h = home.path();
    fs::write(h.join(".parallel/config"), "--tag\n").unwrap();
    fs::write(h.join(".parallel/named"), "--tagstring N\n").unwrap();
    fs::write(h.join("here.prof"), "--tagstring H\n").unwrap();
    check(
        h,
        &[],
        &["--profile", "named", "echo", ":::", "a"],
        "N\ta\n",
        0,
    );
    check(h, &[], &["-J", "named", "echo", ":::", "a"], "N\ta\n", 0);
    check(
        h,
        &[],
        &["-J", "./here.prof", "echo", ":::", "a"],
        "H\ta\n",
        0,
    );
    // Two profiles: both read, the later's option wins.
    check(
        h,
        &[],
        &["-J", "named", "-J", "./here.prof", "echo", ":::", "a"],
        "H\ta\n",
        0,
    );
}

#[test]
fn later_options_win_and_plain_reads_nothing() {
    let home = home();
    let h = home.path();
    fs::write(h.join(".parallel/config"), "--tagstring C -k\n").unwrap();
    // The config's, then $PARALLEL's, then the command line's: the last one given wins.
    check(h, &[], &["echo", ":::", "a"], "C\ta\n", 0);
    check(
        h,
        &[("PARALLEL", "--tagstring P")],
        &["echo", ":::", "a"],
        "P\ta\n",
        0,
    );
    check(
        h,
        &[("PARALLEL", "--tagstring P")],
        &["--tagstring", "L", "echo", ":::", "a"],
        "L\ta\n",
        0,
    );
    // --plain: neither the config nor $PARALLEL.
    check(
        h,
        &[("PARALLEL", "--tag")],
        &["--plain", "echo", ":::", "a"],
        "a\n",
        0,
    );
}

#[test]
fn parallel_home_holds_the_config() {
    let home = home();
    let h = home.path();
    let elsewhere = h.join("elsewhere");
    fs::create_dir_all(&elsewhere).unwrap();
    fs::write(elsewhere.join("config"), "--tagstring E\n").unwrap();
    fs::write(elsewhere.join("will-cite"), "").unwrap();
    let dir = elsewhere.to_str().unwrap();
    check(
        h,
        &[("PARALLEL_HOME", dir)],
        &["echo", ":::", "a"],
        "E\ta\n",
        0,
    );
}

#[test]
fn bad_profiles_are_named_in_the_error() {
    let home = home();
    let h = home.path();
    let out = run_in(
        martelli_run(),
        h,
        &[],
        &["-J", "missing", "echo", ":::", "a"],
    );
    assert_eq!(out.status.code(), Some(255));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--profile missing"), "{err}");

    // An option martelli does not build, in the config: the error names the file, and how to
    // leave it out.
    fs::write(h.join(".parallel/config"), "-S server1\n").unwrap();
    let out = run_in(martelli_run(), h, &[], &["echo", ":::", "a"]);
    assert_eq!(out.status.code(), Some(255));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(".parallel/config") && err.contains("--plain") && err.contains("-S"),
        "{err}"
    );
    let out = run_in(martelli_run(), h, &[], &["--plain", "echo", ":::", "a"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "a\n");

    fs::write(h.join(".parallel/config"), "--tagstring 'open\n").unwrap();
    let out = run_in(martelli_run(), h, &[], &["echo", ":::", "a"]);
    assert_eq!(out.status.code(), Some(255));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("unterminated quote"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn martelli_run() -> Command {
    let mut m = martelli();
    m.arg("run");
    m
}
