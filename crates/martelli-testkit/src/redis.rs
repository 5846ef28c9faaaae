//! A private `redis-server` for the cluster tests: started on a free port, killed when dropped.
//! The `redis-server` command must be installed (`scripts/test.sh` installs it).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use crate::tls::Certs;

/// A private `redis-server` on a free port of 127.0.0.1, without persistence, killed when dropped.
#[derive(Debug)]
pub struct RedisServer {
    child: Child,
    /// The port it listens on (with TLS only, for [`RedisServer::start_tls`]).
    pub port: u16,
    /// Its command-line arguments after `--port …`.
    args: Vec<String>,
    tls: bool,
}

impl RedisServer {
    /// Starts a plain server; panics if it cannot.
    pub fn start() -> RedisServer {
        RedisServer::with_args(&[])
    }

    /// Starts a plain server with `extra` arguments (`--requirepass`, `--appendonly`, …); panics
    /// if it cannot.
    pub fn with_args(extra: &[&str]) -> RedisServer {
        let args = extra.iter().map(|s| s.to_string()).collect();
        RedisServer::spawn(free_port(), args, false).unwrap_or_else(|why| panic!("{why}"))
    }

    /// Starts a server that listens only with TLS, with the server certificate of `certs` and
    /// without asking clients for theirs; or says why it could not (this redis-server may be built
    /// without TLS).
    pub fn start_tls(certs: &Certs) -> Result<RedisServer, String> {
        let path = |p: std::path::PathBuf| p.to_string_lossy().into_owned();
        let args = vec![
            "--tls-cert-file".into(),
            path(certs.cert()),
            "--tls-key-file".into(),
            path(certs.key()),
            "--tls-ca-cert-file".into(),
            path(certs.ca()),
            "--tls-auth-clients".into(),
            "no".into(),
        ];
        RedisServer::spawn(free_port(), args, true)
    }

    /// `redis://127.0.0.1:PORT`, or `rediss://…` for a TLS server.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "rediss" } else { "redis" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// A plain connection of the `redis` crate, with the `--requirepass` password if there is
    /// one: for reading and writing keys behind the library's back.
    pub fn raw(&self) -> redis::Connection {
        let url = match self.args.iter().position(|a| a == "--requirepass") {
            Some(i) => format!("redis://:{}@127.0.0.1:{}", self.args[i + 1], self.port),
            None => self.url(),
        };
        redis::Client::open(url)
            .and_then(|c| c.get_connection())
            .expect("a raw connection to the test redis-server")
    }

    /// Kills the server (losing everything without persistence) and starts a new one on the same
    /// port with the same arguments.
    pub fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let again = RedisServer::spawn(self.port, std::mem::take(&mut self.args), self.tls)
            .unwrap_or_else(|why| panic!("{why}"));
        // The old child is reaped; take the new one's place.
        *self = again;
    }

    /// Starts redis-server on `port` and returns once it logs that it accepts connections.
    fn spawn(port: u16, args: Vec<String>, tls: bool) -> Result<RedisServer, String> {
        let port_args = if tls {
            [
                "--port".to_string(),
                "0".into(),
                "--tls-port".into(),
                port.to_string(),
            ]
            .to_vec()
        } else {
            ["--port".to_string(), port.to_string()].to_vec()
        };
        let mut child = Command::new("redis-server")
            .args(port_args)
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(if tls { Stdio::null() } else { Stdio::inherit() })
            .spawn()
            .map_err(|e| format!("cannot start redis-server (scripts/test.sh installs it): {e}"))?;
        let stdout = child.stdout.take().expect("piped stdout");
        match wait_ready(stdout) {
            Ok(()) => Ok(RedisServer {
                child,
                port,
                args,
                tls,
            }),
            Err(log) => {
                let _ = child.kill();
                let _ = child.wait();
                Err(if tls {
                    format!("this redis-server does not serve TLS (built without it?):\n{log}")
                } else {
                    format!("redis-server on port {port} exited before it was ready:\n{log}")
                })
            }
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port of 127.0.0.1 that nothing listens on (at the moment of asking).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Reads redis-server's log until it accepts connections, then keeps draining it on a thread so
/// that the server never blocks on a full pipe; the log so far if it ended first.
fn wait_ready(stdout: std::process::ChildStdout) -> Result<(), String> {
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
            _ => return Err(log),
        }
    }
    std::thread::spawn(move || for _ in lines {});
    Ok(())
}
