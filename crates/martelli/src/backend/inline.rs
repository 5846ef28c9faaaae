//! The inline backend: the 1-core tier. Each task runs on the caller's thread inside `submit`, so a
//! program written against the pool API runs sequentially, with no threads at all — the baseline every
//! other tier is measured against, and the easiest way to debug a task.

use super::{Admission, Backend, Rejected};
use crate::cell::CellJob;
use crate::job::Job;
use crate::options::{Priority, Shutdown};
use crate::sync::{AtomicBool, Ordering};

#[derive(Debug, Default)]
pub(crate) struct Inline {
    shut_down: AtomicBool,
}

impl Backend for Inline {
    fn kind(&self) -> &'static str {
        "inline"
    }

    fn workers(&self) -> usize {
        1
    }

    fn execute(&self, job: Job, _admission: Admission) -> Result<(), Rejected> {
        if self.shut_down.load(Ordering::Acquire) {
            return Err(Rejected::ShutDown(job));
        }
        job.run();
        Ok(())
    }

    fn execute_cell(
        &self,
        job: CellJob,
        _priority: Priority,
        _admission: Admission,
    ) -> Result<(), Rejected<CellJob>> {
        if self.shut_down.load(Ordering::Acquire) {
            return Err(Rejected::ShutDown(job));
        }
        job.run();
        Ok(())
    }

    fn queued(&self) -> usize {
        0
    }

    fn help_one(&self) -> bool {
        false
    }

    fn hosts_daemons(&self) -> Result<(), &'static str> {
        Err("on the caller's thread")
    }

    fn shutdown(&self, _mode: Shutdown) {
        self.shut_down.store(true, Ordering::Release);
    }

    fn is_shut_down(&self) -> bool {
        self.shut_down.load(Ordering::Acquire)
    }
}
