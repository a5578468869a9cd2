//! `TimerHeap`: the loop's timers, a 4-ary min-heap keyed by
//! `(deadline, sequence)`, with lazy removal.
//!
//! Arming is O(log n) and touches only the heap array (contiguous, four
//! children per node: half the depth of a binary heap). Cancelling is O(1):
//! the timer leaves the slab at once and its heap entry becomes a tombstone,
//! skipped when it reaches the top. Tombstones never pile up: when they
//! outnumber live timers the heap is rebuilt in O(n), so a server that arms
//! and cancels one timeout per request pays amortized O(1) per cancel and
//! bounded memory. The sequence number breaks ties, so timers with equal
//! deadlines fire in the order they were armed. Only the earliest deadline
//! ever reaches the kernel, as the timeout of the ring wait (SPEC §3a).

use std::time::Instant;

use slab::Slab;

/// Children per heap node.
const ARITY: usize = 4;

/// Names one armed timer; stale keys (fired or cancelled) are ignored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TimerKey {
    index: usize,
    seq: u64,
}

struct Entry<A> {
    seq: u64,
    action: A,
}

/// A min-heap of timers carrying actions of type `A`.
pub(crate) struct TimerHeap<A> {
    entries: Slab<Entry<A>>,
    /// `(deadline, seq, entry index)` in heap order; an entry whose slab
    /// slot is gone or holds another `seq` is a tombstone.
    heap: Vec<(Instant, u64, usize)>,
    tombstones: usize,
    next_seq: u64,
}

impl<A> Default for TimerHeap<A> {
    fn default() -> Self {
        TimerHeap {
            entries: Slab::new(),
            heap: Vec::new(),
            tombstones: 0,
            next_seq: 0,
        }
    }
}

impl<A> TimerHeap<A> {
    /// Arms a timer for `deadline`.
    pub(crate) fn insert(&mut self, deadline: Instant, action: A) -> TimerKey {
        self.next_seq += 1;
        let seq = self.next_seq;
        let index = self.entries.insert(Entry { seq, action });
        self.heap.push((deadline, seq, index));
        self.sift_up(self.heap.len() - 1);
        TimerKey { index, seq }
    }

    /// Disarms a timer; returns its action if it was still armed.
    pub(crate) fn remove(&mut self, key: TimerKey) -> Option<A> {
        self.entries.get(key.index).filter(|e| e.seq == key.seq)?;
        let action = self.entries.remove(key.index).action;
        self.tombstones += 1;
        if self.tombstones > 64 && self.tombstones > self.entries.len() {
            self.compact();
        }
        Some(action)
    }

    /// The action of an armed timer, to update it (e.g. a new waker).
    pub(crate) fn get_mut(&mut self, key: TimerKey) -> Option<&mut A> {
        self.entries
            .get_mut(key.index)
            .filter(|e| e.seq == key.seq)
            .map(|e| &mut e.action)
    }

    /// The earliest deadline, if any timer is armed.
    pub(crate) fn next_deadline(&mut self) -> Option<Instant> {
        self.drop_dead_top();
        self.heap.first().map(|&(d, _, _)| d)
    }

    /// Removes and returns the earliest timer if its deadline is `<= now`.
    pub(crate) fn pop_expired(&mut self, now: Instant) -> Option<A> {
        self.drop_dead_top();
        match self.heap.first() {
            Some(&(d, _, index)) if d <= now => {
                self.pop_top();
                Some(self.entries.remove(index).action)
            }
            _ => None,
        }
    }

    /// Number of armed timers.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Removes every timer, returning their actions (for shutdown).
    pub(crate) fn drain(&mut self) -> Vec<A> {
        self.heap.clear();
        self.tombstones = 0;
        self.entries.drain().map(|e| e.action).collect()
    }

    fn is_live(&self, seq: u64, index: usize) -> bool {
        self.entries.get(index).is_some_and(|e| e.seq == seq)
    }

    /// Pops tombstones off the top, so the top is a live timer (or none).
    fn drop_dead_top(&mut self) {
        while let Some(&(_, seq, index)) = self.heap.first() {
            if self.is_live(seq, index) {
                break;
            }
            self.pop_top();
            self.tombstones -= 1;
        }
    }

    fn pop_top(&mut self) {
        let last = self.heap.len() - 1;
        self.heap.swap(0, last);
        self.heap.pop();
        if !self.heap.is_empty() {
            self.sift_down(0);
        }
    }

    /// Drops every tombstone and restores heap order, in O(n).
    fn compact(&mut self) {
        let entries = &self.entries;
        self.heap
            .retain(|&(_, seq, index)| entries.get(index).is_some_and(|e| e.seq == seq));
        self.tombstones = 0;
        if self.heap.len() > 1 {
            for pos in (0..=(self.heap.len() - 2) / ARITY).rev() {
                self.sift_down(pos);
            }
        }
    }

    fn key_of(&self, pos: usize) -> (Instant, u64) {
        let (d, s, _) = self.heap[pos];
        (d, s)
    }

    fn sift_up(&mut self, mut pos: usize) {
        while pos > 0 {
            let parent = (pos - 1) / ARITY;
            if self.key_of(pos) >= self.key_of(parent) {
                break;
            }
            self.heap.swap(pos, parent);
            pos = parent;
        }
    }

    fn sift_down(&mut self, mut pos: usize) {
        let n = self.heap.len();
        loop {
            let first = ARITY * pos + 1;
            if first >= n {
                break;
            }
            let mut child = first;
            for c in first + 1..(first + ARITY).min(n) {
                if self.key_of(c) < self.key_of(child) {
                    child = c;
                }
            }
            if self.key_of(child) >= self.key_of(pos) {
                break;
            }
            self.heap.swap(pos, child);
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

    #[test]
    fn tombstones_are_compacted_away() {
        let t0 = Instant::now();
        let mut h = TimerHeap::default();
        // A server's pattern: arm a far timeout, cancel it soon after.
        for i in 0..100_000u64 {
            let k = h.insert(t0 + Duration::from_secs(30) + Duration::from_nanos(i), i);
            assert_eq!(h.remove(k), Some(i));
        }
        assert_eq!(h.len(), 0);
        assert!(h.heap.len() <= 130, "tombstones left: {}", h.heap.len());
        assert_eq!(h.next_deadline(), None);
        let k = h.insert(t0, 7);
        assert_eq!(h.next_deadline(), Some(t0));
        assert_eq!(h.pop_expired(t0), Some(7));
        assert_eq!(h.remove(k), None);
    }
}
