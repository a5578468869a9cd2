//! What the combinators accept: [`Awaitable`], and the [`Child`] handle an
//! input becomes (asyncio's `ensure_future`).
//!
//! A plain future is scheduled as a new task; a [`Task`], [`Promise`],
//! [`TaskRef`] or [`Gather`] given is used as is (the same one twice is one
//! child, and one already done is read, not polled).
//!
//! Reading a child's value: a task the combinator created for a plain
//! future is private to it, so its value is moved out. A `Task`/`Promise`/
//! `Gather` the caller gave keeps its value, as asyncio's does (the caller
//! may still call `result()` on it, and the same task given twice yields its
//! value twice): it is cloned, which is why those inputs need `T: Clone`.
//! For a task whose value is not `Clone`, pass `task.as_ref()` (to `wait`)
//! or an `async move { task.await }` wrapper.

use std::fmt;
use std::future::{Future, IntoFuture};
use std::panic::{AssertUnwindSafe, Location};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Waker};

use futures_util::FutureExt;

use crate::error::{Error, Result};
use crate::runtime::context;
use crate::task::Awaited;
use crate::task::raw::panic_message;
use crate::{CallbackId, Gather, Join, Promise, Task, TaskRef};

/// Something a combinator can run and await (asyncio's "awaitable"): a
/// future returning `Result<T, E>` (scheduled as a new task), a
/// [`Task<T>`], a [`Promise<T>`], a [`TaskRef`] (output `()`), a
/// [`Child<T>`], or a [`Gather<T>`] (used as is, like a `Promise`: its
/// value is read by clone, so it stays readable from the gather).
///
/// ```
/// use ringio::{Awaitable, Error};
///
/// ringio::run(async {
///     // A plain future becomes a task the moment it becomes a child.
///     let child = async { Ok::<_, Error>(7) }.into_child().unwrap();
///     assert!(child.task().is_some());
///     assert_eq!(child.await.unwrap(), 7);
/// });
/// ```
pub trait Awaitable: Sized {
    /// The value it gives (the `T` of `Result<T>`).
    type Output: 'static;

    /// What [`wait_for`](crate::wait_for) keeps while it waits: `Send` for a
    /// `Send` plain future, so that `wait_for`'s future is `Send` too.
    #[doc(hidden)]
    type Target: WaitTarget<Output = Self::Output>;

    /// Makes it a child handle: schedules a plain future as a task on the
    /// running loop (`Err` "no running event loop" outside one), returns a
    /// task or promise as is.
    fn into_child(self) -> Result<Child<Self::Output>>;

    /// Starts it for `wait_for`, on the loop (the first poll).
    #[doc(hidden)]
    fn into_target(self) -> Result<Self::Target>;

    /// Whether it is a plain future not yet started (`wait_for` with a zero
    /// timeout then times out without ever polling it).
    #[doc(hidden)]
    fn is_unstarted(&self) -> bool {
        false
    }
}

/// What `wait_for` waits on. Not part of the public API.
#[doc(hidden)]
pub trait WaitTarget {
    /// The value.
    type Output;
    /// Whether it finished; if not, `cx`'s waker is woken when it does.
    fn poll_done(&mut self, cx: &mut Context<'_>) -> bool;
    /// Asks it to cancel; `false` if it is done already.
    fn cancel(&mut self, msg: Option<String>) -> bool;
    /// Its outcome, once done.
    fn take(&mut self) -> Result<Self::Output>;
}

/// What a child is.
enum Kind<T> {
    Task(Task<T>),
    Promise(Promise<T>),
    /// A type-erased task (only for `T = ()`).
    Erased(TaskRef),
    /// A gather the caller gave (asyncio's `_GatheringFuture`).
    Gather(Gather<T>),
}

impl<T> Clone for Kind<T> {
    fn clone(&self) -> Self {
        match self {
            Kind::Task(t) => Kind::Task(t.clone()),
            Kind::Promise(p) => Kind::Promise(p.clone()),
            Kind::Erased(r) => Kind::Erased(r.clone()),
            Kind::Gather(g) => Kind::Gather(g.clone()),
        }
    }
}

/// A task or promise a combinator runs and awaits (asyncio's "Future"
/// that `ensure_future` gives): what [`wait`](crate::wait) returns in its
/// `(done, pending)` lists.
///
/// Cheap to clone. Awaiting it gives the value (moved out of a task the
/// combinator created, cloned from a `Task`/`Promise`/`Gather` you gave);
/// compare it with the `Task` (or `Promise`, `Gather`) you passed to find
/// it (`child == task`).
pub struct Child<T> {
    kind: Kind<T>,
    /// How to read the value: move or clone (see the module doc).
    read: fn(&Kind<T>) -> Result<T>,
    /// A task the combinator created itself (no one else holds it).
    owned: bool,
}

impl<T> Clone for Child<T> {
    fn clone(&self) -> Self {
        Child {
            kind: self.kind.clone(),
            read: self.read,
            owned: self.owned,
        }
    }
}

fn read_moved<T: 'static>(k: &Kind<T>) -> Result<T> {
    match k {
        Kind::Task(t) => Awaited::take(t),
        Kind::Promise(p) => Awaited::take(p),
        Kind::Gather(g) => Awaited::take(g),
        Kind::Erased(_) => Err(Error::InvalidState(
            "a type-erased task has no typed value".into(),
        )),
    }
}

fn read_cloned<T: Clone + 'static>(k: &Kind<T>) -> Result<T> {
    match k {
        Kind::Task(t) => t.result(),
        Kind::Promise(p) => p.result(),
        Kind::Gather(g) => g.result(),
        Kind::Erased(_) => Err(Error::InvalidState(
            "a type-erased task has no typed value".into(),
        )),
    }
}

fn read_erased(k: &Kind<()>) -> Result<()> {
    match k {
        Kind::Task(t) => t.result(),
        Kind::Promise(p) => p.result(),
        Kind::Gather(g) => g.result(),
        Kind::Erased(r) => Awaited::take(r),
    }
}

impl<T: Clone + 'static> Child<T> {
    /// A gather the caller gave: its value is cloned when read, so it stays
    /// readable from the gather.
    pub(crate) fn gather(g: Gather<T>) -> Child<T> {
        Child {
            kind: Kind::Gather(g),
            read: read_cloned::<T>,
            owned: false,
        }
    }
}

impl<T: 'static> Child<T> {
    /// A task the combinator created: its value is moved out when read.
    pub(crate) fn owned(task: Task<T>) -> Child<T> {
        Child {
            kind: Kind::Task(task),
            read: read_moved::<T>,
            owned: true,
        }
    }

    /// Whether the combinator created this task (from a plain future).
    pub(crate) fn is_owned(&self) -> bool {
        self.owned
    }

    /// Whether it ended (value, exception, or cancelled).
    pub fn done(&self) -> bool {
        match &self.kind {
            Kind::Task(t) => t.done(),
            Kind::Promise(p) => p.done(),
            Kind::Erased(r) => r.done(),
            Kind::Gather(g) => g.done(),
        }
    }

    /// Whether it ended cancelled.
    pub fn cancelled(&self) -> bool {
        match &self.kind {
            Kind::Task(t) => t.cancelled(),
            Kind::Promise(p) => p.cancelled(),
            Kind::Erased(r) => r.cancelled(),
            Kind::Gather(g) => g.cancelled(),
        }
    }

    /// Asks it to cancel (a promise is cancelled at once); `false` if done.
    pub fn cancel(&self) -> bool {
        self.cancel_msg(None)
    }

    /// [`cancel`](Self::cancel) with a message.
    pub fn cancel_with(&self, msg: impl Into<String>) -> bool {
        self.cancel_msg(Some(msg.into()))
    }

    pub(crate) fn cancel_msg(&self, msg: Option<String>) -> bool {
        match &self.kind {
            Kind::Task(t) => Awaited::cancel_with(t, msg),
            Kind::Promise(p) => Awaited::cancel_with(p, msg),
            Kind::Erased(r) => Awaited::cancel_with(r, msg),
            Kind::Gather(g) => Awaited::cancel_with(g, msg),
        }
    }

    /// `Ok(None)` after a value, `Ok(Some(e))` after an exception,
    /// `Err(Cancelled)` if cancelled, `Err(InvalidState)` while pending.
    pub fn exception(&self) -> Result<Option<Error>> {
        match &self.kind {
            Kind::Task(t) => t.exception(),
            Kind::Promise(p) => p.exception(),
            Kind::Erased(r) => r.exception(),
            Kind::Gather(g) => g.exception(),
        }
    }

    /// The value without moving it out (asyncio's `result()`).
    pub fn result(&self) -> Result<T>
    where
        T: Clone,
    {
        match &self.kind {
            Kind::Task(t) => t.result(),
            Kind::Promise(p) => p.result(),
            Kind::Gather(g) => g.result(),
            Kind::Erased(_) => (self.read)(&self.kind),
        }
    }

    /// The task, if it is one.
    pub fn task(&self) -> Option<&Task<T>> {
        match &self.kind {
            Kind::Task(t) => Some(t),
            _ => None,
        }
    }

    /// The promise, if it is one.
    pub fn promise(&self) -> Option<&Promise<T>> {
        match &self.kind {
            Kind::Promise(p) => Some(p),
            _ => None,
        }
    }

    /// The task with its type erased, if it is a task.
    pub fn task_ref(&self) -> Option<TaskRef> {
        match &self.kind {
            Kind::Task(t) => Some(t.as_ref()),
            Kind::Promise(_) | Kind::Gather(_) => None,
            Kind::Erased(r) => Some(r.clone()),
        }
    }

    /// Its outcome: the value read (moved or cloned), the exception, or
    /// `Cancelled` with the message it was cancelled with.
    pub(crate) fn read(&self) -> Result<T> {
        (self.read)(&self.kind)
    }

    /// Identity: the address of the shared task, promise or gather cell.
    pub(crate) fn key(&self) -> usize {
        match &self.kind {
            Kind::Task(t) => t.raw.addr(),
            Kind::Promise(p) => p.cell_addr(),
            Kind::Erased(r) => r.raw.addr(),
            Kind::Gather(g) => g.cell_addr(),
        }
    }

    /// The error it ended with (exception or cancellation), marking an
    /// exception retrieved; `None` after a value or while pending.
    pub(crate) fn failure(&self) -> Option<Error> {
        match self.exception() {
            Ok(e) => e,
            Err(e) if e.is_cancelled() => Some(e),
            Err(_) => None,
        }
    }

    /// Runs `f` soon after it is done (scheduled on the loop, never inline).
    pub(crate) fn on_done(&self, f: Box<dyn FnOnce()>) -> CallbackId {
        match &self.kind {
            Kind::Task(t) => t.add_done_callback(move |_| f()),
            Kind::Promise(p) => p.add_done_callback(move |_| f()),
            Kind::Erased(r) => r.add_done_callback(move |_| f()),
            Kind::Gather(g) => g.add_done_callback(move |_| f()),
        }
    }

    pub(crate) fn remove_on_done(&self, id: CallbackId) -> usize {
        match &self.kind {
            Kind::Task(t) => t.remove_done_callback(id),
            Kind::Promise(p) => p.remove_done_callback(id),
            Kind::Erased(r) => r.remove_done_callback(id),
            Kind::Gather(g) => g.remove_done_callback(id),
        }
    }

    fn add_waiter(&self, waker: &Waker) {
        match &self.kind {
            Kind::Task(t) => Awaited::add_waiter(t, waker),
            Kind::Promise(p) => Awaited::add_waiter(p, waker),
            Kind::Erased(r) => Awaited::add_waiter(r, waker),
            Kind::Gather(g) => Awaited::add_waiter(g, waker),
        }
    }
}

/// The same child seen without its type, for the code shared by `gather`
/// and `gather!`.
pub(crate) trait ErasedChild {
    fn key(&self) -> usize;
    fn cancelled(&self) -> bool;
    fn cancel_msg(&self, msg: Option<String>) -> bool;
    fn failure(&self) -> Option<Error>;
    fn on_done(&self, f: Box<dyn FnOnce()>) -> CallbackId;
}

impl<T: 'static> ErasedChild for Child<T> {
    fn key(&self) -> usize {
        Child::key(self)
    }
    fn cancelled(&self) -> bool {
        Child::cancelled(self)
    }
    fn cancel_msg(&self, msg: Option<String>) -> bool {
        Child::cancel_msg(self, msg)
    }
    fn failure(&self) -> Option<Error> {
        Child::failure(self)
    }
    fn on_done(&self, f: Box<dyn FnOnce()>) -> CallbackId {
        Child::on_done(self, f)
    }
}

impl<T: 'static> PartialEq for Child<T> {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl<T: 'static> PartialEq<Task<T>> for Child<T> {
    fn eq(&self, other: &Task<T>) -> bool {
        self.task() == Some(other)
    }
}

impl<T: 'static> PartialEq<Promise<T>> for Child<T> {
    fn eq(&self, other: &Promise<T>) -> bool {
        self.promise() == Some(other)
    }
}

impl<T: 'static> PartialEq<Gather<T>> for Child<T> {
    fn eq(&self, other: &Gather<T>) -> bool {
        matches!(&self.kind, Kind::Gather(g) if g.cell_addr() == other.cell_addr())
    }
}

impl<T: 'static> fmt::Debug for Child<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Task(t) => fmt::Display::fmt(t, f),
            Kind::Promise(p) => fmt::Debug::fmt(p, f),
            Kind::Erased(r) => fmt::Debug::fmt(r, f),
            Kind::Gather(g) => fmt::Debug::fmt(g, f),
        }
    }
}

impl<T: 'static> Awaited for Child<T> {
    type Output = Result<T>;
    fn awaited_id(&self) -> Option<u64> {
        match &self.kind {
            Kind::Task(t) => Awaited::awaited_id(t),
            Kind::Promise(_) | Kind::Gather(_) => None,
            Kind::Erased(r) => Awaited::awaited_id(r),
        }
    }
    fn is_done(&self) -> bool {
        self.done()
    }
    fn cancel_with(&self, msg: Option<String>) -> bool {
        self.cancel_msg(msg)
    }
    fn add_waiter(&self, waker: &Waker) {
        Child::add_waiter(self, waker)
    }
    fn take(&self) -> Result<T> {
        self.read()
    }
}

// `Child` holds only `Rc`s; nothing in it is pinned.
impl<T> Unpin for Child<T> {}

impl<T: 'static> IntoFuture for Child<T> {
    type Output = Result<T>;
    type IntoFuture = Join<Child<T>>;

    /// Awaiting a child is a ringio await point, like awaiting a task: if
    /// the awaiting task is cancelled, the child is cancelled too.
    #[track_caller]
    fn into_future(self) -> Join<Child<T>> {
        Join::new(self, Location::caller())
    }
}

impl<T: 'static> WaitTarget for Child<T> {
    type Output = T;
    fn poll_done(&mut self, cx: &mut Context<'_>) -> bool {
        if self.done() {
            return true;
        }
        self.add_waiter(cx.waker());
        false
    }
    fn cancel(&mut self, msg: Option<String>) -> bool {
        self.cancel_msg(msg)
    }
    fn take(&mut self) -> Result<T> {
        self.read()
    }
}

impl<F, T, E> Awaitable for F
where
    F: Future<Output = std::result::Result<T, E>> + 'static,
    T: 'static,
    E: Into<Error> + 'static,
{
    type Output = T;
    type Target = Spawned<T>;

    fn into_child(self) -> Result<Child<T>> {
        let task = Task::builder().spawn(self)?;
        Ok(Child::owned(task))
    }

    fn into_target(self) -> Result<Spawned<T>> {
        Spawned::spawn(self)
    }

    fn is_unstarted(&self) -> bool {
        true
    }
}

impl<T: Clone + 'static> Awaitable for Task<T> {
    type Output = T;
    type Target = Child<T>;

    fn into_child(self) -> Result<Child<T>> {
        Ok(Child {
            kind: Kind::Task(self),
            read: read_cloned::<T>,
            owned: false,
        })
    }

    fn into_target(self) -> Result<Child<T>> {
        self.into_child()
    }
}

impl<T: Clone + 'static> Awaitable for Promise<T> {
    type Output = T;
    type Target = Child<T>;

    fn into_child(self) -> Result<Child<T>> {
        Ok(Child {
            kind: Kind::Promise(self),
            read: read_cloned::<T>,
            owned: false,
        })
    }

    fn into_target(self) -> Result<Child<T>> {
        self.into_child()
    }
}

impl Awaitable for TaskRef {
    type Output = ();
    type Target = Child<()>;

    fn into_child(self) -> Result<Child<()>> {
        Ok(Child {
            kind: Kind::Erased(self),
            read: read_erased,
            owned: false,
        })
    }

    fn into_target(self) -> Result<Child<()>> {
        self.into_child()
    }
}

impl<T: 'static> Awaitable for Child<T> {
    type Output = T;
    type Target = Child<T>;

    fn into_child(self) -> Result<Child<T>> {
        Ok(self)
    }

    fn into_target(self) -> Result<Child<T>> {
        Ok(self)
    }
}

/// The slot a spawned inner task writes its outcome to: shared with a
/// `Send` future, hence `Arc<Mutex<..>>`.
type Slot<T> = Arc<Mutex<Option<Result<T>>>>;

/// A plain future that `wait_for` scheduled as a task, kept as data that is
/// `Send` when `T` is: the task's place in its loop's task table (`Task`
/// handles are `Rc`s, so they cannot be kept) and the slot its outcome
/// goes to. Dropping it before the task is done cancels the task: nobody
/// else can ever read that task's result. Not part of the public API.
#[doc(hidden)]
pub struct Spawned<T> {
    loop_id: u64,
    key: usize,
    id: u64,
    slot: Slot<T>,
    /// The message of the cancel sent, for a task that ended without
    /// writing its slot (cancelled before it ran, or dropped under
    /// cancellation rule 6).
    cancel_msg: Option<Option<String>>,
    finished: bool,
}

impl<T: 'static> Spawned<T> {
    fn spawn<F, E>(fut: F) -> Result<Spawned<T>>
    where
        F: Future<Output = std::result::Result<T, E>> + 'static,
        E: Into<Error> + 'static,
    {
        let loop_id = context::with_loop(|lp| lp.id).ok_or_else(Error::no_running_loop)?;
        let slot: Slot<T> = Arc::new(Mutex::new(None));
        let out = slot.clone();
        let task = Task::builder().spawn(async move {
            // A panic is caught here so that its message reaches the
            // waiter through the slot (the task itself then ends normally).
            let r = match AssertUnwindSafe(fut).catch_unwind().await {
                Ok(r) => r.map_err(Into::into),
                Err(payload) => Err(Error::Panic(panic_message(&*payload))),
            };
            // The task ends cancelled if the future did (its state stays
            // honest); any other error goes only to the slot, whose reader
            // is the waiter — so no "exception was never retrieved".
            let cancelled = match &r {
                Err(e) if e.is_cancelled() => Some(e.clone()),
                _ => None,
            };
            *out.lock().unwrap_or_else(PoisonError::into_inner) = Some(r);
            match cancelled {
                Some(e) => Err(e),
                None => Ok(()),
            }
        })?;
        // Found again through the task table (by key, checked by id): in
        // it from now on, not only from its first suspension.
        let key =
            context::with_loop(|lp| task.raw.keep_live(lp)).ok_or_else(Error::no_running_loop)?;
        Ok(Spawned {
            loop_id,
            key,
            id: task.core().id(),
            slot,
            cancel_msg: None,
            finished: false,
        })
    }

    /// The task, while it is live on the current loop.
    fn find(&self) -> Option<TaskRef> {
        context::with_loop(|lp| {
            if lp.id != self.loop_id {
                return None;
            }
            lp.tasks
                .borrow()
                .get(self.key)
                .filter(|t| t.core().id() == self.id)
                .cloned()
        })
        .flatten()
    }
}

impl<T: 'static> WaitTarget for Spawned<T> {
    type Output = T;

    fn poll_done(&mut self, cx: &mut Context<'_>) -> bool {
        if self.finished {
            return true;
        }
        match self.find() {
            // A finished task leaves the task table.
            Some(t) if !t.core().is_done() => {
                t.add_waiter(cx.waker());
                false
            }
            _ => {
                self.finished = true;
                true
            }
        }
    }

    fn cancel(&mut self, msg: Option<String>) -> bool {
        match self.find() {
            Some(t) if t.raw.request_cancel(msg.clone()) => {
                self.cancel_msg = Some(msg);
                true
            }
            _ => false,
        }
    }

    fn take(&mut self) -> Result<T> {
        self.finished = true;
        let r = self
            .slot
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        r.unwrap_or_else(|| {
            Err(Error::Cancelled {
                msg: self.cancel_msg.clone().flatten(),
            })
        })
    }
}

impl<T> Drop for Spawned<T> {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        // The waiter went away (dropped in a select, or its task dropped
        // under cancellation rule 6): the inner task's result has no reader left.
        let (loop_id, key, id) = (self.loop_id, self.key, self.id);
        let task = context::with_loop(|lp| {
            if lp.id != loop_id {
                return None;
            }
            lp.tasks
                .borrow()
                .get(key)
                .filter(|t| t.core().id() == id)
                .cloned()
        })
        .flatten();
        if let Some(t) = task {
            t.raw.request_cancel(None);
        }
    }
}
