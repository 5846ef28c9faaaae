//! Chaos mode catches the deliberately racy example within a bounded number of seeds, and the fixed
//! version passes every seed. (Chaos is process-wide, so these tests run the example as a process.)

mod common;

fn lost_update(args: &[&str]) -> String {
    common::run_example("lost_update", args)
}

/// The bound is wide because the catch is a matter of timing on real threads: in the debug build
/// the tests use, 30 campaigns needed a median of 14 seeds and at worst 94, and one run of 200
/// seeds in 30 caught nothing (docs/testing.md). 1,000 seeds cost under two seconds when none
/// catches it.
#[test]
fn chaos_catches_the_lost_update_within_1000_seeds() {
    let out = lost_update(&["chaos", "1000"]);
    assert!(out.starts_with("chaos: caught at seed"), "{out}");
    assert!(out.contains("the balance is 150, expected 149"), "{out}");
}

#[test]
fn the_fixed_version_passes_every_seed() {
    let out = lost_update(&["fixed", "100"]);
    assert_eq!(out.trim(), "fixed: passed all 100 seeds");
}
