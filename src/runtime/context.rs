//! Thread-local state: the loop running on this thread and the task it is
//! polling right now.
//!
//! # Safety
//!
//! The `unsafe` here is handing the raw task's waker a pointer to the
//! running loop (`raw::set_running_loop`, invariant 9 of `task::raw`): the
//! guard sets it from the `Rc` it stores in `CURRENT_LOOP`, and puts the
//! previous pointer back before that `Rc` goes.

use std::cell::RefCell;
use std::rc::Rc;

use super::event_loop::LoopInner;

/// The task being polled on this thread (kept with the raw task, whose
/// references it borrows).
pub(crate) use crate::task::raw::{restore_task, set_task, with_task};

thread_local! {
    static CURRENT_LOOP: RefCell<Option<Rc<LoopInner>>> = const { RefCell::new(None) };
}

/// Runs `f` with the loop running on this thread, if any.
#[inline]
pub(crate) fn with_loop<R>(f: impl FnOnce(&Rc<LoopInner>) -> R) -> Option<R> {
    CURRENT_LOOP.with(|c| c.borrow().as_ref().map(f))
}

/// [`with_loop`] for drop paths: `None` also when this thread's
/// thread-locals are being destroyed (a socket dropped by another
/// thread-local's destructor), instead of a panic.
pub(crate) fn try_with_loop<R>(f: impl FnOnce(&Rc<LoopInner>) -> R) -> Option<R> {
    CURRENT_LOOP
        .try_with(|c| c.try_borrow().ok()?.as_ref().map(f))
        .ok()
        .flatten()
}

/// The loop running on this thread, if any.
pub(crate) fn current_loop() -> Option<Rc<LoopInner>> {
    CURRENT_LOOP.with(|c| c.borrow().clone())
}

/// Marks `lp` as this thread's running loop until the guard drops.
pub(crate) struct LoopGuard {
    prev: Option<Rc<LoopInner>>,
    prev_ptr: *const LoopInner,
}

impl LoopGuard {
    pub(crate) fn enter(lp: Rc<LoopInner>) -> LoopGuard {
        let ptr = Rc::as_ptr(&lp);
        let prev = CURRENT_LOOP.with(|c| c.borrow_mut().replace(lp));
        // SAFETY: the `Rc` just stored in `CURRENT_LOOP` keeps the loop
        // alive until `drop` below, which puts the previous pointer back
        // before it lets that `Rc` go.
        let prev_ptr = unsafe { crate::task::raw::set_running_loop(ptr) };
        LoopGuard { prev, prev_ptr }
    }
}

impl Drop for LoopGuard {
    fn drop(&mut self) {
        // The pointer first: dropping the loop's `Rc` may drop the loop,
        // and wakes during that must not reach it. The previous pointer is
        // kept alive by the `Rc` that goes back into the slot.
        // SAFETY: `prev_ptr` is the loop of `prev` (or null), which the
        // slot holds again from the next line on.
        unsafe { crate::task::raw::set_running_loop(self.prev_ptr) };
        let prev = self.prev.take();
        CURRENT_LOOP.with(|c| *c.borrow_mut() = prev);
    }
}
