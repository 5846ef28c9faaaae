//! Chaos mode catches the deliberately racy example within a bounded number of seeds, and the fixed
//! version passes every seed. (Chaos is process-wide, so these tests run the example as a process.)

use std::process::Command;

fn lost_update(args: &[&str]) -> String {
    let mut exe = std::env::current_exe().expect("the test binary has a path");
    exe.pop();
    if exe.ends_with("deps") {
        exe.pop();
    }
    let exe = exe.join("examples").join("lost_update");
    let out = Command::new(&exe).args(args).output().unwrap_or_else(|e| {
        panic!(
            "cannot run {} ({e}); build the examples with the tests: cargo test",
            exe.display()
        )
    });
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

#[test]
fn chaos_catches_the_lost_update_within_200_seeds() {
    let out = lost_update(&["chaos", "200"]);
    assert!(out.starts_with("chaos: caught at seed"), "{out}");
    assert!(out.contains("the balance is 150, expected 149"), "{out}");
}

#[test]
fn the_fixed_version_passes_every_seed() {
    let out = lost_update(&["fixed", "100"]);
    assert_eq!(out.trim(), "fixed: passed all 100 seeds");
}
