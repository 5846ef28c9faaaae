//! The report: what `martelli probe --json` prints, and what `--compare` reads back.
//!
//! The schema is documented field by field, with units, in `docs/probe.md`. Its name and version are
//! in [`SCHEMA`]; a change that removes or renames a field bumps the version, and a field that a
//! later martelli can fill (like the process-worker handshake) is present now as `null`, with the
//! reason in `notes`.

use super::busy::Noise;
use super::cluster::ClusterCost;
use super::create::Creation;
use super::curves::Curves;
use super::foreground::Foreground;
use super::ipc::Ipc;
use super::machine::Machine;
use super::memory::Memory;
use super::recommend::Recommendation;
use super::switch::Switch;
use super::warnings::Warning;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The schema's name and version, the report's first field.
pub(crate) const SCHEMA: &str = "martelli-probe/1";

/// How thorough a run was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Mode {
    /// `--quick`: fewer repetitions, smaller curves, shorter budgets: about 10 s.
    Quick,
    /// The default: more repetitions, the I/O curve up to 10,000 waits: about a minute.
    Full,
}

/// Why a value is `null`, keyed by the value's path in the report (`creation.process_worker_handshake`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub(crate) struct Notes(pub(crate) BTreeMap<String, String>);

impl Notes {
    pub(crate) fn insert(&mut self, path: &str, why: String) {
        self.0.insert(path.to_owned(), why);
    }

    pub(crate) fn get(&self, path: &str) -> Option<&str> {
        self.0.get(path).map(String::as_str)
    }
}

/// The whole report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Report {
    pub(crate) schema: String,
    pub(crate) martelli_version: String,
    pub(crate) mode: Mode,
    /// When the probe started, in seconds since the Unix epoch.
    pub(crate) started_unix_s: u64,
    /// How long the probe ran, in seconds.
    pub(crate) duration_s: f64,
    /// Warm-up rounds before each timed row.
    pub(crate) warmup: u32,
    /// The least repetitions of a timed row (each row's own count is its stat's `reps`).
    pub(crate) reps: u32,
    /// The most repetitions of a timed row: it stops there if its interval is still wide.
    pub(crate) max_reps: u32,
    /// How long a timed row may repeat before it stops at the count it has, seconds.
    pub(crate) row_budget_s: f64,
    pub(crate) machine: Machine,
    pub(crate) creation: Creation,
    pub(crate) switch: Switch,
    pub(crate) memory: Memory,
    pub(crate) ipc: Ipc,
    pub(crate) curves: Curves,
    /// The foreground's wake-up latency, idle and under background pools.
    pub(crate) foreground: Foreground,
    /// What a task costs through the cluster tier.
    pub(crate) cluster: ClusterCost,
    /// Other work on the machine: before, during (per row) and after the probe.
    pub(crate) noise: Noise,
    /// What may make figures slower or noisier than the machine is, with the rows it touches.
    pub(crate) warnings: Vec<Warning>,
    pub(crate) recommendations: Vec<Recommendation>,
    pub(crate) notes: Notes,
}
