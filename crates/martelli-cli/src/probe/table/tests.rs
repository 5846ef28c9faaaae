//! The table of synthetic reports.

use super::*;
use crate::probe::recommend::{derive, tests::synthetic};
use crate::probe::schema::{Notes, SCHEMA};

fn report() -> Report {
    let s = synthetic();
    let recommendations = derive(s.inputs());
    Report {
        schema: SCHEMA.to_owned(),
        martelli_version: "0.0.0".into(),
        mode: Mode::Quick,
        started_unix_s: 1_800_000_000,
        duration_s: 2.5,
        warmup: 1,
        reps: 6,
        max_reps: 15,
        row_budget_s: 0.25,
        machine: s.machine,
        creation: s.creation,
        switch: s.switch,
        memory: s.memory,
        ipc: s.ipc,
        curves: s.curves,
        foreground: s.foreground,
        cluster: s.cluster,
        noise: s.noise,
        warnings: Vec::new(),
        recommendations,
        notes: Notes::default(),
    }
}

#[test]
fn absent_rows_show_their_reason() {
    let mut r = report();
    r.creation.process_fork_exec = None;
    r.notes.insert(
        "creation.process_fork_exec",
        "not available: no /bin/true".into(),
    );
    r.curves.io.points[2].threads = None;
    r.notes.insert(
        "curves.io.points[2].threads",
        "not available: 1000 threads would exceed RLIMIT_NPROC (900)".into(),
    );
    let t = render(&r);
    let line = |needle: &str| {
        t.lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no {needle:?} in:\n{t}"))
    };
    assert!(line("fork + exec").ends_with("not available: no /bin/true"));
    assert!(line("spawn → handshake").ends_with(NO_PROCESS_BACKEND));
    assert!(line("   1,000   ").contains("not measured"));
    assert!(t.contains("threads at 1,000: not available: 1000 threads would exceed"));
}

#[test]
fn every_section_and_recommendation_is_rendered() {
    let r = report();
    let t = render(&r);
    for section in [
        "THE MACHINE",
        "CREATION",
        "SWITCH",
        "MEMORY",
        "IPC",
        "CPU-BOUND JOB",
        "I/O-BOUND JOB",
        "FOREGROUND",
        "CLUSTER",
        "RECOMMENDATIONS",
    ] {
        assert!(t.contains(section), "no {section}");
    }
    assert!(t.contains("process pool, nice 10"), "{t}");
    assert_eq!(t.matches("\n  • ").count(), r.recommendations.len());
    assert!(t.contains("Synthetic CPU"));
    assert!(t.contains("tier               2 (2–8 cores)"));
    // A header line, then one row per point: 8 CPU points, 3 I/O points.
    let rows = |title: &str| {
        t.lines()
            .skip_while(|l| !l.starts_with(title))
            .skip(2)
            .take_while(|l| !l.is_empty())
            .count()
    };
    assert_eq!(rows("CPU-BOUND JOB"), 8);
    assert_eq!(rows("I/O-BOUND JOB"), 3);
    for line in t.lines() {
        assert!(line.chars().count() <= WIDTH, "too wide: {line}");
    }
}

#[test]
fn wrap_keeps_words_whole_and_indents() {
    let mut t = String::new();
    let text = "word ".repeat(40);
    wrap(&mut t, &text, "  • ", "    ");
    let lines: Vec<&str> = t.lines().collect();
    assert!(lines.len() > 1);
    assert!(lines[0].starts_with("  • word"));
    assert!(lines[1..].iter().all(|l| l.starts_with("    word")));
    assert!(lines.iter().all(|l| l.chars().count() <= WIDTH));
    assert_eq!(t.split_whitespace().filter(|w| *w == "word").count(), 40);
}
