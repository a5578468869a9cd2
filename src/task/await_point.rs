//! `AwaitPoint`: the task a ringio await point runs in, and the
//! cancellation rules as every await point applies them.
//!
//! A ringio await point — a sleep, a ring operation, awaiting a task or
//! promise, a combinator — asks the task it runs in three things, always
//! through this type so that the rules cannot drift apart between them:
//!
//! - [`pending`](AwaitPoint::pending): is a cancellation waiting for the
//!   task's next await point (rule 2)? An await point that is about to
//!   suspend acts on it: it cancels its ring operation, or forwards it to
//!   the task or promise it awaits (rule 4).
//! - [`take`](AwaitPoint::take) / [`deliver`](AwaitPoint::deliver): this
//!   await point returns the
//!   cancellation as `Err(Cancelled)` now; it is no longer pending. One
//!   whose operation completed before the cancel could reach it returns
//!   the result instead and leaves the cancellation pending (rule 5).
//! - [`park`](AwaitPoint::park): the task suspends here (for `get_stack`,
//!   and so that a cancelled task parked in a foreign future — one that is
//!   no ringio await point — can be told apart, rule 6).
//!
//! # Safety
//!
//! The one `unsafe` here rests on one invariant: an `AwaitPoint` never
//! outlives the poll it was made in (it is made and dropped inside a
//! `poll` function, never stored or held across an `.await`), so the task
//! reference it borrows without a count stays alive through the poller's
//! own (the raw task's invariant 8). Debug builds check it on drop.

use std::mem::ManuallyDrop;
use std::panic::Location;

use super::core::FutWaiter;
use super::raw::RawTask;
use crate::error::Error;
use crate::runtime::context;

/// The task being polled, as an await point sees it (none outside a task:
/// then nothing is ever pending and parking records nothing).
///
/// It borrows the poller's reference to the task instead of taking one of
/// its own (every ring operation makes two or three of these per poll), so
/// it lives only as long as the poll it was made in: every use is a
/// temporary or a local of a `poll` function, never a future's field and
/// never held across an `.await`. Debug builds check that the task being
/// polled is still the same when it is dropped.
pub(crate) struct AwaitPoint {
    task: Option<ManuallyDrop<RawTask>>,
}

impl AwaitPoint {
    /// The await point of the task being polled on this thread.
    #[inline]
    pub(crate) fn current() -> AwaitPoint {
        AwaitPoint {
            // SAFETY: an `AwaitPoint` is dropped within the poll that made
            // it (see the type's doc), while the poller's own reference
            // keeps the task alive.
            task: unsafe { crate::task::raw::current_task_borrowed() },
        }
    }

    /// The task, if the await point runs in one.
    pub(crate) fn task(&self) -> Option<&RawTask> {
        self.task.as_deref()
    }

    /// The id of the loop the await point runs on: the task's, else the
    /// running loop's.
    pub(crate) fn loop_id(&self) -> Option<u64> {
        match &self.task {
            Some(t) => Some(t.loop_id()),
            None => context::with_loop(|lp| lp.id),
        }
    }

    /// The pending cancellation's message, without taking it.
    #[inline]
    pub(crate) fn pending(&self) -> Option<Option<String>> {
        self.task().and_then(|t| t.core().peek_cancel())
    }

    /// Whether a cancellation is pending.
    #[inline]
    pub(crate) fn is_pending(&self) -> bool {
        self.task().is_some_and(|t| t.core().cancel_pending())
    }

    /// Takes the pending cancellation: this await point delivers it. The
    /// message, if any.
    #[inline]
    pub(crate) fn take(&self) -> Option<Option<String>> {
        self.task()?.core().take_cancel()
    }

    /// Takes the pending cancellation, as the error this await point
    /// returns.
    #[inline]
    pub(crate) fn deliver(&self) -> Option<Error> {
        self.take().map(|msg| Error::Cancelled { msg })
    }

    /// The task suspends here, at `location`.
    #[inline]
    pub(crate) fn park(&self, location: &'static Location<'static>) {
        self.park_on(location, None)
    }

    /// The task, parked in a ringio await point during this poll, shows
    /// `location` as that await point instead (the user's call of an I/O
    /// function that the op was submitted for).
    #[inline]
    pub(crate) fn relocate(&self, location: &'static Location<'static>) {
        if let Some(t) = &self.task {
            t.core().relocate(location);
        }
    }

    /// The task suspends here, awaiting `waiter`: a `cancel()` of the task
    /// cancels that one at once (asyncio cancels its `_fut_waiter`).
    #[inline]
    pub(crate) fn park_on(&self, location: &'static Location<'static>, waiter: Option<FutWaiter>) {
        if let Some(t) = &self.task {
            t.core().park(location, waiter);
        }
    }
}

#[cfg(debug_assertions)]
impl Drop for AwaitPoint {
    fn drop(&mut self) {
        let now = context::with_task(|t| t.addr());
        debug_assert_eq!(
            self.task().map(|t| t.addr()),
            now,
            "an AwaitPoint outlived the poll it was made in"
        );
    }
}
