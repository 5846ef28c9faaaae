//! Benchmarks of martelli's core (`Pool`, `Future`, `map`) side by side with rayon, the `threadpool`
//! crate and Python's `ThreadPoolExecutor`, interleaved over rounds; prints medians and ratios.
//!
//! Run it through `scripts/bench-core.sh`, which builds in release mode and finds the Python peer.

use anyhow::{bail, ensure};
use clap::{Parser, ValueEnum};
use martelli::Pool;
use martelli_bench::{
    Row, Samples, format_rate, format_seconds, render_table, rotation, run_python_thread_pool,
    settle, time,
};
use rayon::prelude::*;
use std::hint::black_box;
use std::path::PathBuf;
use std::time::Duration;

/// Tasks in the submit-and-wait benchmark.
const SUBMIT_TASKS: u64 = 100_000;
/// Threads of every pool in the submit-and-wait and map benchmarks.
const THREADS: usize = 2;
/// Items in the map benchmark.
const MAP_ITEMS: u64 = 1_000_000;
/// Chunks of arithmetic in the CPU-bound benchmark.
const CPU_CHUNKS: u64 = 8;
/// How long one chunk of arithmetic runs on one core, as calibrated at start.
const CPU_CHUNK_TIME: Duration = Duration::from_millis(50);

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Bench {
    /// `submit` + `wait` of no-op tasks vs rayon and threadpool.
    Submit,
    /// `map` and `map_slice` of tiny items vs rayon's parallel iterator.
    Map,
    /// CPU-bound chunks: inline vs threads(cores).
    Cpu,
    /// Python's ThreadPoolExecutor(2) vs martelli's submit + wait.
    Python,
}

/// martelli's core benchmarks against its peers, side by side.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Rounds; every contender runs once per round, in an order that rotates, and the table shows
    /// medians over rounds.
    #[arg(long, default_value_t = 7, value_parser = clap::value_parser!(u64).range(1..=1000))]
    rounds: u64,
    /// The Python peer script (`peers/python/bench_thread_pool.py`); without it the Python row is
    /// skipped.
    #[arg(long)]
    python_peer: Option<PathBuf>,
    /// Repetitions the Python script makes per round (its `REPS`); the round uses their median.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=100))]
    python_reps: u64,
    /// Run only these benchmarks (default: all). `python` needs `submit` and runs it too.
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Bench>,
    /// Run martelli's contenders only, not the peers (for profiling martelli; the ratios are then
    /// meaningless and the table is not printed).
    #[arg(long)]
    martelli_only: bool,
    /// Print every round's figures as they are measured.
    #[arg(long, short)]
    verbose: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let wanted = |b: Bench| args.only.is_empty() || args.only.contains(&b);
    let python_script = match (&args.python_peer, wanted(Bench::Python)) {
        (Some(path), true) if path.is_file() => Some(path.clone()),
        (Some(path), true) => {
            eprintln!(
                "note: the Python peer {} is absent: skipping the Python row",
                path.display()
            );
            None
        }
        (None, true) => {
            eprintln!("note: no --python-peer given: skipping the Python row");
            None
        }
        (_, false) => None,
    };
    let run_submit = wanted(Bench::Submit) || python_script.is_some();
    let run_map = wanted(Bench::Map);
    let run_cpu = wanted(Bench::Cpu);

    let cores = martelli::available_cores();
    eprintln!(
        "machine: {cores} cores ({}); load average {}; {} rounds",
        cpu_model(),
        load_average(),
        args.rounds
    );

    let map_inputs: Vec<u64> = if run_map {
        (0..MAP_ITEMS).collect()
    } else {
        Vec::new()
    };
    let cpu_iters = if run_cpu {
        let iters = calibrate_spin(CPU_CHUNK_TIME);
        eprintln!(
            "cpu: one chunk = {iters} iterations ≈ {} on one core",
            format_seconds(CPU_CHUNK_TIME.as_secs_f64())
        );
        iters
    } else {
        0
    };

    // Warm-up: every contender once, untimed (page faults, thread start, lazy statics).
    if run_submit {
        for which in 0..3 {
            submit_wait(which, 1_000)?;
        }
    }
    if run_map {
        for which in 0..5 {
            map_collect(which, &map_inputs[..10_000])?;
        }
    }

    let mut submit = [Samples::new(), Samples::new(), Samples::new()];
    let mut submit_ratio = [Samples::new(), Samples::new()];
    let mut map = [
        Samples::new(),
        Samples::new(),
        Samples::new(),
        Samples::new(),
        Samples::new(),
    ];
    let mut map_ratio = [
        Samples::new(),
        Samples::new(),
        Samples::new(),
        Samples::new(),
    ];
    let mut cpu = [Samples::new(), Samples::new(), Samples::new()];
    let mut cpu_speedup = Samples::new();
    let mut cpu_vs_rayon = Samples::new();
    let mut python_us = Samples::new();
    let mut python_ratio = Samples::new();

    for round in 0..args.rounds as usize {
        let mut round_submit = [0.0; 3];
        if run_submit {
            for which in rotation(3, round) {
                if args.martelli_only && which != 0 {
                    continue;
                }
                round_submit[which] = submit_wait(which, SUBMIT_TASKS)?;
                submit[which].push(round_submit[which]);
            }
            submit_ratio[0].push(round_submit[1] / round_submit[0]);
            submit_ratio[1].push(round_submit[2] / round_submit[0]);
            if args.verbose {
                eprintln!(
                    "round {round}: submit+wait martelli {} rayon {} threadpool {}",
                    format_seconds(round_submit[0]),
                    format_seconds(round_submit[1]),
                    format_seconds(round_submit[2]),
                );
            }
        }
        if run_map {
            let mut t = [0.0; 5];
            for which in rotation(5, round) {
                if args.martelli_only && (which == 1 || which == 2 || which == 4) {
                    continue;
                }
                t[which] = map_collect(which, &map_inputs)?;
                map[which].push(t[which]);
            }
            map_ratio[0].push(t[1] / t[0]);
            map_ratio[1].push(t[2] / t[0]);
            map_ratio[2].push(t[1] / t[3]);
            map_ratio[3].push(t[4] / t[0]);
            if args.verbose {
                eprintln!(
                    "round {round}: map martelli {} map_slice {} rayon {} sequential {} \
                     sequential collected as Result {}",
                    format_seconds(t[0]),
                    format_seconds(t[3]),
                    format_seconds(t[1]),
                    format_seconds(t[2]),
                    format_seconds(t[4]),
                );
            }
        }
        if run_cpu {
            let mut t = [0.0; 3];
            for which in rotation(3, round) {
                if args.martelli_only && which == 2 {
                    continue;
                }
                t[which] = cpu_bound(which, cpu_iters, cores)?;
                cpu[which].push(t[which]);
            }
            cpu_speedup.push(t[0] / t[1]);
            cpu_vs_rayon.push(t[2] / t[1]);
            if args.verbose {
                eprintln!(
                    "round {round}: cpu inline {} threads({cores}) {} rayon({cores}) {}",
                    format_seconds(t[0]),
                    format_seconds(t[1]),
                    format_seconds(t[2]),
                );
            }
        }
        if let Some(script) = &python_script {
            let py = run_python_thread_pool(script, args.python_reps as usize)?;
            let ours = round_submit[0] / SUBMIT_TASKS as f64 * 1e6;
            python_us.push(py.us_per_task);
            python_ratio.push(py.us_per_task / ours);
            if args.verbose {
                eprintln!(
                    "round {round}: python {:.3} µs/task, martelli {ours:.3} µs/task",
                    py.us_per_task
                );
            }
        }
        eprintln!("round {}/{} done", round + 1, args.rounds);
    }
    if args.martelli_only {
        return Ok(());
    }

    let median = |s: &Samples| s.median().unwrap_or(f64::NAN);
    let rate = |s: &Samples, n: u64| format_rate(n as f64 / median(s));
    let mut rows = Vec::new();
    if run_submit {
        rows.push(Row {
            benchmark: format!("submit+wait {SUBMIT_TASKS} no-op tasks, {THREADS} threads"),
            martelli: rate(&submit[0], SUBMIT_TASKS),
            peer: format!("rayon spawn+oneshot {}", rate(&submit[1], SUBMIT_TASKS)),
            ratio: submit_ratio[0].median(),
            target: Some(1.0),
        });
        rows.push(Row {
            benchmark: format!("submit+wait {SUBMIT_TASKS} no-op tasks, {THREADS} threads"),
            martelli: rate(&submit[0], SUBMIT_TASKS),
            peer: format!("threadpool+oneshot {}", rate(&submit[2], SUBMIT_TASKS)),
            ratio: submit_ratio[1].median(),
            target: None,
        });
    }
    if run_map {
        rows.push(Row {
            benchmark: format!("map_slice {MAP_ITEMS} × (x*2+1), {THREADS} threads"),
            martelli: format_seconds(median(&map[3])),
            peer: format!("rayon par_iter {}", format_seconds(median(&map[1]))),
            ratio: map_ratio[2].median(),
            target: Some(0.8),
        });
        rows.push(Row {
            benchmark: format!("lazy map {MAP_ITEMS} × (x*2+1) collected, {THREADS} threads"),
            martelli: format_seconds(median(&map[0])),
            peer: format!("rayon par_iter {}", format_seconds(median(&map[1]))),
            ratio: map_ratio[0].median(),
            target: Some(0.5),
        });
        rows.push(Row {
            benchmark: format!("lazy map {MAP_ITEMS} × (x*2+1) collected, {THREADS} threads"),
            martelli: format_seconds(median(&map[0])),
            peer: format!("sequential loop {}", format_seconds(median(&map[2]))),
            ratio: map_ratio[1].median(),
            target: None,
        });
        // The same loop collected into `Result<Vec<_>, _>` as the lazy map is: `collect` then
        // learns no length and grows the vector by doubling. What any iterator consumed on one
        // thread this way costs: the lazy map's ceiling.
        rows.push(Row {
            benchmark: format!("lazy map {MAP_ITEMS} × (x*2+1) collected, {THREADS} threads"),
            martelli: format_seconds(median(&map[0])),
            peer: format!(
                "sequential loop into Result<Vec> {}",
                format_seconds(median(&map[4]))
            ),
            ratio: map_ratio[3].median(),
            target: None,
        });
    }
    if run_cpu {
        let ideal = 0.95 * cores as f64;
        rows.push(Row {
            benchmark: format!(
                "CPU {CPU_CHUNKS} × {} ms: speedup threads({cores}) over inline",
                CPU_CHUNK_TIME.as_millis()
            ),
            martelli: format!("threads {}", format_seconds(median(&cpu[1]))),
            peer: format!("inline {}", format_seconds(median(&cpu[0]))),
            ratio: cpu_speedup.median(),
            target: Some(ideal),
        });
        rows.push(Row {
            benchmark: format!(
                "CPU {CPU_CHUNKS} × {} ms, {cores} threads",
                CPU_CHUNK_TIME.as_millis()
            ),
            martelli: format!("threads {}", format_seconds(median(&cpu[1]))),
            peer: format!("rayon {}", format_seconds(median(&cpu[2]))),
            ratio: cpu_vs_rayon.median(),
            target: None,
        });
    }
    if python_script.is_some() {
        rows.push(Row {
            benchmark: "no-op submit all, then result each: µs/task".into(),
            martelli: format!("{:.3} µs", median(&submit[0]) / SUBMIT_TASKS as f64 * 1e6),
            peer: format!("Python TPE(2) {:.2} µs", median(&python_us)),
            ratio: python_ratio.median(),
            target: Some(30.0),
        });
    }
    println!();
    println!(
        "machine: {cores} cores ({}); load average at the end {}",
        cpu_model(),
        load_average()
    );
    println!(
        "Ratios: martelli's throughput over the peer's (above 1: martelli is faster), median of the \
         per-round ratios over {} rounds; the CPU row is the speedup itself.",
        args.rounds
    );
    print!("{}", render_table(&rows));
    Ok(())
}

/// The 1, 5 and 15 minute load averages, for the record: a loaded machine shows in every figure.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "unknown".into())
}

/// The CPU model, for the record.
fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

/// A peer pool that runs closures: rayon's `spawn`, threadpool's `execute`.
trait Spawner {
    fn run<F: FnOnce() + Send + 'static>(&self, f: F);
}

impl Spawner for rayon::ThreadPool {
    fn run<F: FnOnce() + Send + 'static>(&self, f: F) {
        self.spawn(f);
    }
}

impl Spawner for threadpool::ThreadPool {
    fn run<F: FnOnce() + Send + 'static>(&self, f: F) {
        self.execute(f);
    }
}

/// A peer's submit + wait: one warm-up task, then `n` tasks each sending its index through its own
/// oneshot channel, received in order. Returns seconds and the sum of the indices.
fn oneshot_round(pool: &impl Spawner, n: u64) -> anyhow::Result<(f64, u64)> {
    let (tx, rx) = oneshot::channel();
    pool.run(move || {
        let _ = tx.send(0u64);
    });
    rx.recv()?;
    let (secs, sum) = time(|| -> anyhow::Result<u64> {
        let receivers: Vec<_> = (0..n)
            .map(|i| {
                let (tx, rx) = oneshot::channel();
                pool.run(move || {
                    let _ = tx.send(black_box(i));
                });
                rx
            })
            .collect();
        let mut sum = 0;
        for rx in receivers {
            sum += rx.recv()?;
        }
        Ok(sum)
    });
    Ok((secs, sum?))
}

/// `submit` + `wait` of `n` no-op tasks (each returns its index) on two threads; seconds.
/// `which`: 0 martelli, 1 rayon `spawn` + oneshot, 2 threadpool `execute` + oneshot.
fn submit_wait(which: usize, n: u64) -> anyhow::Result<f64> {
    let expected = n * (n - 1) / 2;
    let (secs, sum) = match which {
        0 => {
            let pool = Pool::threads(THREADS)?;
            pool.submit(|| 0u64)?.wait()?;
            let (secs, sum) = time(|| -> anyhow::Result<u64> {
                let futures = (0..n)
                    .map(|i| pool.submit(move || black_box(i)))
                    .collect::<Result<Vec<_>, _>>()?;
                let mut sum = 0;
                for future in futures {
                    sum += future.wait()?;
                }
                Ok(sum)
            });
            (secs, sum?)
        }
        1 => oneshot_round(
            &rayon::ThreadPoolBuilder::new()
                .num_threads(THREADS)
                .build()?,
            n,
        )?,
        2 => {
            let pool = threadpool::ThreadPool::new(THREADS);
            let round = oneshot_round(&pool, n)?;
            pool.join();
            round
        }
        _ => bail!("no submit contender {which}"),
    };
    ensure!(
        sum == expected,
        "contender {which} summed {sum}, not {expected}"
    );
    settle();
    Ok(secs)
}

/// `x * 2 + 1` over `inputs` on two threads, collected into a `Vec<u64>`; seconds.
/// `which`: 0 martelli `map` (lazy, over an iterator), 1 rayon `par_iter().map().collect()`, 2 a
/// plain loop on the calling thread (no pool: the floor a single consumer of the results cannot
/// beat), 3 martelli `map_slice` (eager, over the slice), 4 the plain loop collected into
/// `Result<Vec<_>, _>` as contender 0 is (so `collect` learns no length and grows the vector as it
/// goes, as it must for any iterator of `Result`s).
fn map_collect(which: usize, inputs: &[u64]) -> anyhow::Result<f64> {
    let (secs, out) = match which {
        0 => {
            let pool = Pool::threads(THREADS)?;
            pool.submit(|| ())?.wait()?;
            let (secs, out) = time(|| {
                pool.map(|x: u64| x * 2 + 1, inputs.iter().copied())
                    .collect::<Result<Vec<u64>, _>>()
            });
            (secs, out?)
        }
        1 => {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(THREADS)
                .build()?;
            pool.install(|| ());
            time(|| pool.install(|| inputs.par_iter().map(|&x| x * 2 + 1).collect::<Vec<u64>>()))
        }
        2 => time(|| {
            black_box(inputs)
                .iter()
                .map(|&x| x * 2 + 1)
                .collect::<Vec<u64>>()
        }),
        3 => {
            let pool = Pool::threads(THREADS)?;
            pool.submit(|| ())?.wait()?;
            let (secs, out) = time(|| pool.map_slice(|&x| x * 2 + 1, inputs));
            (secs, out?)
        }
        4 => {
            let (secs, out) = time(|| {
                black_box(inputs)
                    .iter()
                    .map(|&x| Ok::<u64, std::convert::Infallible>(x * 2 + 1))
                    .collect::<Result<Vec<u64>, _>>()
            });
            (secs, out?)
        }
        _ => bail!("no map contender {which}"),
    };
    ensure!(
        out.len() == inputs.len() && out.iter().zip(inputs).all(|(&y, &x)| y == x * 2 + 1),
        "map contender {which} returned a wrong result"
    );
    settle();
    Ok(secs)
}

/// Arithmetic that the compiler cannot fold away: `iters` steps of a 64-bit LCG with a mix.
fn spin(iters: u64, seed: u64) -> u64 {
    let mut x = black_box(seed) | 1;
    for _ in 0..black_box(iters) {
        x = x
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        x ^= x >> 29;
    }
    x
}

/// The iteration count of [`spin`] that runs about `target` on this thread.
fn calibrate_spin(target: Duration) -> u64 {
    let mut iters: u64 = 1_000_000;
    for _ in 0..4 {
        let (secs, x) = time(|| spin(iters, 7));
        black_box(x);
        let scaled = iters as f64 * target.as_secs_f64() / secs.max(1e-9);
        iters = scaled.max(1.0) as u64;
    }
    iters
}

/// [`CPU_CHUNKS`] chunks of `iters` spin steps; seconds.
/// `which`: 0 martelli inline, 1 martelli threads(cores), 2 rayon on `cores` threads (reference).
fn cpu_bound(which: usize, iters: u64, cores: usize) -> anyhow::Result<f64> {
    let expected: Vec<u64> = (0..CPU_CHUNKS).map(|c| spin(1_000, c)).collect();
    let (secs, results) = match which {
        0 | 1 => {
            let pool = if which == 0 {
                Pool::inline()
            } else {
                Pool::threads(cores)?
            };
            pool.submit(|| ())?.wait()?;
            let (secs, results) = time(|| -> anyhow::Result<Vec<u64>> {
                let futures = (0..CPU_CHUNKS)
                    .map(|c| pool.submit(move || (spin(iters, c), spin(1_000, c))))
                    .collect::<Result<Vec<_>, _>>()?;
                let mut out = Vec::new();
                for future in futures {
                    let (x, check) = future.wait()?;
                    black_box(x);
                    out.push(check);
                }
                Ok(out)
            });
            (secs, results?)
        }
        2 => {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(cores).build()?;
            pool.install(|| ());
            let chunks: Vec<u64> = (0..CPU_CHUNKS).collect();
            time(|| {
                pool.install(|| {
                    chunks
                        .par_iter()
                        .with_max_len(1)
                        .map(|&c| {
                            black_box(spin(iters, c));
                            spin(1_000, c)
                        })
                        .collect::<Vec<u64>>()
                })
            })
        }
        _ => bail!("no CPU contender {which}"),
    };
    ensure!(
        results == expected,
        "CPU contender {which} returned a wrong result"
    );
    settle();
    Ok(secs)
}
