//! A deliberately racy program — a lost update through a check-then-act on shared state — that plain
//! repetition almost never catches and chaos mode catches within a few seeds; and its fixed version.
//!
//! A deposit task reads the balance, hands the receipt to an audit task on the same pool (fire and
//! forget: the audit charges a fee of 1), then writes the balance it read plus the deposit. The author
//! assumed the audit runs "later". It usually does — a worker needs microseconds to pick it up, the
//! deposit needs nanoseconds to write — so the bug hides. Delay the deposit at the submit, and the
//! audit's fee is overwritten: the balance ends at 150 instead of 149.
//!
//! ```text
//! cargo run --release --example lost_update -- plain 1000       # how often plain runs fail
//! cargo run --release --example lost_update -- chaos 100        # the first seed that fails
//! cargo run --release --example lost_update -- fixed 200        # the fixed version under 200 seeds
//! cargo run --release --example lost_update -- campaigns 20     # seeds needed over 20 campaigns
//! ```

use martelli::{Pool, chaos};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

/// Work the audit does before it touches the balance (formatting a receipt).
fn receipt(amount: i64) -> u64 {
    let text = format!("receipt: deposit of {amount} units; ").repeat(2048);
    text.bytes()
        .fold(0u64, |h, b| h.rotate_left(5) ^ u64::from(b))
}

/// One deposit of 50 with its audit, the racy way. Returns the final balance.
fn racy(pool: &Arc<Pool>) -> Result<i64, String> {
    let balance = Arc::new(AtomicI64::new(100));
    let (b, p) = (Arc::clone(&balance), Arc::clone(pool));
    let deposit = pool
        .submit(move || {
            let seen = b.load(Ordering::SeqCst); // check
            let fee_b = Arc::clone(&b);
            let audit = p.submit(move || {
                std::hint::black_box(receipt(50));
                let now = fee_b.load(Ordering::SeqCst);
                fee_b.store(now - 1, Ordering::SeqCst); // the audit's own check-then-act
            });
            b.store(seen + 50, Ordering::SeqCst); // act: overwrites a fee charged meanwhile
            audit
        })
        .map_err(|e| e.to_string())?;
    let audit = deposit.wait().map_err(|e| e.to_string())?;
    audit
        .map_err(|e| e.to_string())?
        .wait()
        .map_err(|e| e.to_string())?;
    Ok(balance.load(Ordering::SeqCst))
}

/// The fix: each update is one atomic read-modify-write, so no interleaving loses one.
fn fixed(pool: &Arc<Pool>) -> Result<i64, String> {
    let balance = Arc::new(AtomicI64::new(100));
    let (b, p) = (Arc::clone(&balance), Arc::clone(pool));
    let deposit = pool
        .submit(move || {
            let fee_b = Arc::clone(&b);
            let audit = p.submit(move || {
                std::hint::black_box(receipt(50));
                fee_b.fetch_sub(1, Ordering::SeqCst);
            });
            b.fetch_add(50, Ordering::SeqCst);
            audit
        })
        .map_err(|e| e.to_string())?;
    let audit = deposit.wait().map_err(|e| e.to_string())?;
    audit
        .map_err(|e| e.to_string())?
        .wait()
        .map_err(|e| e.to_string())?;
    Ok(balance.load(Ordering::SeqCst))
}

fn scenario(
    pool: &Arc<Pool>,
    version: fn(&Arc<Pool>) -> Result<i64, String>,
) -> Result<(), String> {
    match version(pool)? {
        149 => Ok(()),
        other => Err(format!("lost update: the balance is {other}, expected 149")),
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_else(|| "chaos".into());
    let n: u64 = args.next().map_or(Ok(100), |s| s.parse())?;
    let pool = Arc::new(Pool::threads(2)?);
    match mode.as_str() {
        "plain" => {
            chaos::disable();
            let failures = (0..n).filter(|_| scenario(&pool, racy).is_err()).count();
            println!("plain: {failures} of {n} runs failed");
        }
        "chaos" => match chaos::check(n, |_| scenario(&pool, racy)) {
            Ok(()) => println!("chaos: not caught in {n} seeds"),
            Err(failure) => println!(
                "chaos: caught at seed {} after {} runs: {}",
                failure.seed, failure.runs, failure.message
            ),
        },
        "fixed" => match chaos::check(n, |_| scenario(&pool, fixed)) {
            Ok(()) => println!("fixed: passed all {n} seeds"),
            Err(failure) => println!("fixed: FAILED: {failure}"),
        },
        "campaigns" => {
            let mut needed = Vec::new();
            for campaign in 0..n {
                let first = 1 + campaign * 1_000;
                match chaos::check_from(first, 1_000, |_| scenario(&pool, racy)) {
                    Ok(()) => needed.push(u64::MAX),
                    Err(failure) => needed.push(failure.runs),
                }
            }
            needed.sort_unstable();
            let median = needed[needed.len() / 2];
            let worst = needed[needed.len() - 1];
            println!(
                "campaigns: {n}; seeds needed: median {median}, worst {worst}; all: {needed:?}"
            );
        }
        other => {
            return Err(
                format!("unknown mode {other:?}: use plain, chaos, fixed or campaigns").into(),
            );
        }
    }
    Ok(())
}
