//! `Promise<T>`: asyncio's low-level `Future`, a result set by hand.

use std::cell::Cell;
use std::fmt;
use std::future::IntoFuture;
use std::panic::Location;
use std::rc::{Rc, Weak};

use super::context_var::Context;
use super::core::{CancelPromise, FutWaiter};
use super::handle::{Awaited, Join, Read, ReadValue};
use super::outcome::{Outcome, State};
use super::waiters::{CallbackId, Waiter};
use crate::error::{Error, Result};
use crate::runtime::context;
use crate::runtime::event_loop::LoopInner;

type PromiseCallback<T> = Box<dyn FnOnce(&Promise<T>)>;

struct PromiseCell<T> {
    /// The end, and its awaiters and done callbacks in registration order.
    outcome: Outcome<T, PromiseCallback<T>>,
    next_callback: Cell<u64>,
    lp: Weak<LoopInner>,
    /// The id of the loop it was made on (kept after that loop is gone).
    loop_id: Option<u64>,
}

/// A value that is set later (asyncio's low-level `Future`): someone calls
/// [`set_result`](Promise::set_result) or
/// [`set_exception`](Promise::set_exception); awaiters get it.
///
/// Cheap to clone; all clones are the same promise. Cancelling a task
/// that awaits a promise cancels the promise ([cancellation rule 4](crate::guide)).
///
/// ```
/// use std::time::Duration;
///
/// ringio::run(async {
///     let p = ringio::Promise::new();
///     let setter = p.clone();
///     ringio::get_running_loop().unwrap().call_later(Duration::from_millis(10), move || {
///         setter.set_result("ready").unwrap();
///     });
///     assert_eq!(p.await.unwrap(), "ready");
/// });
/// ```
pub struct Promise<T> {
    cell: Rc<PromiseCell<T>>,
}

impl<T> Clone for Promise<T> {
    fn clone(&self) -> Self {
        Promise {
            cell: self.cell.clone(),
        }
    }
}

impl<T: 'static> Default for Promise<T> {
    fn default() -> Self {
        Promise::new()
    }
}

impl<T: 'static> Promise<T> {
    /// A pending promise on the running loop (callbacks are scheduled on
    /// it). Made outside a loop it still works: its callbacks are scheduled
    /// on the loop running where it is settled, or run inline if none is.
    pub fn new() -> Promise<T> {
        let current = context::current_loop();
        let loop_id = current.as_ref().map(|l| l.id);
        let lp = current.map(|l| Rc::downgrade(&l)).unwrap_or_default();
        Promise {
            cell: Rc::new(PromiseCell {
                outcome: Outcome::default(),
                next_callback: Cell::new(0),
                lp,
                loop_id,
            }),
        }
    }

    /// The address of the shared cell: the promise's identity (the
    /// combinators use it to see the same promise given twice).
    pub(crate) fn cell_addr(&self) -> usize {
        Rc::as_ptr(&self.cell) as *const () as usize
    }

    /// Sets the value. `Err(InvalidState)` if already done.
    pub fn set_result(&self, value: T) -> Result<()> {
        self.settle(Ok(value))
    }

    /// Sets an exception. `Err(InvalidState)` if already done.
    pub fn set_exception(&self, error: Error) -> Result<()> {
        self.settle(Err(error))
    }

    /// Cancels the promise; `false` if it was already done.
    pub fn cancel(&self) -> bool {
        self.settle(Err(Error::Cancelled { msg: None })).is_ok()
    }

    /// Cancels with a message.
    pub fn cancel_with(&self, msg: impl Into<String>) -> bool {
        self.settle(Err(Error::Cancelled {
            msg: Some(msg.into()),
        }))
        .is_ok()
    }

    /// Whether a result, exception or cancellation is set.
    pub fn done(&self) -> bool {
        self.cell.outcome.is_done()
    }

    /// Whether it was cancelled.
    pub fn cancelled(&self) -> bool {
        self.cell.outcome.state() == State::Cancelled
    }

    /// The value (cloned); the exception; `Err(Cancelled)`; or
    /// `Err(InvalidState)` while pending.
    pub fn result(&self) -> Result<T>
    where
        T: Clone,
    {
        self.cell.outcome.result()
    }

    /// `Ok(None)` after a value, `Ok(Some(e))` after an exception,
    /// `Err(Cancelled)` if cancelled, `Err(InvalidState)` while pending.
    pub fn exception(&self) -> Result<Option<Error>> {
        self.cell.outcome.exception()
    }

    /// Runs `f(&promise)` soon after the promise is done (scheduled, never
    /// inline), in the context current now. Callbacks and the wake-ups of
    /// awaiters happen in the order they were registered, as in asyncio.
    pub fn add_done_callback(&self, f: impl FnOnce(&Promise<T>) + 'static) -> CallbackId {
        let id = CallbackId(self.cell.next_callback.get());
        self.cell.next_callback.set(id.0 + 1);
        if self.done() {
            self.schedule_callback(Box::new(f));
        } else {
            self.cell.outcome.waiters.add_callback(id, Box::new(f));
        }
        id
    }

    /// Removes the done callbacks registered under `id`; how many.
    pub fn remove_done_callback(&self, id: CallbackId) -> usize {
        self.cell.outcome.waiters.remove_callback(id)
    }

    fn settle(&self, result: Result<T>) -> Result<()> {
        if !self.cell.outcome.set(result) {
            return Err(Error::InvalidState(
                "invalid state: the promise is already done".into(),
            ));
        }
        // A promise made outside a loop belongs to the loop it is settled
        // on; only with no loop at all do callbacks run inline.
        let lp = self.cell.lp.upgrade().or_else(context::current_loop);
        self.cell
            .outcome
            .waiters
            .drain(|waiter| match (waiter, &lp) {
                (Waiter::Wake(w), _) => w.wake(),
                (Waiter::Call(_, f), Some(lp)) => {
                    let me = self.clone();
                    lp.call_soon(Box::new(move || f(&me)), Context::current());
                }
                (Waiter::Call(_, f), None) => f(self),
            });
        Ok(())
    }

    fn schedule_callback(&self, f: PromiseCallback<T>) {
        let me = self.clone();
        // A promise made outside a loop belongs to the loop it is settled
        // on; only with no loop at all does the callback run inline.
        match self.cell.lp.upgrade().or_else(context::current_loop) {
            Some(lp) => {
                lp.call_soon(Box::new(move || f(&me)), Context::current());
            }
            None => f(&me),
        }
    }
}

impl<T: 'static> CancelPromise for PromiseCell<T> {
    fn cancel_with(self: Rc<Self>, msg: Option<String>) -> bool {
        let promise = Promise { cell: self };
        promise.settle(Err(Error::Cancelled { msg })).is_ok()
    }
}

impl<T: 'static> Awaited for Promise<T> {
    type Output = Result<T>;
    fn awaited_id(&self) -> Option<u64> {
        None
    }
    fn loop_id(&self) -> Option<u64> {
        self.cell.loop_id
    }
    fn fut_waiter(&self) -> Option<FutWaiter> {
        Some(FutWaiter::Promise(self.cell.clone()))
    }
    fn is_done(&self) -> bool {
        self.done()
    }
    fn cancel_with(&self, msg: Option<String>) -> bool {
        self.settle(Err(Error::Cancelled { msg })).is_ok()
    }
    fn add_waiter(&self, waker: &std::task::Waker) {
        self.cell.outcome.waiters.add_waker(waker)
    }
    fn take(&self) -> Result<T> {
        self.cell.outcome.take()
    }
}

impl<T: 'static> IntoFuture for Promise<T> {
    type Output = Result<T>;
    type IntoFuture = Join<Promise<T>>;

    #[track_caller]
    fn into_future(self) -> Join<Promise<T>> {
        Join::new(self, Location::caller())
    }
}

impl<T: Clone + 'static> ReadValue for Promise<T> {
    fn read_value(&self) -> Result<T> {
        self.result()
    }
}

/// Awaiting a borrowed promise reads its value without moving it out (needs
/// `T: Clone`), so every awaiter gets it.
impl<T: Clone + 'static> IntoFuture for &Promise<T> {
    type Output = Result<T>;
    type IntoFuture = Join<Read<Promise<T>>>;

    #[track_caller]
    fn into_future(self) -> Join<Read<Promise<T>>> {
        Join::new(Read(self.clone()), Location::caller())
    }
}

impl<T> PartialEq for Promise<T> {
    fn eq(&self, other: &Self) -> bool {
        Rc::ptr_eq(&self.cell, &other.cell)
    }
}

impl<T> fmt::Debug for Promise<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<Promise {}>", self.cell.outcome.state().word())
    }
}
