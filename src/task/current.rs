//! What an await point asks of the task it runs in: is a cancellation
//! pending, take it, and "I am parked here" (for the foreign-future rule of
//! SPEC §2.6 and for `get_stack`).

use std::panic::Location;

use crate::runtime::context;

/// The pending cancellation's message, without taking it.
#[inline]
pub(crate) fn cancel_message() -> Option<Option<String>> {
    context::with_task(|t| t.core().peek_cancel()).flatten()
}

/// Whether the task being polled has a cancellation pending.
#[inline]
pub(crate) fn cancel_pending() -> bool {
    context::with_task(|t| t.core().cancel_pending()).unwrap_or(false)
}

/// Takes the pending cancellation: the caller delivers it as
/// `Err(Cancelled)`.
#[inline]
pub(crate) fn take_cancel() -> Option<Option<String>> {
    context::with_task(|t| t.core().take_cancel()).flatten()
}

/// Records that the task parks in a ringio await point at `location`.
#[inline]
pub(crate) fn note_await_point(location: &'static Location<'static>) {
    context::with_task(|t| t.core().note_await_point(location));
}

/// Records that the task parks in a ringio await point at `location` and
/// returns its pending cancellation's message, if any: the two questions
/// a parking await point asks, in one thread-local lookup.
#[inline]
pub(crate) fn park_at(location: &'static Location<'static>) -> Option<Option<String>> {
    context::with_task(|t| {
        let core = t.core();
        core.note_await_point(location);
        core.peek_cancel()
    })
    .flatten()
}
