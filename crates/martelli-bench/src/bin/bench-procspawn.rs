//! The `procspawn` crate's process pool on the process pool's benchmark cases, one JSON line per case,
//! in the format of martelli's `process_bench` example (run by `scripts/bench-processes.sh` beside it).
//!
//! ```text
//! bench-procspawn roundtrip [n]   tiny task, spawn → join, one at a time: p50/p99 µs
//! bench-procspawn submit [n]      n tiny tasks spawned, then all joined (2 workers): µs per task
//! bench-procspawn payload [n]     a 1 MiB argument and result, n round trips: MiB/s each way
//! ```

use serde_bytes::ByteBuf;
use std::time::Instant;

fn main() -> anyhow::Result<()> {
    procspawn::init();
    let mut args = std::env::args().skip(1);
    let case = args.next().unwrap_or_default();
    let n: Option<usize> = args.next().map(|s| s.parse()).transpose()?;
    match case.as_str() {
        "roundtrip" => roundtrip(n.unwrap_or(5_000)),
        "submit" => submit(n.unwrap_or(20_000)),
        "payload" => payload(n.unwrap_or(50)),
        other => anyhow::bail!("unknown case {other:?}: use roundtrip, submit or payload"),
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn roundtrip(n: usize) -> anyhow::Result<()> {
    let pool = procspawn::Pool::new(1)?;
    for i in 0..100u64 {
        pool.spawn(i, |x| x).join()?;
    }
    let mut micros = Vec::with_capacity(n);
    for i in 0..n as u64 {
        let start = Instant::now();
        let value = pool.spawn(i, |x| x).join()?;
        micros.push(start.elapsed().as_secs_f64() * 1e6);
        anyhow::ensure!(value == i, "wrong value");
    }
    micros.sort_by(f64::total_cmp);
    println!(
        "{{\"case\":\"roundtrip\",\"n\":{n},\"p50_us\":{:.2},\"p99_us\":{:.2}}}",
        percentile(&micros, 0.50),
        percentile(&micros, 0.99)
    );
    pool.shutdown();
    Ok(())
}

fn submit(n: usize) -> anyhow::Result<()> {
    let pool = procspawn::Pool::new(2)?;
    pool.spawn(0u64, |x| x).join()?;
    let start = Instant::now();
    let handles: Vec<_> = (0..n as u64).map(|i| pool.spawn(i, |x| x)).collect();
    let mut sum = 0u64;
    for handle in handles {
        sum += handle.join()?;
    }
    let wall = start.elapsed().as_secs_f64();
    anyhow::ensure!(sum == (n as u64) * (n as u64 - 1) / 2, "wrong sum");
    println!(
        "{{\"case\":\"submit\",\"n\":{n},\"wall_s\":{wall:.4},\"us_per_task\":{:.3}}}",
        wall * 1e6 / n as f64
    );
    pool.shutdown();
    Ok(())
}

fn payload(n: usize) -> anyhow::Result<()> {
    let pool = procspawn::Pool::new(1)?;
    let data = ByteBuf::from(vec![7u8; 1 << 20]);
    pool.spawn(data.clone(), |d: ByteBuf| d).join()?;
    let start = Instant::now();
    for _ in 0..n {
        let back = pool.spawn(data.clone(), |d: ByteBuf| d).join()?;
        anyhow::ensure!(back.len() == data.len(), "wrong length");
    }
    let wall = start.elapsed().as_secs_f64();
    println!(
        "{{\"case\":\"payload\",\"n\":{n},\"mib_per_s\":{:.0}}}",
        n as f64 / wall
    );
    pool.shutdown();
    Ok(())
}
