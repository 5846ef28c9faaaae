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

/// Kills the process group of every running job: SIGTERM, the grace period, then SIGKILL.
pub(super) fn kill_all(shared: &Shared) {
    let groups: Vec<u32> = lock(&shared.live).keys().copied().collect();
    for &pgid in &groups {
        let _ = process::signal_group(pgid, Signal::TERM);
        // A job stopped by --memsuspend handles the SIGTERM only once continued.
        let _ = process::signal_group(pgid, Signal::CONT);
    }
    let deadline = Instant::now() + shared.config.grace;
    while Instant::now() < deadline && !lock(&shared.live).is_empty() {
        thread::sleep(Duration::from_millis(5));
    }
    // Only groups still registered, whose leaders are (all but) unreaped: see the module docs.
    for pgid in lock(&shared.live).keys().copied() {
        let _ = process::signal_group(pgid, Signal::KILL);
    }
}

/// Kills one job's process group (`--memfree`): SIGTERM, the grace period, then SIGKILL; returns
/// once its slot has reaped it, or after a further grace if it does not.
pub(super) fn kill_one(shared: &Shared, pgid: u32) {
    let gone = || !lock(&shared.live).contains_key(&pgid);
    let wait = |limit: Duration| {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline && !gone() {
            thread::sleep(Duration::from_millis(5));
        }
    };
    let _ = process::signal_group(pgid, Signal::TERM);
    // A job stopped by --memsuspend handles the SIGTERM only once continued.
    let _ = process::signal_group(pgid, Signal::CONT);
    wait(shared.config.grace);
    // Only a group still registered, whose leader is (all but) unreaped: see the module docs.
    if !gone() {
        let _ = process::signal_group(pgid, Signal::KILL);
        wait(shared.config.grace.max(Duration::from_secs(1)));
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
