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

pub(crate) struct Outcome<T> {
    state: Cell<State>,
    value: RefCell<Option<T>>,
    /// Set when the value was moved out by an await.
    value_taken: Cell<bool>,
    error: RefCell<Option<Error>>,
    /// Who to wake when it settles. Most tasks have exactly one awaiter,
    /// so the first waker has a slot of its own (no allocation).
    first_waiter: RefCell<Option<Waker>>,
    more_waiters: RefCell<Vec<Waker>>,
    /// Someone read the exception (for "exception was never retrieved").
    retrieved: Cell<bool>,
}

impl<T> Default for Outcome<T> {
    fn default() -> Self {
        Outcome {
            state: Cell::new(State::Pending),
            value: RefCell::new(None),
            value_taken: Cell::new(false),
            error: RefCell::new(None),
            first_waiter: RefCell::new(None),
            more_waiters: RefCell::new(Vec::new()),
            retrieved: Cell::new(false),
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
        match result {
            Ok(v) => {
                *self.value.borrow_mut() = Some(v);
                self.state.set(State::Done);
            }
            Err(e) => {
                let state = if e.is_cancelled() {
                    State::Cancelled
                } else {
                    State::Failed
                };
                *self.error.borrow_mut() = Some(e);
                self.state.set(state);
            }
        }
        let first = self.first_waiter.borrow_mut().take();
        if let Some(w) = first {
            w.wake();
        }
        let more = std::mem::take(&mut *self.more_waiters.borrow_mut());
        for w in more {
            w.wake();
        }
        true
    }

    /// Registers `waker` to be woken when the outcome settles.
    pub(crate) fn add_waiter(&self, waker: &Waker) {
        let mut first = self.first_waiter.borrow_mut();
        match &*first {
            None => *first = Some(waker.clone()),
            Some(w) if w.will_wake(waker) => {}
            Some(_) => {
                let mut more = self.more_waiters.borrow_mut();
                if !more.iter().any(|w| w.will_wake(waker)) {
                    more.push(waker.clone());
                }
            }
        }
    }

    /// The error of a failed or cancelled outcome.
    pub(crate) fn error(&self) -> Option<Error> {
        self.error.borrow().clone()
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
            State::Done => match self.value.borrow_mut().take() {
                Some(v) => {
                    self.value_taken.set(true);
                    Ok(v)
                }
                None => Err(taken()),
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
            State::Done => self.value.borrow().clone().ok_or_else(taken),
            State::Failed | State::Cancelled => {
                Err(self.error().unwrap_or(Error::Cancelled { msg: None }))
            }
        }
    }
}

fn taken() -> Error {
    Error::InvalidState("the result was already moved out by an earlier await".into())
}
