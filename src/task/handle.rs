//! `Task<T>` and `TaskRef`: handles to a task (asyncio's `Task` object).

use std::fmt;
use std::future::{Future, IntoFuture};
use std::io;
use std::panic::Location;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context as TaskContext, Poll};

use super::outcome::State;
use super::raw::{CallbackId, TaskCell, TaskCore, TaskObj};
use super::stack::Frame;
use crate::error::{Error, Result};
use crate::runtime::context;

/// A handle to a task running on a loop (asyncio's `Task`).
///
/// Cheap to clone. Awaiting it gives the task's `Result<T>` — and, if the
/// awaiting task is cancelled meanwhile, cancels this one too (SPEC §2.4;
/// use `ringio::shield` to prevent that). Dropping a handle does not cancel
/// the task.
///
/// `task.await` consumes the handle and moves the value out, like a tokio
/// `JoinHandle`, so `T` need not be `Clone`. Where the value is read more
/// than once, `(&task).await` and [`Task::result`] (both for `T: Clone`)
/// read it without taking it. A by-value await of a value another await
/// already moved out gives `Error::InvalidState`; errors reach every awaiter.
///
/// ```
/// use std::time::Duration;
///
/// ringio::run(async {
///     let task = ringio::create_task(async {
///         ringio::sleep(Duration::from_millis(10)).await?;
///         Ok::<_, ringio::Error>(42)
///     });
///     assert!(!task.done());
///     assert_eq!(task.clone().await.unwrap(), 42);
///     assert!(task.done());
/// });
/// ```
pub struct Task<T> {
    pub(crate) cell: Rc<TaskCell<T>>,
}

/// A task handle with its result type erased (what `current_task` and
/// `all_tasks` give). Same identity and methods as [`Task`], less the typed
/// result; awaiting it gives `Result<()>` (the task's error, if any).
#[derive(Clone)]
pub struct TaskRef {
    pub(crate) obj: Rc<dyn TaskObj>,
}

impl<T> Clone for Task<T> {
    fn clone(&self) -> Self {
        Task {
            cell: self.cell.clone(),
        }
    }
}

/// The methods `Task<T>` and `TaskRef` share.
macro_rules! task_methods {
    () => {
        /// Asks the task to cancel (asyncio's `cancel()`): the next ringio
        /// await point it is suspended in returns `Err(Error::Cancelled)`,
        /// after cancelling any ring operation in flight there. `false` if
        /// the task is already done.
        pub fn cancel(&self) -> bool {
            self.core().request_cancel(None)
        }

        /// [`cancel`](Self::cancel) with a message, found in the
        /// `Error::Cancelled { msg }` the task sees.
        pub fn cancel_with(&self, msg: impl Into<String>) -> bool {
            self.core().request_cancel(Some(msg.into()))
        }

        /// Whether the task ended cancelled.
        pub fn cancelled(&self) -> bool {
            self.core().state() == State::Cancelled
        }

        /// Whether the task ended (value, exception, or cancelled).
        pub fn done(&self) -> bool {
            self.core().is_done()
        }

        /// How many cancellations were requested (asyncio's `cancelling()`).
        pub fn cancelling(&self) -> u32 {
            if self.done() {
                0
            } else {
                self.core().num_cancels_requested()
            }
        }

        /// The task's exception: `Ok(None)` if it returned a value,
        /// `Ok(Some(e))` if it failed, `Err(Cancelled)` if it was cancelled,
        /// `Err(InvalidState)` while it is pending.
        pub fn exception(&self) -> Result<Option<Error>> {
            let core = self.core();
            match core.state() {
                State::Pending => Err(Error::InvalidState("Exception is not set.".into())),
                State::Done => Ok(None),
                State::Failed => {
                    core.mark_retrieved();
                    Ok(self.task_error())
                }
                State::Cancelled => {
                    Err(self.task_error().unwrap_or(Error::Cancelled { msg: None }))
                }
            }
        }

        /// The task's name: the one given, else `Task-N`.
        pub fn get_name(&self) -> String {
            self.core().name()
        }

        /// Renames the task.
        pub fn set_name(&self, name: impl Into<String>) {
            self.core().set_name(name.into())
        }

        /// The type name of the task's future (asyncio's `get_coro()`).
        pub fn get_coro(&self) -> &'static str {
            self.core().coro()
        }

        /// The task's unique id.
        pub fn id(&self) -> u64 {
            self.core().id()
        }

        /// Removes every done callback registered under `id`; returns how
        /// many were removed.
        pub fn remove_done_callback(&self, id: CallbackId) -> usize {
            self.core().remove_done_callback(id)
        }

        /// The task's stack (asyncio's `get_stack()`): for a suspended task
        /// the ringio await point it waits in; for the running task the place
        /// this is called from; for a failed task its error and the error's
        /// `source()` chain; nothing for a finished or cancelled task. At most
        /// `limit` frames.
        #[track_caller]
        pub fn get_stack(&self, limit: Option<usize>) -> Vec<Frame> {
            let here = Location::caller();
            stack_of(self.core(), self.task_error(), limit, here)
        }

        /// Prints the stack (asyncio's `print_stack()`) to `out`.
        #[track_caller]
        pub fn print_stack(&self, limit: Option<usize>, out: &mut dyn io::Write) -> io::Result<()> {
            let frames = self.get_stack(limit);
            let core = self.core();
            if frames.is_empty() {
                writeln!(out, "No stack for {}", self.task_repr())?;
                return Ok(());
            }
            if core.state() == State::Failed {
                writeln!(
                    out,
                    "Traceback for {} (most recent call last):",
                    self.task_repr()
                )?;
            } else {
                writeln!(
                    out,
                    "Stack for {} (most recent call last):",
                    self.task_repr()
                )?;
            }
            for f in frames {
                writeln!(out, "{f}")?;
            }
            Ok(())
        }
    };
}

fn stack_of(
    core: &TaskCore,
    error: Option<Error>,
    limit: Option<usize>,
    here: &'static Location<'static>,
) -> Vec<Frame> {
    let limit = limit.unwrap_or(usize::MAX);
    let mut frames = Vec::new();
    match core.state() {
        State::Pending => {
            if context::with_task(|t| t.core().id()) == Some(core.id()) {
                frames.push(Frame::at(here));
            } else if let Some(loc) = core.location() {
                frames.push(Frame::at(loc));
            }
        }
        State::Failed => {
            if let Some(e) = error {
                frames.push(Frame::Error(e.to_string()));
                let mut src = std::error::Error::source(&e);
                while let Some(s) = src {
                    frames.push(Frame::Error(s.to_string()));
                    src = s.source();
                }
            }
        }
        State::Done | State::Cancelled => {}
    }
    frames.truncate(limit);
    frames
}

impl<T: 'static> Task<T> {
    fn core(&self) -> &TaskCore {
        &self.cell.core
    }

    fn task_error(&self) -> Option<Error> {
        self.cell.outcome.error()
    }

    fn task_repr(&self) -> String {
        self.cell.repr()
    }

    task_methods!();

    /// The task's value (asyncio's `result()`): `Err(InvalidState)` while
    /// pending, the exception if it failed, `Err(Cancelled)` if cancelled.
    pub fn result(&self) -> Result<T>
    where
        T: Clone,
    {
        self.core().mark_retrieved();
        self.cell.outcome.result()
    }

    /// Runs `f(&task)` soon after the task ends (scheduled on the loop,
    /// never inline; at once if it already ended), in the task's context.
    pub fn add_done_callback(&self, f: impl FnOnce(&TaskRef) + 'static) -> CallbackId {
        self.core().add_done_callback(self.as_ref(), Box::new(f))
    }

    /// The same task with its type erased.
    pub fn as_ref(&self) -> TaskRef {
        TaskRef {
            obj: self.cell.clone() as Rc<dyn TaskObj>,
        }
    }

    pub(crate) fn take_outcome(&self) -> Result<T> {
        self.cell.outcome.take()
    }
}

impl TaskRef {
    pub(crate) fn from_rc(obj: Rc<dyn TaskObj>) -> TaskRef {
        TaskRef { obj }
    }

    fn core(&self) -> &TaskCore {
        self.obj.core()
    }

    fn task_error(&self) -> Option<Error> {
        self.obj.error()
    }

    fn task_repr(&self) -> String {
        self.obj.repr()
    }

    task_methods!();

    /// Runs `f(&task)` soon after the task ends (scheduled, never inline).
    pub fn add_done_callback(&self, f: impl FnOnce(&TaskRef) + 'static) -> CallbackId {
        self.core().add_done_callback(self.clone(), Box::new(f))
    }
}

impl<T> PartialEq for Task<T> {
    fn eq(&self, other: &Self) -> bool {
        Rc::ptr_eq(&self.cell, &other.cell)
    }
}

impl PartialEq for TaskRef {
    fn eq(&self, other: &Self) -> bool {
        self.obj.core().id == other.obj.core().id
    }
}

impl Eq for TaskRef {}

impl std::hash::Hash for TaskRef {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.obj.core().id.hash(state)
    }
}

impl<T> fmt::Debug for Task<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.cell.core.repr_with(self.cell.outcome.error()))
    }
}

impl<T> fmt::Display for Task<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.cell.core.repr_with(self.cell.outcome.error()))
    }
}

impl fmt::Debug for TaskRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.obj.repr())
    }
}

impl fmt::Display for TaskRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.obj.repr())
    }
}

/// The await point of awaiting a task or promise (SPEC §2.4–2.5), generic
/// over what is awaited.
pub(crate) trait Awaited {
    type Output;
    fn awaited_id(&self) -> Option<u64>;
    fn is_done(&self) -> bool;
    fn cancel_with(&self, msg: Option<String>) -> bool;
    fn add_waiter(&self, waker: &std::task::Waker);
    fn take(&self) -> Self::Output;
}

/// The future of `task.await` / `promise.await`.
#[must_use = "futures do nothing unless awaited"]
pub struct Join<A> {
    target: A,
    location: &'static Location<'static>,
}

impl<A> Join<A> {
    pub(crate) fn new(target: A, location: &'static Location<'static>) -> Join<A> {
        Join { target, location }
    }
}

impl<A: Awaited + Unpin, T> Future for Join<A>
where
    A: Awaited<Output = Result<T>>,
{
    type Output = Result<T>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Result<T>> {
        let this = &mut *self;
        // One thread-local lookup for the whole poll: this is the hot path
        // of every `task.await`.
        let current = context::with_task(Rc::clone);
        let core = current.as_ref().map(|t| t.core());
        if let (Some(core), Some(target)) = (core, this.target.awaited_id()) {
            if core.id() == target {
                return Poll::Ready(Err(Error::msg("Task cannot await on itself")));
            }
        }
        if let Some(msg) = core.and_then(|c| c.peek_cancel()) {
            if this.target.is_done() {
                // asyncio: a cancel that lands after the awaited one finished
                // but before this task resumed wins; the value stays readable
                // from the task or promise.
                core.map(|c| c.take_cancel());
                return Poll::Ready(Err(Error::Cancelled { msg }));
            }
            // Every cancel request is forwarded (asyncio cancels its
            // `_fut_waiter` on each `cancel()`): an inner task that
            // suppressed the first one still gets the second.
            if this.target.cancel_with(msg) {
                // The inner one carries the cancellation now; its outcome
                // is ours.
                core.map(|c| c.take_cancel());
            }
        }
        if this.target.is_done() {
            return Poll::Ready(this.target.take());
        }
        this.target.add_waiter(cx.waker());
        if let Some(core) = core {
            core.note_await_point(this.location);
        }
        Poll::Pending
    }
}

impl<T: 'static> Awaited for Task<T> {
    type Output = Result<T>;
    fn awaited_id(&self) -> Option<u64> {
        Some(self.cell.core.id)
    }
    fn is_done(&self) -> bool {
        self.cell.core.is_done()
    }
    fn cancel_with(&self, msg: Option<String>) -> bool {
        self.cell.core.request_cancel(msg)
    }
    fn add_waiter(&self, waker: &std::task::Waker) {
        self.cell.outcome.add_waiter(waker)
    }
    fn take(&self) -> Result<T> {
        self.cell.core.mark_retrieved();
        self.take_outcome()
    }
}

impl Awaited for TaskRef {
    type Output = Result<()>;
    fn awaited_id(&self) -> Option<u64> {
        Some(self.obj.core().id)
    }
    fn is_done(&self) -> bool {
        self.obj.core().is_done()
    }
    fn cancel_with(&self, msg: Option<String>) -> bool {
        self.obj.core().request_cancel(msg)
    }
    fn add_waiter(&self, waker: &std::task::Waker) {
        self.obj.add_waiter(waker)
    }
    fn take(&self) -> Result<()> {
        self.obj.mark_retrieved();
        match self.obj.error() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

impl<T: 'static> IntoFuture for Task<T> {
    type Output = Result<T>;
    type IntoFuture = Join<Task<T>>;

    #[track_caller]
    fn into_future(self) -> Join<Task<T>> {
        Join::new(self, Location::caller())
    }
}

/// What awaiting a borrowed task or promise awaits (`(&task).await`): its
/// value read (cloned), not moved out, so that other handles can still
/// read it.
#[derive(Clone)]
pub struct Read<A>(pub(crate) A);

/// A task or promise whose value can be read without moving it out.
pub(crate) trait ReadValue: Awaited {
    fn read_value(&self) -> Self::Output;
}

impl<A: ReadValue> Awaited for Read<A> {
    type Output = A::Output;
    fn awaited_id(&self) -> Option<u64> {
        self.0.awaited_id()
    }
    fn is_done(&self) -> bool {
        self.0.is_done()
    }
    fn cancel_with(&self, msg: Option<String>) -> bool {
        self.0.cancel_with(msg)
    }
    fn add_waiter(&self, waker: &std::task::Waker) {
        self.0.add_waiter(waker)
    }
    fn take(&self) -> A::Output {
        self.0.read_value()
    }
}

impl<T: Clone + 'static> ReadValue for Task<T> {
    fn read_value(&self) -> Result<T> {
        self.result()
    }
}

/// Awaiting a borrowed task reads its value without moving it out (needs
/// `T: Clone`): every awaiter, and later `result()` calls, get it.
///
/// ```
/// ringio::run(async {
///     let task = ringio::create_task(async { Ok::<_, ringio::Error>(String::from("shared")) });
///     assert_eq!((&task).await.unwrap(), "shared");
///     assert_eq!((&task).await.unwrap(), "shared");
///     assert_eq!(task.result().unwrap(), "shared");
/// });
/// ```
impl<T: Clone + 'static> IntoFuture for &Task<T> {
    type Output = Result<T>;
    type IntoFuture = Join<Read<Task<T>>>;

    #[track_caller]
    fn into_future(self) -> Join<Read<Task<T>>> {
        Join::new(Read(self.clone()), Location::caller())
    }
}

impl IntoFuture for TaskRef {
    type Output = Result<()>;
    type IntoFuture = Join<TaskRef>;

    #[track_caller]
    fn into_future(self) -> Join<TaskRef> {
        Join::new(self, Location::caller())
    }
}

/// The task currently running on this thread's loop (asyncio's
/// `current_task()`), or `None` outside a task.
pub fn current_task() -> Option<TaskRef> {
    context::with_task(|t| TaskRef::from_rc(t.clone()))
}

/// The tasks of the running loop that are not done (asyncio's
/// `all_tasks()`); empty outside a loop.
pub fn all_tasks() -> Vec<TaskRef> {
    context::with_loop(|lp| lp.live_tasks().into_iter().map(TaskRef::from_rc).collect())
        .unwrap_or_default()
}
