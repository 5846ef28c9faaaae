//! How long each task takes on a slot, by name: what decides how much to pipeline (rule 2 of the
//! [module docs](super)).
//!
//! 1. A task is known once it has run on this slot; until then it counts as long.
//! 2. A longer run raises the estimate at once; shorter runs lower it slowly (an eighth of the way
//!    each time). Pipelining behind a task that turns out long is the costly mistake, so the
//!    estimate errs long.
//! 3. A chunk of a map (`RunBatch`) is estimated apart from single calls of the same task.

use crate::codec;
use std::collections::HashMap;
use std::time::Duration;

/// Estimates below this count as this: a task always costs something.
const FLOOR: Duration = Duration::from_micros(1);

#[derive(Debug, Default)]
pub(super) struct Estimates {
    one: HashMap<Box<str>, Duration, NameHash>,
    batch: HashMap<Box<str>, Duration, NameHash>,
}

/// The hash of a task's name: looked up two or three times per task (admit, pipelining, answer),
/// where SipHash cost about 50 instructions a time. The names are the program's own registered
/// tasks, read from frames this pool wrote, so a hash that an adversary could collide buys nothing
/// to guard against here: rustc's `FxHasher` (a multiply-rotate a word at a time).
type NameHash = rustc_hash::FxBuildHasher;

impl Estimates {
    /// The estimate for the task a `Run`, `RunCaptured` or `RunBatch` frame carries; `None` when
    /// unknown (rule 1).
    pub(super) fn of(&self, frame: &[u8]) -> Option<Duration> {
        let (batch, name) = codec::task_of(frame)?;
        let map = if batch { &self.batch } else { &self.one };
        map.get(name).copied()
    }

    /// Learns that the task in `frame` ran for `took` (rule 2).
    pub(super) fn learn(&mut self, frame: &[u8], took: Duration) {
        let Some((batch, name)) = codec::task_of(frame) else {
            return;
        };
        let took = took.max(FLOOR);
        let map = if batch {
            &mut self.batch
        } else {
            &mut self.one
        };
        match map.get_mut(name) {
            Some(estimate) if took >= *estimate => *estimate = took,
            Some(estimate) => *estimate = (*estimate * 7 + took) / 8,
            None => {
                map.insert(name.into(), took);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Header;

    fn frame(header: &Header<'_>) -> Vec<u8> {
        codec::frame::<()>(header, None, 1024).expect("encodes")
    }

    #[test]
    fn unknown_then_up_at_once_and_down_slowly() {
        let mut e = Estimates::default();
        let run = frame(&Header::Run { id: 1, task: "t" });
        let batch = frame(&Header::RunBatch { id: 2, task: "t" });
        let captured = frame(&Header::RunCaptured { id: 3, task: "t" });
        assert_eq!(e.of(&run), None);
        e.learn(&run, Duration::from_micros(8));
        assert_eq!(e.of(&run), Some(Duration::from_micros(8)));
        assert_eq!(
            e.of(&captured),
            Some(Duration::from_micros(8)),
            "one call, captured or not"
        );
        assert_eq!(e.of(&batch), None, "chunks are estimated apart");
        e.learn(&run, Duration::from_millis(50));
        assert_eq!(e.of(&run), Some(Duration::from_millis(50)));
        e.learn(&run, Duration::ZERO);
        let down = e.of(&run).expect("known");
        assert!(down < Duration::from_millis(50) && down > Duration::from_millis(40));
        assert_eq!(e.of(&frame(&Header::Cancel { id: 1 })), None);
    }

    #[test]
    fn names_that_share_their_first_word_are_kept_apart() {
        let mut e = Estimates::default();
        let names = ["tasks::a", "tasks::ab", "tasks::a\0", "tasks::", "t", ""];
        for (i, name) in names.iter().enumerate() {
            let run = frame(&Header::Run { id: 1, task: name });
            e.learn(&run, Duration::from_micros(10 + i as u64));
        }
        for (i, name) in names.iter().enumerate() {
            let run = frame(&Header::Run { id: 1, task: name });
            assert_eq!(
                e.of(&run),
                Some(Duration::from_micros(10 + i as u64)),
                "{name:?}"
            );
        }
    }
}
