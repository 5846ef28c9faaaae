//! Runs the queue examples (compiled into this test as modules) with small inputs and checks what
//! they produce.

#[allow(dead_code)] // the examples' `main`
#[path = "../examples/printer.rs"]
mod printer;

#[allow(dead_code)]
#[path = "../examples/io_pipeline.rs"]
mod io_pipeline;

#[allow(dead_code)]
#[path = "../examples/cpu_pipeline.rs"]
mod cpu_pipeline;

use std::time::Duration;

#[test]
fn printer_prints_every_document_in_order_and_stops() {
    let docs = [("a.pdf", 2), ("b.pdf", 1), ("c.pdf", 3), ("d.pdf", 1)];
    let printed = printer::run(&docs).unwrap();
    // One printer thread serving a FIFO tray prints in the order sent.
    assert_eq!(printed, ["a.pdf", "b.pdf", "c.pdf", "d.pdf"]);
}

#[test]
fn io_pipeline_parses_every_page_and_reports_failed_fetches() {
    let summary = io_pipeline::run(120, 16, Duration::from_millis(2)).unwrap();
    // Every 50th URL (49, 99) fails; the rest are parsed.
    assert_eq!(summary.records, 118);
    assert_eq!(summary.failures.len(), 2);
    assert!(
        summary.failures.iter().all(|f| f.contains("404")),
        "{:?}",
        summary.failures
    );
    assert!(summary.links >= 118 * 3);
}

#[test]
fn cpu_pipeline_matches_a_sequential_count() {
    let (count, _) = cpu_pipeline::run(100_000, 2).unwrap();
    assert_eq!(count, 9_592); // π(100 000)
}
