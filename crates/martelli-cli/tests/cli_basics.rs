//! The `martelli` binary answers `--help` and `--version`, and fails clearly without a subcommand.

use std::process::Command;

fn martelli(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_martelli"))
        .args(args)
        .output()
        .expect("the martelli binary runs")
}

#[test]
fn version_prints_the_crate_version() {
    let out = martelli(&["--version"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        text.trim(),
        format!("martelli {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn help_describes_the_command() {
    let out = martelli(&["--help"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Usage: martelli"), "{text}");
}

#[test]
fn an_unknown_subcommand_is_an_error() {
    let out = martelli(&["frobnicate"]);
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("frobnicate"), "{text}");
}
