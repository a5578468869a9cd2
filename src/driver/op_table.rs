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

/// Names one operation: its slab index and its generation (the low bits of
/// a sequence number), so a stale key never reaches a later op in a
/// reused slot. Eight bytes: every op future in every parked task holds one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct OpKey {
    index: u32,
    generation: u32,
}

/// Bits of `user_data` that hold the slot index.
const INDEX_BITS: u32 = 32;
const INDEX_MASK: u64 = (1 << INDEX_BITS) - 1;
/// The generation's bits above them: 28, up to bit 59 (bits 61 and up tag
/// the driver's own entries). The slot keeps the same 28 bits.
const GEN_BITS: u32 = 28;
const GEN_MASK: u64 = (1 << GEN_BITS) - 1;

impl OpKey {
    /// A key that names no operation (no slot has this index).
    pub(crate) const DONE: OpKey = OpKey {
        index: u32::MAX,
        generation: 0,
    };

    /// Whether this is [`OpKey::DONE`]: its index alone says so (no slot
    /// has it), one compare where `==` makes two.
    #[inline]
    pub(crate) fn is_done(self) -> bool {
        self.index == u32::MAX
    }

    /// The SQE's `user_data`: the slot index, and the low bits of the
    /// sequence number as a generation, so that a completion or a cancel
    /// can only ever meet the op it was meant for.
    pub(crate) fn user_data(self) -> u64 {
        u64::from(self.index) | (u64::from(self.generation) << INDEX_BITS)
    }

    fn new(index: usize, generation: u32) -> OpKey {
        // A slab of 2^32 ops in flight would need far more memory than a
        // ring can have ops (the kernel caps a ring's in-flight count).
        let index = u32::try_from(index).expect("fewer than 2^32 ops in flight");
        OpKey { index, generation }
    }
}

/// A slot's generation and state bits in one word: the low 28 bits are the
/// generation, then three flags, and the top bit is always set, so the
/// word is never zero and a vacant slab entry fits in the slot's niche.
#[derive(Clone, Copy)]
struct GenFlags(std::num::NonZeroU32);

/// The kernel has posted the op's final CQE (no `IORING_CQE_F_MORE`).
const FINISHED: u32 = 1 << GEN_BITS;
/// An `IORING_OP_ASYNC_CANCEL` for this op has been queued.
const CANCEL_SENT: u32 = 1 << (GEN_BITS + 1);
/// The future was dropped; the slot is removed when the final CQE arrives.
const ORPHANED: u32 = 1 << (GEN_BITS + 2);
/// Always set: keeps the word non-zero.
const MARK: u32 = 1 << 31;

impl GenFlags {
    fn new(generation: u32) -> GenFlags {
        GenFlags(std::num::NonZeroU32::new(generation | MARK).expect("MARK is set"))
    }
    fn generation(self) -> u32 {
        self.0.get() & GEN_MASK as u32
    }
    fn has(self, flag: u32) -> bool {
        self.0.get() & flag != 0
    }
    fn set(&mut self, flag: u32) {
        *self = GenFlags(self.0 | flag);
    }
}

/// `res` of the inline completion when there is none: no CQE result is
/// this low (errors are `-errno`, at least -4095).
const NO_RESULT: i32 = i32::MIN;

/// The rarely used part of a slot, boxed on first use: further completions
/// of a multishot op, data parked by a dropped future, and a multishot
/// op's bound. A plain op in flight never allocates it, so every slot (one
/// per idle connection, 10,000 connections) stays at 48 bytes.
#[derive(Default)]
struct OpCold {
    rest: VecDeque<(i32, u32)>,
    parked: Option<Box<dyn Any>>,
    max_queued: u32,
}

/// One in-flight operation.
pub(crate) struct OpSlot {
    /// The task (or other waiter) to wake on completion. It may be a
    /// loop-local waker (`task::raw::loop_local_waker`): it is woken and
    /// dropped on the loop's thread only, never handed elsewhere.
    waker: Option<Waker>,
    /// The oldest completion not yet taken by the future, `(res, flags)`,
    /// or `NO_RESULT`; a multishot op queues the later ones in `cold`.
    first: (i32, u32),
    gen_flags: GenFlags,
    /// The low bits of the driver's submission generation when the SQE was
    /// queued: while they are still the current one's, the SQE may not
    /// have reached the kernel. (A false match after 2^32 generations only
    /// costs an early `io_uring_enter`.)
    queued_gen: u32,
    /// What to do with a successful result that nobody will read.
    cleanup: Option<OrphanCleanup>,
    cold: Option<Box<OpCold>>,
}

impl OpSlot {
    fn rest_is_empty(&self) -> bool {
        self.cold.as_ref().is_none_or(|c| c.rest.is_empty())
    }

    fn push_result(&mut self, c: (i32, u32)) {
        if self.first.0 == NO_RESULT && self.rest_is_empty() {
            self.first = c;
        } else {
            self.cold.get_or_insert_default().rest.push_back(c);
        }
    }

    /// Takes the oldest unread completion.
    pub(crate) fn pop_result(&mut self) -> Option<(i32, u32)> {
        if self.first.0 != NO_RESULT {
            return Some(std::mem::replace(&mut self.first, (NO_RESULT, 0)));
        }
        self.cold.as_mut().and_then(|c| c.rest.pop_front())
    }

    /// Whether no completion is left unread.
    pub(crate) fn results_empty(&self) -> bool {
        self.first.0 == NO_RESULT && self.rest_is_empty()
    }

    fn results_len(&self) -> usize {
        usize::from(self.first.0 != NO_RESULT) + self.cold.as_ref().map_or(0, |c| c.rest.len())
    }

    fn results(&self) -> impl Iterator<Item = &(i32, u32)> {
        let first = (self.first.0 != NO_RESULT).then_some(&self.first);
        first
            .into_iter()
            .chain(self.cold.iter().flat_map(|c| c.rest.iter()))
    }

    /// Whether this multishot op holds as many unread completions as its
    /// bound allows, and is not being cancelled yet.
    fn over_bound(&self) -> bool {
        let max = self.cold.as_ref().map_or(0, |c| c.max_queued);
        max > 0 && !self.gen_flags.has(CANCEL_SENT) && self.results_len() >= max as usize
    }

    /// The kernel has posted the op's final CQE.
    pub(crate) fn finished(&self) -> bool {
        self.gen_flags.has(FINISHED)
    }

    /// Whether an `IORING_OP_ASYNC_CANCEL` for it was queued.
    pub(crate) fn cancel_sent(&self) -> bool {
        self.gen_flags.has(CANCEL_SENT)
    }

    pub(crate) fn set_cancel_sent(&mut self) {
        self.gen_flags.set(CANCEL_SENT);
    }

    /// The future is gone: from now on the slot only keeps `parked` alive
    /// until the final CQE, and wakes nobody.
    pub(crate) fn set_orphaned(&mut self, parked: Option<Box<dyn Any>>) {
        self.gen_flags.set(ORPHANED);
        self.waker = None;
        if parked.is_some() {
            self.cold.get_or_insert_default().parked = parked;
        }
    }

    /// Whether the SQE was queued in submission generation `sub_gen`.
    pub(crate) fn queued_in(&self, sub_gen: u64) -> bool {
        self.queued_gen == sub_gen as u32
    }

    pub(crate) fn set_max_queued(&mut self, max: u32) {
        self.cold.get_or_insert_default().max_queued = max;
    }

    /// Registers the waker to wake on the next completion: `make` gives
    /// it, unless the one registered already wakes the same as `waker`.
    pub(crate) fn set_waker(
        &mut self,
        waker: &Waker,
        same: impl Fn(&Waker, &Waker) -> bool,
        make: impl FnOnce(&Waker) -> Waker,
    ) {
        match &self.waker {
            Some(w) if same(w, waker) => {}
            _ => self.waker = Some(make(waker)),
        }
    }

    /// Drops the completions nobody will read, running the orphan cleanup
    /// on the successful ones (closing an accepted or opened fd).
    /// `data` is the op's data if the caller has it at hand (else the
    /// parked data, if any).
    pub(crate) fn release_unread(&mut self, mut data: Option<&mut dyn Any>) {
        if let Some(cleanup) = self.cleanup {
            let unread: Vec<(i32, u32)> = self.results().copied().collect();
            for (res, flags) in unread {
                let d = match data.as_deref_mut() {
                    Some(d) => Some(d),
                    None => self.cold.as_mut().and_then(|c| c.parked.as_deref_mut()),
                };
                cleanup(res, flags, d);
            }
        }
        self.first = (NO_RESULT, 0);
        if let Some(c) = self.cold.as_mut() {
            c.rest = VecDeque::new();
        }
    }
}

#[cold]
fn drop_slot(slot: OpSlot) {
    drop(slot);
}

/// The slab of in-flight operations.
#[derive(Default)]
pub(crate) struct OpTable {
    slots: Slab<OpSlot>,
    next_seq: u64,
}

impl OpTable {
    /// A slot for a new op, with `waker` already registered if the op's
    /// future is being polled as it is submitted.
    #[inline]
    pub(crate) fn insert(
        &mut self,
        cleanup: Option<OrphanCleanup>,
        queued_gen: u64,
        waker: Option<Waker>,
    ) -> OpKey {
        self.next_seq += 1;
        let seq = self.next_seq;
        let key_gen = (seq & GEN_MASK) as u32;
        let index = self.slots.insert(OpSlot {
            waker,
            first: (NO_RESULT, 0),
            gen_flags: GenFlags::new(key_gen),
            queued_gen: queued_gen as u32,
            cleanup,
            cold: None,
        });
        OpKey::new(index, key_gen)
    }

    pub(crate) fn get_mut(&mut self, key: OpKey) -> Option<&mut OpSlot> {
        self.slots
            .get_mut(key.index as usize)
            .filter(|s| s.gen_flags.generation() == key.generation)
    }

    pub(crate) fn remove(&mut self, key: OpKey) {
        if self.get_mut(key).is_some() {
            self.slots.remove(key.index as usize);
        }
    }

    /// Frees the slot of an op whose final completion its future has just
    /// taken (`key` is known live). The common slot has nothing to drop —
    /// its waker went with the completion and it never needed the cold
    /// box — and this keeps that case free of the drop glue's call, on the
    /// path of every op.
    #[inline]
    pub(crate) fn remove_taken(&mut self, key: OpKey) {
        let slot = self.slots.remove(key.index as usize);
        if slot.waker.is_some() || slot.cold.is_some() {
            drop_slot(slot);
        } else {
            // Owns nothing: no waker, no cold box, the rest `Copy`.
            std::mem::forget(slot);
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
            .map(|(index, s)| OpKey::new(index, s.gen_flags.generation()))
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
        let generation = ((user_data >> INDEX_BITS) & GEN_MASK) as u32;
        let slot = match self.slots.get_mut(index) {
            Some(slot) if slot.gen_flags.generation() == generation => slot,
            _ => return Err(()),
        };
        if slot.gen_flags.has(ORPHANED) {
            if let Some(cleanup) = slot.cleanup {
                cleanup(
                    res,
                    flags,
                    slot.cold.as_mut().and_then(|c| c.parked.as_deref_mut()),
                );
            }
            if !more {
                // The kernel is done with the parked buffers: free them soon.
                if let Some(data) = self.slots.remove(index).cold.and_then(|c| c.parked) {
                    dead.push(data);
                }
            }
            return Ok(None);
        }
        slot.push_result((res, flags));
        if !more {
            slot.gen_flags.set(FINISHED);
        } else if slot.over_bound() {
            over_bound.push(OpKey::new(index, generation));
        }
        Ok(slot.waker.take())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One slot per op in flight (one per idle connection): 48 bytes, and
    /// the slab's vacant entries fit in its niche.
    #[test]
    fn a_slot_is_48_bytes_and_a_key_8() {
        assert_eq!(std::mem::size_of::<OpSlot>(), 48);
        assert_eq!(std::mem::size_of::<OpKey>(), 8);
    }

    #[test]
    fn a_stale_completion_meets_no_slot_and_the_live_one_its_own() {
        let mut t = OpTable::default();
        let (mut dead, mut over) = (Vec::new(), Vec::new());
        let a = t.insert(None, 0, None);
        t.remove(a);
        let b = t.insert(None, 0, None);
        assert_eq!(a.index, b.index, "the slot is reused");
        assert!(
            t.complete(a.user_data(), 1, 0, &mut dead, &mut over)
                .is_err()
        );
        assert!(
            t.complete(b.user_data(), 7, 0, &mut dead, &mut over)
                .is_ok()
        );
        let slot = t.get_mut(b).unwrap();
        assert!(slot.finished());
        assert_eq!(slot.pop_result(), Some((7, 0)));
        assert!(slot.results_empty());
        assert!(t.get_mut(a).is_none());
    }

    #[test]
    fn multishot_completions_queue_in_order_past_the_inline_one() {
        let mut t = OpTable::default();
        let (mut dead, mut over) = (Vec::new(), Vec::new());
        let k = t.insert(None, 0, None);
        t.get_mut(k).unwrap().set_max_queued(3);
        let more = 1 << 1; // IORING_CQE_F_MORE
        for res in 1..=3 {
            t.complete(k.user_data(), res, more, &mut dead, &mut over)
                .unwrap();
        }
        assert_eq!(over, [k], "the third unread completion reaches the bound");
        t.complete(k.user_data(), 0, 0, &mut dead, &mut over)
            .unwrap();
        let slot = t.get_mut(k).unwrap();
        let got: Vec<i32> = std::iter::from_fn(|| slot.pop_result().map(|(r, _)| r)).collect();
        assert_eq!(got, [1, 2, 3, 0]);
        assert!(slot.finished() && slot.results_empty());
    }
}
