//! Public types are Send and Sync where users need them to be (a compile-time check).

fn send<T: Send>() {}
fn sync<T: Sync>() {}

#[test]
fn public_types_are_send_and_sync() {
    send::<martelli::Pool>();
    sync::<martelli::Pool>();
    send::<martelli::Future<String>>();
    sync::<martelli::Future<String>>();
    send::<martelli::CancelToken>();
    sync::<martelli::CancelToken>();
    send::<martelli::TaskError>();
    sync::<martelli::TaskError>();
    send::<martelli::Error>();
    sync::<martelli::Error>();
    send::<martelli::WorkerLocal<Vec<u8>>>();
    sync::<martelli::WorkerLocal<Vec<u8>>>();
    send::<martelli::PoolBuilder>();
    sync::<martelli::PoolBuilder>();
}

fn unwind_safe<T: std::panic::UnwindSafe + std::panic::RefUnwindSafe>() {}

#[test]
fn handles_are_unwind_safe() {
    // A future or a token captured by a closure given to `catch_unwind` needs no `AssertUnwindSafe`.
    unwind_safe::<martelli::Future<String>>();
    unwind_safe::<martelli::Future<std::cell::RefCell<u8>>>();
    unwind_safe::<martelli::CancelToken>();
}

#[cfg(feature = "cluster")]
#[test]
fn cluster_types_are_send_and_sync() {
    use martelli::cluster::{Client, ClusterError, StopHandle, Tasks, Worker, WorkerReport};
    send::<Client>();
    sync::<Client>();
    send::<Worker>();
    sync::<Worker>();
    send::<StopHandle>();
    sync::<StopHandle>();
    send::<Tasks>();
    sync::<Tasks>();
    send::<ClusterError>();
    sync::<ClusterError>();
    send::<WorkerReport>();
}
