//! How a task or promise ended: its [`State`] and the [`Slot`] that holds
//! the value or the error, with asyncio's rules for reading them
//! (`result()`, `exception()`, and an await that moves the value out).
//!
//! A task keeps its slot inside its single allocation (where its future
//! was); a promise keeps it in its [`Outcome`].

use std::cell::{Cell, RefCell};

use super::waiters::Waiters;
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

impl State {
    /// The state a result ends in.
    pub(crate) fn of<T>(result: &Result<T>) -> State {
        match result {
            Ok(_) => State::Done,
            Err(e) if e.is_cancelled() => State::Cancelled,
            Err(_) => State::Failed,
        }
    }

    /// asyncio's word for it in a `repr`.
    pub(crate) fn word(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Done | State::Failed => "finished",
            State::Cancelled => "cancelled",
        }
    }
}

/// What a finished task or promise holds. `Empty` while pending, and after
/// an await moved the value out (the state says which).
pub(crate) enum Slot<T> {
    Empty,
    Value(T),
    /// Boxed: errors are the rarer end, and a small slot keeps every task
    /// small.
    Error(Box<Error>),
}

impl<T> Slot<T> {
    pub(crate) fn from_result(result: Result<T>) -> Slot<T> {
        match result {
            Ok(v) => Slot::Value(v),
            Err(e) => Slot::Error(Box::new(e)),
        }
    }

    /// The error of a failed or cancelled end.
    pub(crate) fn error(&self) -> Option<Error> {
        match self {
            Slot::Error(e) => Some((**e).clone()),
            _ => None,
        }
    }

    /// The error of an end in `state` that is not a value.
    fn error_or_cancelled(&self) -> Error {
        self.error().unwrap_or(Error::Cancelled { msg: None })
    }

    /// asyncio's `exception()`: `Ok(None)` after a value, `Ok(Some(e))`
    /// after an exception, `Err(Cancelled)` if cancelled, `Err(InvalidState)`
    /// if pending.
    pub(crate) fn exception(&self, state: State) -> Result<Option<Error>> {
        match state {
            State::Pending => Err(Error::InvalidState("Exception is not set.".into())),
            State::Done => Ok(None),
            State::Failed => Ok(self.error()),
            State::Cancelled => Err(self.error_or_cancelled()),
        }
    }

    /// The result for a by-value await: moves the value out (a later read
    /// of it gets `InvalidState`), clones an error.
    pub(crate) fn take(&mut self, state: State) -> Result<T> {
        match state {
            State::Pending => Err(Error::InvalidState("Result is not set.".into())),
            State::Done => match std::mem::replace(self, Slot::Empty) {
                Slot::Value(v) => Ok(v),
                _ => Err(taken()),
            },
            State::Failed | State::Cancelled => Err(self.error_or_cancelled()),
        }
    }

    /// asyncio's `result()`: the value (cloned), the exception,
    /// `Cancelled`, or `InvalidState` while pending.
    pub(crate) fn read(&self, state: State) -> Result<T>
    where
        T: Clone,
    {
        match state {
            State::Pending => Err(Error::InvalidState("Result is not set.".into())),
            State::Done => match self {
                Slot::Value(v) => Ok(v.clone()),
                _ => Err(taken()),
            },
            State::Failed | State::Cancelled => Err(self.error_or_cancelled()),
        }
    }
}

fn taken() -> Error {
    Error::InvalidState("the result was already moved out by an earlier await".into())
}

/// A promise's end: state, slot, and who to tell (callbacks of type `C`).
pub(crate) struct Outcome<T, C> {
    state: Cell<State>,
    /// Someone read the exception (for "exception was never retrieved").
    retrieved: Cell<bool>,
    slot: RefCell<Slot<T>>,
    pub(crate) waiters: Waiters<C>,
}

impl<T, C> Default for Outcome<T, C> {
    fn default() -> Self {
        Outcome {
            state: Cell::new(State::Pending),
            retrieved: Cell::new(false),
            slot: RefCell::new(Slot::Empty),
            waiters: Waiters::default(),
        }
    }
}

impl<T, C> Outcome<T, C> {
    pub(crate) fn state(&self) -> State {
        self.state.get()
    }

    pub(crate) fn is_done(&self) -> bool {
        self.state.get() != State::Pending
    }

    /// Stores `result`; the caller then tells the waiters. `false` if
    /// already done.
    pub(crate) fn set(&self, result: Result<T>) -> bool {
        if self.is_done() {
            return false;
        }
        self.state.set(State::of(&result));
        *self.slot.borrow_mut() = Slot::from_result(result);
        true
    }

    pub(crate) fn exception(&self) -> Result<Option<Error>> {
        if self.state.get() == State::Failed {
            self.retrieved.set(true);
        }
        self.slot.borrow().exception(self.state.get())
    }

    pub(crate) fn take(&self) -> Result<T> {
        self.retrieved.set(true);
        self.slot.borrow_mut().take(self.state.get())
    }

    pub(crate) fn result(&self) -> Result<T>
    where
        T: Clone,
    {
        self.retrieved.set(true);
        self.slot.borrow().read(self.state.get())
    }
}
