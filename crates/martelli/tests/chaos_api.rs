//! The chaos API: a failing seed is reported with what reproduces it, a panic counts as a failure, and
//! chaos is off again afterwards. Its own test binary: chaos is process-wide.

use martelli::chaos;

#[test]
fn check_reports_the_first_failing_seed_and_turns_chaos_off() {
    let failure = chaos::check(10, |seed| if seed == 4 { Err("broke") } else { Ok(()) })
        .expect_err("seed 4 fails");
    assert_eq!((failure.seed, failure.runs), (4, 4));
    assert!(
        failure.to_string().contains("MARTELLI_CHAOS=4"),
        "{failure}"
    );
    assert_eq!(chaos::seed(), None);

    let panicked = chaos::check_from(100, 3, |seed| -> Result<(), String> {
        assert_eq!(
            chaos::seed(),
            Some(seed),
            "the scenario runs under its seed"
        );
        panic!("boom at {seed}")
    })
    .expect_err("a panic is a failure");
    assert_eq!(panicked.seed, 100);
    assert!(panicked.message.contains("boom at 100"));

    chaos::enable(7);
    assert_eq!(chaos::seed(), Some(7));
    chaos::disable();
    assert_eq!(chaos::seed(), None);
}
