//! The differential suite: the self-contained examples of GNU parallel's own documentation
//! (`man parallel_tutorial`, `man parallel_examples`, `man parallel`), kept in `gnu/cases.toml`,
//! each run through GNU parallel and through `martelli run`, comparing stdout (sorted where the
//! order is not promised), the exit status and whether anything was written to stderr.
//!
//! Every case runs in a fresh temporary directory, as `bash -c CMD`, with a `parallel` command
//! first on `PATH` that is either GNU parallel or `martelli run`, so that pipelines, here-strings
//! and exported functions of the examples are kept as written. Each run has a time limit; a run
//! past it is killed with its whole process group and counts as a failure.
//!
//! A case is one of:
//! - expected to pass (the default): a difference fails the test;
//! - `pending`: it needs a feature another piece of work is building (the value says which); it
//!   is expected to fail until then, and fails the test once it passes, so that the marking is
//!   removed as soon as it is no longer true;
//! - `differs`: martelli differs on purpose; the value is the reason, which must not be empty and
//!   must be listed in docs/run.md under the case's id.
//!
//! A case marked `chance` has an outcome that depends on something both tools see at different
//! moments (the machine's load or free memory when each runs, whether a job happens to run across
//! a second boundary of the clock); the value says what. These cases run after all the others,
//! one at a time, so that the suite's own load is gone; on a disagreement the pair runs again, up
//! to [`CHANCE_ATTEMPTS`] times in all, and the case passes when one attempt agrees. When GNU
//! parallel itself was held past the case's limit in every attempt (a machine too loaded for the
//! example's condition the whole time), the case is reported as not comparable at that moment,
//! not as a failure: the rule behind it is tested without the machine's figures in
//! `tests/run_limits.rs`.
//!
//! `GNU_CASE=id` runs only the cases whose id contains `id`; `GNU_VERBOSE=1` prints every
//! comparison.

use std::collections::HashSet;
use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Deserialize;

/// The cases file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Cases {
    /// A script run in every case's directory first: the tutorial's input files.
    setup: String,
    #[serde(rename = "case")]
    cases: Vec<Case>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    /// Unique; named in docs/run.md for a `differs` case.
    id: String,
    /// Where in GNU parallel's documentation the example is.
    from: String,
    /// The example, as a bash script; `parallel` is the tool under test.
    cmd: String,
    /// Standard input of the script (empty when not given).
    #[serde(default)]
    stdin: String,
    /// The order of output lines is not promised: compare them sorted.
    #[serde(default)]
    sorted: bool,
    /// The output and the exact exit status depend on timing (which job ends first, how many
    /// jobs had started when `--halt` stopped, a timeout close to a job's run time); only whether
    /// the run succeeded (status 0) and whether stderr was written are compared. The value says
    /// why.
    #[serde(default)]
    timing: Option<String>,
    /// Whether stderr was written is not compared: GNU parallel writes warnings there that depend
    /// on the machine's load. The value says which.
    #[serde(default)]
    ignore_stderr: Option<String>,
    /// Only the number of output lines can be compared (the output holds times, process ids or
    /// temporary names); the value says why.
    #[serde(default)]
    volatile: Option<String>,
    /// A script run before `cmd` in the same directory (input files only this case needs).
    #[serde(default)]
    prepare: Option<String>,
    /// A script run after `cmd` in the same directory; its stdout is compared too (the files an
    /// example writes).
    #[serde(default)]
    check: Option<String>,
    /// Needs a feature that is being built elsewhere; the value names it.
    #[serde(default)]
    pending: Option<String>,
    /// martelli differs on purpose; the value is the reason.
    #[serde(default)]
    differs: Option<String>,
    /// Time limit of one run, seconds [default: 30].
    #[serde(default)]
    limit: Option<u64>,
    /// The outcome depends on chance that both tools face at different moments; the value says
    /// which (see the module's documentation).
    #[serde(default)]
    chance: Option<String>,
}

/// How many times a `chance` case runs, at most, before a disagreement counts.
const CHANCE_ATTEMPTS: usize = 3;

/// What one tool did with one case.
#[derive(Debug)]
struct Run {
    stdout: String,
    stderr: String,
    status: Option<i32>,
    check: String,
    timed_out: bool,
}

fn cases_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/gnu/cases.toml")
}

fn load() -> Cases {
    let text = fs::read_to_string(cases_path()).expect("tests/gnu/cases.toml is readable");
    toml::from_str(&text).expect("tests/gnu/cases.toml is valid")
}

/// `GNU parallel` when it is installed (scripts/test.sh installs it).
fn gnu_parallel() -> Option<PathBuf> {
    let out = Command::new("sh")
        .args(["-c", "command -v parallel"])
        .output()
        .ok()?;
    let path = PathBuf::from(String::from_utf8(out.stdout).ok()?.trim());
    let version = Command::new(&path).arg("--version").output().ok()?;
    String::from_utf8_lossy(&version.stdout)
        .contains("GNU parallel")
        .then_some(path)
}

/// Writes an executable `parallel` in `bin` that runs `target`. A bash script: dash (`/bin/sh`)
/// drops the `BASH_FUNC_…%%` variables that carry exported functions (`export -f`), so through it
/// neither tool would see them.
fn wrapper(bin: &Path, target: &str) {
    fs::create_dir_all(bin).expect("bin dir");
    let path = bin.join("parallel");
    fs::write(&path, format!("#!/bin/bash\nexec {target} \"$@\"\n")).expect("wrapper written");
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).expect("wrapper executable");
}

/// Runs `script` with bash in `dir`, with `bin` first on PATH; kills its process group past
/// `limit`.
fn bash(dir: &Path, bin: &Path, script: &str, stdin: &str, limit: Duration) -> Run {
    let home = dir.join(".home");
    fs::create_dir_all(home.join(".parallel")).expect("home");
    // GNU parallel asks for a citation once, unless told it was seen.
    fs::write(home.join(".parallel/will-cite"), "").expect("will-cite");
    let tmp = dir.join(".tmp");
    fs::create_dir_all(&tmp).expect("tmp");
    let out_path = dir.join(".stdout");
    let err_path = dir.join(".stderr");
    let in_path = dir.join(".stdin");
    fs::write(&in_path, stdin).expect("stdin file");
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into())
    );
    let mut child = Command::new("bash")
        .args(["-c", script])
        .current_dir(dir)
        .env_clear()
        .env("PATH", path)
        .env("HOME", &home)
        .env("TMPDIR", &tmp)
        .env("SHELL", "/bin/bash")
        .env("LC_ALL", "C")
        .env("TERM", "dumb")
        .stdin(fs::File::open(&in_path).expect("stdin"))
        .stdout(fs::File::create(&out_path).expect("stdout"))
        .stderr(fs::File::create(&err_path).expect("stderr"))
        .process_group(0)
        .spawn()
        .expect("bash starts");
    let deadline = Instant::now() + limit;
    let mut timed_out = false;
    let status = loop {
        match child.try_wait().expect("wait") {
            Some(status) => break status,
            None if Instant::now() >= deadline => {
                timed_out = true;
                let pgid = rustix::process::Pid::from_raw(child.id() as i32).expect("pid");
                let _ = rustix::process::kill_process_group(pgid, rustix::process::Signal::KILL);
                break child.wait().expect("wait");
            }
            None => std::thread::sleep(Duration::from_millis(10)),
        }
    };
    // Jobs a tool left behind in the group are not wanted either.
    if let Some(pgid) = rustix::process::Pid::from_raw(child.id() as i32) {
        let _ = rustix::process::kill_process_group(pgid, rustix::process::Signal::KILL);
    }
    let read = |p: &Path| {
        let mut s = Vec::new();
        fs::File::open(p)
            .and_then(|mut f| f.read_to_end(&mut s))
            .expect("output");
        String::from_utf8_lossy(&s).into_owned()
    };
    Run {
        stdout: read(&out_path),
        stderr: read(&err_path),
        status: status.code(),
        check: String::new(),
        timed_out,
    }
}

/// Runs one case with one tool (`target` is what `parallel` runs).
fn run_case(setup: &str, case: &Case, target: &str, base: &Path, tool: &str) -> Run {
    // The same path for both tools (examples may print it), one tool after the other.
    let dir = base.join(&case.id);
    if dir.exists() {
        // The last run's directory is set aside (a `chance` case runs again: the one set aside
        // before it goes).
        let aside = base.join(format!(".{}-{tool}-before", case.id));
        if aside.exists() {
            fs::remove_dir_all(&aside).expect("case dir");
        }
        fs::rename(&dir, aside).expect("case dir");
    }
    let bin = dir.join(".bin");
    fs::create_dir_all(&dir).expect("case dir");
    wrapper(&bin, target);
    let limit = Duration::from_secs(case.limit.unwrap_or(30));
    let prepared = bash(&dir, &bin, setup, "", Duration::from_secs(60));
    assert_eq!(
        prepared.status,
        Some(0),
        "the setup of the cases failed: {}",
        prepared.stderr
    );
    if let Some(prepare) = &case.prepare {
        let prepared = bash(&dir, &bin, prepare, "", Duration::from_secs(60));
        assert_eq!(
            prepared.status,
            Some(0),
            "case {}: prepare failed: {}",
            case.id,
            prepared.stderr
        );
    }
    let mut run = bash(&dir, &bin, &case.cmd, &case.stdin, limit);
    if let Some(check) = &case.check {
        let after = bash(&dir, &bin, check, "", Duration::from_secs(30));
        run.check = format!("{}[status {:?}]", after.stdout, after.status);
    }
    run
}

/// What is compared of a run.
fn view(case: &Case, run: &Run) -> String {
    let stdout = if case.timing.is_some() {
        "(not compared)".to_string()
    } else if case.volatile.is_some() {
        format!("{} lines", run.stdout.lines().count())
    } else if case.sorted {
        let mut lines: Vec<&str> = run.stdout.split_inclusive('\n').collect();
        lines.sort_unstable();
        lines.concat()
    } else {
        run.stdout.clone()
    };
    let status = match (case.timing.is_some(), run.status) {
        (true, Some(0)) => "success".to_string(),
        (true, Some(_)) => "failure".to_string(),
        (_, status) => format!("{status:?}"),
    };
    format!(
        "stdout:\n{stdout}\nstatus: {status}{}\nstderr: {}\ncheck:\n{}",
        if run.timed_out { " (timed out)" } else { "" },
        if case.ignore_stderr.is_some() {
            "(not compared)"
        } else if run.stderr.is_empty() {
            "empty"
        } else {
            "written"
        },
        run.check
    )
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Pass,
    Fail,
    /// A `chance` case whose GNU run was held past its limit in every attempt.
    NotComparable,
}

/// Runs one case through both tools and compares them: the verdict and the comparison shown on a
/// failure.
fn compare(setup: &str, case: &Case, gnu: &str, martelli: &str, base: &Path) -> (Verdict, String) {
    let theirs = run_case(setup, case, gnu, base, "gnu");
    let ours = run_case(setup, case, martelli, base, "martelli");
    let (a, b) = (view(case, &theirs), view(case, &ours));
    let verdict = if theirs.timed_out {
        Verdict::NotComparable
    } else if a == b {
        Verdict::Pass
    } else {
        Verdict::Fail
    };
    let detail = format!(
        "--- {}: {}\n$ {}\n--- GNU parallel:\n{a}\n--- martelli run:\n{b}\nGNU parallel's stderr: {}\nmartelli's stderr: {}\n",
        case.id, case.from, case.cmd, theirs.stderr, ours.stderr
    );
    (verdict, detail)
}

/// A `chance` case: up to [`CHANCE_ATTEMPTS`] comparisons, until one agrees. Not comparable only
/// when GNU parallel was held past the limit every time; otherwise the last disagreement fails.
fn compare_by_chance(
    setup: &str,
    case: &Case,
    gnu: &str,
    martelli: &str,
    base: &Path,
) -> (Verdict, String) {
    let mut held_every_time = true;
    let mut details = String::new();
    for attempt in 1..=CHANCE_ATTEMPTS {
        let (verdict, detail) = compare(setup, case, gnu, martelli, base);
        if verdict == Verdict::Pass {
            return (Verdict::Pass, detail);
        }
        held_every_time &= verdict == Verdict::NotComparable;
        details.push_str(&format!(
            "(attempt {attempt} of {CHANCE_ATTEMPTS})\n{detail}"
        ));
    }
    if held_every_time {
        (Verdict::NotComparable, details)
    } else {
        (Verdict::Fail, details)
    }
}

#[test]
fn cases_file_is_sound() {
    let cases = load();
    let docs = fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/run.md"))
        .expect("docs/run.md");
    let mut ids = HashSet::new();
    for case in &cases.cases {
        assert!(ids.insert(case.id.clone()), "duplicate case id {}", case.id);
        assert!(
            !case.from.trim().is_empty(),
            "case {} has no `from`",
            case.id
        );
        assert!(
            case.pending.is_none() || case.differs.is_none(),
            "case {} is both pending and differs",
            case.id
        );
        if let Some(reason) = &case.differs {
            assert!(
                !reason.trim().is_empty(),
                "case {} differs on purpose but gives no reason",
                case.id
            );
            assert!(
                docs.contains(&format!("`{}`", case.id)),
                "case {} differs on purpose but docs/run.md does not list it (as `{}`)",
                case.id,
                case.id
            );
        }
        if let Some(p) = &case.pending {
            assert!(!p.trim().is_empty(), "case {} pending on nothing", case.id);
        }
        if let Some(t) = &case.ignore_stderr {
            assert!(
                !t.trim().is_empty(),
                "case {} ignore_stderr without a reason",
                case.id
            );
        }
        if let Some(t) = &case.timing {
            assert!(
                !t.trim().is_empty(),
                "case {} timing without a reason",
                case.id
            );
        }
        if let Some(c) = &case.chance {
            assert!(
                !c.trim().is_empty(),
                "case {} chance without a reason",
                case.id
            );
        }
        if let Some(v) = &case.volatile {
            assert!(
                !v.trim().is_empty(),
                "case {} volatile without a reason",
                case.id
            );
        }
    }
}

#[test]
fn gnu_examples() {
    let Some(gnu) = gnu_parallel() else {
        panic!("GNU parallel is not installed: `apt-get install parallel` (scripts/test.sh does)");
    };
    let martelli = format!("{} run", env!("CARGO_BIN_EXE_martelli"));
    let cases = load();
    let only = std::env::var("GNU_CASE").ok();
    let verbose = std::env::var_os("GNU_VERBOSE").is_some();
    let selected: Vec<Case> = cases
        .cases
        .iter()
        .filter(|c| only.as_ref().is_none_or(|o| c.id.contains(o.as_str())))
        .cloned()
        .collect();
    assert!(!selected.is_empty(), "no case selected");
    let base = tempfile::tempdir().expect("temp dir");
    // The `chance` cases go last, one at a time (see the module's documentation).
    let (by_chance, regular): (Vec<_>, Vec<_>) = selected
        .iter()
        .cloned()
        .enumerate()
        .partition(|(_, case)| case.chance.is_some());
    let queue = Mutex::new(regular.into_iter());
    let results: Mutex<Vec<(usize, Verdict, String, Duration)>> = Mutex::new(Vec::new());
    let gnu = gnu.display().to_string();
    // The cases mostly wait on processes (and GNU parallel's start-up): several at once.
    std::thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| {
                loop {
                    let next = queue.lock().unwrap().next();
                    let Some((i, case)) = next else { return };
                    let started = Instant::now();
                    let (verdict, detail) =
                        compare(&cases.setup, &case, &gnu, &martelli, base.path());
                    // Outside `chance` cases a GNU run past its limit is a failure of the case.
                    let verdict = match verdict {
                        Verdict::NotComparable => Verdict::Fail,
                        other => other,
                    };
                    results
                        .lock()
                        .unwrap()
                        .push((i, verdict, detail, started.elapsed()));
                }
            });
        }
    });
    for (i, case) in by_chance {
        let started = Instant::now();
        let (verdict, detail) =
            compare_by_chance(&cases.setup, &case, &gnu, &martelli, base.path());
        results
            .lock()
            .unwrap()
            .push((i, verdict, detail, started.elapsed()));
    }
    let mut results = results.into_inner().unwrap();
    results.sort_by_key(|r| r.0);
    let mut unexpected = Vec::new();
    let (mut pass, mut pending_fail, mut differs, mut not_comparable) = (0, 0, 0, 0);
    for (i, verdict, detail, took) in &results {
        let case = &selected[*i];
        let label = match (verdict, &case.pending, &case.differs) {
            (_, _, Some(_)) => {
                differs += 1;
                "differs on purpose"
            }
            (Verdict::NotComparable, _, None) => {
                not_comparable += 1;
                "not comparable now"
            }
            (Verdict::Pass, None, None) => {
                pass += 1;
                "pass"
            }
            (Verdict::Fail, Some(_), None) => {
                pending_fail += 1;
                "pending"
            }
            (Verdict::Pass, Some(_), None) => {
                pass += 1;
                unexpected.push(format!(
                    "case {} now passes: remove its `pending` marking\n",
                    case.id
                ));
                "PASSES (marked pending)"
            }
            (Verdict::Fail, None, None) => {
                unexpected.push(detail.clone());
                "FAIL"
            }
        };
        println!(
            "{label:>24}  {:5.1} s  {}{}",
            took.as_secs_f64(),
            case.id,
            case.pending
                .as_ref()
                .map(|p| format!("  (needs {p})"))
                .unwrap_or_default()
        );
        if verbose || (*verdict != Verdict::Pass && case.pending.is_none()) {
            println!("{detail}");
        }
    }
    let total = results.len();
    println!(
        "\n{pass} of {total} cases ({:.1} %) give GNU parallel's output and status; {pending_fail} pending on features being built elsewhere; {differs} differ on purpose; {not_comparable} not comparable at this moment (GNU parallel held past the limit by the machine's state in every attempt)",
        pass as f64 * 100.0 / total as f64
    );
    assert!(
        unexpected.is_empty(),
        "{} case(s) did not go as marked:\n{}",
        unexpected.len(),
        unexpected.concat()
    );
}
