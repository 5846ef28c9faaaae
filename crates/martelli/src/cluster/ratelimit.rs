//! Rate limits per task name, across every worker (docs/protocol.md, "Addition 3: rate limits").
//!
//! A limit lives in Redis, in the hash `{prefix}:ratelimits` (field: the task name; value:
//! `COUNT/PERIOD_MS`), so every worker of every queue under the prefix applies the same one. Each
//! worker reads the hash with the script it runs every 100 ms anyway. A worker that fetches a task
//! whose name has a limit *reserves* a start time for it with [`RATE_SCRIPT`]: a GCRA over the
//! broker's clock (`TIME`), atomic in Redis, so the workers share one schedule and never start
//! more than `COUNT` tasks of that name per `PERIOD` between them. A task whose reserved time has
//! not come goes to the delayed set until then, with its reservation in its envelope (`slot`), and
//! runs without a new reservation when it comes back.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// Reserves a start time for each task: KEYS[i] is the state of task name i (`{prefix}:rate:NAME`,
/// its theoretical arrival time in µs of the broker's clock), ARGV[i] its emission interval in µs.
/// Returns, per key, how many ms from now the task may start (0: at once).
pub(crate) const RATE_SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local out = {}
for i = 1, #KEYS do
  local interval = tonumber(ARGV[i])
  local tat = tonumber(redis.call('GET', KEYS[i]) or '0') or 0
  if tat < now then tat = now end
  out[i] = math.ceil((tat - now) / 1000)
  local nxt = tat + interval
  redis.call('SET', KEYS[i], string.format('%d', nxt), 'PX', math.ceil((nxt - now) / 1000) + 1000)
end
return out
";

/// At most `count` starts of a task name per `period`, across all workers.
///
/// ```
/// use martelli::cluster::RateLimit;
/// use std::time::Duration;
///
/// let limit: RateLimit = "100/s".parse()?;
/// assert_eq!(limit, RateLimit::new(100, Duration::from_secs(1)));
/// assert_eq!("6/m".parse::<RateLimit>()?, RateLimit::new(6, Duration::from_secs(60)));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RateLimit {
    count: u32,
    period_ms: u64,
}

/// A rate limit that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid rate limit {0:?}: expected COUNT/PERIOD with a COUNT of at least 1 and a PERIOD of \
     s, m, h, or a number of milliseconds (such as 100/s, 10/m or 5/250)"
)]
pub struct RateLimitError(String);

impl RateLimit {
    /// At most `count` starts per `period` (a `count` of 0 counts as 1; a period under 1 ms as
    /// 1 ms).
    pub fn new(count: u32, period: Duration) -> RateLimit {
        RateLimit {
            count: count.max(1),
            period_ms: u64::try_from(period.as_millis()).unwrap_or(u64::MAX).max(1),
        }
    }

    /// `count` starts per second.
    pub fn per_second(count: u32) -> RateLimit {
        RateLimit::new(count, Duration::from_secs(1))
    }

    /// The most starts per period.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// The period.
    pub fn period(&self) -> Duration {
        Duration::from_millis(self.period_ms)
    }

    /// The time between two starts, in µs (the GCRA's emission interval).
    pub(crate) fn interval_us(&self) -> u64 {
        self.period_ms.saturating_mul(1000) / u64::from(self.count)
    }

    /// The value stored in the `ratelimits` hash: `COUNT/PERIOD_MS`.
    pub(crate) fn to_wire(self) -> String {
        format!("{}/{}", self.count, self.period_ms)
    }
}

impl fmt::Display for RateLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.period_ms {
            1000 => write!(f, "{}/s", self.count),
            60_000 => write!(f, "{}/m", self.count),
            3_600_000 => write!(f, "{}/h", self.count),
            ms => write!(f, "{}/{ms}", self.count),
        }
    }
}

impl FromStr for RateLimit {
    type Err = RateLimitError;

    fn from_str(s: &str) -> Result<RateLimit, RateLimitError> {
        let bad = || RateLimitError(s.to_owned());
        let (count, period) = s.trim().split_once('/').ok_or_else(bad)?;
        let count: u32 = count.trim().parse().map_err(|_| bad())?;
        let period_ms: u64 = match period.trim() {
            "s" | "sec" | "second" => 1000,
            "m" | "min" | "minute" => 60_000,
            "h" | "hour" => 3_600_000,
            ms => ms.parse().map_err(|_| bad())?,
        };
        if count == 0 || period_ms == 0 {
            return Err(bad());
        }
        Ok(RateLimit { count, period_ms })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_parse_print_and_give_their_interval() {
        let l: RateLimit = "100/s".parse().unwrap();
        assert_eq!(
            (l.count(), l.interval_us(), l.to_wire()),
            (100, 10_000, "100/1000".into())
        );
        assert_eq!(l.to_string(), "100/s");
        assert_eq!("100/1000".parse::<RateLimit>().unwrap(), l);
        assert_eq!(
            "3/m".parse::<RateLimit>().unwrap().interval_us(),
            20_000_000
        );
        for bad in ["", "100", "0/s", "5/0", "x/s", "5/fortnight"] {
            assert!(bad.parse::<RateLimit>().is_err(), "{bad}");
        }
    }
}
