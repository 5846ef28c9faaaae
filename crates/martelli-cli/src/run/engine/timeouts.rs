//! `--timeout N%`: kill the jobs that run longer than N % of the median runtime of the jobs that
//! succeeded so far, GNU parallel's rule (with its test of the clock's whole seconds, so a job may
//! run up to a second past the limit). Until a job has succeeded there is no median, and no job
//! times out; once there is one, it applies to the jobs already running too.

use super::*;

/// How often the running jobs are compared with the limit.
const EVERY: Duration = Duration::from_millis(50);

/// Kills, until `done`, every job running longer than `percent` times the median runtime; its
/// group is remembered in `timed_out`, so that the job's outcome says it timed out.
pub(super) fn time_out_slow_jobs(shared: &Shared, percent: f64, done: &AtomicBool) {
    while !done.load(Ordering::SeqCst) {
        let limit = lock(&shared.runtimes)
            .median()
            .and_then(|median| Duration::try_from_secs_f64(median.as_secs_f64() * percent).ok());
        if let Some(limit) = limit {
            // Marked under `live`'s lock: a job reaped meanwhile is out of `live` already, and a
            // job reaped later finds its mark when it leaves `live` (`run_job` clears both).
            let mut late = Vec::new();
            {
                let live = lock(&shared.live);
                let mut timed_out = lock(&shared.timed_out);
                // GNU parallel's test, whole seconds of the clock against the job's start plus
                // the limit: a job is late once the clock's second is past its deadline, so a
                // limit of milliseconds (a median of tiny jobs) does not kill a job that is merely
                // slowed for a moment.
                let now = SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap_or_default();
                let whole_seconds = now.as_secs() as f64;
                for (&pgid, job) in live.iter() {
                    let started = now.as_secs_f64() - job.started.elapsed().as_secs_f64();
                    if whole_seconds > started + limit.as_secs_f64() && timed_out.insert(pgid) {
                        late.push(pgid);
                    }
                }
            }
            for pgid in late {
                kill_one(shared, pgid);
            }
        }
        thread::sleep(EVERY);
    }
}
