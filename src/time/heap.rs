//! `TimerHeap`: the loop's timers, an indexed binary min-heap keyed by
//! `(deadline, sequence)`.
//!
//! Arming and cancelling are O(log n) and cancelling really removes the entry
//! (no tombstones that pile up when a server arms and cancels one timeout per
//! request). The sequence number breaks ties, so timers with equal deadlines
//! fire in the order they were armed. Only the earliest deadline ever reaches
//! the kernel, as the timeout of the ring wait (SPEC §3a).

use std::time::Instant;

use slab::Slab;

/// Names one armed timer; stale keys (fired or cancelled) are ignored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TimerKey {
    index: usize,
    seq: u64,
}

struct Entry<A> {
    seq: u64,
    /// Where this entry sits in `heap`.
    pos: usize,
    action: A,
}

/// A min-heap of timers carrying actions of type `A`.
pub(crate) struct TimerHeap<A> {
    entries: Slab<Entry<A>>,
    /// `(deadline, seq, entry index)`; the heap order.
    heap: Vec<(Instant, u64, usize)>,
    next_seq: u64,
}

impl<A> Default for TimerHeap<A> {
    fn default() -> Self {
        TimerHeap {
            entries: Slab::new(),
            heap: Vec::new(),
            next_seq: 0,
        }
    }
}

impl<A> TimerHeap<A> {
    /// Arms a timer for `deadline`.
    pub(crate) fn insert(&mut self, deadline: Instant, action: A) -> TimerKey {
        self.next_seq += 1;
        let seq = self.next_seq;
        let pos = self.heap.len();
        let index = self.entries.insert(Entry { seq, pos, action });
        self.heap.push((deadline, seq, index));
        self.sift_up(pos);
        TimerKey { index, seq }
    }

    /// Disarms a timer; returns its action if it was still armed.
    pub(crate) fn remove(&mut self, key: TimerKey) -> Option<A> {
        let pos = self
            .entries
            .get(key.index)
            .filter(|e| e.seq == key.seq)?
            .pos;
        Some(self.remove_at(pos))
    }

    /// The action of an armed timer, to update it (e.g. a new waker).
    pub(crate) fn get_mut(&mut self, key: TimerKey) -> Option<&mut A> {
        self.entries
            .get_mut(key.index)
            .filter(|e| e.seq == key.seq)
            .map(|e| &mut e.action)
    }

    /// The earliest deadline, if any timer is armed.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.heap.first().map(|&(d, _, _)| d)
    }

    /// Removes and returns the earliest timer if its deadline is `<= now`.
    pub(crate) fn pop_expired(&mut self, now: Instant) -> Option<A> {
        match self.heap.first() {
            Some(&(d, _, _)) if d <= now => Some(self.remove_at(0)),
            _ => None,
        }
    }

    /// Number of armed timers.
    pub(crate) fn len(&self) -> usize {
        self.heap.len()
    }

    /// Removes every timer, returning their actions (for shutdown).
    pub(crate) fn drain(&mut self) -> Vec<A> {
        self.heap.clear();
        self.entries.drain().map(|e| e.action).collect()
    }

    fn remove_at(&mut self, pos: usize) -> A {
        let last = self.heap.len() - 1;
        self.swap(pos, last);
        let (_, _, index) = self.heap.pop().expect("heap not empty");
        if pos < self.heap.len() {
            // The entry moved into `pos` may belong above or below it.
            self.sift_up(pos);
            self.sift_down(pos);
        }
        self.entries.remove(index).action
    }

    fn less(&self, a: usize, b: usize) -> bool {
        let (da, sa, _) = self.heap[a];
        let (db, sb, _) = self.heap[b];
        (da, sa) < (db, sb)
    }

    fn swap(&mut self, a: usize, b: usize) {
        if a == b {
            return;
        }
        self.heap.swap(a, b);
        let ia = self.heap[a].2;
        let ib = self.heap[b].2;
        self.entries[ia].pos = a;
        self.entries[ib].pos = b;
    }

    fn sift_up(&mut self, mut pos: usize) {
        while pos > 0 {
            let parent = (pos - 1) / 2;
            if !self.less(pos, parent) {
                break;
            }
            self.swap(pos, parent);
            pos = parent;
        }
    }

    fn sift_down(&mut self, mut pos: usize) {
        let n = self.heap.len();
        loop {
            let left = 2 * pos + 1;
            if left >= n {
                break;
            }
            let right = left + 1;
            let child = if right < n && self.less(right, left) {
                right
            } else {
                left
            };
            if !self.less(child, pos) {
                break;
            }
            self.swap(pos, child);
            pos = child;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn pops_in_deadline_then_insertion_order() {
        let t0 = Instant::now();
        let mut h = TimerHeap::default();
        let at = |ms| t0 + Duration::from_millis(ms);
        h.insert(at(30), "c");
        h.insert(at(10), "a1");
        let b = h.insert(at(20), "b");
        h.insert(at(10), "a2");
        h.insert(at(10), "a3");
        assert_eq!(h.remove(b), Some("b"));
        assert_eq!(h.remove(b), None, "a stale key removes nothing");
        let mut out = Vec::new();
        while let Some(a) = h.pop_expired(at(100)) {
            out.push(a);
        }
        assert_eq!(out, ["a1", "a2", "a3", "c"]);
    }

    #[test]
    fn random_removals_keep_heap_order() {
        let t0 = Instant::now();
        let mut h = TimerHeap::default();
        let mut keys = Vec::new();
        // A cheap deterministic shuffle of deadlines.
        for i in 0..2000u64 {
            let ms = (i * 7919) % 1000;
            keys.push((h.insert(t0 + Duration::from_millis(ms), ms), ms));
        }
        for (k, _) in keys.iter().step_by(3) {
            assert!(h.remove(*k).is_some());
        }
        let mut last = 0;
        let mut n = 0;
        while let Some(ms) = h.pop_expired(t0 + Duration::from_secs(5)) {
            assert!(ms >= last);
            last = ms;
            n += 1;
        }
        assert_eq!(n, 2000 - keys.iter().step_by(3).count());
    }
}
