//! Repeated measurement: warm-up, repetitions, and the median/min/max summary every row reports.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::hint::black_box;
use std::time::{Duration, Instant};

/// The unit of a [`Stat`]. Serialised as the short strings the JSON schema documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Unit {
    /// Nanoseconds per operation.
    #[serde(rename = "ns")]
    Nanos,
    /// Microseconds per operation.
    #[serde(rename = "us")]
    Micros,
    /// Milliseconds (wall time of a whole job).
    #[serde(rename = "ms")]
    Millis,
    /// Bytes (memory per unit).
    #[serde(rename = "bytes")]
    Bytes,
    /// Mebibytes (2^20 bytes) per second.
    #[serde(rename = "MiB/s")]
    MibPerSec,
}

impl Unit {
    /// True when a larger value is better (throughput); false for costs (time, memory).
    pub(crate) fn higher_is_better(self) -> bool {
        matches!(self, Unit::MibPerSec)
    }
}

/// One measured quantity: the median, minimum and maximum over `reps` repetitions.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub(crate) struct Stat {
    pub(crate) median: f64,
    pub(crate) min: f64,
    pub(crate) max: f64,
    pub(crate) reps: u32,
    pub(crate) unit: Unit,
}

impl Stat {
    /// Summarises `samples` (at least one). Returns `None` for an empty slice or one that holds a
    /// value that is not finite.
    pub(crate) fn from_samples(samples: &[f64], unit: Unit) -> Option<Stat> {
        if samples.is_empty() || samples.iter().any(|s| !s.is_finite()) {
            return None;
        }
        let mut sorted = samples.to_vec();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        let median = if n % 2 == 1 {
            sorted[n / 2]
        } else {
            (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
        };
        Some(Stat {
            median,
            min: sorted[0],
            max: sorted[n - 1],
            reps: u32::try_from(n).unwrap_or(u32::MAX),
            unit,
        })
    }

    /// A stat with one value (used by tests that build synthetic reports).
    #[cfg(test)]
    pub(crate) fn exact(value: f64, unit: Unit) -> Stat {
        Stat {
            median: value,
            min: value,
            max: value,
            reps: 1,
            unit,
        }
    }
}

/// How many warm-up rounds and measured repetitions each row gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Plan {
    pub(crate) warmup: u32,
    pub(crate) reps: u32,
}

impl Plan {
    /// Runs `rep` `warmup` times unrecorded, then `reps` times, and summarises the recorded values.
    /// Each call of `rep` returns one sample in `unit` (typically a mean over an inner loop).
    pub(crate) fn measure<E>(
        self,
        unit: Unit,
        mut rep: impl FnMut() -> Result<f64, E>,
    ) -> Result<Stat, E> {
        for _ in 0..self.warmup {
            black_box(rep()?);
        }
        let mut samples = Vec::with_capacity(self.reps as usize);
        for _ in 0..self.reps.max(1) {
            samples.push(rep()?);
        }
        // Every sample is a finite quotient of a duration, so the summary exists; a non-finite one
        // would be a bug in the row, reported as NaN rather than hidden.
        Ok(Stat::from_samples(&samples, unit).unwrap_or(Stat {
            median: f64::NAN,
            min: f64::NAN,
            max: f64::NAN,
            reps: self.reps,
            unit,
        }))
    }
}

/// Times `k` runs of `op` and returns the mean time per run in `unit`.
pub(crate) fn per_op<E>(
    k: u32,
    unit: Unit,
    mut op: impl FnMut() -> Result<(), E>,
) -> Result<f64, E> {
    let start = Instant::now();
    for _ in 0..k {
        op()?;
    }
    Ok(in_unit(start.elapsed(), unit) / f64::from(k.max(1)))
}

/// A duration expressed in a time unit (other units are a caller's bug and give seconds).
pub(crate) fn in_unit(d: Duration, unit: Unit) -> f64 {
    let s = d.as_secs_f64();
    match unit {
        Unit::Nanos => s * 1e9,
        Unit::Micros => s * 1e6,
        Unit::Millis => s * 1e3,
        Unit::Bytes | Unit::MibPerSec => s,
    }
}

/// Throughput in MiB/s for `bytes` moved in `elapsed`.
pub(crate) fn mib_per_sec(bytes: u64, elapsed: Duration) -> f64 {
    bytes as f64 / (1024.0 * 1024.0) / elapsed.as_secs_f64().max(1e-12)
}

/// A value with its unit, the way a person reads it: `12.3 µs`, `1.52 ms`, `8.0 KiB`, `950 MiB/s`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Human(pub(crate) f64, pub(crate) Unit);

impl fmt::Display for Human {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Human(v, unit) = *self;
        if !v.is_finite() {
            return write!(f, "n/a");
        }
        match unit {
            Unit::Nanos | Unit::Micros | Unit::Millis => {
                let ns = match unit {
                    Unit::Nanos => v,
                    Unit::Micros => v * 1e3,
                    _ => v * 1e6,
                };
                let (x, u) = if ns < 1e3 {
                    (ns, "ns")
                } else if ns < 1e6 {
                    (ns / 1e3, "µs")
                } else if ns < 1e9 {
                    (ns / 1e6, "ms")
                } else {
                    (ns / 1e9, "s")
                };
                write!(f, "{} {u}", sig3(x))
            }
            Unit::Bytes => write!(f, "{}", Bytes(v)),
            Unit::MibPerSec => {
                if v >= 1024.0 {
                    write!(f, "{} GiB/s", sig3(v / 1024.0))
                } else {
                    write!(f, "{} MiB/s", sig3(v))
                }
            }
        }
    }
}

/// A byte count with a binary prefix.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bytes(pub(crate) f64);

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = self.0;
        let (x, u) = if v.abs() < 1024.0 {
            return write!(f, "{v:.0} B");
        } else if v.abs() < 1024.0 * 1024.0 {
            (v / 1024.0, "KiB")
        } else if v.abs() < 1024.0 * 1024.0 * 1024.0 {
            (v / (1024.0 * 1024.0), "MiB")
        } else {
            (v / (1024.0 * 1024.0 * 1024.0), "GiB")
        };
        write!(f, "{} {u}", sig3(x))
    }
}

/// A number with three significant digits (no exponent): 0.123, 1.23, 12.3, 123, 1234.
pub(crate) fn sig3(x: f64) -> String {
    let a = x.abs();
    if a >= 100.0 {
        format!("{x:.0}")
    } else if a >= 10.0 {
        format!("{x:.1}")
    } else if a >= 1.0 {
        format!("{x:.2}")
    } else {
        format!("{x:.3}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        let s = Stat::from_samples(&[5.0, 1.0, 3.0], Unit::Micros).expect("three samples");
        assert_eq!((s.median, s.min, s.max, s.reps), (3.0, 1.0, 5.0, 3));
        let s = Stat::from_samples(&[4.0, 1.0, 3.0, 2.0], Unit::Micros).expect("four samples");
        assert_eq!((s.median, s.min, s.max, s.reps), (2.5, 1.0, 4.0, 4));
    }

    #[test]
    fn no_summary_of_nothing_or_nan() {
        assert!(Stat::from_samples(&[], Unit::Bytes).is_none());
        assert!(Stat::from_samples(&[1.0, f64::NAN], Unit::Bytes).is_none());
    }

    #[test]
    fn plan_runs_warmup_unrecorded() {
        let mut calls = 0;
        let stat = Plan { warmup: 2, reps: 3 }
            .measure(Unit::Nanos, || {
                calls += 1;
                Ok::<_, ()>(f64::from(calls))
            })
            .expect("infallible");
        assert_eq!(calls, 5);
        // Only calls 3, 4 and 5 were recorded.
        assert_eq!((stat.min, stat.median, stat.max), (3.0, 4.0, 5.0));
    }

    #[test]
    fn human_units() {
        assert_eq!(Human(12.34, Unit::Micros).to_string(), "12.3 µs");
        assert_eq!(Human(1520.0, Unit::Micros).to_string(), "1.52 ms");
        assert_eq!(Human(850.0, Unit::Nanos).to_string(), "850 ns");
        assert_eq!(Human(2500.0, Unit::Millis).to_string(), "2.50 s");
        assert_eq!(Human(8192.0, Unit::Bytes).to_string(), "8.00 KiB");
        assert_eq!(Human(300.0, Unit::Bytes).to_string(), "300 B");
        assert_eq!(Human(2048.0, Unit::MibPerSec).to_string(), "2.00 GiB/s");
        assert_eq!(Human(f64::NAN, Unit::MibPerSec).to_string(), "n/a");
    }
}
