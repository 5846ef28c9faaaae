//! Warnings: what may make a report's figures slower or noisier than the machine can do, each with
//! the rows it touches.
//!
//! | id | when |
//! | --- | --- |
//! | `busy_before` | other work was running when the probe started ([`Moment::is_busy`]) |
//! | `load_average_lags` | the load average was high but the machine was quiet when measured |
//! | `busy_during` | rows measured while other programs used the CPUs ([`busy`](super::busy)) |
//! | `low_confidence` | rows whose interval is wider than ±10 % of the median |
//! | `outliers` | rows with at least [`OUTLIERS`] runs outside Tukey's fences |
//! | `left_busy` | the machine was quiet before the probe and busy after it |

use super::busy::{Moment, Noise};
use super::compare::Leaf;
use super::machine::{Machine, effective_cores};
use super::recommend::shorten;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Rows with at least this many outliers are named.
pub(crate) const OUTLIERS: u32 = 2;

/// One warning.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Warning {
    /// What it is about (stable): see the module's table.
    pub(crate) id: String,
    /// The warning, for a person.
    pub(crate) text: String,
    /// The rows it touches, by their paths in the report; empty when it touches every row.
    pub(crate) rows: Vec<String>,
}

fn warning(id: &str, text: String, rows: Vec<String>) -> Warning {
    Warning {
        id: id.to_owned(),
        text,
        rows,
    }
}

/// `one` for 1, `many` otherwise.
fn plural<'a>(n: usize, one: &'a str, many: &'a str) -> &'a str {
    if n == 1 { one } else { many }
}

fn pct(share: f64) -> String {
    format!("{:.0} %", 100.0 * share)
}

/// What the machine looked like in a quiet moment, in words.
fn moment(m: &Moment) -> String {
    format!(
        "other programs used {} of the CPUs, {:.1} other tasks were runnable on average, the \
         hypervisor took {}, load average {:.2}",
        pct(m.window.other_cpu),
        m.window.run_queue,
        pct(m.window.steal),
        m.load_average[0]
    )
}

/// Derives the warnings of a report from its noise section and its rows (flattened).
pub(crate) fn derive(
    noise: &Noise,
    rows: &BTreeMap<String, Leaf>,
    machine: &Machine,
) -> Vec<Warning> {
    let cores = effective_cores(machine.available_cores, machine.cgroup_cpu_quota_cores);
    let mut out = Vec::new();
    if noise.busy_before {
        out.push(warning(
            "busy_before",
            format!(
                "Other work was running when the probe started ({}): every row may read slower \
                 and noisier than this machine can do. Probe again on a quiet machine.",
                moment(&noise.before)
            ),
            Vec::new(),
        ));
    } else if noise.before.load_average[0] >= cores as f64 {
        out.push(warning(
            "load_average_lags",
            format!(
                "The 1-minute load average was {:.2}, yet the machine was quiet when the probe \
                 looked ({}): the average still counts work that ended before (it takes minutes \
                 to decay), so the probe went by what it saw.",
                noise.before.load_average[0],
                moment(&noise.before)
            ),
            Vec::new(),
        ));
    }
    if !noise.busy_rows.is_empty() {
        let worst = noise
            .busy_rows
            .iter()
            .filter_map(|p| noise.rows.get(p).map(|r| (p, r.window)))
            .max_by(|a, b| a.1.other_cpu.total_cmp(&b.1.other_cpu));
        let worst = worst.map_or_else(String::new, |(p, w)| {
            format!(
                " (the most: {} of the CPUs, steal {}, during {p})",
                pct(w.other_cpu),
                pct(w.steal)
            )
        });
        out.push(warning(
            "busy_during",
            format!(
                "Other programs used the CPUs while {} {} measured{worst}: {}. Their figures \
                 may be slower than this machine can do.",
                noise.busy_rows.len(),
                plural(noise.busy_rows.len(), "row was", "rows were"),
                shorten(&noise.busy_rows)
            ),
            noise.busy_rows.clone(),
        ));
    }
    if !noise.low_confidence.is_empty() {
        out.push(warning(
            "low_confidence",
            format!(
                "{} {} low-confidence: {} 95 % interval is wider than ±10 % of the median after \
                 the repetitions the row could take: {}. Recommendations that rest on them say \
                 so.",
                noise.low_confidence.len(),
                plural(noise.low_confidence.len(), "row is", "rows are"),
                plural(noise.low_confidence.len(), "its", "their"),
                shorten(&noise.low_confidence)
            ),
            noise.low_confidence.clone(),
        ));
    }
    let with_outliers: Vec<String> = rows
        .iter()
        .filter(|(_, l)| l.outliers >= OUTLIERS)
        .map(|(p, _)| p.clone())
        .collect();
    if !with_outliers.is_empty() {
        out.push(warning(
            "outliers",
            format!(
                "Runs far from the rest (outliers: something interrupted them) in {} {}: {}. The \
                 medians and their intervals discount them.",
                with_outliers.len(),
                plural(with_outliers.len(), "row", "rows"),
                shorten(&with_outliers)
            ),
            with_outliers,
        ));
    }
    if !noise.busy_before && noise.after.is_busy(cores) {
        out.push(warning(
            "left_busy",
            format!(
                "The machine was quiet before the probe and busy after it ({}; before: {}): \
                 other work started meanwhile, or the probe's own has not settled.",
                moment(&noise.after),
                moment(&noise.before)
            ),
            Vec::new(),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::busy::{RowNoise, Window};
    use crate::probe::recommend::tests::synthetic;
    use crate::probe::stats::Unit;

    fn quiet() -> Moment {
        Moment {
            load_average: [0.3, 0.2, 0.1],
            window: Window {
                seconds: 0.3,
                other_cpu: 0.01,
                steal: 0.0,
                run_queue: 0.1,
            },
        }
    }

    fn ids(w: &[Warning]) -> Vec<&str> {
        w.iter().map(|w| w.id.as_str()).collect()
    }

    #[test]
    fn a_quiet_run_has_no_warnings() {
        let s = synthetic();
        let noise = Noise {
            before: quiet(),
            after: quiet(),
            ..Noise::default()
        };
        assert!(derive(&noise, &BTreeMap::new(), &s.machine).is_empty());
    }

    #[test]
    fn busy_rows_are_named_with_the_worst() {
        let s = synthetic();
        let mut noise = Noise {
            before: quiet(),
            after: quiet(),
            ..Noise::default()
        };
        for (path, share) in [("switch.process_pipe", 0.3), ("ipc.pipe_1mib", 0.6)] {
            noise.rows.insert(
                path.into(),
                RowNoise {
                    window: Window {
                        seconds: 1.0,
                        other_cpu: share,
                        steal: 0.0,
                        run_queue: 1.0,
                    },
                    busy: true,
                },
            );
            noise.busy_rows.push(path.into());
        }
        let w = derive(&noise, &BTreeMap::new(), &s.machine);
        assert_eq!(ids(&w), ["busy_during"]);
        assert_eq!(w[0].rows, ["switch.process_pipe", "ipc.pipe_1mib"]);
        assert!(w[0].text.contains("2 rows were measured"), "{}", w[0].text);
        assert!(w[0].text.contains("60 % of the CPUs"), "{}", w[0].text);
        assert!(w[0].text.contains("during ipc.pipe_1mib"), "{}", w[0].text);
    }

    #[test]
    fn a_busy_start_low_confidence_and_outliers_are_each_said() {
        let s = synthetic();
        let mut busy = quiet();
        busy.window.other_cpu = 0.9;
        busy.load_average = [3.9, 2.0, 1.0];
        let noise = Noise {
            before: busy,
            after: quiet(),
            busy_before: true,
            low_confidence: vec!["creation.thread_spawn_join".into()],
            ..Noise::default()
        };
        let mut rows = BTreeMap::new();
        rows.insert(
            "switch.thread_condvar".to_owned(),
            Leaf {
                value: 8.0,
                unit: Some(Unit::Micros),
                outliers: 3,
                reps: 9,
                ..Leaf::default()
            },
        );
        rows.insert(
            "switch.async_one_thread".to_owned(),
            Leaf {
                value: 0.2,
                unit: Some(Unit::Micros),
                outliers: 1,
                reps: 9,
                ..Leaf::default()
            },
        );
        let w = derive(&noise, &rows, &s.machine);
        assert_eq!(ids(&w), ["busy_before", "low_confidence", "outliers"]);
        assert!(
            w[0].text.contains("other programs used 90 % of the CPUs"),
            "{}",
            w[0].text
        );
        assert!(w[0].text.contains("load average 3.90"), "{}", w[0].text);
        assert_eq!(w[1].rows, ["creation.thread_spawn_join"]);
        assert!(
            w[1].text.starts_with("1 row is low-confidence: its"),
            "{}",
            w[1].text
        );
        assert_eq!(w[2].rows, ["switch.thread_condvar"]);
    }

    #[test]
    fn a_lagging_load_average_is_explained_not_counted() {
        let s = synthetic();
        let mut before = quiet();
        before.load_average = [180.0, 60.0, 20.0];
        let noise = Noise {
            before,
            after: quiet(),
            ..Noise::default()
        };
        let w = derive(&noise, &BTreeMap::new(), &s.machine);
        assert_eq!(ids(&w), ["load_average_lags"]);
        assert!(
            w[0].text.contains("still counts work that ended"),
            "{}",
            w[0].text
        );
    }

    #[test]
    fn a_machine_busier_after_the_probe_is_said_when_it_was_quiet_before() {
        let s = synthetic();
        let mut after = quiet();
        after.window.run_queue = 3.0;
        let mut noise = Noise {
            before: quiet(),
            after,
            ..Noise::default()
        };
        assert_eq!(
            ids(&derive(&noise, &BTreeMap::new(), &s.machine)),
            ["left_busy"]
        );
        // Busy before and after: the start says it already.
        noise.before.window.other_cpu = 0.5;
        noise.busy_before = true;
        assert_eq!(
            ids(&derive(&noise, &BTreeMap::new(), &s.machine)),
            ["busy_before"]
        );
    }
}
