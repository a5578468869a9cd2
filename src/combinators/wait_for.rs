//! `wait_for`: await with a timeout that cancels (asyncio's `wait_for`).
//!
//! Design. The future `wait_for` returns must be `Send` when `aw` is a
//! `Send` future (see the guide), but a task handle is an `Rc`. So nothing is
//! started before the first poll, which happens on the loop: a plain future
//! is then scheduled as a task of its own, and [`WaitFor`] keeps only the
//! task's place in the loop's task table plus an `Arc<Mutex<..>>` slot the
//! task writes its outcome to — both `Send`. Running the future as a task
//! (as the asyncio document says: "If aw is a coroutine it is
//! automatically scheduled as a Task") gives the cancellation machinery of
//! tasks for free: on timeout the task is cancelled exactly as
//! `task.cancel()` would, including the foreign-future rule (cancellation rule 6).
//! A `Task`/`Promise` given is awaited directly (its future is `!Send`
//! anyway).
//!
//! The deadline is a timer of the loop's own heap (a [`Sleep`]), armed at
//! the first poll.

use std::future::Future;
use std::panic::Location;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use super::awaitable::{Awaitable, WaitTarget};
use crate::error::{Error, Result};
use crate::task::await_point::AwaitPoint;
use crate::time::{Sleep, sleep};

/// Waits for `aw` to complete, for at most `timeout` (asyncio's
/// `wait_for`); `None` waits as long as it takes.
///
/// - On timeout, `aw` is cancelled and `wait_for` waits until it has really
///   finished (so the total time may exceed `timeout`), then returns
///   `Err(Error::Timeout)`. If `aw` fails with another error while
///   cancelling, that error is returned instead; if it suppresses the
///   cancellation and returns a value, that value is returned.
/// - A zero timeout on a plain future times out at once without ever
///   polling it; on a task or promise already done it returns its outcome.
/// - Cancelling the task awaiting `wait_for` cancels `aw` as well (wrap it
///   in [`shield`](crate::shield) to prevent both).
///
/// A plain future is scheduled as a task at the first poll (so, unlike
/// asyncio 3.12's inline `wait_for`, it runs as a task of its own: it sees
/// its own `current_task()` and a copy of the context, as the document's
/// "automatically scheduled as a Task" says); a
/// [`Task`](crate::Task) or [`Promise`](crate::Promise) is awaited as is
/// (a timeout cancels it). The returned future is `Send` when `aw` is a
/// `Send` future with a `Send` value.
///
/// The document's example:
///
/// ```
/// use std::time::Duration;
/// use ringio::Error;
///
/// async fn eternity() -> ringio::Result<()> {
///     // Sleep for one hour
///     ringio::sleep(Duration::from_secs(3600)).await?;
///     println!("yay!");
///     Ok(())
/// }
///
/// ringio::run(async {
///     // Wait for at most 10 ms
///     match ringio::wait_for(eternity(), Some(Duration::from_millis(10))).await {
///         Err(Error::Timeout) => println!("timeout!"),
///         other => panic!("unexpected {other:?}"),
///     }
/// });
/// ```
#[track_caller]
pub fn wait_for<A: Awaitable>(aw: A, timeout: Option<Duration>) -> WaitFor<A> {
    WaitFor {
        input: Some(aw),
        target: None,
        timeout,
        timer: None,
        phase: Phase::Waiting,
        waiter_cancelled: false,
        location: Location::caller(),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Waiting for the inner one (and the deadline).
    Waiting,
    /// The deadline passed: the inner one was cancelled, waiting for it to
    /// finish.
    TimedOut,
    /// The waiter was cancelled and passed it on: the inner outcome is ours.
    Forwarded,
    /// Returned its output.
    Finished,
}

/// The future of [`wait_for`].
#[must_use = "futures do nothing unless awaited"]
pub struct WaitFor<A: Awaitable> {
    input: Option<A>,
    target: Option<A::Target>,
    timeout: Option<Duration>,
    timer: Option<Sleep>,
    phase: Phase,
    waiter_cancelled: bool,
    location: &'static Location<'static>,
}

// Nothing in a `WaitFor` is pinned: the inner future lives in its own task
// (or is a handle).
impl<A: Awaitable> Unpin for WaitFor<A> {}

impl<A: Awaitable> Future for WaitFor<A> {
    type Output = Result<A::Output>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<A::Output>> {
        let this = &mut *self;
        if this.phase == Phase::Finished {
            return Poll::Ready(Err(Error::InvalidState(
                "wait_for polled after completion".into(),
            )));
        }
        let out = this.step(cx);
        if out.is_ready() {
            this.phase = Phase::Finished;
            this.timer = None;
        } else {
            AwaitPoint::current().park(this.location);
        }
        out
    }
}

impl<A: Awaitable> WaitFor<A> {
    fn step(&mut self, cx: &mut Context<'_>) -> Poll<Result<A::Output>> {
        if self.target.is_none() {
            let Some(input) = self.input.take() else {
                return Poll::Ready(Err(Error::InvalidState("wait_for lost its input".into())));
            };
            if input.is_unstarted() {
                // A plain future that never ran: a pending cancellation, or
                // a deadline already passed, ends the wait without polling
                // it (asyncio cancels the new task before its first step).
                if let Some(msg) = AwaitPoint::current().take() {
                    return Poll::Ready(Err(Error::Cancelled { msg }));
                }
                if self.timeout == Some(Duration::ZERO) {
                    return Poll::Ready(Err(Error::Timeout));
                }
            }
            match input.into_target() {
                Ok(t) => self.target = Some(t),
                Err(e) => return Poll::Ready(Err(e)),
            }
            match self.timeout {
                // asyncio's `timeout <= 0`: cancel at once (unless done),
                // without giving the inner one a turn to run.
                Some(Duration::ZERO) => {
                    if let Some(t) = self.target.as_mut() {
                        if !t.poll_done(cx) {
                            self.phase = Phase::TimedOut;
                            t.cancel(None);
                        }
                    }
                }
                Some(d) => self.timer = Some(sleep(d)),
                None => {}
            }
        }
        let Some(target) = self.target.as_mut() else {
            return Poll::Ready(Err(Error::InvalidState("wait_for lost its input".into())));
        };

        // The waiter is being cancelled: pass it on to the inner one
        // (cancellation rule 4), whose outcome then becomes ours.
        if let Some(msg) = AwaitPoint::current().pending() {
            if target.poll_done(cx) {
                // asyncio: a cancel that lands after the inner one finished
                // but before the waiter resumed wins.
                AwaitPoint::current().take();
                return Poll::Ready(Err(Error::Cancelled { msg }));
            }
            if target.cancel(msg) {
                AwaitPoint::current().take();
                self.waiter_cancelled = true;
                if self.phase == Phase::Waiting {
                    self.phase = Phase::Forwarded;
                }
                self.timer = None;
            }
        }

        loop {
            if target.poll_done(cx) {
                let r = target.take();
                return Poll::Ready(match (self.phase, r) {
                    // The cancellation we sent for the deadline came back:
                    // that is the timeout — unless the waiter was cancelled
                    // meanwhile (asyncio's `timeout()` then lets the
                    // cancellation through).
                    (Phase::TimedOut, Err(e)) if e.is_cancelled() => {
                        if self.waiter_cancelled {
                            Err(e)
                        } else {
                            Err(Error::Timeout)
                        }
                    }
                    // A value (the cancel was suppressed), an error raised
                    // while cancelling, or the normal outcome.
                    (_, r) => r,
                });
            }
            if self.phase != Phase::Waiting {
                return Poll::Pending;
            }
            let Some(timer) = self.timer.as_mut() else {
                return Poll::Pending;
            };
            match Pin::new(timer).poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) => {
                    self.timer = None;
                    self.phase = Phase::TimedOut;
                    target.cancel(None);
                    // Loop: a promise is cancelled at once; a task needs
                    // to run to finish cancelling.
                }
            }
        }
    }
}
