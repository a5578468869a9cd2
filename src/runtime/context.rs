//! Thread-local state: the loop running on this thread and the task it is
//! polling right now.
//!
//! # Safety
//!
//! The `unsafe` here is handing the raw task a pointer to the running loop
//! (`raw::set_running_loop`, invariant 9 of `task::raw`): the guard sets
//! it from the `Rc` it holds, and puts the previous pointer back before it
//! lets that `Rc` go. Guards nest on the stack, so the previous pointer's
//! `Rc` is the outer guard's, alive as long as this one.

use std::rc::Rc;

use super::event_loop::LoopInner;

/// The task being polled on this thread (kept with the raw task, whose
/// references it borrows).
pub(crate) use crate::task::raw::{restore_task, set_task, with_task};

/// Runs `f` with the loop running on this thread, if any: the `Rc` the
/// guard below holds, lent through the raw task's pointer slot. No borrow
/// flag and no destructor check, so drop paths may call it too, also while
/// this thread's thread-locals are being destroyed.
#[inline]
pub(crate) fn with_loop<R>(f: impl FnOnce(&Rc<LoopInner>) -> R) -> Option<R> {
    crate::task::raw::with_running_loop(f)
}

/// The loop running on this thread, if any.
#[inline]
pub(crate) fn current_loop() -> Option<Rc<LoopInner>> {
    with_loop(Rc::clone)
}

/// Marks `lp` as this thread's running loop until the guard drops; the
/// guard holds it meanwhile. Guards are kept on the stack (they nest).
pub(crate) struct LoopGuard {
    lp: Option<Rc<LoopInner>>,
    prev_ptr: *const LoopInner,
}

impl LoopGuard {
    pub(crate) fn enter(lp: Rc<LoopInner>) -> LoopGuard {
        // SAFETY: the guard holds `lp` until `drop` below, which puts the
        // previous pointer back before it lets `lp` go.
        let prev_ptr = unsafe { crate::task::raw::set_running_loop(Rc::as_ptr(&lp)) };
        LoopGuard {
            lp: Some(lp),
            prev_ptr,
        }
    }
}

impl Drop for LoopGuard {
    fn drop(&mut self) {
        // The pointer first: dropping the loop's `Rc` may drop the loop,
        // and wakes during that must not reach it.
        // SAFETY: `prev_ptr` is null or the loop of the guard this one is
        // nested in, which holds its `Rc` for longer than this one lives.
        unsafe { crate::task::raw::set_running_loop(self.prev_ptr) };
        drop(self.lp.take());
    }
}
