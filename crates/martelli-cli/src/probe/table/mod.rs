//! The report as a table for people: one section per question, one row per measurement, the
//! recommendations last.
//!
//! Here: [`render`] and the row helpers; one function per section in `sections.rs`.

use super::create::NO_PROCESS_BACKEND;
use super::curves::IoSide;
use super::recommend::within;
use super::schema::{Mode, Report};
use super::stats::{Bytes, Human, Stat, Unit, thousands};
use super::warnings::OUTLIERS;
use std::fmt::Write;

mod sections;
#[cfg(test)]
mod tests;

use sections::*;

const LABEL: usize = 46;
const WIDTH: usize = 100;

/// Renders the whole report.
pub(crate) fn render(r: &Report) -> String {
    let mut t = String::new();
    let mode = match r.mode {
        Mode::Quick => "quick",
        Mode::Full => "full",
    };
    let _ = writeln!(
        t,
        "martelli probe {} ({mode}, {:.1} s)",
        r.martelli_version, r.duration_s
    );
    wrap(
        &mut t,
        &format!(
            "Each row: the median, its 95 % interval [low – high] and the runs it took (n): {}–{} \
             after {} warm-up{}, until the interval is within ±10 % of the median or {} s have \
             passed (memory rows and the I/O job: a fresh process per run). Marks: ? low \
             confidence (a wider interval), ! other programs used the CPUs meanwhile, ~ {OUTLIERS} \
             or more outliers.",
            r.reps,
            r.max_reps,
            r.warmup,
            if r.warmup == 1 { "" } else { "s" },
            r.row_budget_s,
        ),
        "",
        "",
    );
    machine(&mut t, r);
    creation(&mut t, r);
    switch(&mut t, r);
    memory(&mut t, r);
    ipc(&mut t, r);
    cpu_curve(&mut t, r);
    io_curve(&mut t, r);
    foreground(&mut t, r);
    cluster(&mut t, r);
    if !r.warnings.is_empty() {
        section(&mut t, "WARNINGS");
        for w in &r.warnings {
            wrap(&mut t, &w.text, "  ! ", "    ");
        }
    }
    section(&mut t, "RECOMMENDATIONS");
    for rec in &r.recommendations {
        wrap(&mut t, &rec.text, "  • ", "    ");
    }
    t.push('\n');
    wrap(
        &mut t,
        "More: --json for the whole report, --plot FILE.svg for the curves, --compare FILE.json to \
         set two runs side by side; docs/probe.md explains every row.",
        "",
        "",
    );
    t
}

fn section(t: &mut String, title: &str) {
    let _ = writeln!(t, "\n{title}");
}

fn fact(t: &mut String, label: &str, value: &str) {
    let _ = writeln!(t, "  {label:<18} {value}");
}

/// The marks of a row: `?` low confidence, `!` measured while busy, `~` outliers.
fn marks(r: &Report, path: &str, stat: &Stat) -> String {
    let mut m = String::new();
    if stat.low_confidence {
        m.push('?');
    }
    if r.noise.busy_rows.iter().any(|b| within(path, b)) {
        m.push('!');
    }
    if stat.outliers >= OUTLIERS {
        m.push('~');
    }
    m
}

/// `[1.20 µs – 1.31 µs]`, the interval of a stat.
fn interval(stat: &Stat) -> String {
    format!(
        "[{} – {}]",
        Human(stat.ci_low, stat.unit),
        Human(stat.ci_high, stat.unit)
    )
}

fn row(t: &mut String, r: &Report, path: &str, label: &str, stat: &Stat) {
    let _ = writeln!(
        t,
        "  {label:<LABEL$} {:>10}  {:<25} n={:<3}{}",
        Human(stat.median, stat.unit).to_string(),
        interval(stat),
        stat.reps,
        marks(r, path, stat)
    );
}

fn absent(t: &mut String, label: &str, why: &str) {
    let mut line = String::new();
    wrap(
        &mut line,
        why,
        &format!("  {label:<LABEL$} "),
        &" ".repeat(LABEL + 3),
    );
    t.push_str(&line);
}

fn opt_row(t: &mut String, r: &Report, path: &str, label: &str, stat: Option<&Stat>) {
    match stat {
        Some(s) => row(t, r, path, label, s),
        None => absent(t, label, r.notes.get(path).unwrap_or("not available")),
    }
}

fn limit(v: Option<u64>) -> String {
    v.map_or_else(|| "none".to_owned(), thousands)
}

/// Appends `text` wrapped at [`WIDTH`] columns, the first line after `first`, the rest after `rest`.
pub(crate) fn wrap(t: &mut String, text: &str, first: &str, rest: &str) {
    let mut line = first.to_owned();
    let mut empty = true;
    for word in text.split_whitespace() {
        if !empty && line.chars().count() + 1 + word.chars().count() > WIDTH {
            t.push_str(&line);
            t.push('\n');
            line = rest.to_owned();
            empty = true;
        }
        if !empty {
            line.push(' ');
        }
        line.push_str(word);
        empty = false;
    }
    t.push_str(&line);
    t.push('\n');
}
