//! The semantics suite on the thread backend (one worker, and several).
mod common;

mod one_worker {
    crate::backend_suite!(|| Pool::threads(1).unwrap());
}

mod three_workers {
    crate::backend_suite!(|| Pool::threads(3).unwrap());
}

mod bounded_queue {
    crate::backend_suite!(|| Pool::builder().threads(2).queue_bound(4).build().unwrap());
}
