//! `MARTELLI_POOL` picks the backend without recompiling. Its own test binary: it changes the process
//! environment, which no other test may observe.

use martelli::Pool;

#[test]
fn martelli_pool_overrides_the_default_and_bad_specs_are_errors() {
    // SAFETY: this binary has a single test, so no other thread reads the environment meanwhile.
    unsafe { std::env::set_var("MARTELLI_POOL", "threads:3") };
    let pool = Pool::from_env("inline").unwrap();
    assert_eq!((pool.kind(), pool.workers()), ("threads", 3));

    // SAFETY: as above.
    unsafe { std::env::set_var("MARTELLI_POOL", "") };
    assert_eq!(Pool::from_env("inline").unwrap().kind(), "inline");

    // SAFETY: as above.
    unsafe { std::env::set_var("MARTELLI_POOL", "thread:2") };
    let err = Pool::from_env("inline").unwrap_err().to_string();
    assert!(
        err.contains("\"thread:2\"") && err.contains("\"threads:N\""),
        "{err}"
    );

    // SAFETY: as above.
    unsafe { std::env::remove_var("MARTELLI_POOL") };
    assert_eq!(Pool::from_env("threads:2").unwrap().workers(), 2);
}
