//! Random combinations of options, commands and input sources, run through GNU parallel and
//! `martelli run`: both must give the same stdout (sorted when the order is not promised) and exit
//! status. Skipped where GNU parallel is not installed (`scripts/test.sh` installs it).
//!
//! The documentation's examples (`gnu_examples`) and the cases written by hand cover what people
//! are told to do; this covers what they combine. The generator is seeded, so a failure names a
//! seed and a case that reproduce; `RANDOM_CASES=N` runs more (default 60), `RANDOM_SEED=S` starts
//! elsewhere. Differences that are on purpose, and listed in docs/run.md, are left out of the pools:
//! a `{n}` beyond the number of sources (refused), perl expressions beside renamed replacement
//! strings (refused), `-k` or `--tag` with `-u` and `-k` with `--line-buffer` (refused), `--shuf`, `-s` (GNU reads all input before it complains), and `{%}` (which
//! slot a job gets depends on timing).

mod util;

use std::fs;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use util::{gnu_present, martelli};

/// A small deterministic generator (xorshift64*), so that a seed reproduces a case.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }
}

const OPTIONS: &[&[&str]] = &[
    &["-k"],
    &["--tag"],
    &["-j1"],
    &["-j2"],
    &["-j3"],
    &["-N2"],
    &["-N1"],
    &["-n2"],
    &["-X"],
    &["-m"],
    &["--xargs"],
    &["-L1"],
    &["--max-args", "3"],
    &["-r"],
    &["--trim", "lr"],
    &["--colsep", " "],
    &["-C", ","],
    &["--tagstring", "T{}"],
    &["-I", "XX"],
    &["--er", "{e}"],
    &["--plus"],
    &["-E", "f3"],
    &["-d", ","],
    &["-0"],
    &["--link"],
    &["-q"],
    &["--dry-run"],
    &["-v"],
    // One job at a time: how many fail before the halt is otherwise a matter of timing, in
    // either tool.
    &["--halt", "soon,fail=1", "-j1"],
    &["--retries", "2"],
    &["--line-buffer"],
    &["--ungroup"],
];

const COMMANDS: &[&[&str]] = &[
    &["echo"],
    &["echo", "{}"],
    &["echo", "{#}", "{}"],
    &["echo", "{.}", "{/}", "{//}", "{/.}"],
    &["echo", "{1}", "{-1}"],
    &["echo", "{1.}", "{1e}"],
    &["echo", "XX-{}"],
    &["echo", "pre", "{}", "post"],
    &["echo", "{e}", "{}"],
    &["sh", "-c", "'echo $0 $1'"],
    &["false"],
    &["true"],
];

const SOURCES: &[&[&str]] = &[
    &[":::", "a", "b.c", "d/e.f"],
    &[":::", "1", "2", ":::", "x", "y"],
    &["::::", "in.txt"],
    &[":::", "a b", "c", ":::+", "1", "2"],
    &[":::", "A", "B", "::::", "in.txt"],
    &[":::", "x"],
    &[":::", "", "z"],
    &["::::", "c.csv"],
    &["-a", "in.txt"],
    &[":::", "a,b", "c"],
    &[":::", "l1\nl2", "m"],
];

fn run_in(dir: &Path, mut cmd: Command, args: &[&str]) -> Output {
    cmd.args(args)
        .current_dir(dir)
        .env("HOME", dir)
        .env_remove("PARALLEL")
        .stdin(Stdio::null())
        .output()
        .expect("the tool runs")
}

/// Stdout as compared: sorted by line unless the order is promised.
fn normal(out: &Output, ordered: bool) -> String {
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if ordered {
        return text;
    }
    let mut lines: Vec<&str> = text.lines().collect();
    lines.sort_unstable();
    lines.join("\n")
}

#[test]
fn random_combinations_match_gnu_parallel() {
    if !gnu_present() {
        eprintln!("GNU parallel is not installed: the random differential cases are skipped");
        return;
    }
    let dir = tempfile::tempdir().expect("a temporary directory");
    let d = dir.path();
    fs::create_dir_all(d.join(".parallel")).unwrap();
    fs::write(d.join(".parallel/will-cite"), "").unwrap();
    fs::write(d.join("in.txt"), "f1\nf2 x\n\nf3.gz\n").unwrap();
    fs::write(d.join("c.csv"), "a,b\nc,d\n").unwrap();
    let cases: usize = std::env::var("RANDOM_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(60);
    let seed: u64 = std::env::var("RANDOM_SEED")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(20_261_207);
    let mut failures = Vec::new();
    for case in 0..cases {
        let case_seed = seed.wrapping_add(case as u64);
        let mut rng = Rng(case_seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let mut args: Vec<&str> = Vec::new();
        for _ in 0..rng.below(4) {
            args.extend_from_slice(rng.pick(OPTIONS));
        }
        args.extend_from_slice(rng.pick(COMMANDS));
        args.extend_from_slice(rng.pick(SOURCES));
        // In order with -k, or one job at a time (the last -j given counts).
        let last_jobs = args.iter().rev().find(|a| a.starts_with("-j"));
        let ordered = args.contains(&"-k") || last_jobs == Some(&"-j1");
        let gnu = run_in(d, Command::new("parallel"), &args);
        let mut m = martelli();
        m.arg("run");
        let ours = run_in(d, m, &args);
        let ours_err = String::from_utf8_lossy(&ours.stderr);
        // Refused on purpose (docs/run.md, "Differences from GNU parallel").
        if ours.status.code() == Some(255)
            && (ours_err.contains("input source")
                || ours_err.contains("are not supported together")
                || ours_err.contains("cannot be used with"))
        {
            continue;
        }
        let (g, o) = (normal(&gnu, ordered), normal(&ours, ordered));
        if (g.as_str(), gnu.status.code()) != (o.as_str(), ours.status.code()) {
            failures.push(format!(
                "seed {case_seed}: {args:?}\n  GNU parallel (status {:?}): {g:?}\n  martelli run (status {:?}): {o:?}\n  martelli's stderr: {ours_err}",
                gnu.status.code(),
                ours.status.code(),
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {cases} cases differ (RANDOM_SEED={seed}):\n{}",
        failures.len(),
        failures.join("\n")
    );
}
