//! SIGINT/SIGTERM: stop starting jobs, then kill the running ones (or cancel them on the cluster).

use super::*;

/// The longest a second Ctrl-C waits for the jobs running on cluster workers to be cancelled.
const REMOTE_CANCEL_WAIT: Duration = Duration::from_secs(6);

/// Installs the SIGINT/SIGTERM handling described in the module docs.
pub(super) fn watch_signals(shared: &Arc<Shared>) -> Result<(), RunError> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM]).map_err(|source| {
        RunError::System {
            what: "cannot install the Ctrl-C handler",
            source,
        }
    })?;
    let shared = Arc::clone(shared);
    thread::Builder::new()
        .name("signals".into())
        // It only waits for signals and writes a line: a small stack is mapped and faulted in
        // faster than the default 2 MiB at the start of every run.
        .stack_size(64 * 1024)
        .spawn(move || {
            for signal in signals.forever() {
                if shared.interrupted.swap(signal, Ordering::SeqCst) == 0 {
                    shared.stop.store(true, Ordering::SeqCst);
                    let running = running(&shared);
                    let _ = writeln!(
                        io::stderr().lock(),
                        "martelli run: stopping: no new jobs; waiting for {running} running job(s) to finish; \
                         send the signal again to kill them"
                    );
                } else {
                    shared.killing.store(true, Ordering::SeqCst);
                    kill_all(&shared);
                    await_remote_cancels(&shared);
                    std::process::exit(128 + signal);
                }
            }
        })
        .map_err(|source| RunError::System { what: "cannot start the signal thread", source })?;
    Ok(())
}

/// Jobs running now, here or on cluster workers.
pub(super) fn running(shared: &Shared) -> usize {
    lock(&shared.live).len() + shared.remote_running.load(Ordering::SeqCst)
}

/// Kills the process group of every running job by the run's kill sequence (`--termseq`).
pub(super) fn kill_all(shared: &Shared) {
    let groups: Vec<u32> = lock(&shared.live).keys().copied().collect();
    kill_groups(shared, &groups);
}

/// Kills one job's process group (`--memfree`, `--limit`, `--timeout N%`) by the run's kill
/// sequence; returns once its slot has reaped it, or a second after the sequence if it does not.
pub(super) fn kill_one(shared: &Shared, pgid: u32) {
    kill_groups(shared, &[pgid]);
    let deadline = Instant::now() + Duration::from_secs(1);
    while Instant::now() < deadline && lock(&shared.live).contains_key(&pgid) {
        thread::sleep(Duration::from_millis(5));
    }
}

/// Sends each signal of the kill sequence to the groups still registered (their leaders are (all
/// but) unreaped: see the module docs), then waits up to the step's time for them all to be gone.
fn kill_groups(shared: &Shared, groups: &[u32]) {
    let alive = |pgid: &u32| lock(&shared.live).contains_key(pgid);
    for &(signal, wait) in &shared.config.kill_sequence {
        let targets: Vec<u32> = groups.iter().copied().filter(alive).collect();
        if targets.is_empty() {
            return;
        }
        for pgid in targets {
            let _ = process::signal_group(pgid, signal);
            if signal != Signal::KILL {
                continue_stopped(shared, pgid);
            }
        }
        let deadline = Instant::now() + wait;
        while Instant::now() < deadline && groups.iter().any(alive) {
            thread::sleep(Duration::from_millis(5));
        }
    }
}

/// With `--memsuspend`, a job may be stopped: it handles a signal only once continued. (Not sent
/// otherwise: a job that catches `SIGCONT` would see it.)
fn continue_stopped(shared: &Shared, pgid: u32) {
    if shared.config.limits.memsuspend.is_some() {
        let _ = process::signal_group(pgid, Signal::CONT);
    }
}

/// With `--cluster`, waits until every slot waiting on a remote job has cancelled it (its
/// tombstone is in the broker), at most [`REMOTE_CANCEL_WAIT`]: slots see `killing` within their
/// kill check and then wait for the broker, which this bounds.
fn await_remote_cancels(shared: &Shared) {
    let deadline = Instant::now() + REMOTE_CANCEL_WAIT;
    while shared.remote_running.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(10));
    }
}
