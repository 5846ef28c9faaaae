//! Creation costs: how long it takes to start (and finish) a thread, a process, a pool, a task.

use super::stats::{Stat, Unit, per_op};
use super::{Ctx, Notes, ProbeError};
use martelli::Pool;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

/// The program whose start-up is timed: it does nothing and exits 0.
const TRUE: &str = "/bin/true";

/// The reason the martelli process-worker row is empty (followed by the error that emptied it).
pub(crate) const NO_PROCESS_BACKEND: &str = "not available: a process pool could not start";

/// Creation costs, each per unit in µs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Creation {
    /// `std::thread::spawn` of an empty closure, then `join`.
    pub(crate) thread_spawn_join: Stat,
    /// `martelli::Pool::threads(1)` built, then shut down (its worker started and joined).
    pub(crate) pool_start_shutdown: Stat,
    /// One task handed to a `threads:1` pool and waited for: submit → `Future::wait`.
    pub(crate) pool_submit_wait: Stat,
    /// `/bin/true` started by fork + exec, and waited for.
    pub(crate) process_fork_exec: Option<Stat>,
    /// `/bin/true` started by posix_spawn, and waited for.
    pub(crate) process_posix_spawn: Option<Stat>,
    /// This binary re-executed until it answers on a pipe, then ended.
    pub(crate) process_reexec_ready: Stat,
    /// A martelli process worker (`Pool::processes(1)`) from spawn to handshake; `None` when no
    /// process pool could start here (the note says why).
    pub(crate) process_worker_handshake: Option<Stat>,
    /// A tokio task spawned on a one-thread runtime and awaited to completion.
    pub(crate) async_spawn_complete: Stat,
    /// An async task handed to martelli's event-loop pool and waited for from this thread:
    /// `Pool::submit_async` → `Future::wait`.
    pub(crate) event_loop_spawn_wait: Stat,
}

pub(crate) fn measure(ctx: &Ctx, notes: &mut Notes) -> Result<Creation, ProbeError> {
    let us = Unit::Micros;

    ctx.step("creation: thread spawn + join");
    let k = ctx.pick(100, 400);
    let thread_spawn_join = ctx.measure("creation.thread_spawn_join", us, || {
        per_op(k, us, || {
            std::thread::Builder::new()
                .spawn(|| {})
                .map_err(|e| ProbeError::Limit(format!("cannot start a thread: {e}")))?
                .join()
                .map_err(|_| ProbeError::Measure("an empty thread panicked".into()))
        })
    })?;

    ctx.step("creation: martelli thread pool");
    let k = ctx.pick(10, 100);
    let pool_start_shutdown = ctx.measure("creation.pool_start_shutdown", us, || {
        per_op(k, us, || {
            drop(Pool::threads(1).map_err(ProbeError::Pool)?);
            Ok::<_, ProbeError>(())
        })
    })?;
    let pool = Pool::threads(1).map_err(ProbeError::Pool)?;
    let k = ctx.pick(1000, 2000);
    let pool_submit_wait = ctx.measure("creation.pool_submit_wait", us, || {
        per_op(k, us, || {
            pool.submit(|| std::hint::black_box(1u64))
                .map_err(ProbeError::Pool)?
                .wait()
                .map(drop)
                .map_err(|e| ProbeError::Measure(format!("an empty task failed: {e}")))
        })
    })?;
    drop(pool);

    ctx.step("creation: processes");
    let k = ctx.pick(10, 30);
    let process_fork_exec = if std::path::Path::new(TRUE).exists() {
        Some(ctx.measure("creation.process_fork_exec", us, || {
            per_op(k, us, || {
                let mut cmd = Command::new(TRUE);
                cmd.stdin(Stdio::null()).stdout(Stdio::null());
                // SAFETY: the closure runs in the forked child before exec and does nothing, so it
                // calls no function that is unsafe after fork. Its presence makes the standard
                // library take its fork + exec path instead of posix_spawn.
                unsafe {
                    cmd.pre_exec(|| Ok(()));
                }
                run_true(&mut cmd)
            })
        })?)
    } else {
        notes.insert(
            "creation.process_fork_exec",
            format!("not available: no {TRUE}"),
        );
        None
    };
    let process_posix_spawn = if std::path::Path::new(TRUE).exists() {
        Some(ctx.measure("creation.process_posix_spawn", us, || {
            per_op(k, us, || {
                // Without pre_exec hooks, uid changes or groups, std's Command uses posix_spawn.
                let mut cmd = Command::new(TRUE);
                cmd.stdin(Stdio::null()).stdout(Stdio::null());
                run_true(&mut cmd)
            })
        })?)
    } else {
        notes.insert(
            "creation.process_posix_spawn",
            format!("not available: no {TRUE}"),
        );
        None
    };
    let k = ctx.pick(5, 15);
    let process_reexec_ready = ctx.measure("creation.process_reexec_ready", us, || {
        per_op(k, us, || {
            let mut child = ctx.helper.spawn_piped("idle", &[])?;
            let line = child.read_line().map_err(ProbeError::Io)?;
            if line.trim() != "ready" {
                return Err(ProbeError::Measure(format!("idle helper said {line:?}")));
            }
            child.stdin()?.flush().map_err(ProbeError::Io)?;
            drop(child);
            Ok(())
        })
    })?;
    // A martelli process pool of one worker: this binary re-executed, from spawn until its handshake
    // is answered (the pool's `build` returns then); the shutdown is not timed.
    let k = ctx.pick(3, 8);
    let handshake = ctx.measure("creation.process_worker_handshake", us, || {
        let mut total = std::time::Duration::ZERO;
        for _ in 0..k {
            let start = std::time::Instant::now();
            let pool = Pool::processes(1).map_err(ProbeError::Pool)?;
            total += start.elapsed();
            pool.shutdown(martelli::Shutdown::Wait);
        }
        Ok::<_, ProbeError>(super::stats::in_unit(total, us) / f64::from(k))
    });
    let process_worker_handshake = match handshake {
        Ok(stat) => Some(stat),
        Err(e) => {
            notes.insert(
                "creation.process_worker_handshake",
                format!("{NO_PROCESS_BACKEND}: {e}"),
            );
            None
        }
    };

    ctx.step("creation: async tasks");
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .map_err(ProbeError::Runtime)?;
    let k = ctx.pick(5_000, 20_000);
    let async_spawn_complete = ctx.measure("creation.async_spawn_complete", us, || {
        rt.block_on(async {
            let start = std::time::Instant::now();
            for _ in 0..k {
                tokio::spawn(async { std::hint::black_box(1u64) })
                    .await
                    .map_err(|e| ProbeError::Measure(format!("an empty async task failed: {e}")))?;
            }
            Ok::<_, ProbeError>(super::stats::in_unit(start.elapsed(), us) / f64::from(k))
        })
    })?;

    let pool = Pool::event_loop().map_err(ProbeError::Pool)?;
    let k = ctx.pick(1000, 2000);
    let event_loop_spawn_wait = ctx.measure("creation.event_loop_spawn_wait", us, || {
        per_op(k, us, || {
            pool.submit_async(async { std::hint::black_box(1u64) })
                .map_err(ProbeError::Pool)?
                .wait()
                .map(drop)
                .map_err(|e| ProbeError::Measure(format!("an empty async task failed: {e}")))
        })
    })?;
    drop(pool);

    Ok(Creation {
        thread_spawn_join,
        pool_start_shutdown,
        pool_submit_wait,
        process_fork_exec,
        process_posix_spawn,
        process_reexec_ready,
        process_worker_handshake,
        async_spawn_complete,
        event_loop_spawn_wait,
    })
}

fn run_true(cmd: &mut Command) -> Result<(), ProbeError> {
    let status = cmd.status().map_err(|e| ProbeError::spawn(TRUE, e))?;
    if status.success() {
        Ok(())
    } else {
        Err(ProbeError::Measure(format!("{TRUE} exited with {status}")))
    }
}
