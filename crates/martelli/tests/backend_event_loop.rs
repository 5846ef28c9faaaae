//! The semantics suite on the event-loop backend (current-thread and multi-thread runtimes).
mod common;

mod current_thread {
    crate::backend_suite!(|| Pool::event_loop().unwrap());
}

mod multi_thread {
    crate::backend_suite!(|| Pool::builder().event_loop_threads(2).build().unwrap());
}
