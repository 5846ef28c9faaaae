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
