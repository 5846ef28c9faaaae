//! What counts toward `--halt` and the exit status.

use super::*;

/// Jobs at most one failure count can report (GNU parallel's cap).
pub(super) const MAX_FAILED_EXIT: u64 = 101;

/// Counts for `--halt` and the exit status.
#[derive(Debug, Default)]
pub(super) struct Tally {
    pub(super) finished: u64,
    pub(super) failed: u64,
    pub(super) succeeded: u64,
    /// The number of jobs, when known in advance (`--halt …=P%` is a share of it).
    pub(super) total: Option<u64>,
    /// The exit status `--halt` decided, once it triggered.
    pub(super) halt_status: Option<u8>,
}

/// What counting a finished job decided.
#[derive(Debug, Default)]
pub(super) struct Counted {
    /// `--halt now` triggered: kill the running jobs.
    pub(super) kill_now: bool,
    /// Lines for stderr, as GNU parallel prints them ("This job failed:" and the command).
    pub(super) notes: Vec<String>,
}

/// Counts a finished job and applies `--halt`, as GNU parallel does (see `docs/run.md`).
pub(super) fn count(shared: &Shared, outcome: &Outcome) -> Counted {
    let config = &shared.config;
    let mut tally = lock(&shared.tally);
    tally.finished += 1;
    let failed = outcome.failed();
    if failed {
        tally.failed += 1;
    } else {
        tally.succeeded += 1;
    }
    let mut counted = Counted::default();
    let Some(halt) = config.halt else {
        return counted;
    };
    let command = String::from_utf8_lossy(&outcome.command);
    // The count the condition looks at, and the note GNU parallel prints for this job.
    let limit = match halt.on {
        HaltOn::Fail if failed => {
            counted
                .notes
                .push(format!("martelli run: This job failed:\n{command}"));
            Some(tally.failed)
        }
        HaltOn::Success if !failed => {
            counted
                .notes
                .push(format!("martelli run: This job succeeded:\n{command}"));
            Some(tally.succeeded)
        }
        HaltOn::Done => {
            counted
                .notes
                .push(format!("martelli run: This job finished:\n{command}"));
            Some(tally.finished)
        }
        _ => None,
    };
    let Some(limit) = limit else {
        return counted;
    };
    if tally.halt_status.is_some() {
        return counted;
    }
    let reached = match halt.threshold {
        Threshold::Count(n) => limit >= n,
        // A share of all the jobs when their number is known; of the finished ones otherwise.
        Threshold::Percent(p) => {
            let of = tally.total.unwrap_or(tally.finished) as f64;
            limit as f64 >= of * p / 100.0
        }
    };
    if !reached {
        return counted;
    }
    let status = match (halt.on, halt.threshold) {
        (HaltOn::Success, _) => 0,
        // fail=1 and done=1: the status of the job that triggered it (128 + N for signal N).
        (_, Threshold::Count(1)) => {
            if failed {
                outcome.exit_status()
            } else {
                0
            }
        }
        // GNU parallel's min() skips a count that is still undefined: with no job failed yet,
        // done=N (N > 1) exits with 101.
        (_, Threshold::Count(_)) if tally.failed == 0 => MAX_FAILED_EXIT as u8,
        (_, Threshold::Count(_)) => tally.failed.min(MAX_FAILED_EXIT) as u8,
        (_, Threshold::Percent(_)) => {
            let of = tally.total.unwrap_or(tally.finished).max(1);
            percent(tally.failed, of)
        }
    };
    tally.halt_status = Some(status);
    shared.stop.store(true, Ordering::SeqCst);
    if halt.now {
        shared.killing.store(true, Ordering::SeqCst);
        counted.kill_now = true;
    } else {
        let running = running(shared);
        if running > 0 {
            counted.notes.push(format!(
                "martelli run: Starting no more jobs. Waiting for {running} jobs to finish."
            ));
        }
    }
    counted
}

/// `part` as a whole percentage of `of`, rounded up (GNU parallel's exit status for `P%`).
pub(super) fn percent(part: u64, of: u64) -> u8 {
    let p = (part * 100).div_ceil(of.max(1));
    u8::try_from(p.min(100)).unwrap_or(100)
}
