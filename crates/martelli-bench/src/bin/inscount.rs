//! The workloads that `scripts/inscount.sh` counts instructions of (under `valgrind --tool=callgrind`)
//! to guard martelli's hot paths against growth that wall-clock figures cannot see on a noisy machine.
//!
//! ```text
//! inscount <case> <n>
//!   submit      n no-op tasks submitted to Pool::threads(2), then each waited for in order
//!   map         Pool::map (lazy, ordered) of n tiny items on threads(2), collected
//!   map-slice   Pool::map_slice of n tiny items on threads(2)
//!   queue       n items through a JoinableQueue: put, get, task_done, in batches of 64, one thread
//!   process     n round trips (submit_task → wait) of a tiny task to Pool::processes(1)
//! ```
//!
//! Every case does its setup (pool start, warm-up, inputs) the same way whatever `n` is, so the script
//! runs each case at two sizes and divides the difference of the two counts by the difference of the
//! sizes: instructions per item, with the setup cancelled out. Every result is checked, so a broken
//! build fails here rather than counting less work.

use anyhow::{Context, bail, ensure};
use martelli::{JoinableQueue, Pool};
use std::hint::black_box;

#[martelli::task]
fn noop(x: u64) -> u64 {
    x
}

fn main() -> anyhow::Result<()> {
    martelli::init();
    let mut args = std::env::args().skip(1);
    let usage = "usage: inscount <submit|map|map-slice|queue|process> <n>";
    let case = args.next().context(usage)?;
    let n: u64 = args
        .next()
        .context(usage)?
        .parse()
        .with_context(|| format!("the count is not a whole number; {usage}"))?;
    match case.as_str() {
        "submit" => submit(n),
        "map" => map(n),
        "map-slice" => map_slice(n),
        "queue" => queue(n),
        "process" => process(n),
        other => bail!("unknown case {other:?}; {usage}"),
    }
}

fn submit(n: u64) -> anyhow::Result<()> {
    let pool = Pool::threads(2)?;
    pool.submit(|| 0u64)?.wait()?;
    let futures = (0..n)
        .map(|i| pool.submit(move || black_box(i)))
        .collect::<Result<Vec<_>, _>>()?;
    let mut sum = 0u64;
    for future in futures {
        sum += future.wait()?;
    }
    ensure!(sum == n * n.saturating_sub(1) / 2, "wrong sum {sum}");
    Ok(())
}

fn map(n: u64) -> anyhow::Result<()> {
    let pool = Pool::threads(2)?;
    let out: Vec<u64> = pool
        .map(|x: u64| x * 2 + 1, 0..n)
        .collect::<Result<_, _>>()?;
    check_odd_numbers(&out, n)
}

fn map_slice(n: u64) -> anyhow::Result<()> {
    let pool = Pool::threads(2)?;
    let inputs: Vec<u64> = (0..n).collect();
    let out = pool.map_slice(|&x| x * 2 + 1, &inputs)?;
    check_odd_numbers(&out, n)
}

/// Checks the output of the map cases cheaply (a vectorised sum, about half an instruction per item,
/// so that the check does not dilute what is counted): `n` results whose sum is that of the first `n`
/// odd numbers, `n²`, first and last in place. The library's tests check the order item by item.
fn check_odd_numbers(out: &[u64], n: u64) -> anyhow::Result<()> {
    ensure!(
        out.len() as u64 == n,
        "{} results for {n} inputs",
        out.len()
    );
    let sum: u64 = out.iter().sum();
    ensure!(sum == n * n, "the results sum to {sum}, not {}", n * n);
    ensure!(n == 0 || (out[0] == 1 && out[out.len() - 1] == 2 * n - 1));
    Ok(())
}

fn queue(n: u64) -> anyhow::Result<()> {
    const BATCH: u64 = 64;
    let q = JoinableQueue::unbounded();
    let mut sum = 0u64;
    let mut i = 0;
    while i < n {
        let end = (i + BATCH).min(n);
        for x in i..end {
            q.put(x)
                .map_err(|_| anyhow::anyhow!("the queue refused an item"))?;
        }
        for _ in i..end {
            sum += q.get()?;
            q.task_done()?;
        }
        i = end;
    }
    q.join();
    ensure!(sum == n * n.saturating_sub(1) / 2, "wrong sum {sum}");
    Ok(())
}

fn process(n: u64) -> anyhow::Result<()> {
    // The worker program is named: under valgrind, this process's own executable is valgrind's,
    // which the pool would otherwise refuse as "not this program".
    let program = std::env::current_exe().context("finding this program's path")?;
    let pool = Pool::builder()
        .processes(1)
        .worker_program(program)
        .build()?;
    pool.submit_task(noop, (0,))?.wait()?;
    for i in 0..n {
        let out = pool.submit_task(noop, (i,))?.wait()?;
        ensure!(out == i, "round trip {i} came back as {out}");
    }
    Ok(())
}
