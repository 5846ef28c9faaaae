//! The semantics suite on the inline backend.
mod common;

backend_suite!(Pool::inline);

#[test]
fn inline_runs_on_the_callers_thread_inside_submit() {
    let pool = Pool::inline();
    let me = std::thread::current().id();
    let fut = pool
        .submit(move || std::thread::current().id() == me)
        .unwrap();
    assert!(fut.is_done());
    assert!(fut.wait().unwrap());
}
