//! The cluster over TLS (`rediss://`) against a real `redis-server` with `--tls-port`, using a CA
//! and a server certificate made at test time with the `openssl` command.
//!
//! When `openssl` is missing or this redis-server was built without TLS, each test says so on
//! stderr and passes without running (there is nothing to test against).
#![cfg(feature = "tls")]

use martelli::cluster::{Client, ClientBuilder, StatusOptions, Tasks, Worker, WorkerOptions};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A CA and a server certificate for 127.0.0.1 and localhost, in a temporary directory.
struct Certs {
    dir: PathBuf,
}

impl Certs {
    fn ca(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }
    fn other_ca(&self) -> PathBuf {
        self.dir.join("other-ca.crt")
    }
    fn cert(&self) -> PathBuf {
        self.dir.join("server.crt")
    }
    fn key(&self) -> PathBuf {
        self.dir.join("server.key")
    }
}

impl Drop for Certs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn openssl(dir: &Path, args: &[&str]) -> bool {
    Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Makes the certificates, or says why it could not.
fn make_certs() -> Result<Certs, String> {
    let dir = std::env::temp_dir().join(format!(
        "martelli-tls-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    ));
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot make {}: {e}", dir.display()))?;
    let certs = Certs { dir: dir.clone() };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let ca = |name: &str, cn: &str| {
        let key = format!("{name}.key");
        let crt = format!("{name}.crt");
        let subject = format!("/CN={cn}");
        let mut args = vec!["req", "-x509"];
        args.extend(ec);
        args.extend([
            "-keyout",
            &key,
            "-out",
            &crt,
            "-days",
            "2",
            "-subj",
            &subject,
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
        openssl(&dir, &args)
    };
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
         keyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .map_err(|e| format!("cannot write the extensions file: {e}"))?;
    let mut csr = vec!["req"];
    csr.extend(ec);
    csr.extend([
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
    ]);
    let made = ca("ca", "martelli test CA")
        && ca("other-ca", "some other CA")
        && openssl(&dir, &csr)
        && openssl(
            &dir,
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "server.crt",
                "-days",
                "2",
                "-extfile",
                "server.ext",
            ],
        );
    if made {
        Ok(certs)
    } else {
        Err("the `openssl` command is missing or could not make the test certificates".into())
    }
}

/// A private redis-server that listens only with TLS, killed when dropped.
struct TlsRedis {
    child: Child,
    port: u16,
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl TlsRedis {
    fn url(&self) -> String {
        format!("rediss://127.0.0.1:{}", self.port)
    }
}

/// Starts redis-server with `--port 0 --tls-port FREE`, or says why it could not.
fn start_tls_redis(certs: &Certs) -> Result<TlsRedis, String> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| format!("no free port: {e}"))?
        .port();
    let path = |p: PathBuf| p.to_string_lossy().into_owned();
    let mut child = Command::new("redis-server")
        .args(["--port", "0", "--tls-port", &port.to_string()])
        .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .args(["--tls-cert-file", &path(certs.cert())])
        .args(["--tls-key-file", &path(certs.key())])
        .args(["--tls-ca-cert-file", &path(certs.ca())])
        .args(["--tls-auth-clients", "no"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start redis-server: {e}"))?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let mut log = String::new();
    loop {
        match lines.next() {
            Some(Ok(line)) => {
                log.push_str(&line);
                log.push('\n');
                if line.contains("Ready to accept connections") {
                    break;
                }
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "this redis-server does not serve TLS (built without it?):\n{log}"
                ));
            }
        }
    }
    std::thread::spawn(move || for _ in lines {});
    Ok(TlsRedis { child, port })
}

/// The certificates and the server, or `None` after saying on stderr why the test is skipped.
fn setup(test: &str) -> Option<(Certs, TlsRedis)> {
    let certs = match make_certs() {
        Ok(certs) => certs,
        Err(why) => {
            eprintln!("SKIPPED {test}: {why}");
            return None;
        }
    };
    match start_tls_redis(&certs) {
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
        .tls_ca(certs.dir.join("missing.crt"))
        .build()
        .expect_err("a missing CA file is an error");
    assert!(
        error
            .to_string()
            .contains("cannot read the CA certificate file"),
        "{error}"
    );
}
