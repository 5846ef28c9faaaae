//! The cluster over TLS (`rediss://`) against a real `redis-server` with `--tls-port`, using a CA
//! and a server certificate made at test time with the `openssl` command.
//!
//! When `openssl` is missing or this redis-server was built without TLS, each test says so on
//! stderr and passes without running (there is nothing to test against).
#![cfg(feature = "tls")]

use martelli::cluster::{Client, ClientBuilder, StatusOptions, Tasks, Worker, WorkerOptions};
use martelli_testkit::redis::RedisServer;
use martelli_testkit::tls::Certs;
use std::time::Duration;

/// The certificates and the server, or `None` after saying on stderr why the test is skipped.
fn setup(test: &str) -> Option<(Certs, RedisServer)> {
    let certs = match Certs::make() {
        Ok(certs) => certs,
        Err(why) => {
            eprintln!("SKIPPED {test}: {why}");
            return None;
        }
    };
    match RedisServer::start_tls(&certs) {
        Ok(redis) => Some((certs, redis)),
        Err(why) => {
            eprintln!("SKIPPED {test}: {why}");
            None
        }
    }
}

#[test]
fn tasks_round_trip_over_tls_with_a_private_ca() {
    let Some((certs, redis)) = setup("tasks_round_trip_over_tls_with_a_private_ca") else {
        return;
    };
    let tasks = Tasks::new().typed("add", |(a, b): (i64, i64)| Ok::<_, std::io::Error>(a + b));
    let worker = Worker::start(
        &redis.url(),
        tasks,
        WorkerOptions::new()
            .concurrency(1)
            .poll(Duration::from_millis(50))
            .tls_ca(certs.ca()),
    )
    .expect("a worker connects over TLS");
    let client = ClientBuilder::new(redis.url())
        .tls_ca(certs.ca())
        .build()
        .expect("a client connects over TLS");
    let sum = client.submit::<_, i64>("add", &(20, 22)).unwrap();
    assert_eq!(sum.wait().unwrap(), 42);
    let status = martelli::cluster::status(
        &redis.url(),
        &StatusOptions::new()
            .tls_ca(certs.ca())
            .sample(Duration::ZERO),
    )
    .expect("status reads over TLS");
    assert_eq!(status.queue.waiting, 0);
    worker.stop();
    worker.join().unwrap();
}

#[test]
fn an_untrusted_certificate_is_a_clear_tls_error() {
    let Some((certs, redis)) = setup("an_untrusted_certificate_is_a_clear_tls_error") else {
        return;
    };
    // A CA that did not sign the server's certificate.
    let error = ClientBuilder::new(redis.url())
        .tls_ca(certs.other_ca())
        .build()
        .expect_err("a certificate from another CA is refused");
    assert!(error.is_tls(), "{error:?}");
    let message = error.to_string();
    assert!(message.contains("not trusted"), "{message}");
    assert!(message.contains("--tls-ca"), "{message}");
    assert!(!message.contains('\n'), "{message}");

    // No CA at all: the system's roots do not know the test CA either.
    let error = Client::connect(&redis.url()).expect_err("an unknown CA is refused");
    assert!(error.is_tls(), "{error:?}");

    // A CA file that is not a certificate says so.
    let error = ClientBuilder::new(redis.url())
        .tls_ca(certs.key())
        .build()
        .expect_err("a key is not a CA certificate");
    assert!(error.to_string().contains("no PEM certificate"), "{error}");
    let error = ClientBuilder::new(redis.url())
        .tls_ca(certs.dir().join("missing.crt"))
        .build()
        .expect_err("a missing CA file is an error");
    assert!(
        error
            .to_string()
            .contains("cannot read the CA certificate file"),
        "{error}"
    );
}
