//! `wait`: block until a condition over a set of children holds (asyncio's
//! `wait`). It never cancels them and never raises their errors.
//!
//! As in asyncio, each child gets a done callback that counts it and, once
//! `return_when` is met, wakes the waiter; a timer of the loop's heap
//! bounds the wait. Both are removed when the wait ends, however it ends.

use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::future::Future;
use std::panic::Location;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use super::awaitable::{Awaitable, Child};
use crate::CallbackId;
use crate::error::{Error, Result};
use crate::task::await_point::AwaitPoint;
use crate::time::{Sleep, sleep};

/// When [`wait`] returns (asyncio's `FIRST_COMPLETED`, `FIRST_EXCEPTION`,
/// `ALL_COMPLETED`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ReturnWhen {
    /// When any child finishes or is cancelled.
    FirstCompleted,
    /// When any child finishes by failing (a cancellation does not count);
    /// if none fails, when all are done, as `AllCompleted`.
    FirstException,
    /// When all children are done (the default).
    #[default]
    AllCompleted,
}

/// The `(done, pending)` of [`wait`]: the children in input order (each
/// distinct one once).
pub type WaitResult<T> = (Vec<Child<T>>, Vec<Child<T>>);

/// Runs the awaitables concurrently and waits until `return_when` holds or
/// `timeout` passes (asyncio's `wait`); gives `(done, pending)`.
///
/// It never cancels a child (not even on timeout: the ones not done are
/// simply in `pending`) and never returns a child's error: look at each
/// `done` child. An empty input is `Err(Error::InvalidArgument)`.
/// Cancelling the task that awaits `wait` cancels only the wait.
///
/// A [`Task`](crate::Task) or [`Promise`](crate::Promise) given needs a
/// `Clone` value (the value is read by cloning, see [`Awaitable`]); for a
/// task whose value is not `Clone`, pass [`task.as_ref()`](crate::Task::as_ref).
///
/// A plain future is scheduled as a task, and it is that task which comes
/// back in `done` or `pending` — not the future, which was moved in. So
/// to find one of your own in the result, create the task yourself and
/// compare (the asyncio document's pitfall, where `coro in done` is never
/// true, cannot compile in Rust; this is its fix):
///
/// ```
/// use ringio::{Error, ReturnWhen};
///
/// async fn foo() -> ringio::Result<i32> {
///     Ok(42)
/// }
///
/// ringio::run(async {
///     let task = ringio::create_task(foo());
///     let (done, _pending) = ringio::wait([task.clone()], None, ReturnWhen::AllCompleted)
///         .await
///         .unwrap();
///     if done.iter().any(|c| *c == task) {
///         // Everything will work as expected now.
///         assert_eq!(task.result().unwrap(), 42);
///     }
///     # assert!(done.iter().any(|c| *c == task));
/// });
/// ```
#[track_caller]
pub fn wait<I>(
    aws: I,
    timeout: Option<Duration>,
    return_when: ReturnWhen,
) -> Wait<<I::Item as Awaitable>::Output>
where
    I: IntoIterator,
    I::Item: Awaitable,
{
    // The children are made now, as `gather` makes them: plain futures
    // start running on the next loop turn whether or not this is awaited.
    let mut children: Vec<Child<_>> = Vec::new();
    let mut error = None;
    for aw in aws {
        match aw.into_child() {
            Ok(c) => children.push(c),
            Err(e) => {
                error = Some(e);
                break;
            }
        }
    }
    if error.is_some() {
        // Nobody will wait for the tasks made before the bad input.
        for c in children.iter().filter(|c| c.is_owned()) {
            c.cancel();
        }
        children.clear();
    } else if children.is_empty() {
        error = Some(Error::InvalidArgument(
            "Set of Tasks/Futures is empty.".into(),
        ));
    }
    let mut seen = HashSet::new();
    children.retain(|c| seen.insert(c.key()));
    Wait {
        children,
        error,
        timeout,
        return_when,
        timer: None,
        shared: None,
        callbacks: Vec::new(),
        location: Location::caller(),
    }
}

/// What the done callbacks share with the waiter.
struct Shared {
    /// Children not done yet.
    left: Cell<usize>,
    /// `return_when` is met.
    fired: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

impl Shared {
    fn fire(&self) {
        self.fired.set(true);
        if let Some(w) = self.waker.borrow_mut().take() {
            w.wake();
        }
    }
}

/// The future of [`wait`].
#[must_use = "futures do nothing unless awaited"]
pub struct Wait<T: 'static> {
    children: Vec<Child<T>>,
    error: Option<Error>,
    timeout: Option<Duration>,
    return_when: ReturnWhen,
    timer: Option<Sleep>,
    shared: Option<Rc<Shared>>,
    callbacks: Vec<CallbackId>,
    location: &'static Location<'static>,
}

impl<T: 'static> Unpin for Wait<T> {}

impl<T: 'static> Wait<T> {
    /// Registers the done callbacks (the first poll).
    fn arm(&mut self) -> Rc<Shared> {
        let shared = Rc::new(Shared {
            left: Cell::new(self.children.len()),
            fired: Cell::new(false),
            waker: RefCell::new(None),
        });
        let rw = self.return_when;
        for c in &self.children {
            let s = shared.clone();
            let child = c.clone();
            let id = c.on_done(Box::new(move || {
                // asyncio's `_on_completion`.
                s.left.set(s.left.get().saturating_sub(1));
                let fire = s.left.get() == 0
                    || rw == ReturnWhen::FirstCompleted
                    || (rw == ReturnWhen::FirstException
                        && !child.cancelled()
                        && matches!(child.exception(), Ok(Some(_))));
                if fire {
                    s.fire();
                }
            }));
            self.callbacks.push(id);
        }
        if let Some(d) = self.timeout {
            self.timer = Some(sleep(d));
        }
        self.shared = Some(shared.clone());
        shared
    }

    /// Removes the callbacks and the timer; splits the children.
    fn finish(&mut self) -> WaitResult<T> {
        for (c, id) in self.children.iter().zip(self.callbacks.drain(..)) {
            c.remove_on_done(id);
        }
        self.timer = None;
        self.shared = None;
        std::mem::take(&mut self.children)
            .into_iter()
            .partition(|c| c.done())
    }
}

impl<T: 'static> Future for Wait<T> {
    type Output = Result<WaitResult<T>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        if let Some(e) = this.error.take() {
            return Poll::Ready(Err(e));
        }
        if let Some(msg) = AwaitPoint::current().take() {
            // Only the wait is cancelled, never the children.
            this.finish();
            return Poll::Ready(Err(Error::Cancelled { msg }));
        }
        let shared = match &this.shared {
            Some(s) => s.clone(),
            None if this.children.is_empty() => {
                return Poll::Ready(Err(Error::InvalidState(
                    "wait polled after completion".into(),
                )));
            }
            None => this.arm(),
        };
        if shared.fired.get() {
            return Poll::Ready(Ok(this.finish()));
        }
        if let Some(timer) = this.timer.as_mut() {
            match Pin::new(timer).poll(cx) {
                Poll::Ready(Ok(())) => return Poll::Ready(Ok(this.finish())),
                Poll::Ready(Err(e)) => {
                    this.finish();
                    return Poll::Ready(Err(e));
                }
                Poll::Pending => {}
            }
        }
        *shared.waker.borrow_mut() = Some(cx.waker().clone());
        AwaitPoint::current().park(this.location);
        Poll::Pending
    }
}

impl<T: 'static> Drop for Wait<T> {
    fn drop(&mut self) {
        // Dropped mid-wait: leave no callback behind on the children.
        for (c, id) in self.children.iter().zip(self.callbacks.drain(..)) {
            c.remove_on_done(id);
        }
    }
}
