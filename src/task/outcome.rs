//! `Outcome<T>`: how a task or promise ended, and who waits for it.
//!
//! Shared by [`crate::Task`] and [`crate::Promise`]: both are asyncio
//! futures — pending, then finished with a value, an exception, or
//! cancelled — whose result can be read, and awaited by several waiters.

use std::cell::{Cell, RefCell};
use std::task::Waker;

use crate::error::{Error, Result};

/// The state of a task or promise.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum State {
    Pending,
    /// Finished with a value.
    Done,
    /// Finished with an exception (not a cancellation).
    Failed,
    Cancelled,
}

/// What a settled outcome holds. `Empty` while pending, and after an
/// await moved the value out (the state says which).
enum Slot<T> {
    Empty,
    Value(T),
    /// Boxed: errors are the rarer end, and a small slot keeps every task
    /// small.
    Error(Box<Error>),
}

/// Who to wake when it settles. Most tasks have exactly one awaiter, so one
/// waker needs no allocation.
#[derive(Default)]
enum Waiters {
    #[default]
    None,
    One(Waker),
    Many(Vec<Waker>),
}

pub(crate) struct Outcome<T> {
    state: Cell<State>,
    /// Someone read the exception (for "exception was never retrieved").
    retrieved: Cell<bool>,
    slot: RefCell<Slot<T>>,
    /// A `Cell` (taken and put back), not a `RefCell`: it is only ever
    /// changed, never lent out.
    waiters: Cell<Waiters>,
}

impl<T> Default for Outcome<T> {
    fn default() -> Self {
        Outcome {
            state: Cell::new(State::Pending),
            retrieved: Cell::new(false),
            slot: RefCell::new(Slot::Empty),
            waiters: Cell::new(Waiters::None),
        }
    }
}

impl<T> Outcome<T> {
    pub(crate) fn state(&self) -> State {
        self.state.get()
    }

    pub(crate) fn is_done(&self) -> bool {
        self.state.get() != State::Pending
    }

    /// Settles the outcome and wakes the waiters. `false` if already done.
    pub(crate) fn settle(&self, result: Result<T>) -> bool {
        if self.is_done() {
            return false;
        }
        let (state, slot) = match result {
            Ok(v) => (State::Done, Slot::Value(v)),
            Err(e) if e.is_cancelled() => (State::Cancelled, Slot::Error(Box::new(e))),
            Err(e) => (State::Failed, Slot::Error(Box::new(e))),
        };
        *self.slot.borrow_mut() = slot;
        self.state.set(state);
        let waiters = self.waiters.take();
        match waiters {
            Waiters::None => {}
            Waiters::One(w) => w.wake(),
            Waiters::Many(ws) => ws.into_iter().for_each(Waker::wake),
        }
        true
    }

    /// Registers `waker` to be woken when the outcome settles.
    pub(crate) fn add_waiter(&self, waker: &Waker) {
        let waiters = match self.waiters.take() {
            Waiters::None => Waiters::One(waker.clone()),
            Waiters::One(w) if w.will_wake(waker) => Waiters::One(w),
            Waiters::One(first) => Waiters::Many(vec![first, waker.clone()]),
            Waiters::Many(mut ws) => {
                if !ws.iter().any(|w| w.will_wake(waker)) {
                    ws.push(waker.clone());
                }
                Waiters::Many(ws)
            }
        };
        self.waiters.set(waiters);
    }

    /// The error of a failed or cancelled outcome.
    pub(crate) fn error(&self) -> Option<Error> {
        match &*self.slot.borrow() {
            Slot::Error(e) => Some((**e).clone()),
            _ => None,
        }
    }

    pub(crate) fn mark_retrieved(&self) {
        self.retrieved.set(true);
    }

    pub(crate) fn retrieved(&self) -> bool {
        self.retrieved.get()
    }

    /// asyncio's `exception()`: `Ok(None)` after a value, `Ok(Some(e))` after
    /// an exception, `Err(Cancelled)` if cancelled, `Err(InvalidState)` if
    /// pending.
    pub(crate) fn exception(&self) -> Result<Option<Error>> {
        match self.state.get() {
            State::Pending => Err(Error::InvalidState("Exception is not set.".into())),
            State::Done => Ok(None),
            State::Failed => {
                self.retrieved.set(true);
                Ok(self.error())
            }
            State::Cancelled => Err(self.error().unwrap_or(Error::Cancelled { msg: None })),
        }
    }

    /// Takes the result for an await: moves the value out (a later read of
    /// the value gets `InvalidState`), clones an error.
    pub(crate) fn take(&self) -> Result<T> {
        self.retrieved.set(true);
        match self.state.get() {
            State::Pending => Err(Error::InvalidState("Result is not set.".into())),
            State::Done => match std::mem::replace(&mut *self.slot.borrow_mut(), Slot::Empty) {
                Slot::Value(v) => Ok(v),
                _ => Err(taken()),
            },
            State::Failed | State::Cancelled => {
                Err(self.error().unwrap_or(Error::Cancelled { msg: None }))
            }
        }
    }
}

impl<T: Clone> Outcome<T> {
    /// asyncio's `result()`: the value (cloned), the exception, `Cancelled`,
    /// or `InvalidState` while pending.
    pub(crate) fn result(&self) -> Result<T> {
        self.retrieved.set(true);
        match self.state.get() {
            State::Pending => Err(Error::InvalidState("Result is not set.".into())),
            State::Done => match &*self.slot.borrow() {
                Slot::Value(v) => Ok(v.clone()),
                _ => Err(taken()),
            },
            State::Failed | State::Cancelled => {
                Err(self.error().unwrap_or(Error::Cancelled { msg: None }))
            }
        }
    }
}

fn taken() -> Error {
    Error::InvalidState("the result was already moved out by an earlier await".into())
}
