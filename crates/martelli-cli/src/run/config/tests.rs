use super::*;

#[test]
fn jobs_specs() {
    assert_eq!(parse_jobs("3", 2).unwrap(), 3);
    assert_eq!(parse_jobs("50%", 8).unwrap(), 4);
    assert_eq!(parse_jobs("+1", 2).unwrap(), 3);
    assert_eq!(parse_jobs("-1", 2).unwrap(), 1);
    assert_eq!(parse_jobs("-5", 2).unwrap(), 1);
    assert_eq!(parse_jobs("0", 2).unwrap(), MAX_JOBS);
    assert!(parse_jobs("two", 2).is_err());
    assert!(parse_jobs("", 2).is_err());
}

#[test]
fn delimiters() {
    assert_eq!(parse_delimiter("_").unwrap(), b'_');
    assert_eq!(parse_delimiter("\\0").unwrap(), 0);
    assert_eq!(parse_delimiter("\\n").unwrap(), b'\n');
    assert_eq!(parse_delimiter("\\x1f").unwrap(), 0x1f);
    assert_eq!(parse_delimiter("\\012").unwrap(), b'\n');
    assert!(parse_delimiter("ab").is_err());
    assert!(parse_delimiter("\\q").is_err());
    assert!(parse_delimiter("").is_err());
}

#[test]
fn trims() {
    let both = Trim {
        left: true,
        right: true,
    };
    assert_eq!(both.apply(b" \tA b \n"), b"A b");
    assert_eq!(
        Trim {
            left: true,
            right: false
        }
        .apply(b" A "),
        b"A "
    );
    assert_eq!(Trim::default().apply(b" A "), b" A ");
    assert_eq!(both.apply(b"   "), b"");
}

#[test]
fn halt_specs() {
    let h = parse_halt("now,fail=1").unwrap().unwrap();
    assert_eq!(
        h,
        Halt {
            now: true,
            on: HaltOn::Fail,
            threshold: Threshold::Count(1)
        }
    );
    let h = parse_halt("soon,success=20%").unwrap().unwrap();
    assert_eq!(
        h,
        Halt {
            now: false,
            on: HaltOn::Success,
            threshold: Threshold::Percent(20.0)
        }
    );
    assert_eq!(parse_halt("never").unwrap(), None);
    assert!(parse_halt("2").unwrap().unwrap().now);
    for bad in [
        "now",
        "now,fail",
        "later,fail=1",
        "now,fail=0",
        "now,oops=1",
        "now,fail=x%",
    ] {
        assert!(parse_halt(bad).is_err(), "{bad}");
    }
}

#[test]
fn durations_take_gnu_parallels_time_postfixes() {
    let secs = |s: &str| parse_seconds("--timeout", s).map(|d| d.as_secs_f64()).ok();
    assert_eq!(secs("2"), Some(2.0));
    assert_eq!(secs("0.5"), Some(0.5));
    assert_eq!(secs("1e3"), Some(1000.0));
    assert_eq!(secs("4s"), Some(4.0));
    assert_eq!(secs("1m30"), Some(90.0));
    assert_eq!(secs("1M30S"), Some(90.0));
    assert_eq!(secs(".5m"), Some(30.0));
    assert_eq!(secs("2h"), Some(7200.0));
    // GNU parallel's own example: 100000 seconds.
    let gnu = secs("1d3.5h16.6m4s").expect("parses");
    assert!((gnu - 100_000.0).abs() < 1e-6, "{gnu}");
    for bad in [
        "", "s", "1x", "1.2.3s", "-1", "1m-5", "m30", "inf", "NaN", "1 m",
    ] {
        let err = parse_seconds("--timeout", bad).expect_err(bad).to_string();
        assert!(err.contains("invalid --timeout"), "{bad:?}: {err}");
    }
}
