//! The "printer" daemon of the rules: a worker that waits for documents forever, while the producer
//! never joins the worker — it joins the queue.
//!
//! ```text
//! cargo run -p martelli --example printer
//! ```
//!
//! The printer is a pool of one thread serving a bounded queue, so a producer that sends documents
//! faster than they print is slowed down instead of piling them up in memory. When the program is
//! done, it joins the queue (every document printed) and drops the pool, which stops the daemon.

use martelli::{JoinableQueue, Pool};
use std::error::Error;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One page takes this long to print.
const PAGE_TIME: Duration = Duration::from_millis(2);

/// Prints `documents` (name, pages) on a daemon printer and returns the names in the order printed.
pub(crate) fn run(documents: &[(&str, u32)]) -> Result<Vec<String>, Box<dyn Error>> {
    let printer = Pool::builder().threads(1).name_prefix("printer").build()?;
    let tray: JoinableQueue<(String, u32)> = JoinableQueue::bounded(2);
    let printed = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&printed);
    printer
        .consume(
            move |(name, pages): (String, u32)| {
                for page in 1..=pages {
                    std::thread::sleep(PAGE_TIME); // the printer's mechanics
                    println!("printing {name}: page {page}/{pages}");
                }
                log.lock().expect("the log is never poisoned").push(name);
            },
            &tray,
        )
        .start()?;

    for &(name, pages) in documents {
        tray.put((name.to_owned(), pages))?; // waits while the tray is full
    }
    tray.join(); // every document printed: the daemon itself never "finishes"
    println!("all {} documents printed", documents.len());
    drop(printer); // stops the daemon waiting on the empty tray

    let printed = printed.lock().expect("the log is never poisoned").clone();
    Ok(printed)
}

fn main() -> Result<(), Box<dyn Error>> {
    let documents = [
        ("report.pdf", 3),
        ("invoice.pdf", 1),
        ("slides.pdf", 5),
        ("letter.txt", 1),
        ("photo.png", 2),
    ];
    run(&documents)?;
    Ok(())
}
