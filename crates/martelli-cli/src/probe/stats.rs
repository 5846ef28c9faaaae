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

/// The confidence level of every interval the probe reports.
pub(crate) const CONFIDENCE: f64 = 0.95;

/// A row whose interval is wider than this fraction of its median (±10 %) is low-confidence.
pub(crate) const WIDE: f64 = 0.20;

/// Tukey's fences: a sample further than this many interquartile ranges outside the quartiles is
/// an outlier.
const FENCE: f64 = 1.5;

/// One measured quantity: the median with its confidence interval, the extremes, and how much to
/// trust it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub(crate) struct Stat {
    pub(crate) median: f64,
    /// The 95 % confidence interval of the median: order statistics of the samples, which need no
    /// assumption about their distribution ([`median_interval`]).
    pub(crate) ci_low: f64,
    pub(crate) ci_high: f64,
    pub(crate) min: f64,
    pub(crate) max: f64,
    pub(crate) reps: u32,
    /// Samples outside Tukey's fences (1.5 interquartile ranges beyond the quartiles): runs that
    /// something interrupted. The median and its interval do not move much for them.
    pub(crate) outliers: u32,
    /// The interval is wider than ±10 % of the median ([`WIDE`]): the row is low-confidence.
    pub(crate) low_confidence: bool,
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
        let median = quantile(&sorted, 0.5);
        let (ci_low, ci_high) = median_interval(&sorted);
        Some(Stat {
            median,
            ci_low,
            ci_high,
            min: sorted[0],
            max: sorted[n - 1],
            reps: u32::try_from(n).unwrap_or(u32::MAX),
            outliers: outliers(&sorted),
            low_confidence: is_wide(median, ci_low, ci_high),
            unit,
        })
    }

    /// The interval's width as a fraction of the median (0 for a row that did not vary).
    #[cfg(test)]
    pub(crate) fn relative_width(&self) -> f64 {
        relative_width(self.median, self.ci_low, self.ci_high)
    }

    /// True when this row's interval lies wholly below `other`'s: it is smaller, and the noise
    /// cannot explain the difference.
    pub(crate) fn separated_below(&self, other: &Stat) -> bool {
        self.ci_high < other.ci_low
    }

    /// A stat with one value (used by tests that build synthetic reports).
    #[cfg(test)]
    pub(crate) fn exact(value: f64, unit: Unit) -> Stat {
        Stat {
            median: value,
            ci_low: value,
            ci_high: value,
            min: value,
            max: value,
            reps: 1,
            outliers: 0,
            low_confidence: false,
            unit,
        }
    }

    /// A stat with a median and an interval around it (used by tests).
    #[cfg(test)]
    pub(crate) fn spread(median: f64, ci_low: f64, ci_high: f64, unit: Unit) -> Stat {
        Stat {
            median,
            ci_low,
            ci_high,
            min: ci_low,
            max: ci_high,
            reps: 9,
            outliers: 0,
            low_confidence: is_wide(median, ci_low, ci_high),
            unit,
        }
    }
}

fn relative_width(median: f64, low: f64, high: f64) -> f64 {
    let width = high - low;
    if width <= 0.0 {
        0.0
    } else if median.abs() > 0.0 {
        width / median.abs()
    } else {
        f64::INFINITY
    }
}

fn is_wide(median: f64, low: f64, high: f64) -> bool {
    relative_width(median, low, high) > WIDE
}

/// The `q` quantile of sorted samples, interpolated between the two nearest (the usual definition,
/// "type 7"): the median of an even count is the mean of the middle two.
pub(crate) fn quantile(sorted: &[f64], q: f64) -> f64 {
    let n = sorted.len();
    if n == 0 {
        return f64::NAN;
    }
    let h = (n - 1) as f64 * q.clamp(0.0, 1.0);
    let (lo, hi) = (h.floor() as usize, h.ceil() as usize);
    sorted[lo] + (h - lo as f64) * (sorted[hi] - sorted[lo])
}

/// The confidence interval of the median of sorted samples, at [`CONFIDENCE`] or the closest level
/// below it that the count allows: the *j*-th smallest and the *j*-th largest sample, for the
/// largest *j* whose interval still covers the true median with that probability. The number of
/// samples below the median is binomial (n, ½) whatever their distribution, so the coverage of
/// the *j*-th order statistics is 1 − 2 P(B ≤ j − 1). With fewer than 6 samples no pair reaches
/// 95 %, and the interval is the minimum and maximum (94 % for 5 samples, 75 % for 3).
pub(crate) fn median_interval(sorted: &[f64]) -> (f64, f64) {
    let n = sorted.len();
    if n == 0 {
        return (f64::NAN, f64::NAN);
    }
    // cdf[i] = P(B ≤ i) for B ~ Binomial(n, ½), built up term by term.
    let mut term = 0.5f64.powi(i32::try_from(n).unwrap_or(i32::MAX));
    let mut cdf = term;
    let mut j = 1; // 1-based: the interval is [sorted[j-1], sorted[n-j]].
    // Widening to j + 1 cuts one more sample from each end: coverage 1 − 2 P(B ≤ j).
    while 2 * (j + 1) <= n + 1 {
        term *= (n - j + 1) as f64 / j as f64;
        let next = cdf + term;
        if 1.0 - 2.0 * next < CONFIDENCE {
            break;
        }
        cdf = next;
        j += 1;
    }
    (sorted[j - 1], sorted[n - j])
}

/// How many sorted samples lie outside Tukey's fences.
fn outliers(sorted: &[f64]) -> u32 {
    if sorted.len() < 4 {
        return 0;
    }
    let (q1, q3) = (quantile(sorted, 0.25), quantile(sorted, 0.75));
    let iqr = q3 - q1;
    let (lo, hi) = (q1 - FENCE * iqr, q3 + FENCE * iqr);
    let n = sorted.iter().filter(|&&x| x < lo || x > hi).count();
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// How long a row is measured: warm-up rounds, then repetitions until the interval of the median is
/// narrow ([`WIDE`]) or the row's time budget is spent, within a least and a most count.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Plan {
    pub(crate) warmup: u32,
    pub(crate) min_reps: u32,
    pub(crate) max_reps: u32,
    /// How long the recorded repetitions of one row may take before it stops at the count it has.
    pub(crate) budget: Duration,
}

/// The plans of one probe: for timed rows, for rows that start a fresh process per sample, and
/// for the CPU curve (whose rounds visit every worker count).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Plans {
    pub(crate) timed: Plan,
    pub(crate) fresh: Plan,
    pub(crate) curve: Plan,
}

impl Plans {
    /// `--quick`: enough for a first look, in about 10 s.
    pub(crate) fn quick() -> Plans {
        Plans {
            timed: Plan {
                warmup: 1,
                min_reps: 6,
                max_reps: 15,
                budget: Duration::from_millis(250),
            },
            fresh: Plan {
                warmup: 0,
                min_reps: 3,
                max_reps: 6,
                budget: Duration::from_millis(500),
            },
            curve: Plan {
                warmup: 1,
                min_reps: 6,
                max_reps: 12,
                budget: Duration::from_millis(1500),
            },
        }
    }

    /// The full probe.
    pub(crate) fn full() -> Plans {
        Plans {
            timed: Plan {
                warmup: 2,
                min_reps: 9,
                max_reps: 30,
                budget: Duration::from_secs(1),
            },
            fresh: Plan {
                warmup: 0,
                min_reps: 5,
                max_reps: 9,
                budget: Duration::from_millis(1500),
            },
            curve: Plan {
                warmup: 2,
                min_reps: 9,
                max_reps: 21,
                budget: Duration::from_secs(5),
            },
        }
    }
}

impl Plan {
    /// Runs `rep` `warmup` times unrecorded, then repeats it until [`Plan::enough`], and summarises
    /// the recorded values. Each call of `rep` returns one sample in `unit` (typically a mean over
    /// an inner loop).
    pub(crate) fn measure<E>(
        self,
        unit: Unit,
        mut rep: impl FnMut() -> Result<f64, E>,
    ) -> Result<Stat, E> {
        for _ in 0..self.warmup {
            black_box(rep()?);
        }
        let start = Instant::now();
        let mut samples = Vec::with_capacity(self.min_reps as usize);
        loop {
            samples.push(rep()?);
            if self.enough(&[&samples], start.elapsed()) {
                break;
            }
        }
        // Every sample is a finite quotient of a duration, so the summary exists; a non-finite one
        // would be a bug in the row, reported as NaN rather than hidden.
        Ok(Stat::from_samples(&samples, unit).unwrap_or(Stat {
            median: f64::NAN,
            ci_low: f64::NAN,
            ci_high: f64::NAN,
            min: f64::NAN,
            max: f64::NAN,
            reps: u32::try_from(samples.len()).unwrap_or(u32::MAX),
            outliers: 0,
            low_confidence: true,
            unit,
        }))
    }

    /// Whether rows measured together (each a list of samples, the same count each) have enough
    /// repetitions after `elapsed`: the most allowed, or the least required and either every
    /// interval narrow or the budget spent.
    pub(crate) fn enough(&self, rows: &[&[f64]], elapsed: Duration) -> bool {
        let n = rows.iter().map(|r| r.len()).min().unwrap_or(0);
        if n >= self.max_reps.max(1) as usize {
            return true;
        }
        if n < self.min_reps.max(1) as usize {
            return false;
        }
        elapsed >= self.budget
            || rows.iter().all(|r| {
                let mut sorted = r.to_vec();
                sorted.sort_by(f64::total_cmp);
                let (low, high) = median_interval(&sorted);
                !is_wide(quantile(&sorted, 0.5), low, high)
            })
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

/// A count with thousands separators: 1,000 and 50,000 rather than 1000 and 50000.
pub(crate) fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, d) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(d);
    }
    out
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
    fn median_interval_uses_the_binomial_order_statistics() {
        let ranks = |n: usize| {
            let sorted: Vec<f64> = (1..=n).map(|i| i as f64).collect();
            let (lo, hi) = median_interval(&sorted);
            (lo as usize, hi as usize)
        };
        // Below 6 samples no pair reaches 95 %: minimum and maximum.
        assert_eq!(ranks(1), (1, 1));
        assert_eq!(ranks(5), (1, 5));
        // 6 samples: 1 − 2/64 = 96.9 %; 7 or 8 still need the extremes (1 − 2·8/256 = 93.8 %).
        assert_eq!(ranks(6), (1, 6));
        assert_eq!(ranks(8), (1, 8));
        // 9 samples: 2nd and 8th (1 − 2·10/512 = 96.1 %); 3rd and 7th would cover 82 %.
        assert_eq!(ranks(9), (2, 8));
        // The published table: n = 20 → 6th and 15th (95.9 %), n = 30 → 10th and 21st (95.7 %).
        assert_eq!(ranks(20), (6, 15));
        assert_eq!(ranks(30), (10, 21));
    }

    /// Samples recorded by `martelli probe --quick` on a 2-core virtual machine while other
    /// engineers compiled (other programs used 78 % of the CPUs during the run). The process
    /// ping-pong row (µs per round trip) stopped, narrow, at its least count of 6 …
    const QUIET: [f64; 6] = [2.253722, 2.299328, 2.309630, 2.212804, 2.316774, 2.312618];
    /// … while the thread spawn + join row (µs) reached its most, 15, still wide: three runs were
    /// interrupted for 40 µs to 330 µs.
    const BUSY: [f64; 15] = [
        12.6415, 12.37263, 150.56761, 17.47524, 12.68451, 12.57261, 14.21424, 39.61477, 12.63197,
        68.00468, 13.32709, 12.92607, 330.72397, 12.70416, 12.41067,
    ];

    #[test]
    fn a_quiet_row_is_narrow_and_a_busy_one_is_low_confidence() {
        let quiet = Stat::from_samples(&QUIET, Unit::Micros).expect("samples");
        assert!((quiet.median - 2.304479).abs() < 1e-9, "{quiet:?}");
        // Six samples: the interval is the minimum and the maximum (96.9 %).
        assert_eq!((quiet.ci_low, quiet.ci_high), (2.212804, 2.316774));
        assert!(!quiet.low_confidence, "{quiet:?}");
        assert!(quiet.relative_width() < 0.05);

        let busy = Stat::from_samples(&BUSY, Unit::Micros).expect("samples");
        assert_eq!(busy.median, 12.92607);
        // Fifteen samples: the 4th and the 12th (96.5 %).
        assert_eq!((busy.ci_low, busy.ci_high), (12.63197, 39.61477));
        assert!(busy.low_confidence, "{busy:?}");
        assert_eq!((busy.min, busy.max, busy.reps), (12.37263, 330.72397, 15));
    }

    #[test]
    fn separated_means_the_intervals_do_not_meet() {
        let a = Stat::from_samples(&QUIET, Unit::Micros).expect("samples");
        let mut b = a;
        b.ci_low = a.ci_high + 0.01;
        assert!(a.separated_below(&b));
        assert!(!b.separated_below(&a));
        b.ci_low = a.ci_high;
        assert!(!a.separated_below(&b), "touching intervals are not apart");
    }

    #[test]
    fn outliers_lie_beyond_tukeys_fences() {
        let quiet = Stat::from_samples(&QUIET, Unit::Micros).expect("samples");
        assert_eq!(quiet.outliers, 0);
        // Quartiles 12.64 and 28.55: the upper fence is 52.4, so 68, 151 and 331 are out.
        let busy = Stat::from_samples(&BUSY, Unit::Micros).expect("samples");
        assert_eq!(busy.outliers, 3);
        // A row of identical values has no outliers, and fewer than four samples are not judged.
        let flat = Stat::from_samples(&[4096.0; 5], Unit::Bytes).expect("samples");
        assert_eq!((flat.outliers, flat.low_confidence), (0, false));
        let few = Stat::from_samples(&[1.0, 1.0, 100.0], Unit::Bytes).expect("samples");
        assert_eq!(few.outliers, 0);
    }

    fn plan(min_reps: u32, max_reps: u32) -> Plan {
        Plan {
            warmup: 2,
            min_reps,
            max_reps,
            budget: Duration::from_secs(3600),
        }
    }

    /// Replays recorded samples as the repetitions of a row; counts the calls.
    fn replay(plan: Plan, samples: &[f64]) -> (Stat, usize) {
        let mut calls = 0;
        let stat = plan
            .measure(Unit::Micros, || {
                calls += 1;
                Ok::<_, ()>(samples[(calls - 1) % samples.len()])
            })
            .expect("infallible");
        (stat, calls)
    }

    #[test]
    fn plan_runs_warmup_unrecorded() {
        let mut calls = 0;
        let stat = plan(3, 3)
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
    fn a_narrow_row_stops_at_its_least_count() {
        // Warm-ups replay the first two samples; the recorded ones start at the third.
        let (stat, calls) = replay(plan(6, 30), &QUIET);
        assert_eq!((stat.reps, calls), (6, 8));
        assert!(!stat.low_confidence);
    }

    #[test]
    fn a_wide_row_repeats_until_the_most_allowed() {
        let (stat, calls) = replay(plan(6, 30), &BUSY);
        assert_eq!((stat.reps, calls), (30, 32));
        assert!(stat.low_confidence, "{stat:?}");
    }

    #[test]
    fn a_wide_row_stops_when_its_budget_is_spent() {
        let mut p = plan(6, 30);
        p.budget = Duration::ZERO;
        let (stat, _) = replay(p, &BUSY);
        assert_eq!(stat.reps, 6);
        assert!(stat.low_confidence);
    }

    #[test]
    fn rows_measured_together_wait_for_the_widest() {
        let p = plan(6, 30);
        let long = Duration::ZERO;
        assert!(p.enough(&[&QUIET], long));
        assert!(!p.enough(&[&QUIET, &BUSY], long));
        assert!(!p.enough(&[&QUIET[..5]], long));
        let mut spent = p;
        spent.budget = Duration::ZERO;
        assert!(spent.enough(&[&QUIET, &BUSY], long));
    }

    #[test]
    fn thousands_are_separated() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(50_000), "50,000");
        assert_eq!(thousands(4_194_304), "4,194,304");
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
