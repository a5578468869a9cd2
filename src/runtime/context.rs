//! Thread-local state: the loop running on this thread and the task it is
//! polling right now.

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
}

impl LoopGuard {
    pub(crate) fn enter(lp: Rc<LoopInner>) -> LoopGuard {
        let prev = CURRENT_LOOP.with(|c| c.borrow_mut().replace(lp));
        LoopGuard { prev }
    }
}

impl Drop for LoopGuard {
    fn drop(&mut self) {
        let prev = self.prev.take();
        CURRENT_LOOP.with(|c| *c.borrow_mut() = prev);
    }
}
