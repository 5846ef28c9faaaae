//! The running median of the successful jobs' runtimes, for `--timeout N%`.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Duration;

/// The median of the values pushed so far: the lower of the two middle ones for an even count, as
/// GNU parallel takes it. Two heaps: the lower half (largest on top) holds as many values as the
/// upper half (smallest on top), or one more.
#[derive(Debug, Default)]
pub(super) struct RunningMedian {
    lower: BinaryHeap<Duration>,
    upper: BinaryHeap<Reverse<Duration>>,
}

impl RunningMedian {
    pub(super) fn push(&mut self, value: Duration) {
        match self.lower.peek() {
            Some(&top) if value > top => self.upper.push(Reverse(value)),
            _ => self.lower.push(value),
        }
        if self.lower.len() > self.upper.len() + 1 {
            if let Some(top) = self.lower.pop() {
                self.upper.push(Reverse(top));
            }
        } else if self.upper.len() > self.lower.len() {
            if let Some(Reverse(bottom)) = self.upper.pop() {
                self.lower.push(bottom);
            }
        }
    }

    /// The median; `None` before any value.
    pub(super) fn median(&self) -> Option<Duration> {
        self.lower.peek().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn median_of_a_few() {
        let mut m = RunningMedian::default();
        assert_eq!(m.median(), None);
        let ms = Duration::from_millis;
        for (value, median) in [(5, 5), (1, 1), (9, 5), (7, 5), (8, 7)] {
            m.push(ms(value));
            assert_eq!(m.median(), Some(ms(median)), "after {value}");
        }
    }

    proptest! {
        #[test]
        fn matches_sorting(values in prop::collection::vec(0u64..1000, 1..200)) {
            let mut m = RunningMedian::default();
            for (i, &v) in values.iter().enumerate() {
                m.push(Duration::from_millis(v));
                let mut sorted = values[..=i].to_vec();
                sorted.sort_unstable();
                prop_assert_eq!(m.median(), Some(Duration::from_millis(sorted[i / 2])));
            }
        }
    }
}
