//! Where a queue keeps its items: the three orderings behind one small enum.

use std::cmp::Ordering as CmpOrdering;
use std::collections::BinaryHeap;

/// The order items leave a queue in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Order {
    /// First in, first out (Python's `Queue`).
    #[default]
    Fifo,
    /// Last in, first out (Python's `LifoQueue`).
    Lifo,
    /// Smallest first, first in first out among equals (Python's `PriorityQueue`, which is a min-heap;
    /// wrap items in [`std::cmp::Reverse`] for largest first).
    Priority,
}

/// A priority store, type-erased so that only the priority ordering needs `T: Ord`.
pub(super) trait Heap<T>: Send {
    fn push(&mut self, item: T);
    fn pop(&mut self) -> Option<T>;
    fn len(&self) -> usize;
    fn drain(&mut self) -> Vec<T>;
}

/// An item and its arrival number: the heap's order is the item's, then arrival (FIFO among equals).
struct Ranked<T> {
    item: T,
    seq: u64,
}

impl<T: Ord> PartialEq for Ranked<T> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == CmpOrdering::Equal
    }
}

impl<T: Ord> Eq for Ranked<T> {}

impl<T: Ord> PartialOrd for Ranked<T> {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}

impl<T: Ord> Ord for Ranked<T> {
    /// Reversed, because `BinaryHeap` pops the greatest and the queue pops the smallest.
    fn cmp(&self, other: &Self) -> CmpOrdering {
        other
            .item
            .cmp(&self.item)
            .then_with(|| other.seq.cmp(&self.seq))
    }
}

struct MinHeap<T> {
    heap: BinaryHeap<Ranked<T>>,
    next_seq: u64,
}

impl<T: Ord + Send> Heap<T> for MinHeap<T> {
    fn push(&mut self, item: T) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.heap.push(Ranked { item, seq });
    }

    fn pop(&mut self) -> Option<T> {
        self.heap.pop().map(|ranked| ranked.item)
    }

    fn len(&self) -> usize {
        self.heap.len()
    }

    fn drain(&mut self) -> Vec<T> {
        let mut items = Vec::with_capacity(self.heap.len());
        while let Some(ranked) = self.heap.pop() {
            items.push(ranked.item);
        }
        items
    }
}

/// The locked flavour's store (FIFO queues use a channel instead).
pub(super) enum Store<T> {
    Lifo(Vec<T>),
    Priority(Box<dyn Heap<T>>),
}

impl<T> Store<T> {
    pub(super) fn lifo() -> Self {
        Store::Lifo(Vec::new())
    }

    pub(super) fn priority() -> Self
    where
        T: Ord + Send + 'static,
    {
        Store::Priority(Box::new(MinHeap {
            heap: BinaryHeap::new(),
            next_seq: 0,
        }))
    }

    #[inline]
    pub(super) fn push(&mut self, item: T) {
        match self {
            Store::Lifo(s) => s.push(item),
            Store::Priority(h) => h.push(item),
        }
    }

    #[inline]
    pub(super) fn pop(&mut self) -> Option<T> {
        match self {
            Store::Lifo(s) => s.pop(),
            Store::Priority(h) => h.pop(),
        }
    }

    #[inline]
    pub(super) fn len(&self) -> usize {
        match self {
            Store::Lifo(s) => s.len(),
            Store::Priority(h) => h.len(),
        }
    }

    /// Removes every item, in the order gets would have returned them.
    pub(super) fn drain(&mut self) -> Vec<T> {
        match self {
            Store::Lifo(s) => s.drain(..).rev().collect(),
            Store::Priority(h) => h.drain(),
        }
    }

    pub(super) fn order(&self) -> Order {
        match self {
            Store::Lifo(_) => Order::Lifo,
            Store::Priority(_) => Order::Priority,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain_by_pop<T>(mut store: Store<T>, items: impl IntoIterator<Item = T>) -> Vec<T> {
        for item in items {
            store.push(item);
        }
        std::iter::from_fn(|| store.pop()).collect()
    }

    #[test]
    fn orders() {
        assert_eq!(drain_by_pop(Store::lifo(), [3, 1, 2]), [2, 1, 3]);
        assert_eq!(drain_by_pop(Store::priority(), [3, 1, 2]), [1, 2, 3]);
    }

    #[test]
    fn priority_is_fifo_among_equals() {
        // Items compare by their first field only, so arrival order decides among equals.
        #[derive(Debug, PartialEq, Eq)]
        struct Job(u8, &'static str);
        impl PartialOrd for Job {
            fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
                Some(self.cmp(other))
            }
        }
        impl Ord for Job {
            fn cmp(&self, other: &Self) -> CmpOrdering {
                self.0.cmp(&other.0)
            }
        }
        let out = drain_by_pop(
            Store::priority(),
            [Job(2, "a"), Job(1, "b"), Job(2, "c"), Job(1, "d")],
        );
        let names: Vec<_> = out.iter().map(|j| j.1).collect();
        assert_eq!(names, ["b", "d", "a", "c"]);
    }

    #[test]
    fn drain_matches_pop_order() {
        for make in [Store::lifo, Store::priority] {
            let mut a = make();
            let mut b = make();
            for x in [5, 3, 9, 1] {
                a.push(x);
                b.push(x);
            }
            let popped: Vec<_> = std::iter::from_fn(|| a.pop()).collect();
            assert_eq!(b.drain(), popped);
            assert_eq!(b.len(), 0);
        }
    }
}
