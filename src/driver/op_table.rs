//! `OpTable`: the operations the kernel currently owns, keyed by `user_data`.
//!
//! Every SQE ringio submits for a caller carries the key of a slot here as its
//! `user_data`. The slot outlives the future that asked for the operation: if
//! that future is dropped (or its task cancelled) before the completion
//! arrives, the slot keeps the operation's buffers and other owned data alive
//! until the CQE is reaped. That is the rule that keeps the kernel from writing
//! into freed memory (tokio#8255, compio#942 in `peers.md`).

use std::any::Any;
use std::collections::VecDeque;
use std::task::Waker;

use slab::Slab;

/// Called with each completion of an operation nobody awaits any more (its
/// result, its CQE flags, and the op's data when the op table holds it), so
/// that a resource the kernel created or handed over for it (an accepted or
/// opened fd, a provided buffer with its bytes) is released or kept
/// instead of leaked. The op's data, when given, is the `D` of its `Op<D>`
/// boxed as `Any`.
pub(crate) type OrphanCleanup = fn(result: i32, flags: u32, data: Option<&mut dyn Any>);

/// Names one operation: its slab index and a sequence number, so a stale
/// key never reaches a later op in a reused slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct OpKey {
    pub(crate) index: usize,
    seq: u64,
}

/// Bits of `user_data` that hold the slot index.
const INDEX_BITS: u32 = 32;
const INDEX_MASK: u64 = (1 << INDEX_BITS) - 1;
/// The generation's bits above them: 29, up to bit 60 (bits 61 and up tag
/// the driver's own entries).
const GEN_MASK: u64 = (1 << 29) - 1;

impl OpKey {
    /// A key that names no operation (seq 0 is never issued).
    pub(crate) const DONE: OpKey = OpKey {
        index: usize::MAX,
        seq: 0,
    };

    /// The SQE's `user_data`: the slot index, and the low bits of the
    /// sequence number as a generation, so that a completion or a cancel
    /// can only ever meet the op it was meant for.
    pub(crate) fn user_data(self) -> u64 {
        debug_assert!((self.index as u64) <= INDEX_MASK);
        (self.index as u64 & INDEX_MASK) | ((self.seq & GEN_MASK) << INDEX_BITS)
    }
}

/// The completions of one op not yet taken by its future, oldest first.
///
/// A plain op has exactly one; keeping it inline spares an allocation per
/// op (a `VecDeque` allocates on its first push). Only multishot ops spill
/// into `rest`, boxed so that the slot of every op in flight (10,000 idle
/// connections each have one) stays small.
#[derive(Default)]
pub(crate) struct Completions {
    first: Option<(i32, u32)>,
    // One word instead of a VecDeque's four, in every slot.
    #[allow(clippy::box_collection)]
    rest: Option<Box<VecDeque<(i32, u32)>>>,
}

impl Completions {
    fn rest_is_empty(&self) -> bool {
        self.rest.as_ref().is_none_or(|r| r.is_empty())
    }

    pub(crate) fn push_back(&mut self, c: (i32, u32)) {
        if self.first.is_none() && self.rest_is_empty() {
            self.first = Some(c);
        } else {
            self.rest.get_or_insert_default().push_back(c);
        }
    }

    pub(crate) fn pop_front(&mut self) -> Option<(i32, u32)> {
        self.first
            .take()
            .or_else(|| self.rest.as_mut().and_then(|r| r.pop_front()))
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.first.is_none() && self.rest_is_empty()
    }

    pub(crate) fn len(&self) -> usize {
        usize::from(self.first.is_some()) + self.rest.as_ref().map_or(0, |r| r.len())
    }

    pub(crate) fn clear(&mut self) {
        self.first = None;
        self.rest = None;
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &(i32, u32)> {
        self.first
            .iter()
            .chain(self.rest.iter().flat_map(|r| r.iter()))
    }
}

/// One in-flight operation.
pub(crate) struct OpSlot {
    seq: u64,
    /// The task (or other waiter) to wake on completion. It may be a
    /// loop-local waker (`task::raw::loop_local_waker`): it is woken and
    /// dropped on the loop's thread only, never handed elsewhere.
    pub(crate) waker: Option<Waker>,
    /// Completions not yet taken by the future: `(res, flags)`. One for a
    /// plain op, several for a multishot op.
    pub(crate) results: Completions,
    /// The kernel has posted the op's final CQE (no `IORING_CQE_F_MORE`).
    pub(crate) finished: bool,
    /// An `IORING_OP_ASYNC_CANCEL` for this op has been queued.
    pub(crate) cancel_sent: bool,
    /// The future was dropped; the slot is removed when the final CQE arrives.
    pub(crate) orphaned: bool,
    /// Data the kernel may still touch, parked here when the future dropped.
    pub(crate) parked: Option<Box<dyn Any>>,
    /// What to do with a successful result that nobody will read.
    pub(crate) cleanup: Option<OrphanCleanup>,
    /// The driver's submission generation when the SQE was queued: while
    /// it is still the current one, the SQE may not have reached the kernel.
    pub(crate) queued_gen: u64,
    /// For a multishot op: how many unread completions it may pile up
    /// before it is cancelled (0: no bound). The kernel then keeps the
    /// rest where they come from (a listen backlog), and the op's owner
    /// arms a new one once it has read what is here.
    pub(crate) max_queued: u32,
}

impl OpSlot {
    /// Drops the completions nobody will read, running the orphan cleanup
    /// on the successful ones (closing an accepted or opened fd).
    /// `data` is the op's data if the caller has it at hand (else the
    /// parked data, if any).
    pub(crate) fn release_unread(&mut self, mut data: Option<&mut dyn Any>) {
        if let Some(cleanup) = self.cleanup {
            for &(res, flags) in self.results.iter() {
                let d = match data.as_deref_mut() {
                    Some(d) => Some(d),
                    None => self.parked.as_deref_mut(),
                };
                cleanup(res, flags, d);
            }
        }
        self.results.clear();
    }
}

/// The slab of in-flight operations.
#[derive(Default)]
pub(crate) struct OpTable {
    slots: Slab<OpSlot>,
    next_seq: u64,
}

impl OpTable {
    pub(crate) fn insert(&mut self, cleanup: Option<OrphanCleanup>, queued_gen: u64) -> OpKey {
        self.next_seq += 1;
        let seq = self.next_seq;
        let index = self.slots.insert(OpSlot {
            seq,
            waker: None,
            results: Completions::default(),
            finished: false,
            cancel_sent: false,
            orphaned: false,
            parked: None,
            cleanup,
            queued_gen,
            max_queued: 0,
        });
        OpKey { index, seq }
    }

    pub(crate) fn get_mut(&mut self, key: OpKey) -> Option<&mut OpSlot> {
        self.slots.get_mut(key.index).filter(|s| s.seq == key.seq)
    }

    pub(crate) fn remove(&mut self, key: OpKey) {
        if self.get_mut(key).is_some() {
            self.slots.remove(key.index);
        }
    }

    /// Number of operations the kernel still owns (or whose result is unread).
    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }

    /// Keys of every slot, for shutdown.
    pub(crate) fn keys(&self) -> Vec<OpKey> {
        self.slots
            .iter()
            .map(|(index, s)| OpKey { index, seq: s.seq })
            .collect()
    }

    /// Records the CQE of the op `user_data` names (`Err` if no slot holds
    /// that op: a stale completion). Returns the waker to wake, if any. An
    /// orphaned slot is freed on its final CQE; its parked data goes to
    /// `dead`, for the loop to drop once it no longer borrows the driver
    /// (the data's own `Drop` may use the loop). A multishot op that now
    /// holds as many unread completions as its bound allows goes to
    /// `over_bound`, to be cancelled.
    pub(crate) fn complete(
        &mut self,
        user_data: u64,
        res: i32,
        flags: u32,
        dead: &mut Vec<Box<dyn Any>>,
        over_bound: &mut Vec<OpKey>,
    ) -> Result<Option<Waker>, ()> {
        let more = io_uring::cqueue::more(flags);
        let index = (user_data & INDEX_MASK) as usize;
        let slot = match self.slots.get_mut(index) {
            Some(slot) if (slot.seq & GEN_MASK) == (user_data >> INDEX_BITS) & GEN_MASK => slot,
            _ => return Err(()),
        };
        if slot.orphaned {
            if let Some(cleanup) = slot.cleanup {
                cleanup(res, flags, slot.parked.as_deref_mut());
            }
            if !more {
                // The kernel is done with the parked buffers: free them soon.
                if let Some(data) = self.slots.remove(index).parked {
                    dead.push(data);
                }
            }
            return Ok(None);
        }
        slot.results.push_back((res, flags));
        if !more {
            slot.finished = true;
        } else if slot.max_queued > 0
            && !slot.cancel_sent
            && slot.results.len() >= slot.max_queued as usize
        {
            over_bound.push(OpKey {
                index,
                seq: slot.seq,
            });
        }
        Ok(slot.waker.take())
    }
}
