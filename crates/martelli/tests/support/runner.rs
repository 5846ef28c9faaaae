//! A small test runner for test binaries that are their own worker programs (`harness = false`):
//! their `main` calls `martelli::init()` first, then hands its tests to [`run`].

use std::time::Instant;

/// Runs every test whose name contains the first non-flag argument (all without one), prints one
/// line per test as libtest does, and exits with 101 when any failed.
pub(crate) fn run(tests: &[(&str, fn())]) {
    let filter = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .filter(|f| !f.is_empty());
    let selected: Vec<_> = tests
        .iter()
        .filter(|(name, _)| filter.as_deref().is_none_or(|f| name.contains(f)))
        .collect();
    println!("\nrunning {} tests", selected.len());
    let mut failed = Vec::new();
    for (name, test) in &selected {
        let start = Instant::now();
        let outcome = std::panic::catch_unwind(test);
        let took = start.elapsed();
        if outcome.is_ok() {
            println!("test {name} ... ok ({took:.2?})");
        } else {
            println!("test {name} ... FAILED ({took:.2?})");
            failed.push(*name);
        }
    }
    println!(
        "\ntest result: {}. {} passed; {} failed",
        if failed.is_empty() { "ok" } else { "FAILED" },
        selected.len() - failed.len(),
        failed.len()
    );
    if !failed.is_empty() {
        for name in &failed {
            println!("    {name}");
        }
        std::process::exit(101);
    }
}
