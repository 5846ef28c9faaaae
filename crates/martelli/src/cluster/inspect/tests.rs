//! Key names, entry ids and delayed members, without a broker.

use super::*;

#[test]
fn queue_names_come_from_their_keys() {
    let base = "martelli:q:";
    assert_eq!(queue_of("martelli:q:default:normal", base), Some("default"));
    assert_eq!(queue_of("martelli:q:a:dead:high", base), Some("a:dead"));
    assert_eq!(queue_of("martelli:q:img:dead", base), Some("img"));
    assert_eq!(queue_of("martelli:q:img:cancels", base), None);
    assert_eq!(queue_of("martelli:q::high", base), None);
    assert_eq!(queue_of("other:q:x:high", base), None);
}

#[test]
fn entry_ids_are_checked_and_timed() {
    assert_eq!(entry_ms("1700000000000-3"), Some(1_700_000_000_000));
    assert!(is_entry_id("1-0"));
    for bad in ["", "1", "-1", "1-", "a-1", "1-0 ", "+", "(1-0"] {
        assert!(!is_entry_id(bad), "{bad:?}");
    }
}

#[test]
fn delayed_members_carry_their_priority_digit() {
    assert_eq!(split_delayed(b"0abc"), (Some("high"), &b"abc"[..]));
    assert_eq!(split_delayed(b"2x"), (Some("low"), &b"x"[..]));
    assert_eq!(split_delayed(b"9x"), (None, &b"9x"[..]));
}
