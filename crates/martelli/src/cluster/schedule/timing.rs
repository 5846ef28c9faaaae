//! When a schedule ticks: a cron expression (UTC) or a fixed interval since the Unix epoch, and the
//! three ticks a scheduler hands the fire script (docs/protocol.md, "Addition 4").

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};

use super::ScheduleError;

/// The names of a cron expression's fields, for errors: 5 fields, or 6 with seconds first.
const FIELDS_5: [&str; 5] = ["minute", "hour", "day-of-month", "month", "day-of-week"];
const FIELDS_6: [&str; 6] = [
    "second",
    "minute",
    "hour",
    "day-of-month",
    "month",
    "day-of-week",
];

/// When a schedule ticks.
#[derive(Clone)]
pub enum Timing {
    /// Every match of a cron expression, in UTC.
    Cron(CronExpr),
    /// Every multiple of this interval since the Unix epoch (`every(1 h)` ticks on the hour, UTC).
    Every(Duration),
}

impl fmt::Debug for Timing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Timing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Timing::Cron(cron) => write!(f, "cron {}", cron.text),
            Timing::Every(every) => write!(f, "every {}", format_interval(*every)),
        }
    }
}

/// A parsed cron expression: 5 fields (minute hour day-of-month month day-of-week) or 6 (a
/// seconds field first), Vixie cron syntax with `L`, `W`, `#` and the `@hourly`-style nicknames.
/// Times are UTC.
#[derive(Clone)]
pub struct CronExpr {
    text: String,
    cron: Box<Cron>,
}

impl fmt::Debug for CronExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("CronExpr").field(&self.text).finish()
    }
}

impl CronExpr {
    /// The expression as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

fn parser() -> CronParser {
    CronParser::builder()
        .seconds(Seconds::Optional)
        .year(Year::Disallowed)
        .build()
}

impl FromStr for CronExpr {
    type Err = ScheduleError;

    fn from_str(text: &str) -> Result<CronExpr, ScheduleError> {
        let text = text.trim();
        let bad = |field: Option<&str>, detail: String| ScheduleError::BadCron {
            expression: text.to_owned(),
            field: field.map(str::to_owned),
            detail,
        };
        let fields: Vec<&str> = text.split_whitespace().collect();
        let nickname = text.starts_with('@');
        if !nickname && !(5..=6).contains(&fields.len()) {
            return Err(bad(
                None,
                format!(
                    "it has {} field(s); give 5 (minute hour day-of-month month day-of-week) or \
                     6 (second minute hour day-of-month month day-of-week)",
                    fields.len()
                ),
            ));
        }
        match parser().parse(text) {
            Ok(cron) => Ok(CronExpr {
                text: text.to_owned(),
                cron: Box::new(cron),
            }),
            Err(error) if nickname => Err(bad(None, error.to_string())),
            Err(error) => {
                // Name the field: parse each alone, the others as `*`.
                let names: &[&str] = if fields.len() == 5 {
                    &FIELDS_5
                } else {
                    &FIELDS_6
                };
                for (i, field) in fields.iter().enumerate() {
                    let alone: Vec<&str> = (0..fields.len())
                        .map(|j| if j == i { *field } else { "*" })
                        .collect();
                    if let Err(e) = parser().parse(&alone.join(" ")) {
                        return Err(bad(
                            Some(names[i]),
                            format!("{field:?} is not valid there ({e})"),
                        ));
                    }
                }
                Err(bad(None, error.to_string()))
            }
        }
    }
}

/// The ticks around a time that a scheduler passes to the fire script (Unix ms).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ticks {
    /// The latest tick at or before now.
    pub(crate) due: Option<u64>,
    /// The tick before `due`.
    pub(crate) prev: Option<u64>,
    /// The first tick after now.
    pub(crate) next: Option<u64>,
}

fn at_ms(ms: u64) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp_millis(i64::try_from(ms).ok()?)
}

fn ms_of(t: &DateTime<Utc>) -> Option<u64> {
    u64::try_from(t.timestamp_millis()).ok()
}

impl Timing {
    /// The ticks around `now_ms` (the broker's clock).
    pub(crate) fn ticks(&self, now_ms: u64) -> Ticks {
        match self {
            Timing::Every(every) => {
                let every = u64::try_from(every.as_millis()).unwrap_or(u64::MAX).max(1);
                let due = now_ms / every * every;
                Ticks {
                    due: Some(due),
                    prev: due.checked_sub(every),
                    next: due.checked_add(every),
                }
            }
            Timing::Cron(expr) => {
                // Whole seconds: a cron tick is the start of its second.
                let Some(now) = at_ms(now_ms / 1000 * 1000) else {
                    return Ticks {
                        due: None,
                        prev: None,
                        next: None,
                    };
                };
                let due = expr.cron.find_previous_occurrence(&now, true).ok();
                let prev = due
                    .as_ref()
                    .and_then(|d| expr.cron.find_previous_occurrence(d, false).ok());
                let next = expr.cron.find_next_occurrence(&now, false).ok();
                Ticks {
                    due: due.as_ref().and_then(ms_of),
                    prev: prev.as_ref().and_then(ms_of),
                    next: next.as_ref().and_then(ms_of),
                }
            }
        }
    }

    /// The first tick after `now_ms`.
    pub(crate) fn next_after(&self, now_ms: u64) -> Option<u64> {
        self.ticks(now_ms).next
    }
}

/// `90s` → `1m30s`; `1500ms` → `1.5s`.
pub(crate) fn format_interval(d: Duration) -> String {
    let ms = d.as_millis();
    if ms % 1000 != 0 {
        return if ms < 1000 {
            format!("{ms}ms")
        } else {
            format!("{}s", ms as f64 / 1000.0)
        };
    }
    let mut s = ms / 1000;
    let mut out = String::new();
    for (unit, len) in [("d", 86_400), ("h", 3600), ("m", 60)] {
        if s >= len {
            out.push_str(&format!("{}{unit}", s / len));
            s %= len;
        }
    }
    if s > 0 || out.is_empty() {
        out.push_str(&format!("{s}s"));
    }
    out
}

/// Reads an interval: a number with a unit, or several (`500ms`, `10s`, `5m`, `1h30m`, `1d`).
pub fn parse_interval(text: &str) -> Result<Duration, ScheduleError> {
    let bad = || ScheduleError::BadInterval(text.to_owned());
    let mut total: u64 = 0;
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let factor: u64 = match &rest[..unit_len] {
            "ms" => 1,
            "s" => 1000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return Err(bad()),
        };
        rest = &rest[unit_len..];
        total = n
            .checked_mul(factor)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(bad)?;
    }
    if total == 0 {
        return Err(bad());
    }
    Ok(Duration::from_millis(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_tick_on_multiples_since_the_epoch() {
        let t = Timing::Every(Duration::from_secs(10));
        assert_eq!(
            t.ticks(1_000_012_345),
            Ticks {
                due: Some(1_000_010_000),
                prev: Some(1_000_000_000),
                next: Some(1_000_020_000)
            }
        );
    }

    #[test]
    fn cron_ticks_are_whole_seconds_in_utc() {
        let t = Timing::Cron("*/15 * * * * *".parse().unwrap());
        // 2026-01-01T00:00:07.500Z
        let now = 1_767_225_607_500;
        assert_eq!(
            t.ticks(now),
            Ticks {
                due: Some(1_767_225_600_000),
                prev: Some(1_767_225_585_000),
                next: Some(1_767_225_615_000)
            }
        );
        let daily = Timing::Cron("0 3 * * *".parse().unwrap());
        let ticks = daily.ticks(now);
        assert_eq!(ticks.due, Some(1_767_225_600_000 - 21 * 3_600_000));
        assert_eq!(ticks.next, Some(1_767_225_600_000 + 3 * 3_600_000));
    }

    #[test]
    fn bad_cron_expressions_name_the_field() {
        let e = "0 25 * * *".parse::<CronExpr>().unwrap_err().to_string();
        assert!(e.contains("hour") && e.contains("\"25\""), "{e}");
        let e = "*/5 * * 13 *".parse::<CronExpr>().unwrap_err().to_string();
        assert!(e.contains("month"), "{e}");
        let e = "61 * * * * *".parse::<CronExpr>().unwrap_err().to_string();
        assert!(e.contains("second"), "{e}");
        let e = "* * *".parse::<CronExpr>().unwrap_err().to_string();
        assert!(e.contains("3 field"), "{e}");
        assert!("@daily".parse::<CronExpr>().is_ok());
        assert!("0 0 * * MON-FRI".parse::<CronExpr>().is_ok());
    }

    #[test]
    fn intervals_parse_and_print() {
        assert_eq!(parse_interval("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_interval("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(format_interval(Duration::from_secs(5400)), "1h30m");
        assert_eq!(format_interval(Duration::from_millis(1500)), "1.5s");
        for bad in ["", "10", "s", "0s", "5 parsecs", "-1s"] {
            assert!(parse_interval(bad).is_err(), "{bad}");
        }
    }
}
