//! A cluster worker from the environment: [`martelli::init()`](crate::init) turns a process into a
//! worker that serves every registered task ([`Registered`](super::Registered)) when
//! [`WORKER_ENV`] holds a broker URL.

use super::{Registered, WorkerOptions, serve};

/// The variable that makes [`martelli::init()`](crate::init) serve as a cluster worker: the broker
/// URL. The worker serves every registered task ([`Registered`]) and takes its settings from these
/// variables:
///
/// | variable | meaning |
/// | --- | --- |
/// | `MARTELLI_CLUSTER_WORKER` | the broker URL; set: this process is a worker |
/// | `MARTELLI_CLUSTER_QUEUE` | the queue (default `default`) |
/// | `MARTELLI_CLUSTER_PREFIX` | the key prefix (default `martelli`) |
/// | `MARTELLI_CLUSTER_CONCURRENCY` | tasks at once on threads (default: one per core) |
/// | `MARTELLI_CLUSTER_PROCESSES` | run tasks on this many local processes instead ([`WorkerOptions::processes`]; 0: one per core) |
///
/// ```sh
/// MARTELLI_CLUSTER_WORKER=redis://broker:6379 MARTELLI_CLUSTER_PROCESSES=8 ./my-program
/// ```
///
/// The worker runs until SIGTERM or SIGINT (see [`serve`]), then exits the process: status 0 after a
/// clean stop, 1 when it could not start or failed, 2 when a variable is invalid.
pub const WORKER_ENV: &str = "MARTELLI_CLUSTER_WORKER";

const QUEUE_ENV: &str = "MARTELLI_CLUSTER_QUEUE";
const PREFIX_ENV: &str = "MARTELLI_CLUSTER_PREFIX";
const CONCURRENCY_ENV: &str = "MARTELLI_CLUSTER_CONCURRENCY";
const PROCESSES_ENV: &str = "MARTELLI_CLUSTER_PROCESSES";

/// Serves as a cluster worker and exits when [`WORKER_ENV`] is set; returns at once otherwise.
pub(crate) fn init_from_env() {
    let Some(url) = std::env::var_os(WORKER_ENV) else {
        return;
    };
    // SAFETY: `init` runs first in `main`, before the program starts any thread (its documented
    // contract), so no other thread reads or writes the environment meanwhile. The variable is
    // removed so that the worker's process pool and the programs tasks start are not taken for
    // cluster workers.
    unsafe { std::env::remove_var(WORKER_ENV) };
    let url = url.to_string_lossy().into_owned();
    let options = match options_from_env() {
        Ok(options) => options,
        Err(message) => {
            eprintln!("martelli cluster worker: {message}");
            std::process::exit(2);
        }
    };
    match serve(&url, Registered, options) {
        Ok(report) => {
            eprintln!(
                "martelli cluster worker: stopped after {} tasks succeeded, {} failed, {} dead-lettered, \
                 {} reclaimed, {} handed back, {} cancelled",
                report.succeeded,
                report.failed,
                report.dead_lettered,
                report.reclaimed,
                report.handed_back,
                report.cancelled
            );
            std::process::exit(0);
        }
        Err(error) => {
            eprintln!("martelli cluster worker: {error}");
            std::process::exit(1);
        }
    }
}

fn options_from_env() -> Result<WorkerOptions, String> {
    let mut options = WorkerOptions::new();
    if let Some(queue) = var(QUEUE_ENV) {
        options = options.queue(queue);
    }
    if let Some(prefix) = var(PREFIX_ENV) {
        options = options.prefix(prefix);
    }
    if let Some(n) = number(PROCESSES_ENV)? {
        options = options.processes(n);
    }
    if let Some(n) = number(CONCURRENCY_ENV)? {
        options = options.concurrency(n);
    }
    Ok(options)
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn number(name: &str) -> Result<Option<usize>, String> {
    match var(name) {
        None => Ok(None),
        Some(text) => text.trim().parse().map(Some).map_err(|_| {
            format!("{name}={text:?} is not a whole number (unset it, or give a count such as 8)")
        }),
    }
}
