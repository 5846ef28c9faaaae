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

/// A flattened value: a number and, for measured rows, its unit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Leaf {
    pub(crate) value: f64,
    pub(crate) unit: Option<Unit>,
}

/// Flattens a report into `path → leaf`.
pub(crate) fn flatten(report: &Value) -> BTreeMap<String, Leaf> {
    let mut out = BTreeMap::new();
    for section in ["machine", "creation", "switch", "memory", "ipc", "curves"] {
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
                out.insert(
                    path,
                    Leaf {
                        value: median,
                        unit: Some(unit),
                    },
                );
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
                        unit: None,
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
pub(crate) fn verdict(ratio: f64, higher_is_better: Option<bool>) -> &'static str {
    if !ratio.is_finite() {
        return "";
    }
    if (ratio - 1.0).abs() < SAME {
        return "same";
    }
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
    for (path, now_leaf) in &a {
        let Some(before) = b.get(path) else { continue };
        let ratio = now_leaf.value / before.value;
        let ratio_s = if ratio.is_finite() {
            format!("{ratio:.2}×")
        } else {
            "—".to_owned()
        };
        let _ = writeln!(
            t,
            "  {:<52} {:>11} {:>11} {:>10} {}",
            path,
            show(path, *now_leaf),
            show(path, *before),
            ratio_s,
            verdict(ratio, now_leaf.unit.map(Unit::higher_is_better))
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
                unit: None
            }
        );
        assert_eq!(
            flat["creation.thread_spawn_join"],
            Leaf {
                value: 20.0,
                unit: Some(Unit::Micros)
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

    #[test]
    fn verdicts_follow_the_unit_direction() {
        assert_eq!(verdict(0.5, Some(false)), "better");
        assert_eq!(verdict(2.0, Some(false)), "worse");
        assert_eq!(verdict(2.0, Some(true)), "better");
        assert_eq!(verdict(1.05, Some(true)), "same");
        assert_eq!(verdict(3.0, None), "more");
        assert_eq!(verdict(f64::NAN, None), "");
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
