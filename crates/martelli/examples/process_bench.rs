//! Process-pool benchmarks, one JSON line per case (run by `scripts/bench-processes.sh`, which sets
//! them beside Python's ProcessPoolExecutor and multiprocessing.Pool).
//!
//! ```text
//! cargo run --release --example process_bench -- <case> [n]
//!   roundtrip [n]   tiny task, submit → wait, one at a time: p50/p99 µs
//!   submit [n]      n tiny tasks submitted, then all waited (2 workers): µs per task
//!   captured [n]    the same with submit_task_captured (stdout and stderr captured per task)
//!   map [n]         n tiny tasks through map_task with automatic chunks (2 workers): µs per task
//!   startup         Pool::processes(2) until both workers have answered: ms
//!   payload [n]     a 1 MiB argument and result, n round trips: MiB/s each way
//!   timeout [n]     a task killed at its timeout; time until the replacement answers: ms
//! ```

use martelli::{Pool, TaskOptions};
use serde_bytes::ByteBuf;
use std::time::{Duration, Instant};

#[martelli::task]
fn noop(x: u64) -> u64 {
    x
}

#[martelli::task]
fn echo(data: ByteBuf) -> ByteBuf {
    data
}

#[martelli::task]
fn sleep_ms(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    martelli::init();
    let mut args = std::env::args().skip(1);
    let case = args.next().unwrap_or_else(|| "roundtrip".to_owned());
    let n: Option<usize> = args.next().map(|a| a.parse()).transpose()?;
    match case.as_str() {
        "roundtrip" => roundtrip(n.unwrap_or(20_000)),
        "submit" => submit(n.unwrap_or(100_000)),
        "captured" => captured(n.unwrap_or(20_000)),
        "startup" => startup(n.unwrap_or(20)),
        "map" => map(n.unwrap_or(100_000)),
        "payload" => payload(n.unwrap_or(100)),
        "timeout" => timeout(n.unwrap_or(20)),
        other => Err(format!("unknown case {other:?}").into()),
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

fn roundtrip(n: usize) -> Result<(), Box<dyn std::error::Error>> {
    let pool = Pool::processes(1)?;
    for i in 0..1_000 {
        pool.submit_task(noop, (i,))?.wait()?;
    }
    let mut us = Vec::with_capacity(n);
    for i in 0..n as u64 {
        let t = Instant::now();
        pool.submit_task(noop, (i,))?.wait()?;
        us.push(t.elapsed().as_secs_f64() * 1e6);
    }
    us.sort_by(f64::total_cmp);
    println!(
        r#"{{"case":"roundtrip","n":{n},"p50_us":{:.2},"p99_us":{:.2}}}"#,
        percentile(&us, 0.5),
        percentile(&us, 0.99)
    );
    Ok(())
}

fn submit(n: usize) -> Result<(), Box<dyn std::error::Error>> {
    let pool = Pool::processes(2)?;
    for i in 0..1_000 {
        pool.submit_task(noop, (i,))?.wait()?;
    }
    let t = Instant::now();
    let futures = (0..n as u64)
        .map(|i| pool.submit_task(noop, (i,)))
        .collect::<Result<Vec<_>, _>>()?;
    let mut sum = 0u64;
    for f in futures {
        sum += f.wait()?;
    }
    let wall = t.elapsed().as_secs_f64();
    assert_eq!(sum, (0..n as u64).sum::<u64>());
    println!(
        r#"{{"case":"submit","n":{n},"wall_s":{wall:.4},"us_per_task":{:.3}}}"#,
        wall / n as f64 * 1e6
    );
    Ok(())
}

fn captured(n: usize) -> Result<(), Box<dyn std::error::Error>> {
    let pool = Pool::processes(2)?;
    for i in 0..1_000 {
        pool.submit_task(noop, (i,))?.wait()?;
    }
    let t = Instant::now();
    let futures = (0..n as u64)
        .map(|i| pool.submit_task_captured(noop, (i,)))
        .collect::<Result<Vec<_>, _>>()?;
    let mut sum = 0u64;
    for f in futures {
        sum += f.wait()?.outcome?;
    }
    let wall = t.elapsed().as_secs_f64();
    assert_eq!(sum, (0..n as u64).sum::<u64>());
    println!(
        r#"{{"case":"captured","n":{n},"wall_s":{wall:.4},"us_per_task":{:.3}}}"#,
        wall / n as f64 * 1e6
    );
    Ok(())
}

fn map(n: usize) -> Result<(), Box<dyn std::error::Error>> {
    let pool = Pool::processes(2)?;
    for i in 0..1_000 {
        pool.submit_task(noop, (i,))?.wait()?;
    }
    let t = Instant::now();
    let mut sum = 0u64;
    for r in pool.map_task(noop, (0..n as u64).map(|i| (i,))) {
        sum += r?;
    }
    let wall = t.elapsed().as_secs_f64();
    assert_eq!(sum, (0..n as u64).sum::<u64>());
    println!(
        r#"{{"case":"map","n":{n},"wall_s":{wall:.4},"us_per_task":{:.3}}}"#,
        wall / n as f64 * 1e6
    );
    Ok(())
}

fn startup(reps: usize) -> Result<(), Box<dyn std::error::Error>> {
    let mut ms = Vec::with_capacity(reps);
    for _ in 0..reps {
        let t = Instant::now();
        let pool = Pool::processes(2)?; // returns once both workers have answered the handshake
        ms.push(t.elapsed().as_secs_f64() * 1e3);
        drop(pool);
    }
    ms.sort_by(f64::total_cmp);
    println!(
        r#"{{"case":"startup","reps":{reps},"median_ms":{:.3},"min_ms":{:.3}}}"#,
        percentile(&ms, 0.5),
        ms[0]
    );
    Ok(())
}

fn payload(n: usize) -> Result<(), Box<dyn std::error::Error>> {
    let pool = Pool::processes(1)?;
    let data = ByteBuf::from(
        (0..1usize << 20)
            .map(|i| (i % 251) as u8)
            .collect::<Vec<u8>>(),
    );
    for _ in 0..5 {
        pool.submit_task(echo, (data.clone(),))?.wait()?;
    }
    let mut per_rt = Vec::with_capacity(n);
    for _ in 0..n {
        let arg = data.clone(); // the clone is the caller's, outside the timed path
        let t = Instant::now();
        let back = pool.submit_task(echo, (arg,))?.wait()?;
        per_rt.push(t.elapsed().as_secs_f64());
        assert_eq!(back.len(), data.len());
    }
    per_rt.sort_by(f64::total_cmp);
    let med = percentile(&per_rt, 0.5);
    println!(
        r#"{{"case":"payload","n":{n},"rt_ms":{:.3},"mib_per_s_one_way":{:.1}}}"#,
        med * 1e3,
        1.0 / med
    );
    Ok(())
}

fn timeout(reps: usize) -> Result<(), Box<dyn std::error::Error>> {
    let pool = Pool::processes(1)?;
    let mut ms = Vec::with_capacity(reps);
    for _ in 0..reps {
        let submitted = Instant::now();
        let slow = pool
            .with(TaskOptions::new().timeout(Duration::from_millis(20)))
            .submit_task(sleep_ms, (60_000,))?;
        let next = pool.submit_task(noop, (1,))?;
        assert!(slow.wait().is_err_and(|e| e.is_timeout()));
        next.wait()?;
        // From the deadline (the slow task started at once on the idle worker) to the next answer.
        let since_deadline = submitted
            .elapsed()
            .saturating_sub(Duration::from_millis(20));
        ms.push(since_deadline.as_secs_f64() * 1e3);
    }
    ms.sort_by(f64::total_cmp);
    println!(
        r#"{{"case":"timeout","reps":{reps},"replacement_serves_ms_median":{:.3},"max_ms":{:.3}}}"#,
        percentile(&ms, 0.5),
        ms[ms.len() - 1]
    );
    Ok(())
}
