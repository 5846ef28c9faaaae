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
    /// Resident memory a task on martelli's event-loop pool (`Pool::event_loop`, `Pool::spawn`)
    /// suspended on a wait adds: tokio's task plus martelli's future, token and driver.
    pub(crate) event_loop_task_suspended: Stat,
    /// How many threads were parked per sample.
    pub(crate) threads_per_sample: u64,
    /// How many async tasks were parked per sample.
    pub(crate) tasks_per_sample: u64,
}

pub(crate) fn measure(ctx: &Ctx) -> Result<Memory, ProbeError> {
    let reps = ctx.pick(3, 5);
    let threads = u64::from(ctx.pick(100, 400));
    let tasks = u64::from(ctx.pick(10_000, 50_000));

    ctx.step("memory: idle threads");
    let mut per_thread: Vec<PerUnit> = Vec::new();
    for _ in 0..reps {
        per_thread.push(ctx.helper.run_json("mem-threads", &[threads.to_string()])?);
    }
    ctx.step("memory: idle processes");
    let mut per_process = Vec::new();
    for _ in 0..reps {
        let mut child = ctx.helper.spawn_piped("idle", &[])?;
        child.read_line().map_err(ProbeError::Io)?;
        per_process.push(process_rss(child.child.id())? as f64);
    }
    ctx.step("memory: suspended async tasks");
    let mut per_task: Vec<PerUnit> = Vec::new();
    for _ in 0..reps {
        per_task.push(ctx.helper.run_json("mem-async", &[tasks.to_string()])?);
    }
    ctx.step("memory: suspended martelli event-loop tasks");
    let mut per_loop_task: Vec<PerUnit> = Vec::new();
    for _ in 0..reps {
        per_loop_task.push(
            ctx.helper
                .run_json("mem-event-loop", &[tasks.to_string()])?,
        );
    }
    let stat = |samples: Vec<f64>| {
        Stat::from_samples(&samples, Unit::Bytes)
            .ok_or_else(|| ProbeError::Measure("a memory helper reported no usable value".into()))
    };
    Ok(Memory {
        thread_idle_rss: stat(per_thread.iter().map(|p| p.rss).collect())?,
        process_idle_rss: stat(per_process)?,
        async_task_suspended: stat(per_task.iter().map(|p| p.rss).collect())?,
        event_loop_task_suspended: stat(per_loop_task.iter().map(|p| p.rss).collect())?,
        threads_per_sample: threads,
        tasks_per_sample: tasks,
    })
}
