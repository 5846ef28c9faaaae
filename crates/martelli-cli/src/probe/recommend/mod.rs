//! Recommendations in numbers, derived from the measurements.
//!
//! Each rule reads a few measured values (its `basis`, paths into the report), computes one number,
//! and says what it means for the choice of backend. The rules, with their formulas, are listed in
//! `docs/probe.md`; each is unit-tested here on synthetic measurements.
//!
//! Rules decide on intervals, not on medians alone: a choice changes only when the intervals of the
//! values it compares are apart, so that noise cannot flip it from one run to the next. Each
//! recommendation has a `verdict`, the decision in a stable word, and lists the rows of its basis
//! that were low-confidence or measured while other work ran; its text then says so.
//!
//! Here: the [`Recommendation`], the thresholds and [`derive`], which runs every rule. The rules
//! themselves: `choice.rs` (which tier, threads or processes, how many workers) and `costs.rs`
//! (what a task, a worker, a payload, the foreground and the cluster cost).

use super::busy::Noise;
use super::cluster::ClusterCost;
use super::create::Creation;
use super::curves::Curves;
use super::curves::speedup_interval;
use super::foreground::Foreground;
use super::ipc::Ipc;
use super::machine::{Machine, effective_cores};
use super::memory::Memory;
use super::stats::Stat;
use super::stats::{Bytes, Human, Unit, sig3, thousands};
use super::switch::Switch;
use serde::{Deserialize, Serialize};

mod choice;
mod costs;
#[cfg(test)]
pub(crate) mod tests;

use choice::*;
use costs::*;

/// One recommendation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Recommendation {
    /// A stable identifier of the rule (`tier`, `process_task_min`, …).
    pub(crate) id: String,
    /// The recommendation, for a person.
    pub(crate) text: String,
    /// The number it rests on.
    pub(crate) value: f64,
    /// The number's unit (`workers`, `us`, `x`, `tasks`, `processes`).
    pub(crate) unit: String,
    /// The report fields the number was derived from.
    pub(crate) basis: Vec<String>,
    /// The decision in a stable word (`processes_up_to_2`, `pipe_is_enough`, `undecided` …):
    /// runs that agree have the same verdicts, whatever their numbers.
    pub(crate) verdict: String,
    /// Rows of the basis whose interval was wide.
    pub(crate) low_confidence_basis: Vec<String>,
    /// Rows of the basis measured while other work used the CPUs.
    pub(crate) busy_basis: Vec<String>,
}

/// The measurements the rules read.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Inputs<'a> {
    pub(crate) machine: &'a Machine,
    pub(crate) creation: &'a Creation,
    pub(crate) switch: &'a Switch,
    pub(crate) memory: &'a Memory,
    pub(crate) ipc: &'a Ipc,
    pub(crate) curves: &'a Curves,
    pub(crate) foreground: &'a Foreground,
    pub(crate) cluster: &'a ClusterCost,
    pub(crate) noise: &'a Noise,
}

/// A best speedup below this fraction of the usable cores means other work competed for them.
const CONTENDED: f64 = 0.6;
/// Threads "cost more memory" than async from this ratio on…
const MEMORY_RATIO: f64 = 2.0;
/// …when the difference is also at least this many bytes.
const MEMORY_MATTERS: f64 = 1024.0 * 1024.0;
/// Shared memory is "worth it" from this throughput ratio over a pipe.
const SHM_WORTH_IT: f64 = 1.5;
/// A background pool hurts the foreground when its p99 wake-up latency is this many times the
/// idle one's…
const HURTS: f64 = 2.0;
/// …and at least this much longer, µs.
const HURTS_BY_US: f64 = 100.0;
/// Nice helps when it divides the p99 latency at nice 0 by at least this.
const NICE_HELPS: f64 = 2.0;
/// Another machine pays off for tasks this many times the cluster's cost per task (under 10 %).
const CLUSTER_TASK: f64 = 10.0;
/// …and for jobs of more than this many times a worker's start on this machine's workers: a second
/// machine of the same kind halves the time, less 10 % per task, so it saves more than the start
/// from 1 / (1 − 1 / (2 × 0.9)) = 2.25 starts on.
const CLUSTER_JOB: f64 = 2.25;

fn rec(
    id: &str,
    verdict: &str,
    text: String,
    value: f64,
    unit: &str,
    basis: &[&str],
) -> Recommendation {
    Recommendation {
        id: id.to_owned(),
        text,
        value,
        unit: unit.to_owned(),
        basis: basis.iter().map(|b| (*b).to_owned()).collect(),
        verdict: verdict.to_owned(),
        low_confidence_basis: Vec::new(),
        busy_basis: Vec::new(),
    }
}

/// Applies every rule that has the measurements it needs, and marks the ones whose basis is weak.
pub(crate) fn derive(inputs: Inputs<'_>) -> Vec<Recommendation> {
    let mut recs: Vec<Recommendation> = [
        Some(tier(inputs)),
        Some(threads_or_processes(inputs)),
        process_task_min(inputs),
        Some(thread_task_min(inputs)),
        async_memory(inputs),
        keep_workers_warm(inputs),
        task_limit(inputs),
        memory_workers(inputs),
        large_payloads(inputs),
        codec_bytes(inputs),
        foreground_nice(inputs),
        Some(cluster(inputs)),
    ]
    .into_iter()
    .flatten()
    .collect();
    for r in &mut recs {
        caveat(r, inputs.noise);
    }
    recs
}

/// Whether `row` (a report path) is, or lies inside, the basis path `basis`.
pub(crate) fn within(row: &str, basis: &str) -> bool {
    row.strip_prefix(basis)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('.') || rest.starts_with('['))
}

/// Lists the weak rows of a recommendation's basis and says so in its text.
fn caveat(r: &mut Recommendation, noise: &Noise) {
    let weak = |rows: &[String]| -> Vec<String> {
        rows.iter()
            .filter(|row| r.basis.iter().any(|b| within(row, b)))
            .cloned()
            .collect()
    };
    r.low_confidence_basis = weak(&noise.low_confidence);
    r.busy_basis = weak(&noise.busy_rows);
    if !r.low_confidence_basis.is_empty() {
        r.text.push_str(&format!(
            " Low confidence: it rests on {} whose interval was wide ({}); probe again on a \
             quiet machine before relying on it.",
            rows_word(r.low_confidence_basis.len()),
            shorten(&r.low_confidence_basis)
        ));
    }
    if !r.busy_basis.is_empty() {
        r.text.push_str(&format!(
            " Other work used the CPUs while {} measured ({}).",
            if r.busy_basis.len() == 1 {
                "its basis was"
            } else {
                "rows of its basis were"
            },
            shorten(&r.busy_basis)
        ));
    }
}

fn rows_word(n: usize) -> &'static str {
    if n == 1 { "a row" } else { "rows" }
}

/// A list of row paths for a sentence: the first few, and how many more.
pub(crate) fn shorten(rows: &[String]) -> String {
    const SHOWN: usize = 3;
    let mut out = rows
        .iter()
        .take(SHOWN)
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(", ");
    if rows.len() > SHOWN {
        out.push_str(&format!(" and {} more", rows.len() - SHOWN));
    }
    out
}
