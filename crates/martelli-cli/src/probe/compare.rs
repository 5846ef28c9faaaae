//! `--compare FILE.json`: how this run differs from an earlier report.
//!
//! Both reports are flattened into `path → value` rows (every measured row by its median, every
//! numeric machine fact by its value; curve points keyed by worker count or concurrency, so machines
//! with different curves still line up), then joined on the path. Fields that only one report has
//! are counted, not guessed.

use super::ProbeError;
use super::schema::Report;
use super::stats::{Bytes, Human, Unit};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::Path;

/// Differences smaller than this fraction are shown as "same".
const SAME: f64 = 0.10;

/// Loads and checks an earlier report.
pub(crate) fn load(path: &Path) -> Result<Value, ProbeError> {
    let fail = |reason: String| ProbeError::Compare {
        path: path.to_owned(),
        reason,
    };
    let text = super::read_user_file(path).map_err(fail)?;
    let value: Value = serde_json::from_str(&text).map_err(|e| {
        fail(format!(
            "it is not JSON ({e}); give a file written by `martelli probe --json`"
        ))
    })?;
    match value.get("schema").and_then(Value::as_str) {
        Some(s) if s.starts_with("martelli-probe/") => Ok(value),
        Some(s) => Err(fail(format!(
            "its schema is {s:?}, not a martelli-probe report"
        ))),
        None => Err(fail(
            "it has no \"schema\" field; give a file written by `martelli probe --json`".into(),
        )),
    }
}

/// A flattened value: a number and, for measured rows, its unit and what the probe knew of its
/// noise (reports written before the probe had intervals have none).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub(crate) struct Leaf {
    pub(crate) value: f64,
    pub(crate) unit: Option<Unit>,
    /// The 95 % interval of the median.
    pub(crate) ci: Option<[f64; 2]>,
    pub(crate) low_confidence: bool,
    pub(crate) outliers: u32,
    pub(crate) reps: u32,
}

/// Flattens a report into `path → leaf`.
pub(crate) fn flatten(report: &Value) -> BTreeMap<String, Leaf> {
    let mut out = BTreeMap::new();
    for section in [
        "machine",
        "creation",
        "switch",
        "memory",
        "ipc",
        "curves",
        "foreground",
        "cluster",
    ] {
        if let Some(v) = report.get(section) {
            walk(v, section.to_owned(), &mut out);
        }
    }
    out
}

fn walk(v: &Value, path: String, out: &mut BTreeMap<String, Leaf>) {
    match v {
        Value::Object(map) => {
            if let (Some(median), Some(unit)) = (
                map.get("median").and_then(Value::as_f64),
                map.get("unit")
                    .and_then(|u| serde_json::from_value::<Unit>(u.clone()).ok()),
            ) {
                let num = |k: &str| map.get(k).and_then(Value::as_f64);
                let count = |k: &str| {
                    map.get(k)
                        .and_then(Value::as_u64)
                        .and_then(|n| u32::try_from(n).ok())
                        .unwrap_or(0)
                };
                out.insert(
                    path,
                    Leaf {
                        value: median,
                        unit: Some(unit),
                        ci: num("ci_low").zip(num("ci_high")).map(|(lo, hi)| [lo, hi]),
                        low_confidence: map
                            .get("low_confidence")
                            .and_then(Value::as_bool)
                            .unwrap_or(false),
                        outliers: count("outliers"),
                        reps: count("reps"),
                    },
                );
                return;
            }
            // A latency: its percentiles are times in its unit.
            if let (Some(unit), true) = (
                map.get("unit")
                    .and_then(|u| serde_json::from_value::<Unit>(u.clone()).ok()),
                map.contains_key("p50"),
            ) {
                for k in ["p50", "p99", "max"] {
                    if let Some(value) = map.get(k).and_then(Value::as_f64) {
                        out.insert(
                            format!("{path}.{k}"),
                            Leaf {
                                value,
                                unit: Some(unit),
                                ..Leaf::default()
                            },
                        );
                    }
                }
                return;
            }
            for (k, child) in map {
                // A curve point's key is in its path already (`points[workers=2]`).
                if path.ends_with(']') && (k == "workers" || k == "concurrency") {
                    continue;
                }
                walk(child, format!("{path}.{k}"), out);
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                let key = ["workers", "concurrency"]
                    .iter()
                    .find_map(|k| {
                        item.get(*k)
                            .and_then(Value::as_u64)
                            .map(|n| format!("{k}={n}"))
                    })
                    .unwrap_or_else(|| i.to_string());
                walk(item, format!("{path}[{key}]"), out);
            }
        }
        Value::Number(n) => {
            if let Some(x) = n.as_f64() {
                out.insert(
                    path,
                    Leaf {
                        value: x,
                        ..Leaf::default()
                    },
                );
            }
        }
        _ => {}
    }
}

fn show(path: &str, leaf: Leaf) -> String {
    match leaf.unit {
        Some(u) => Human(leaf.value, u).to_string(),
        None if path.ends_with("_bytes") => Bytes(leaf.value).to_string(),
        None if leaf.value.fract() == 0.0 && leaf.value.abs() < 1e15 => {
            format!("{}", leaf.value as i64)
        }
        None => format!("{:.3}", leaf.value),
    }
}

/// The verdict on `now / before` for a quantity where `higher_is_better` says which way is good.
/// When both rows have intervals, they decide: rows whose intervals overlap are the `same` however
/// far apart their medians are, and rows apart differ however close (the 10 % rule is for rows
/// without intervals, and for machine facts).
pub(crate) fn verdict(now: &Leaf, before: &Leaf) -> &'static str {
    let ratio = now.value / before.value;
    if !ratio.is_finite() {
        return "";
    }
    let same = match (now.ci, before.ci) {
        (Some([a, b]), Some([c, d])) => a <= d && c <= b,
        _ => (ratio - 1.0).abs() < SAME,
    };
    if same {
        return "same";
    }
    let higher_is_better = now.unit.map(Unit::higher_is_better);
    match higher_is_better {
        Some(true) if ratio > 1.0 => "better",
        Some(true) => "worse",
        Some(false) if ratio < 1.0 => "better",
        Some(false) => "worse",
        None if ratio > 1.0 => "more",
        None => "less",
    }
}

/// Renders the comparison of `now` with the `earlier` report read from `path`.
pub(crate) fn render(now: &Report, earlier: &Value, path: &Path) -> Result<String, ProbeError> {
    let now_value = serde_json::to_value(now).map_err(|e| ProbeError::Compare {
        path: path.to_owned(),
        reason: format!("cannot encode this run: {e}"),
    })?;
    let (a, b) = (flatten(&now_value), flatten(earlier));
    let mut t = String::new();
    let machine = |v: &Value, key: &str| {
        v.get("machine").and_then(|m| m.get(key)).map_or_else(
            || "?".to_owned(),
            |x| x.to_string().trim_matches('"').to_owned(),
        )
    };
    let _ = writeln!(
        t,
        "\nCOMPARED WITH {} ({} mode, {}, {} usable cores; here {}, {} usable cores)",
        path.display(),
        earlier.get("mode").and_then(Value::as_str).unwrap_or("?"),
        machine(earlier, "cpu_model"),
        machine(earlier, "available_cores"),
        machine(&now_value, "cpu_model"),
        machine(&now_value, "available_cores"),
    );
    let _ = writeln!(
        t,
        "  {:<52} {:>11} {:>11} {:>10}",
        "field", "now", "before", "now/before"
    );
    crate::probe::table::wrap(
        &mut t,
        "Rows whose 95 % intervals overlap are the same, whatever their medians; (noisy) marks a \
         row that was low-confidence in either run.",
        "  ",
        "  ",
    );
    for (path, now_leaf) in &a {
        let Some(before) = b.get(path) else { continue };
        let ratio = now_leaf.value / before.value;
        let ratio_s = if ratio.is_finite() {
            format!("{ratio:.2}×")
        } else {
            "—".to_owned()
        };
        let noisy = if now_leaf.low_confidence || before.low_confidence {
            " (noisy)"
        } else {
            ""
        };
        let _ = writeln!(
            t,
            "  {:<52} {:>11} {:>11} {:>10} {}{noisy}",
            path,
            show(path, *now_leaf),
            show(path, *before),
            ratio_s,
            verdict(now_leaf, before)
        );
    }
    let only_now = a.keys().filter(|k| !b.contains_key(*k)).count();
    let only_before = b.keys().filter(|k| !a.contains_key(*k)).count();
    if only_now + only_before > 0 {
        let _ = writeln!(
            t,
            "  ({only_now} fields only in this run, {only_before} only in {}: not compared)",
            path.display()
        );
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn flattens_stats_facts_and_keyed_points() {
        let v = json!({
            "schema": "martelli-probe/1",
            "machine": {"logical_cores": 4, "cpu_model": "X", "cgroup_pids_max": null},
            "creation": {"thread_spawn_join": {"median": 20.0, "min": 18.0, "max": 30.0, "reps": 5, "unit": "us"},
                         "process_worker_handshake": null},
            "curves": {"cpu": {"points": [{"workers": 2, "threads_speedup": 1.9,
                "threads": {"median": 50.0, "min": 49.0, "max": 51.0, "reps": 5, "unit": "ms"}}]}}
        });
        let flat = flatten(&v);
        assert_eq!(
            flat["machine.logical_cores"],
            Leaf {
                value: 4.0,
                ..Leaf::default()
            }
        );
        assert_eq!(
            flat["creation.thread_spawn_join"],
            Leaf {
                value: 20.0,
                unit: Some(Unit::Micros),
                reps: 5,
                ..Leaf::default()
            }
        );
        assert_eq!(flat["curves.cpu.points[workers=2].threads"].value, 50.0);
        assert_eq!(
            flat["curves.cpu.points[workers=2].threads_speedup"].value,
            1.9
        );
        assert!(!flat.contains_key("creation.process_worker_handshake"));
        assert!(!flat.contains_key("machine.cgroup_pids_max"));
        assert!(!flat.contains_key("curves.cpu.points[workers=2].workers"));
    }

    fn leaf(value: f64, unit: Option<Unit>) -> Leaf {
        Leaf {
            value,
            unit,
            ..Leaf::default()
        }
    }

    fn with_ci(value: f64, lo: f64, hi: f64, unit: Unit) -> Leaf {
        Leaf {
            ci: Some([lo, hi]),
            ..leaf(value, Some(unit))
        }
    }

    #[test]
    fn verdicts_follow_the_unit_direction() {
        let us = Some(Unit::Micros);
        let mbps = Some(Unit::MibPerSec);
        assert_eq!(verdict(&leaf(1.0, us), &leaf(2.0, us)), "better");
        assert_eq!(verdict(&leaf(2.0, us), &leaf(1.0, us)), "worse");
        assert_eq!(verdict(&leaf(2.0, mbps), &leaf(1.0, mbps)), "better");
        assert_eq!(verdict(&leaf(1.05, mbps), &leaf(1.0, mbps)), "same");
        assert_eq!(verdict(&leaf(3.0, None), &leaf(1.0, None)), "more");
        assert_eq!(verdict(&leaf(f64::NAN, None), &leaf(1.0, None)), "");
    }

    #[test]
    fn intervals_decide_when_both_rows_have_them() {
        // The issue's process-task floor: 22.7 µs then 3.3 µs, but the first run's interval
        // reached down to 3 µs: nothing says the machine changed.
        let a = with_ci(22.7, 3.0, 40.0, Unit::Micros);
        let b = with_ci(3.3, 3.1, 3.6, Unit::Micros);
        assert_eq!(verdict(&a, &b), "same");
        // Two narrow rows 5 % apart whose intervals do not meet did change.
        let a = with_ci(105.0, 104.0, 106.0, Unit::Micros);
        let b = with_ci(100.0, 99.0, 101.0, Unit::Micros);
        assert_eq!(verdict(&a, &b), "worse");
        // An old report without intervals falls back to the 10 % rule.
        assert_eq!(verdict(&a, &leaf(100.0, Some(Unit::Micros))), "same");
    }

    #[test]
    fn flatten_reads_intervals_and_skips_the_noise_section() {
        let v = json!({
            "creation": {"thread_spawn_join": {"median": 20.0, "ci_low": 19.0, "ci_high": 26.0,
                "min": 18.0, "max": 30.0, "reps": 9, "outliers": 2, "low_confidence": true,
                "unit": "us"}},
            "noise": {"during": {"other_cpu": 0.5}}
        });
        let flat = flatten(&v);
        let leaf = flat["creation.thread_spawn_join"];
        assert_eq!(leaf.ci, Some([19.0, 26.0]));
        assert!(leaf.low_confidence);
        assert_eq!((leaf.outliers, leaf.reps), (2, 9));
        assert!(flat.keys().all(|k| !k.starts_with("noise")));
    }

    #[test]
    fn rejects_files_that_are_not_reports() {
        let dir = tempfile::tempdir().expect("temp dir");
        let missing = dir.path().join("missing.json");
        let err = load(&missing).expect_err("missing file").to_string();
        assert!(err.contains("missing.json"), "{err}");
        let garbage = dir.path().join("garbage.json");
        std::fs::write(&garbage, "not json").expect("write");
        let err = load(&garbage).expect_err("garbage").to_string();
        assert!(err.contains("not JSON"), "{err}");
        let other = dir.path().join("other.json");
        std::fs::write(&other, r#"{"schema": "something/2"}"#).expect("write");
        let err = load(&other).expect_err("other schema").to_string();
        assert!(err.contains("not a martelli-probe report"), "{err}");
        std::fs::write(&other, r#"{"a": 1}"#).expect("write");
        assert!(load(&other).is_err());
        std::fs::write(&other, r#"{"schema": "martelli-probe/1"}"#).expect("write");
        assert!(load(&other).is_ok());
    }
}
