//! `Task<T>` and `TaskRef`: handles to a task (asyncio's `Task` object).
//!
//! # Safety
//!
//! The `unsafe` here reads a task's result slot as a `Slot<T>`: a `Task<T>`
//! is only ever made for a task whose result type is `T` (the raw task's
//! invariant 7), and no code that could reach the slot runs while it is
//! borrowed.

use std::fmt;
use std::future::{Future, IntoFuture};
use std::io;
use std::marker::PhantomData;
use std::panic::Location;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use super::await_point::AwaitPoint;
use super::core::{FutWaiter, TaskCore};
use super::outcome::State;
use super::raw::RawTask;
use super::stack::Frame;
use super::waiters::CallbackId;
use crate::error::{Error, Result};
use crate::runtime::context;

/// A handle to a task running on a loop (asyncio's `Task`).
///
/// Cheap to clone. Awaiting it gives the task's `Result<T>` — and, if the
/// awaiting task is cancelled meanwhile, cancels this one too ([cancellation rule 4](crate::guide);
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
    pub(crate) raw: RawTask,
    _result: PhantomData<fn() -> T>,
}

/// A task handle with its result type erased (what `current_task` and
/// `all_tasks` give). Same identity and methods as [`Task`], less the typed
/// result; awaiting it gives `Result<()>` (the task's error, if any).
#[derive(Clone)]
pub struct TaskRef {
    pub(crate) raw: RawTask,
}

impl<T> Clone for Task<T> {
    fn clone(&self) -> Self {
        Task::from_raw(self.raw.clone())
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
            self.raw.request_cancel(None)
        }

        /// [`cancel`](Self::cancel) with a message, found in the
        /// `Error::Cancelled { msg }` the task sees.
        pub fn cancel_with(&self, msg: impl Into<String>) -> bool {
            self.raw.request_cancel(Some(msg.into()))
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
                    Ok(self.raw.error())
                }
                State::Cancelled => Err(self.raw.error().unwrap_or(Error::Cancelled { msg: None })),
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
            self.raw.coro()
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
            stack_of(self.core(), self.raw.error(), limit, here)
        }

        /// Prints the stack (asyncio's `print_stack()`) to `out`.
        #[track_caller]
        pub fn print_stack(&self, limit: Option<usize>, out: &mut dyn io::Write) -> io::Result<()> {
            let frames = self.get_stack(limit);
            let core = self.core();
            if frames.is_empty() {
                writeln!(out, "No stack for {}", self.raw.repr())?;
                return Ok(());
            }
            if core.state() == State::Failed {
                writeln!(
                    out,
                    "Traceback for {} (most recent call last):",
                    self.raw.repr()
                )?;
            } else {
                writeln!(
                    out,
                    "Stack for {} (most recent call last):",
                    self.raw.repr()
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

impl<T> Task<T> {
    /// The handle of a task whose result type is `T`.
    pub(crate) fn from_raw(raw: RawTask) -> Task<T> {
        Task {
            raw,
            _result: PhantomData,
        }
    }
}

impl<T: 'static> Task<T> {
    pub(crate) fn core(&self) -> &TaskCore {
        self.raw.core()
    }

    task_methods!();

    /// The task's value (asyncio's `result()`): `Err(InvalidState)` while
    /// pending, the exception if it failed, `Err(Cancelled)` if cancelled.
    pub fn result(&self) -> Result<T>
    where
        T: Clone,
    {
        let core = self.core();
        core.mark_retrieved();
        let state = core.state();
        // SAFETY: a `Task<T>` is made only for a task whose result is `T`,
        // and `read` calls no code that could reach this slot.
        unsafe { self.raw.with_slot::<T, _>(|slot| slot.read(state)) }
            .unwrap_or_else(|| Err(Error::InvalidState("Result is not set.".into())))
    }

    /// Runs `f(&task)` soon after the task ends (scheduled on the loop,
    /// never inline; at once if it already ended), in the task's context.
    /// Callbacks and the wake-ups of awaiters happen in the order they
    /// were registered, as in asyncio.
    pub fn add_done_callback(&self, f: impl FnOnce(&TaskRef) + 'static) -> CallbackId {
        self.raw.add_done_callback(self.as_ref(), Box::new(f))
    }

    /// The same task with its type erased.
    pub fn as_ref(&self) -> TaskRef {
        TaskRef {
            raw: self.raw.clone(),
        }
    }

    /// Moves the value out (an await by value).
    pub(crate) fn take_outcome(&self) -> Result<T> {
        let core = self.core();
        core.mark_retrieved();
        let state = core.state();
        // SAFETY: as in `result`; `take` calls no code that could reach
        // this slot.
        unsafe { self.raw.with_slot::<T, _>(|slot| slot.take(state)) }
            .unwrap_or_else(|| Err(Error::InvalidState("Result is not set.".into())))
    }
}

impl TaskRef {
    pub(crate) fn core(&self) -> &TaskCore {
        self.raw.core()
    }

    task_methods!();

    /// Runs `f(&task)` soon after the task ends (scheduled, never inline).
    pub fn add_done_callback(&self, f: impl FnOnce(&TaskRef) + 'static) -> CallbackId {
        self.raw.add_done_callback(self.clone(), Box::new(f))
    }

    /// Registers `waker` to be woken when the task ends.
    pub(crate) fn add_waiter(&self, waker: &std::task::Waker) {
        self.core().add_waker(waker)
    }

    /// The exception of a task that failed (not cancelled).
    pub(crate) fn failed_error(&self) -> Option<Error> {
        self.raw.failed_error()
    }

    /// Its `<Task ...>` description.
    pub(crate) fn repr(&self) -> String {
        self.raw.repr()
    }
}

impl<T> PartialEq for Task<T> {
    fn eq(&self, other: &Self) -> bool {
        self.raw.addr() == other.raw.addr()
    }
}

impl PartialEq for TaskRef {
    fn eq(&self, other: &Self) -> bool {
        self.raw.addr() == other.raw.addr()
    }
}

impl Eq for TaskRef {}

impl std::hash::Hash for TaskRef {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.core().id().hash(state)
    }
}

/// asyncio's `repr(task)`, with `result=…` once the task finished with a
/// value (the value is shown, not taken).
impl<T: fmt::Debug + 'static> fmt::Debug for Task<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let result = if self.core().state() == State::Done {
            // SAFETY: a `Task<T>` is made only for a task whose result is
            // `T`; formatting the value cannot reach the task's slot.
            unsafe {
                self.raw.with_slot::<T, _>(|slot| match slot {
                    super::outcome::Slot::Value(v) => Some(format!("{v:?}")),
                    _ => None,
                })
            }
            .flatten()
        } else {
            None
        };
        let repr = self
            .core()
            .repr_with(self.raw.coro(), self.raw.error(), result);
        f.write_str(&repr)
    }
}

/// asyncio's `repr(task)`, without the value.
impl<T> fmt::Display for Task<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw.repr())
    }
}

impl fmt::Debug for TaskRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw.repr())
    }
}

impl fmt::Display for TaskRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw.repr())
    }
}

/// The await point of awaiting a task or promise (cancellation rules
/// 4–5), generic over what is awaited.
pub(crate) trait Awaited {
    type Output;
    /// The awaited task's id (to refuse a task awaiting itself).
    fn awaited_id(&self) -> Option<u64>;
    /// The loop it belongs to, if it belongs to one.
    fn loop_id(&self) -> Option<u64> {
        None
    }
    fn is_done(&self) -> bool;
    fn cancel_with(&self, msg: Option<String>) -> bool;
    fn add_waiter(&self, waker: &std::task::Waker);
    fn take(&self) -> Self::Output;
    /// What the awaiting task's `cancel()` cancels at once while it waits
    /// here (asyncio's `_fut_waiter`); `None`: the task is woken instead
    /// and this await point forwards the cancellation when polled.
    fn fut_waiter(&self) -> Option<FutWaiter> {
        None
    }
}

/// The future of `task.await` / `promise.await`.
#[must_use = "futures do nothing unless awaited"]
pub struct Join<A> {
    target: A,
    location: &'static Location<'static>,
    /// It has parked once: the task was suspended here.
    suspended: bool,
}

impl<A> Join<A> {
    pub(crate) fn new(target: A, location: &'static Location<'static>) -> Join<A> {
        Join {
            target,
            location,
            suspended: false,
        }
    }
}

impl<A: Awaited + Unpin, T> Future for Join<A>
where
    A: Awaited<Output = Result<T>>,
{
    type Output = Result<T>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Result<T>> {
        let this = &mut *self;
        let point = AwaitPoint::current();
        if let Some(task) = point.task() {
            if this.target.awaited_id() == Some(task.core().id()) {
                return Poll::Ready(Err(Error::msg("Task cannot await on itself")));
            }
        }
        if let Some(msg) = point.pending() {
            if this.suspended && this.target.is_done() {
                // asyncio: a cancel that lands after the awaited one
                // finished but before this task resumed wins; the value
                // stays readable from the task or promise.
                point.deliver();
                return Poll::Ready(Err(Error::Cancelled { msg }));
            }
            // About to suspend with a cancel pending (the task cancelled
            // itself, or the awaited one cannot be cancelled at once):
            // forward it, and the awaited one's end is ours. An awaited
            // one already done is read without suspending, and the cancel
            // waits for the next real suspension.
            if !this.target.is_done() && this.target.cancel_with(msg) {
                point.deliver();
            }
        }
        if this.target.is_done() {
            return Poll::Ready(this.target.take());
        }
        // Suspending on another loop's task or promise would wait for a
        // wake-up that loop cannot send here (asyncio raises the same).
        if let (Some(theirs), Some(ours)) = (this.target.loop_id(), point.loop_id()) {
            if theirs != ours {
                return Poll::Ready(Err(Error::InvalidState(
                    "the awaited task or promise is attached to a different loop".into(),
                )));
            }
        }
        this.target.add_waiter(cx.waker());
        point.park_on(this.location, this.target.fut_waiter());
        this.suspended = true;
        Poll::Pending
    }
}

impl<T: 'static> Awaited for Task<T> {
    type Output = Result<T>;
    fn awaited_id(&self) -> Option<u64> {
        Some(self.core().id())
    }
    fn loop_id(&self) -> Option<u64> {
        Some(self.raw.loop_id())
    }
    fn is_done(&self) -> bool {
        self.core().is_done()
    }
    fn cancel_with(&self, msg: Option<String>) -> bool {
        self.raw.request_cancel(msg)
    }
    fn add_waiter(&self, waker: &std::task::Waker) {
        self.core().add_waker(waker)
    }
    fn take(&self) -> Result<T> {
        self.take_outcome()
    }
    fn fut_waiter(&self) -> Option<FutWaiter> {
        Some(FutWaiter::Task(self.as_ref()))
    }
}

impl Awaited for TaskRef {
    type Output = Result<()>;
    fn awaited_id(&self) -> Option<u64> {
        Some(self.core().id())
    }
    fn loop_id(&self) -> Option<u64> {
        Some(self.raw.loop_id())
    }
    fn is_done(&self) -> bool {
        self.core().is_done()
    }
    fn cancel_with(&self, msg: Option<String>) -> bool {
        self.raw.request_cancel(msg)
    }
    fn add_waiter(&self, waker: &std::task::Waker) {
        TaskRef::add_waiter(self, waker)
    }
    fn take(&self) -> Result<()> {
        self.core().mark_retrieved();
        match self.raw.error() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
    fn fut_waiter(&self) -> Option<FutWaiter> {
        Some(FutWaiter::Task(self.clone()))
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
    fn loop_id(&self) -> Option<u64> {
        self.0.loop_id()
    }
    fn fut_waiter(&self) -> Option<FutWaiter> {
        self.0.fut_waiter()
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
    context::with_task(|t| TaskRef { raw: t.clone() })
}

/// The tasks of the running loop that are not done (asyncio's
/// `all_tasks()`); empty outside a loop.
pub fn all_tasks() -> Vec<TaskRef> {
    context::with_loop(|lp| lp.live_tasks()).unwrap_or_default()
}
