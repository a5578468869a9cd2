//! Deadlines on ring operations, as `IORING_OP_LINK_TIMEOUT`.
//!
//! [`Io`] wraps the future of an I/O call. While it is polled, its deadline
//! is the ambient deadline of the thread, and every ring operation submitted
//! during that poll carries a linked `LINK_TIMEOUT` for the time left. The
//! kernel disarms that timeout in O(1) when the operation completes first,
//! and cancels the operation when the timeout fires first; the call then
//! gives `Error::Timeout`. A composite call (`write_all`, `connect` trying
//! several addresses, `read_to_end`) gets one deadline for all its steps.

use std::cell::Cell;
use std::future::Future;
use std::panic::Location;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// The ambient state of the I/O call being polled: its deadline and the
/// user's call site. One thread-local cell, read and restored once per poll.
#[derive(Clone, Copy, Default)]
struct Ambient {
    deadline: Option<Instant>,
    /// Where the outermost I/O call being polled was made: the await point
    /// `Task::get_stack` shows for the ring operations it submits.
    caller: Option<&'static Location<'static>>,
}

thread_local! {
    static AMBIENT: Cell<Ambient> = const {
        Cell::new(Ambient {
            deadline: None,
            caller: None,
        })
    };
}

/// The deadline for ring operations submitted now, if any.
pub(crate) fn current_deadline() -> Option<Instant> {
    AMBIENT.with(|a| a.get().deadline)
}

/// The user's call site of the I/O call being polled, if any.
pub(crate) fn current_caller() -> Option<&'static Location<'static>> {
    AMBIENT.with(|a| a.get().caller)
}

/// Restores the previous ambient state, also if the poll panics.
struct Restore(Ambient);

impl Drop for Restore {
    fn drop(&mut self) {
        AMBIENT.with(|a| a.set(self.0));
    }
}

pin_project_lite::pin_project! {
    /// The future of an I/O call, with an optional deadline.
    ///
    /// `stream.read(buf).timeout(Duration::from_secs(5)).await` gives
    /// `(Err(Error::Timeout), buf)` if no data came in 5 s. The deadline is an
    /// `IORING_OP_LINK_TIMEOUT` linked to each ring operation the call submits;
    /// an operation that completed before it fired keeps its result (bytes read
    /// are never lost to a timeout).
    #[must_use = "futures do nothing unless awaited"]
    #[derive(Debug)]
    pub struct Io<F> {
        #[pin]
        fut: F,
        deadline: Option<Instant>,
        location: &'static Location<'static>,
    }
}

impl<F: Future> Io<F> {
    #[track_caller]
    pub(crate) fn new(fut: F) -> Io<F> {
        Io {
            fut,
            deadline: None,
            location: Location::caller(),
        }
    }

    /// Fails the call with `Error::Timeout` if it has not finished `d` from
    /// now. A shorter deadline already set is kept.
    pub fn timeout(self, d: Duration) -> Io<F> {
        match Instant::now().checked_add(d) {
            Some(at) => self.deadline(at),
            // Too far away to represent: no deadline.
            None => self,
        }
    }

    /// Fails the call with `Error::Timeout` if it has not finished at `at`.
    /// An earlier deadline already set is kept.
    pub fn deadline(mut self, at: Instant) -> Io<F> {
        self.deadline = Some(match self.deadline {
            Some(d) => d.min(at),
            None => at,
        });
        self
    }
}

impl<F: Future> Future for Io<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let outer = AMBIENT.with(|a| a.get());
        let deadline = match (outer.deadline, *this.deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        // The outermost call is the one the user wrote (`fs::read`, not the
        // `File::open` inside it).
        let caller = Some(outer.caller.unwrap_or(*this.location));
        AMBIENT.with(|a| a.set(Ambient { deadline, caller }));
        let _restore = Restore(outer);
        this.fut.poll(cx)
    }
}

/// Runs `fut` with a deadline `d` from now on every ring operation it
/// submits (each gets a linked `IORING_OP_LINK_TIMEOUT` for the time left),
/// for a sequence of ringio I/O calls that should share one deadline.
///
/// Only ring operations are bounded: a future that waits for something else
/// (a task, a promise, a sleep) is not interrupted by this deadline; use
/// `wait_for` for that.
#[track_caller]
pub fn with_timeout<F: Future>(d: Duration, fut: F) -> Io<F> {
    Io::new(fut).timeout(d)
}
