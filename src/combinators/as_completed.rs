//! `as_completed`: results in the order they complete (asyncio's
//! `as_completed`).
//!
//! As in asyncio: each child's done callback puts it on a queue; each
//! awaitable handed out takes the next one from the queue; a timer (a
//! `call_later` callback in the loop's heap) replaces the children not done
//! by timeout markers. The callbacks and the timer hold the shared state
//! weakly: when the iterator and every awaitable it gave are gone, the
//! state is dropped, and its `Drop` removes the timer and the callbacks.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::panic::Location;
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use futures_util::stream::{FusedStream, Stream};

use super::awaitable::{Awaitable, Child};
use crate::error::{Error, Result};
use crate::task::await_point::AwaitPoint;
use crate::{CallbackHandle, CallbackId, get_running_loop};

/// What the queue holds: a done child, a timeout marker, or an input that
/// could not be started.
enum Entry<T> {
    Done(Child<T>),
    Timeout,
    Failed(Error),
}

struct Shared<T: 'static> {
    /// Children not done yet, with their callback, by identity.
    todo: RefCell<HashMap<usize, (Child<T>, CallbackId)>>,
    queue: RefCell<VecDeque<Entry<T>>>,
    waiters: RefCell<Vec<Waker>>,
    timer: RefCell<Option<CallbackHandle>>,
}

impl<T: 'static> Shared<T> {
    fn push(&self, e: Entry<T>) {
        self.queue.borrow_mut().push_back(e);
        for w in self.waiters.borrow_mut().drain(..) {
            w.wake();
        }
    }

    /// A child's done callback (asyncio's `_on_completion`).
    fn completed(&self, key: usize) {
        let Some((child, _)) = self.todo.borrow_mut().remove(&key) else {
            // The timeout was here first.
            return;
        };
        self.push(Entry::Done(child));
        if self.todo.borrow().is_empty() {
            if let Some(t) = self.timer.borrow_mut().take() {
                t.cancel();
            }
        }
    }

    /// The timeout (asyncio's `_on_timeout`): one marker per child left.
    fn timed_out(&self) {
        self.timer.borrow_mut().take();
        let left = std::mem::take(&mut *self.todo.borrow_mut());
        for (_, (c, id)) in left {
            c.remove_on_done(id);
            self.push(Entry::Timeout);
        }
    }

    /// Takes the next entry, or registers `cx` to be woken for it.
    fn poll_next_entry(&self, cx: &mut Context<'_>) -> Poll<Result<T>> {
        if let Some(msg) = AwaitPoint::current().take() {
            // Only this await is cancelled; the entry stays for the next.
            return Poll::Ready(Err(Error::Cancelled { msg }));
        }
        let entry = self.queue.borrow_mut().pop_front();
        match entry {
            Some(Entry::Done(c)) => Poll::Ready(c.read()),
            Some(Entry::Timeout) => Poll::Ready(Err(Error::Timeout)),
            Some(Entry::Failed(e)) => Poll::Ready(Err(e)),
            None => {
                let mut ws = self.waiters.borrow_mut();
                if !ws.iter().any(|w| w.will_wake(cx.waker())) {
                    ws.push(cx.waker().clone());
                }
                Poll::Pending
            }
        }
    }
}

impl<T: 'static> Drop for Shared<T> {
    fn drop(&mut self) {
        // Nobody can take results any more: leave nothing behind.
        if let Some(t) = self.timer.get_mut().take() {
            t.cancel();
        }
        for (_, (c, id)) in self.todo.get_mut().drain() {
            c.remove_on_done(id);
        }
    }
}

/// Runs the awaitables concurrently; gives awaitables that each yield the
/// next result in completion order (asyncio's `as_completed`). Iterate it
/// for those awaitables ([`Next`]), or use it as a [`Stream`] of results.
///
/// There are as many as distinct inputs (a plain future is scheduled as a
/// task; a `Task`/`Promise` is used as is, the same one twice counts
/// once). A child's error is that awaitable's error. After `timeout`
/// (counted from this call), the awaitables for the children not done yet
/// give `Err(Error::Timeout)`; the children are not cancelled.
///
/// ```
/// use std::time::Duration;
///
/// ringio::run(async {
///     let aws = [30, 10, 20].map(|ms| ringio::sleep_with(Duration::from_millis(ms), ms));
///     let mut order = Vec::new();
///     for next in ringio::as_completed(aws, None) {
///         let earliest_result = next.await.unwrap();
///         order.push(earliest_result);
///     }
///     assert_eq!(order, [10, 20, 30]);
/// });
/// ```
#[track_caller]
pub fn as_completed<I>(
    aws: I,
    timeout: Option<Duration>,
) -> AsCompleted<<I::Item as Awaitable>::Output>
where
    I: IntoIterator,
    I::Item: Awaitable,
{
    let shared = Rc::new(Shared {
        todo: RefCell::new(HashMap::new()),
        queue: RefCell::new(VecDeque::new()),
        waiters: RefCell::new(Vec::new()),
        timer: RefCell::new(None),
    });
    let mut seen = HashSet::new();
    let mut count = 0;
    for aw in aws {
        match aw.into_child() {
            Ok(c) => {
                if !seen.insert(c.key()) {
                    continue;
                }
                let weak: Weak<Shared<_>> = Rc::downgrade(&shared);
                let key = c.key();
                let id = c.on_done(Box::new(move || {
                    if let Some(s) = weak.upgrade() {
                        s.completed(key);
                    }
                }));
                shared.todo.borrow_mut().insert(key, (c, id));
            }
            Err(e) => shared.queue.borrow_mut().push_back(Entry::Failed(e)),
        }
        count += 1;
    }
    if let (Some(d), false) = (timeout, shared.todo.borrow().is_empty()) {
        if let Ok(lp) = get_running_loop() {
            let weak = Rc::downgrade(&shared);
            let handle = lp.call_later(d, move || {
                if let Some(s) = weak.upgrade() {
                    s.timed_out();
                }
            });
            *shared.timer.borrow_mut() = Some(handle);
        }
    }
    AsCompleted {
        shared,
        count,
        handed: 0,
        location: Location::caller(),
    }
}

/// What [`as_completed`] returns: an [`Iterator`] of [`Next`] awaitables,
/// and a [`Stream`] of results (both hand out the same results: use one or
/// the other). With `StreamExt` in scope, methods both traits have
/// (`next`, `map`, `collect`, …) need the trait named:
/// `Iterator::next(&mut it)`, `StreamExt::next(&mut it)`; a `for` loop
/// needs nothing.
#[must_use = "iterate it, or poll it as a stream"]
pub struct AsCompleted<T: 'static> {
    shared: Rc<Shared<T>>,
    /// How many results there are.
    count: usize,
    /// How many awaitables (or stream items) were handed out.
    handed: usize,
    location: &'static Location<'static>,
}

impl<T: 'static> Iterator for AsCompleted<T> {
    type Item = Next<T>;

    fn next(&mut self) -> Option<Next<T>> {
        if self.handed == self.count {
            return None;
        }
        self.handed += 1;
        Some(Next {
            shared: self.shared.clone(),
            done: Cell::new(false),
            location: self.location,
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.count - self.handed;
        (n, Some(n))
    }
}

impl<T: 'static> ExactSizeIterator for AsCompleted<T> {}

impl<T: 'static> Unpin for AsCompleted<T> {}

impl<T: 'static> Stream for AsCompleted<T> {
    type Item = Result<T>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<T>>> {
        let this = &mut *self;
        if this.handed == this.count {
            return Poll::Ready(None);
        }
        match this.shared.poll_next_entry(cx) {
            Poll::Ready(r) => {
                this.handed += 1;
                Poll::Ready(Some(r))
            }
            Poll::Pending => {
                AwaitPoint::current().park(this.location);
                Poll::Pending
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.count - self.handed;
        (n, Some(n))
    }
}

impl<T: 'static> FusedStream for AsCompleted<T> {
    fn is_terminated(&self) -> bool {
        self.handed == self.count
    }
}

/// One awaitable of [`as_completed`]: gives the earliest result not yet
/// taken (`Err(Timeout)` once the timeout passed for it). A ringio await
/// point: cancelling the awaiting task ends this await with
/// `Err(Cancelled)` and leaves the result for the next awaitable.
#[must_use = "futures do nothing unless awaited"]
pub struct Next<T: 'static> {
    shared: Rc<Shared<T>>,
    done: Cell<bool>,
    location: &'static Location<'static>,
}

impl<T: 'static> Unpin for Next<T> {}

impl<T: 'static> Future for Next<T> {
    type Output = Result<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<T>> {
        if self.done.get() {
            return Poll::Ready(Err(Error::InvalidState(
                "as_completed awaitable polled after completion".into(),
            )));
        }
        match self.shared.poll_next_entry(cx) {
            Poll::Ready(r) => {
                self.done.set(true);
                Poll::Ready(r)
            }
            Poll::Pending => {
                AwaitPoint::current().park(self.location);
                Poll::Pending
            }
        }
    }
}
