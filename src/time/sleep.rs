//! `sleep` and `sleep_with`: timers in the loop's own heap.

use std::future::Future;
use std::panic::Location;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use super::heap::TimerKey;
use crate::error::{Error, Result};
use crate::runtime::context;
use crate::runtime::event_loop::TimerAction;
use crate::task::await_point::AwaitPoint;

/// The future of [`sleep`]. `Send`, so it can live in futures handed to
/// other threads' loops.
#[must_use = "futures do nothing unless awaited"]
#[derive(Debug)]
pub struct Sleep {
    delay: Duration,
    deadline: Option<Instant>,
    timer: Option<(u64, TimerKey)>,
    yielded: bool,
    location: &'static Location<'static>,
}

/// Suspends the current task for `delay` (asyncio's `sleep`).
///
/// The timer lives in the loop's own heap; only the earliest deadline of
/// all timers goes to the kernel, as the timeout of the ring wait.
/// `sleep(Duration::ZERO)` just lets other tasks run, without a syscall.
/// Cancellation is delivered here as `Err(Error::Cancelled)`; outside a
/// loop the result is the "no running event loop" error.
///
/// ```
/// use std::time::{Duration, Instant};
///
/// ringio::run(async {
///     let t0 = Instant::now();
///     ringio::sleep(Duration::from_millis(20)).await.unwrap();
///     assert!(t0.elapsed() >= Duration::from_millis(20));
/// });
/// ```
#[track_caller]
pub fn sleep(delay: Duration) -> Sleep {
    Sleep {
        delay,
        deadline: None,
        timer: None,
        yielded: false,
        location: Location::caller(),
    }
}

/// [`sleep`], then return `value` (asyncio's `sleep(delay, result)`).
#[track_caller]
pub fn sleep_with<T>(delay: Duration, value: T) -> SleepWith<T> {
    SleepWith {
        sleep: sleep(delay),
        value: Some(value),
    }
}

/// The future of [`sleep_with`].
#[must_use = "futures do nothing unless awaited"]
#[derive(Debug)]
pub struct SleepWith<T> {
    sleep: Sleep,
    value: Option<T>,
}

impl<T> Unpin for SleepWith<T> {}

impl<T> Future for SleepWith<T> {
    type Output = Result<T>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<T>> {
        match Pin::new(&mut self.sleep).poll(cx) {
            Poll::Ready(Ok(())) => {
                Poll::Ready(self.value.take().ok_or_else(|| {
                    Error::InvalidState("sleep_with polled after completion".into())
                }))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Sleep {
    /// When the sleep ends, once it has started.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    fn disarm(&mut self) {
        if let Some((loop_id, key)) = self.timer.take() {
            context::with_loop(|lp| {
                if lp.id == loop_id {
                    lp.timers.borrow_mut().remove(key);
                }
            });
        }
    }
}

impl Future for Sleep {
    type Output = Result<()>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let this = &mut *self;
        if let Some(msg) = AwaitPoint::current().take() {
            // A sleep simply leaves the timer heap (guide, cancellation rule 2).
            this.disarm();
            return Poll::Ready(Err(Error::Cancelled { msg }));
        }
        if this.delay.is_zero() {
            if this.yielded {
                return Poll::Ready(Ok(()));
            }
            if context::with_loop(|_| ()).is_none() {
                // Like any sleep: outside a loop it is an error at once, not
                // a yield to an executor that may never poll again.
                return Poll::Ready(Err(Error::no_running_loop()));
            }
            this.yielded = true;
            cx.waker().wake_by_ref();
            AwaitPoint::current().park(this.location);
            return Poll::Pending;
        }
        let location = this.location;
        let step = context::with_loop(|lp| {
            let deadline = *this
                .deadline
                .get_or_insert_with(|| super::deadline_after(this.delay));
            let mut timers = lp.timers.borrow_mut();
            match this.timer {
                Some((loop_id, key)) if loop_id == lp.id => match timers.get_mut(key) {
                    Some(TimerAction::Wake(w)) => {
                        if !w.will_wake(cx.waker()) {
                            *w = cx.waker().clone();
                        }
                        Poll::Pending
                    }
                    // Fired (fired timers leave the heap).
                    _ => Poll::Ready(()),
                },
                _ => {
                    // Armed even if the deadline has passed: like asyncio's,
                    // a sleep of any positive delay suspends the task at
                    // least once (its timer fires on the next turn).
                    let key = timers.insert(deadline, TimerAction::Wake(cx.waker().clone()));
                    this.timer = Some((lp.id, key));
                    Poll::Pending
                }
            }
        });
        match step {
            None => Poll::Ready(Err(Error::no_running_loop())),
            Some(Poll::Ready(())) => {
                this.timer = None;
                Poll::Ready(Ok(()))
            }
            Some(Poll::Pending) => {
                AwaitPoint::current().park(location);
                Poll::Pending
            }
        }
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        self.disarm();
    }
}
