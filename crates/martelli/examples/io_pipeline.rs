//! A two-stage I/O pipeline: many threads "fetch" pages (I/O-bound: they mostly wait), a few parse
//! them (CPU-light), and the main thread collects the records.
//!
//! ```text
//! cargo run -p martelli --example io_pipeline            # 200 URLs, 32 fetchers, 20 ms latency
//! cargo run -p martelli --example io_pipeline -- 500 64  # URLs, fetchers
//! ```
//!
//! ```text
//!   urls ──▶ [fetchers: 32 threads] ──▶ pages ──▶ [parsers: 2 threads] ──▶ records ──▶ main
//! ```
//!
//! The network is simulated by a fixed latency per fetch (a sleep), so the example runs anywhere; the
//! shape is the real one. Every queue is bounded, so a slow stage slows down the stages before it
//! (backpressure) instead of letting memory grow, and a failed fetch goes to an error queue instead
//! of vanishing. With `F` fetchers, `N` URLs take about `N × latency / F`.

use martelli::{ItemError, JoinableQueue, Pool};
use std::error::Error;
use std::time::{Duration, Instant};

/// What the pipeline produced.
#[derive(Debug)]
pub(crate) struct Summary {
    /// Records parsed.
    pub(crate) records: usize,
    /// Links found across all pages.
    pub(crate) links: usize,
    /// Fetches that failed (reported through the error queue).
    pub(crate) failures: Vec<String>,
    /// Wall-clock time.
    pub(crate) elapsed: Duration,
}

/// A fetched page.
struct Page {
    url: String,
    body: String,
}

/// "Fetches" a URL: waits for the simulated network, then returns a body with a few links. URLs that
/// end in `/404` fail, as a server would.
fn fetch(url: String, latency: Duration) -> Result<Page, String> {
    std::thread::sleep(latency);
    if url.ends_with("/404") {
        return Err(format!("GET {url}: 404 Not Found"));
    }
    let id = url.rsplit('/').next().unwrap_or("0").len();
    let body = (0..3 + id % 4)
        .map(|i| format!("<a href=\"{url}/{i}\">link {i}</a>"))
        .collect();
    Ok(Page { url, body })
}

/// Parses a page: counts its links.
fn parse(page: Page) -> (String, usize) {
    let links = page.body.matches("<a href=").count();
    (page.url, links)
}

pub(crate) fn run(
    urls: usize,
    fetchers: usize,
    latency: Duration,
) -> Result<Summary, Box<dyn Error>> {
    let start = Instant::now();
    let fetch_pool = Pool::builder()
        .threads(fetchers)
        .name_prefix("fetch")
        .build()?;
    let parse_pool = Pool::builder().threads(2).name_prefix("parse").build()?;

    let to_fetch: JoinableQueue<String> = JoinableQueue::bounded(fetchers * 2);
    let pages: JoinableQueue<Page> = JoinableQueue::bounded(16);
    let records: JoinableQueue<(String, usize)> = JoinableQueue::bounded(16);
    let errors: JoinableQueue<ItemError> = JoinableQueue::new();

    fetch_pool
        .consume_fallible(move |url| fetch(url, latency), &to_fetch)
        .output(&pages)
        .errors(&errors)
        .start()?;
    parse_pool.consume(parse, &pages).output(&records).start()?;

    // Collect on a thread of our own while this one produces: the last queue is bounded too.
    let collector = {
        let records = records.clone();
        std::thread::spawn(move || {
            let (mut count, mut links) = (0, 0);
            while let Ok(record) = records.take() {
                count += 1;
                links += record.1;
            }
            (count, links)
        })
    };

    for i in 0..urls {
        let url = if i % 50 == 49 {
            format!("https://example.org/{i}/404")
        } else {
            format!("https://example.org/{i}")
        };
        to_fetch.put(url)?;
    }
    // Join the stages in order: each join means every result is already in the next queue.
    to_fetch.join();
    pages.join();
    records.join();
    records.close();
    let (count, links) = collector
        .join()
        .map_err(|_| "the collector thread panicked")?;
    let failures = std::iter::from_fn(|| errors.try_take().ok())
        .map(|failure| failure.error().to_string())
        .collect();
    Ok(Summary {
        records: count,
        links,
        failures,
        elapsed: start.elapsed(),
    })
}

fn main() -> Result<(), Box<dyn Error>> {
    let mut args = std::env::args().skip(1);
    let urls = args.next().map(|a| a.parse()).transpose()?.unwrap_or(200);
    let fetchers = args.next().map(|a| a.parse()).transpose()?.unwrap_or(32);
    let latency = Duration::from_millis(20);
    let summary = run(urls, fetchers, latency)?;
    println!(
        "{} pages parsed, {} links, {} failed fetches, in {:.2?} ({fetchers} fetchers; sequential \
         fetching would take about {:.2?})",
        summary.records,
        summary.links,
        summary.failures.len(),
        summary.elapsed,
        latency * urls as u32,
    );
    for failure in &summary.failures {
        println!("  failed: {failure}");
    }
    Ok(())
}
