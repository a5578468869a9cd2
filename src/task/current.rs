//! One-call forms of [`AwaitPoint`](super::await_point::AwaitPoint) for
//! await points that ask a single question per poll.

use std::panic::Location;

use super::await_point::AwaitPoint;

/// The pending cancellation's message, without taking it.
#[inline]
pub(crate) fn cancel_message() -> Option<Option<String>> {
    AwaitPoint::current().pending()
}

/// Whether the task being polled has a cancellation pending.
#[inline]
pub(crate) fn cancel_pending() -> bool {
    AwaitPoint::current().is_pending()
}

/// Takes the pending cancellation: the caller delivers it as
/// `Err(Cancelled)`.
#[inline]
pub(crate) fn take_cancel() -> Option<Option<String>> {
    match AwaitPoint::current().deliver() {
        Some(crate::Error::Cancelled { msg }) => Some(msg),
        _ => None,
    }
}

/// Records that the task parks in a ringio await point at `location`.
#[inline]
pub(crate) fn note_await_point(location: &'static Location<'static>) {
    AwaitPoint::current().park(location);
}

/// Records that the task parks at `location` and returns its pending
/// cancellation's message, if any.
#[inline]
pub(crate) fn park_at(location: &'static Location<'static>) -> Option<Option<String>> {
    let point = AwaitPoint::current();
    point.park(location);
    point.pending()
}
