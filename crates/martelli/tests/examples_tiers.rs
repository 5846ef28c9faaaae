//! One setting moves the tier: the `tiers` example runs the same job on inline, threads, processes,
//! async and a cluster (a private redis-server, with the example itself as the cluster's workers),
//! and every tier computes what inline computes. A bad spec is reported as a sentence, not `Debug`.

use martelli_testkit::proc::KillOnDrop;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// Scaled down: 4 chunks of 20,000 rounds each.
const SIZE: [&str; 2] = ["4", "20000"];

fn example() -> PathBuf {
    let mut dir = std::env::current_exe().expect("the test binary has a path");
    dir.pop();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir.join("examples").join("tiers")
}

fn tiers(args: &[&str]) -> Output {
    let child = Command::new(example())
        .args(args)
        .env_remove("MARTELLI_POOL")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run the tiers example ({e}); build it with the tests"));
    KillOnDrop::new(child).output(Duration::from_secs(120))
}

/// The checksum on the row of `spec`.
fn checksum(out: &str, spec: &str) -> String {
    let line = out
        .lines()
        .find(|l| l.split_whitespace().next() == Some(spec))
        .unwrap_or_else(|| panic!("no {spec} row in:\n{out}"));
    line.rsplit_once("checksum ")
        .map(|(_, c)| c.trim_end_matches(')').to_owned())
        .unwrap_or_else(|| panic!("no checksum on {line:?}"))
}

/// Runs the example with `spec` and checks that its row agrees with inline's.
fn same_as_inline(spec: &str) {
    let out = tiers(&[spec, SIZE[0], SIZE[1]]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "tiers {spec} failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        checksum(&stdout, spec),
        checksum(&stdout, "inline"),
        "{stdout}"
    );
}

#[test]
fn tiers_runs_on_threads() {
    same_as_inline("threads:2");
}

#[test]
fn tiers_runs_on_processes() {
    same_as_inline("processes:2");
}

#[cfg(feature = "async")]
#[test]
fn tiers_runs_on_async() {
    same_as_inline("async");
}

#[cfg(feature = "cluster")]
#[test]
fn tiers_runs_on_a_cluster_served_by_the_example_itself() {
    let redis = martelli_testkit::redis::RedisServer::start();
    let url = redis.url();
    // Two cluster workers: the example, started with the worker variable, serves its own task.
    let _workers: Vec<KillOnDrop> = (0..2)
        .map(|_| {
            let child = Command::new(example())
                .env("MARTELLI_CLUSTER_WORKER", &url)
                .env("MARTELLI_CLUSTER_CONCURRENCY", "1")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("a cluster worker starts");
            KillOnDrop::new(child)
        })
        .collect();
    same_as_inline(&url);
}

#[test]
fn a_bad_spec_is_reported_as_a_sentence() {
    let out = tiers(&["threads:many", SIZE[0], SIZE[1]]);
    assert!(!out.status.success(), "a bad spec must fail");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("must be a whole number"), "{stderr}");
    assert!(
        !stderr.contains("UnknownSpec") && !stderr.contains(" { "),
        "Debug output reached the user:\n{stderr}"
    );
}
