//! Memory per unit: an idle thread, an idle process, a suspended async task.
//!
//! Each sample is taken in a fresh helper process: it reads its resident set, starts many idle units,
//! reads it again when all are parked, and reports the growth per unit.

use super::stats::{Stat, Unit};
use super::workload::{PerUnit, process_rss};
use super::{Ctx, ProbeError};
use serde::{Deserialize, Serialize};

/// Bytes per idle unit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Memory {
    /// Resident memory an idle thread adds (its touched stack pages and thread control block).
    pub(crate) thread_idle_rss: Stat,
    /// Resident set of an idle process of this binary: what a re-executed worker costs at rest.
    pub(crate) process_idle_rss: Stat,
    /// Resident memory a tokio task suspended on a wait adds.
    pub(crate) async_task_suspended: Stat,
    /// Resident memory a task on martelli's event-loop pool (`Pool::event_loop`, `Pool::submit_async`)
    /// suspended on a wait adds: tokio's task plus martelli's future, token and driver.
    pub(crate) event_loop_task_suspended: Stat,
    /// How many threads were parked per sample.
    pub(crate) threads_per_sample: u64,
    /// How many async tasks were parked per sample.
    pub(crate) tasks_per_sample: u64,
}

pub(crate) fn measure(ctx: &Ctx) -> Result<Memory, ProbeError> {
    let plan = ctx.plans.fresh;
    let bytes = Unit::Bytes;
    let threads = u64::from(ctx.pick(100, 400));
    let tasks = u64::from(ctx.pick(10_000, 50_000));
    let per_unit = |path: &str, mode: &str, n: u64| {
        ctx.row(path, || {
            plan.measure(bytes, || {
                let p: PerUnit = ctx.helper.run_json(mode, &[n.to_string()])?;
                Ok::<_, ProbeError>(p.rss)
            })
        })
    };

    ctx.step("memory: idle threads");
    let thread_idle_rss = per_unit("memory.thread_idle_rss", "mem-threads", threads)?;
    ctx.step("memory: idle processes");
    let process_idle_rss = ctx.row("memory.process_idle_rss", || {
        plan.measure(bytes, || {
            let mut child = ctx.helper.spawn_piped("idle", &[])?;
            child.read_line().map_err(ProbeError::Io)?;
            Ok::<_, ProbeError>(process_rss(child.child.id())? as f64)
        })
    })?;
    ctx.step("memory: suspended async tasks");
    let async_task_suspended = per_unit("memory.async_task_suspended", "mem-async", tasks)?;
    ctx.step("memory: suspended martelli event-loop tasks");
    let event_loop_task_suspended =
        per_unit("memory.event_loop_task_suspended", "mem-event-loop", tasks)?;
    Ok(Memory {
        thread_idle_rss,
        process_idle_rss,
        async_task_suspended,
        event_loop_task_suspended,
        threads_per_sample: threads,
        tasks_per_sample: tasks,
    })
}
