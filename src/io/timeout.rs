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

use crate::task::await_point::AwaitPoint;

thread_local! {
    /// The deadline of the I/O call being polled, if it or a call around
    /// it has one: ring operations submitted now carry a linked timeout
    /// for the time left.
    static DEADLINE: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// The deadline for ring operations submitted now, if any.
pub(crate) fn current_deadline() -> Option<Instant> {
    DEADLINE.with(Cell::get)
}

/// Restores the previous deadline, also if the poll panics.
struct Restore(Option<Instant>);

impl Drop for Restore {
    fn drop(&mut self) {
        DEADLINE.with(|d| d.set(self.0));
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
        // A call without a deadline of its own leaves the ambient one (an
        // outer call's) as it is: nothing to set or restore.
        let poll = match *this.deadline {
            None => this.fut.poll(cx),
            Some(own) => {
                let outer = current_deadline();
                DEADLINE.with(|d| d.set(Some(outer.map_or(own, |o| o.min(own)))));
                let _restore = Restore(outer);
                this.fut.poll(cx)
            }
        };
        if poll.is_pending() {
            // The await point `Task::get_stack` shows is the call the user
            // wrote (`fs::read`, not the `File::open` inside it): each
            // `Io` on the way out names itself, and the outermost is last.
            AwaitPoint::current().relocate(this.location);
        }
        poll
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
