//! The async examples run, scaled down, and say what they claim: the same waits on fewer threads, and
//! every request answered.

use std::path::PathBuf;
use std::process::Command;

/// An example binary that `cargo test` built beside this test.
fn example(name: &str) -> PathBuf {
    let mut dir = std::env::current_exe().expect("the test binary has a path");
    dir.pop(); // the test binary
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir.join("examples").join(name)
}

fn run(name: &str, args: &[&str]) -> String {
    let out = Command::new(example(name))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run example {name} ({e}); build the examples with the tests: cargo test --all-targets"));
    assert!(
        out.status.success(),
        "{name} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

#[test]
fn three_waits_overlap_on_threads_and_on_one_async_thread() {
    let out = run("three_waits", &["0.01"]);
    let row = |mode: &str| -> (f64, usize) {
        let line = out
            .lines()
            .find(|l| l.starts_with(mode))
            .unwrap_or_else(|| panic!("no {mode} row in:\n{out}"));
        let f: Vec<&str> = line.split_whitespace().collect();
        (f[1].parse().unwrap(), f[4].parse().unwrap())
    };
    let (sequential, seq_workers) = row("sequential");
    let (threads, thread_workers) = row("threads");
    let (asynchronous, async_workers) = row("async");
    // Sleeps last at least as long as asked: the sum for sequential, the longest for the others.
    assert!(sequential >= 0.050, "{out}");
    assert!(threads >= 0.030 && asynchronous >= 0.030, "{out}");
    assert_eq!((seq_workers, thread_workers, async_workers), (1, 3, 1));
}

#[test]
fn echo_clients_answer_every_request_with_one_thread_for_async() {
    let out = run("echo_clients", &["200", "5"]);
    let row = |mode: &str| -> Vec<String> {
        out.lines()
            .find(|l| l.starts_with(mode))
            .unwrap_or_else(|| panic!("no {mode} row in:\n{out}"))
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    };
    let threads = row("threads");
    let asynchronous = row("async");
    assert_eq!(
        (threads[1].as_str(), threads[2].as_str()),
        ("200", "0"),
        "{out}"
    );
    assert_eq!(
        (asynchronous[1].as_str(), asynchronous[2].as_str()),
        ("200", "0"),
        "{out}"
    );
    let thread_count: usize = threads[6].parse().unwrap();
    let async_count: usize = asynchronous[6].parse().unwrap();
    assert!(thread_count > 200, "a thread per request: {out}");
    assert!(async_count <= 3, "the event loop's thread and main: {out}");
}
