//! 10,000 concurrent requests against a local TCP echo server that answers each after a delay (a
//! simulated I/O wait): one thread per request against async tasks on one thread. Reports wall time,
//! peak memory and threads used for each, each client in a process of its own so that its memory is
//! its own.
//!
//! ```text
//! cargo run --release --example echo_clients                      # 10,000 requests, 50 ms each
//! cargo run --release --example echo_clients -- 500 20            # 500 requests, 20 ms each
//! ```
//!
//! Linux only (peak memory and thread counts come from `/proc/self/status`).

use martelli::{Pool, as_completed};
use std::io::{Read, Write};
use std::process::Command;
use std::time::{Duration, Instant};

const MESSAGE: &[u8; 32] = b"martelli echo request 0123456789";

fn status_field(name: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find(|l| l.starts_with(name))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--client") {
        return client(&args[1..]);
    }
    let requests: usize = args.first().map_or(Ok(10_000), |s| s.parse())?;
    let delay_ms: u64 = args.get(1).map_or(Ok(50), |s| s.parse())?;

    // The server: an accept loop on an event-loop pool; each connection waits `delay` and echoes.
    let server = Pool::builder().event_loop_threads(1).build()?;
    let listener = server.block_on(async move {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.bind(std::net::SocketAddr::from(([127, 0, 0, 1], 0)))?;
        socket.listen(4096)
    })???;
    let addr = listener.local_addr()?;
    let delay = Duration::from_millis(delay_ms);
    server.submit_async(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; MESSAGE.len()];
                if conn.read_exact(&mut buf).await.is_ok() {
                    tokio::time::sleep(delay).await;
                    let _ = conn.write_all(&buf).await;
                }
            });
        }
    })?;

    println!("{requests} requests, {delay_ms} ms of server-side wait each, server at {addr}");
    println!(
        "{:<8} {:>8} {:>8} {:>10} {:>14} {:>12} {:>8}",
        "mode", "ok", "errors", "wall s", "KiB/request", "peak MiB", "threads"
    );
    let exe = std::env::current_exe()?;
    for mode in ["threads", "async"] {
        let out = Command::new(&exe)
            .args(["--client", mode, &addr.to_string(), &requests.to_string()])
            .output()?;
        if !out.status.success() {
            return Err(format!(
                "the {mode} client failed: {}",
                String::from_utf8_lossy(&out.stderr)
            )
            .into());
        }
        let line = String::from_utf8_lossy(&out.stdout);
        let f: Vec<&str> = line.split_whitespace().collect();
        // ok errors wall peak_kib base_kib threads
        let num = |i: usize| {
            f.get(i)
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(f64::NAN)
        };
        let per_request = (num(3) - num(4)) / requests as f64;
        println!(
            "{mode:<8} {:>8} {:>8} {:>10.3} {:>14.2} {:>12.1} {:>8}",
            num(0),
            num(1),
            num(2),
            per_request,
            num(3) / 1024.0,
            num(5)
        );
    }
    // The accept loop never ends by itself: cancel it (dropping the pool would wait for it forever).
    server.shutdown(martelli::Shutdown::CancelPending);
    Ok(())
}

/// One client process: `--client MODE ADDR N`. Prints `ok errors wall_s peak_kib base_kib max_threads`.
fn client(args: &[String]) -> Result<(), Box<dyn std::error::Error>> {
    let [mode, addr, n] = args else {
        return Err("usage: --client threads|async ADDR N".into());
    };
    let n: usize = n.parse()?;
    let addr: std::net::SocketAddr = addr.parse()?;
    let base = status_field("VmRSS:").unwrap_or(0);
    let start = Instant::now();
    let (ok, errors, threads) = match mode.as_str() {
        "threads" => {
            let pool = Pool::builder().threads(n).stack_size(64 * 1024).build()?;
            let futures = (0..n)
                .map(|_| {
                    pool.submit(move || -> std::io::Result<()> {
                        let mut conn = std::net::TcpStream::connect(addr)?;
                        conn.write_all(MESSAGE)?;
                        let mut buf = [0u8; MESSAGE.len()];
                        conn.read_exact(&mut buf)?;
                        Ok(())
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            let threads = status_field("Threads:").unwrap_or(0);
            let (ok, errors) = count(futures);
            (ok, errors, threads)
        }
        "async" => {
            let pool = Pool::event_loop()?;
            let futures = (0..n)
                .map(|_| {
                    pool.submit_async(async move {
                        use tokio::io::{AsyncReadExt, AsyncWriteExt};
                        let mut conn = tokio::net::TcpStream::connect(addr).await?;
                        conn.write_all(MESSAGE).await?;
                        let mut buf = [0u8; MESSAGE.len()];
                        conn.read_exact(&mut buf).await?;
                        Ok::<(), std::io::Error>(())
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            let threads = status_field("Threads:").unwrap_or(0);
            let (ok, errors) = count(futures);
            (ok, errors, threads)
        }
        other => return Err(format!("unknown client mode {other:?}").into()),
    };
    let wall = start.elapsed().as_secs_f64();
    let peak = status_field("VmHWM:").unwrap_or(0);
    println!("{ok} {errors} {wall:.6} {peak} {base} {threads}");
    Ok(())
}

fn count(futures: Vec<martelli::Future<std::io::Result<()>>>) -> (usize, usize) {
    let mut ok = 0;
    let mut errors = 0;
    for f in as_completed(futures) {
        match f.wait() {
            Ok(Ok(())) => ok += 1,
            _ => errors += 1,
        }
    }
    (ok, errors)
}
