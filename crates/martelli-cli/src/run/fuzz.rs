//! Property-based fuzzing of `martelli run`'s argument parser, validator and command templates, on the
//! stable toolchain (proptest): this is a binary crate, which coverage-guided fuzzers cannot link
//! against. Run longer with `PROPTEST_CASES=100000 cargo test -p martelli-cli run::fuzz`.
//!
//! Properties: no input makes the parser, the validator or the template panic; every error is one
//! line; and shell quoting is exact — any argument, however many quotes, `$`, `;` or newlines it
//! holds, reaches the command byte for byte.

use super::args::{self, Request};
use super::config;
use super::template::{Mode, Template, shell_quote};
use proptest::prelude::*;
use std::ffi::OsString;

/// Words that steer the parser into its interesting corners, mixed with arbitrary text.
fn word() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(vec![
            ":::", ":::+", "::::", "::::+", "-j", "-j0", "-j2", "-j50%", "--jobs", "-k", "--tag",
            "--halt", "now,fail=1", "soon,fail=50%", "success=2", "--timeout", "0.5", "--retries",
            "3", "--delay", "--nice", "19", "--dry-run", "--joblog", "--resume", "--link", "-q",
            "--no-shell", "-a", "-0", "--line-buffer", "--json", "--results", "{}", "{.}", "{/}",
            "{//}", "{/.}", "{#}", "{%}", "{1}", "{-1}", "{2.}", "{0}", "{", "}", "echo", "true",
            "-", "--", "--bar", "--eta", "-u", "--load", "100%", "--memfree", "1G", "--noswap",
            "--memsuspend", "--limit", "io 50", "mem 1G",
        ])
        .prop_map(str::to_owned),
        1 => "\\PC{0,12}",
    ]
}

fn os(words: &[String]) -> Vec<OsString> {
    words.iter().map(OsString::from).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn parsing_and_validating_never_panic_and_errors_are_one_line(
        words in prop::collection::vec(word(), 0..12),
    ) {
        match args::parse(os(&words)) {
            Ok(Request::Help(text)) => prop_assert!(!text.is_empty()),
            Ok(Request::Run(parsed)) => {
                if let Err(e) = config::validate(*parsed, 2) {
                    let message = e.to_string();
                    prop_assert!(!message.contains('\n'), "multi-line error: {message}");
                }
            }
            Err(e) => {
                let message = e.to_string();
                prop_assert!(!message.contains('\n'), "multi-line error: {message}");
            }
        }
    }

    #[test]
    fn jobs_and_halt_specs_never_panic(spec in "\\PC{0,16}") {
        let _ = config::parse_jobs(&spec, 2);
        let _ = config::parse_halt(&spec);
        let _ = super::limits::parse_load(&spec, 2);
        let _ = super::limits::parse_memory("--memfree", &spec);
        let _ = super::limits::parse_limit(&spec);
    }

    #[test]
    fn templates_never_panic(
        words in prop::collection::vec(word(), 1..6),
        arguments in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..16), 0..4),
        seq in any::<u64>(),
        slot in 0usize..64,
    ) {
        let words: Vec<Vec<u8>> = words.into_iter().map(String::into_bytes).collect();
        for mode in [Mode::Shell, Mode::Quote, Mode::NoShell] {
            let template = Template::parse(&words, mode);
            let composed = template.compose(&arguments, seq, slot);
            let _ = composed.display();
        }
    }
}

proptest! {
    // Each case starts a shell: fewer cases.
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn shell_quoting_is_exact(argument in prop::collection::vec(1u8..=255, 0..40)) {
        use std::os::unix::ffi::OsStrExt;
        let mut line = b"printf %s ".to_vec();
        line.extend(shell_quote(&argument));
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(std::ffi::OsStr::from_bytes(&line))
            .output()
            .expect("sh runs");
        prop_assert!(out.status.success());
        prop_assert_eq!(out.stdout, argument);
    }
}
