//! A real browser for the dashboard's tests: Debian's headless `chromium`, driven through the Chrome
//! DevTools Protocol (JSON messages over a WebSocket; the few methods used are `Page.navigate`,
//! `Runtime.evaluate` and `Page.captureScreenshot`). Every read has a time limit, so a browser that
//! stops answering fails the test with what it was asked, and the browser is killed when dropped.
//!
//! Also a plain HTTP/1.1 request over a socket, for the checks a browser hides (status codes,
//! headers, refused writes).

#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use martelli_testkit::proc::KillOnDrop;
use serde_json::{Value, json};
use tungstenite::{Message, WebSocket};

/// How long one answer of the browser may take.
const ANSWER: Duration = Duration::from_secs(30);

/// A headless Chromium with one page.
pub struct Browser {
    socket: WebSocket<TcpStream>,
    next_id: u64,
    // Dropped after the socket: the browser is killed, then its profile removed.
    _process: KillOnDrop,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts Chromium headless with a fresh profile and connects to its page.
    pub fn launch() -> Browser {
        let profile = tempfile::tempdir().expect("a profile directory");
        let mut child = Command::new("chromium")
            .args([
                "--headless",
                // As root, Chromium runs only without its sandbox; the rest keep it off the network.
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-dev-shm-usage",
                "--remote-debugging-port=0",
                "--window-size=1280,1000",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("chromium starts (scripts/test.sh installs it: apt-get install chromium)");
        let stderr = child.stderr.take().expect("piped stderr");
        let process = KillOnDrop::new(child);
        let (found, address) = mpsc::channel();
        std::thread::spawn(move || {
            // Reads Chromium's log to its end, so that it never blocks on a full pipe.
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(url) = line.split("DevTools listening on ").nth(1) {
                    let _ = found.send(url.trim().to_owned());
                }
            }
        });
        let url = address
            .recv_timeout(ANSWER)
            .expect("chromium prints its DevTools address within 30 s");
        let port: u16 = url
            .trim_start_matches("ws://")
            .split(['/', ':'])
            .nth(1)
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("a port in the DevTools address {url}"));
        let targets: Value = serde_json::from_str(
            &http(&format!("127.0.0.1:{port}"), "GET", "/json/list", &[]).body,
        )
        .expect("the DevTools target list is JSON");
        let page = targets
            .as_array()
            .and_then(|t| t.iter().find(|t| t["type"] == "page"))
            .and_then(|t| t["webSocketDebuggerUrl"].as_str())
            .unwrap_or_else(|| panic!("a page among the DevTools targets: {targets}"))
            .to_owned();
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to DevTools");
        stream
            .set_read_timeout(Some(ANSWER))
            .expect("a read timeout");
        stream
            .set_write_timeout(Some(ANSWER))
            .expect("a write timeout");
        let (socket, _) =
            tungstenite::client(page.as_str(), stream).expect("the DevTools handshake");
        let mut browser = Browser {
            socket,
            next_id: 1,
            _process: process,
            _profile: profile,
        };
        browser.call("Page.enable", json!({}));
        browser.call("Runtime.enable", json!({}));
        browser
    }

    /// Calls a DevTools method and returns its result; panics on an error or without an answer.
    pub fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let message = json!({ "id": id, "method": method, "params": params }).to_string();
        self.socket
            .send(Message::text(message))
            .unwrap_or_else(|e| panic!("cannot send {method} to chromium: {e}"));
        loop {
            let message = self
                .socket
                .read()
                .unwrap_or_else(|e| panic!("no answer from chromium to {method}: {e}"));
            let Message::Text(text) = message else {
                continue;
            };
            let value: Value = serde_json::from_str(text.as_str()).expect("DevTools speaks JSON");
            if value["id"] != id {
                continue; // an event
            }
            if let Some(error) = value.get("error") {
                panic!("chromium failed {method}: {error}");
            }
            return value["result"].clone();
        }
    }

    /// Opens `url` and waits until the page has loaded.
    pub fn open(&mut self, url: &str) {
        self.call("Page.navigate", json!({ "url": url }));
        self.wait(
            "the page to load",
            ANSWER,
            "document.readyState === 'complete'",
        );
    }

    /// Reloads the page (a new document: nothing of the old one's script is left) and waits until
    /// it has loaded.
    pub fn reload(&mut self) {
        self.eval("window.__before_reload = true");
        self.call("Page.reload", json!({ "ignoreCache": true }));
        self.wait(
            "the page to load again",
            ANSWER,
            "!window.__before_reload && document.readyState === 'complete'",
        );
    }

    /// Evaluates JavaScript in the page (awaiting a promise) and returns its value.
    pub fn eval(&mut self, expression: &str) -> Value {
        let result = self.call(
            "Runtime.evaluate",
            json!({ "expression": expression, "returnByValue": true, "awaitPromise": true }),
        );
        if let Some(exception) = result.get("exceptionDetails") {
            panic!("the page threw evaluating {expression}: {exception}");
        }
        result["result"]["value"].clone()
    }

    /// The text of the element `selector` finds (empty when none).
    pub fn text(&mut self, selector: &str) -> String {
        let js = format!(
            "(document.querySelector({}) || {{}}).textContent || ''",
            json!(selector)
        );
        self.eval(&js).as_str().unwrap_or_default().to_owned()
    }

    /// Clicks the element `selector` finds, as a person would (its click handlers run).
    pub fn click(&mut self, selector: &str) {
        let js = format!(
            "(() => {{ const e = document.querySelector({}); if (!e) return false; e.click(); return true; }})()",
            json!(selector)
        );
        assert_eq!(self.eval(&js), true, "nothing to click at {selector}");
    }

    /// Polls `condition` (JavaScript) until it is true; how long that took. Panics, naming `what`,
    /// after `limit`.
    #[track_caller]
    pub fn wait(&mut self, what: &str, limit: Duration, condition: &str) -> Duration {
        let started = Instant::now();
        loop {
            if self.eval(&format!("!!({condition})")) == true {
                return started.elapsed();
            }
            if started.elapsed() > limit {
                let body = self.text("body");
                panic!(
                    "timed out after {limit:?} waiting for {what} ({condition}); the page shows:\n{body}"
                );
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Writes a PNG of the page to `path`.
    pub fn screenshot(&mut self, path: &Path) {
        let shot = self.call("Page.captureScreenshot", json!({ "format": "png" }));
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().expect("screenshot data"))
            .expect("the screenshot is base64");
        std::fs::write(path, png).expect("the screenshot is written");
    }
}

/// A response to [`http`].
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    /// The header lines, lower-cased names.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// One HTTP/1.1 request to `addr` (`host:port`), the connection closed after the answer. The
/// `Host` header is `addr` unless `headers` gives one.
pub fn http(addr: &str, method: &str, path: &str, headers: &[(&str, &str)]) -> Response {
    let mut stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    stream
        .set_read_timeout(Some(ANSWER))
        .expect("a read timeout");
    let mut request = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        request.push_str(&format!("Host: {addr}\r\n"));
    }
    if method != "GET" {
        request.push_str("Content-Length: 0\r\n");
    }
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    stream
        .write_all(request.as_bytes())
        .expect("send the request");
    // Up to the end of the head, then as many bytes as Content-Length says, or to the end.
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    let split = loop {
        if let Some(at) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break at;
        }
        let n = stream
            .read(&mut buf)
            .unwrap_or_else(|e| panic!("read the answer to {method} {path}: {e}"));
        assert!(n > 0, "the answer to {method} {path} ended before its head");
        raw.extend_from_slice(&buf[..n]);
    };
    let length = String::from_utf8_lossy(&raw[..split])
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse::<usize>().ok());
    match length {
        Some(length) => {
            while raw.len() < split + 4 + length {
                let n = stream
                    .read(&mut buf)
                    .unwrap_or_else(|e| panic!("read the answer to {method} {path}: {e}"));
                if n == 0 {
                    break;
                }
                raw.extend_from_slice(&buf[..n]);
            }
        }
        None => {
            stream
                .read_to_end(&mut raw)
                .unwrap_or_else(|e| panic!("read the answer to {method} {path}: {e}"));
        }
    }
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let body = &raw[split + 4..];
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("a status line in {head:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    let body = if chunked {
        unchunk(body)
    } else {
        body.to_vec()
    };
    Response {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

/// A chunked body put together.
fn unchunk(mut rest: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(end) = rest.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&rest[..end])
            .ok()
            .and_then(|s| usize::from_str_radix(s.trim(), 16).ok());
        let after = &rest[end + 2..];
        match size {
            Some(size) if size > 0 && after.len() >= size => {
                out.extend_from_slice(&after[..size]);
                rest = after[size..]
                    .strip_prefix(b"\r\n")
                    .unwrap_or(&after[size..]);
            }
            _ => break,
        }
    }
    out
}

/// A running `martelli dashboard` and the address it serves on; killed when dropped.
pub struct Dashboard {
    pub addr: String,
    pub process: KillOnDrop,
}

impl Dashboard {
    /// Starts `martelli dashboard --cluster URL --listen LISTEN EXTRA…` with `env` added, and waits
    /// (up to 30 s) for the address it prints; panics with the dashboard's error if it says one.
    pub fn start(url: &str, listen: &str, extra: &[&str], env: &[(&str, &str)]) -> Dashboard {
        let mut child = Command::new(env!("CARGO_BIN_EXE_martelli"))
            .args(["dashboard", "--cluster", url, "--listen", listen])
            .args(extra)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the dashboard starts");
        let stderr = child.stderr.take().expect("piped stderr");
        let process = KillOnDrop::new(child);
        let (found, address) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("serving http://").nth(1) {
                    let _ = found.send(Ok(rest.split('/').next().unwrap_or_default().to_owned()));
                } else if line.contains("error") {
                    let _ = found.send(Err(line));
                }
            }
        });
        let addr = address
            .recv_timeout(Duration::from_secs(30))
            .expect("the dashboard says where it serves within 30 s")
            .unwrap_or_else(|e| panic!("the dashboard did not start: {e}"));
        // An unspecified address is reached on loopback.
        let addr = addr.replace("0.0.0.0", "127.0.0.1");
        Dashboard { addr, process }
    }
}
