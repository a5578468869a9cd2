//! `run_coroutine_threadsafe`, `LoopHandle::spawn` and `ConcurrentFuture`:
//! work handed to a loop from any thread, and its thread-safe result
//! (asyncio's `concurrent.futures.Future`).
//!
//! The future goes to the loop as a closure on its remote queue (which
//! wakes the loop through its ring); there it becomes a task in the
//! submitter's context. The task's done callback settles the
//! `ConcurrentFuture`, which any OS thread may block on, and any loop may
//! await. Cancelling the `ConcurrentFuture` cancels the task on its loop.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::future::{Future, IntoFuture};
use std::panic::Location;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context as TaskContext, Poll, Waker};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::runtime::{LoopHandle, context};
use crate::task::await_point::AwaitPoint;
use crate::task::{Context, Task, TaskRef};

type Callback<T> = Box<dyn FnOnce(&ConcurrentFuture<T>) + Send>;

/// The result of work submitted to a loop from another thread (asyncio's
/// `concurrent.futures.Future`, as `run_coroutine_threadsafe` returns it).
///
/// `Send + Sync` and cheap to clone (clones are the same future).
/// [`result`](ConcurrentFuture::result) blocks the calling OS thread;
/// awaiting it (from a task on any loop) suspends the task instead, and
/// cancelling that task cancels this future and the work behind it.
pub struct ConcurrentFuture<T> {
    inner: Arc<Inner<T>>,
}

struct Inner<T> {
    state: Mutex<CfState<T>>,
    settled: Condvar,
    /// The id of the loop that completes it (`run_coroutine_threadsafe`):
    /// blocking that loop's own thread on it could never end. An id, not a
    /// `LoopHandle`, so that a future outliving its loop keeps none of the
    /// loop's descriptors open.
    owner: Option<u64>,
}

struct CfState<T> {
    /// `None` while pending.
    outcome: Option<Result<T>>,
    /// The value was moved out by an await or `take`.
    taken: bool,
    callbacks: Vec<Callback<T>>,
    wakers: Vec<Waker>,
    /// Cancels the work on its loop (set once the task exists).
    canceller: Option<Box<dyn FnOnce(Option<String>) + Send>>,
}

impl<T> Clone for ConcurrentFuture<T> {
    fn clone(&self) -> Self {
        ConcurrentFuture {
            inner: self.inner.clone(),
        }
    }
}

impl<T> fmt::Debug for ConcurrentFuture<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = self.lock();
        let state = match &st.outcome {
            None => "pending",
            Some(Err(e)) if e.is_cancelled() => "cancelled",
            Some(Err(_)) => "finished (raised)",
            Some(Ok(_)) => "finished",
        };
        write!(f, "<ConcurrentFuture {state}>")
    }
}

impl<T> ConcurrentFuture<T> {
    fn lock(&self) -> MutexGuard<'_, CfState<T>> {
        // Callbacks and wakers run outside the lock; a poisoned lock can
        // only come from a panic between consistent states.
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl<T: Send + 'static> Default for ConcurrentFuture<T> {
    fn default() -> Self {
        ConcurrentFuture::new()
    }
}

impl<T: Send + 'static> ConcurrentFuture<T> {
    /// A pending future, settled by [`set_result`](Self::set_result) or
    /// [`set_exception`](Self::set_exception) from any thread.
    pub fn new() -> ConcurrentFuture<T> {
        ConcurrentFuture::with_owner(None)
    }

    /// A pending future that the loop with id `owner` (if any) completes.
    fn with_owner(owner: Option<u64>) -> ConcurrentFuture<T> {
        ConcurrentFuture {
            inner: Arc::new(Inner {
                state: Mutex::new(CfState {
                    outcome: None,
                    taken: false,
                    callbacks: Vec::new(),
                    wakers: Vec::new(),
                    canceller: None,
                }),
                settled: Condvar::new(),
                owner,
            }),
        }
    }

    /// Sets the value. `Err(InvalidState)` if already done.
    pub fn set_result(&self, value: T) -> Result<()> {
        self.settle(Ok(value))
    }

    /// Sets an exception. `Err(InvalidState)` if already done.
    pub fn set_exception(&self, error: Error) -> Result<()> {
        self.settle(Err(error))
    }

    /// Cancels the future at once and, if it came from
    /// [`run_coroutine_threadsafe`], forwards the cancel to the task on its
    /// loop (asyncio's `cancel()`): the task sees `Err(Cancelled)` at its
    /// await point. As in asyncio, a task the loop has not started yet is
    /// still started: it runs its first step, up to its first await point,
    /// and the cancel arrives there. `false` if it was already done.
    pub fn cancel(&self) -> bool {
        self.cancel_inner(None)
    }

    /// [`cancel`](Self::cancel) with a message for the task.
    pub fn cancel_with(&self, msg: impl Into<String>) -> bool {
        self.cancel_inner(Some(msg.into()))
    }

    fn cancel_inner(&self, msg: Option<String>) -> bool {
        let canceller = {
            let mut st = self.lock();
            if st.outcome.is_some() {
                return false;
            }
            st.canceller.take()
        };
        let settled = self
            .settle(Err(Error::Cancelled { msg: msg.clone() }))
            .is_ok();
        if let Some(c) = canceller {
            c(msg);
        }
        settled
    }

    /// Whether it is done (value, exception or cancelled).
    pub fn done(&self) -> bool {
        self.lock().outcome.is_some()
    }

    /// Whether it was cancelled.
    pub fn cancelled(&self) -> bool {
        matches!(&self.lock().outcome, Some(Err(e)) if e.is_cancelled())
    }

    /// Blocks this OS thread until the future is done or `timeout` passes
    /// (`None`: no limit): `Ok(true)` if done, `Ok(false)` on the timeout.
    /// `Err(InvalidState)` instead of blocking when the calling thread runs
    /// the event loop that must complete the future (see
    /// [`result`](Self::result)).
    pub fn wait(&self, timeout: Option<Duration>) -> Result<bool> {
        match self.wait_done(timeout) {
            Ok(_) => Ok(true),
            Err(Error::Timeout) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Blocks this OS thread until the future is done, then gives its value
    /// (cloned), its exception, or `Err(Cancelled)`; `Err(Timeout)` if
    /// `timeout` passes first (asyncio's `result(timeout)`).
    ///
    /// Called on the thread of the loop that must complete the future
    /// (one from [`run_coroutine_threadsafe`] or [`LoopHandle::spawn`]
    /// with that loop's handle) while it is pending, it does not block:
    /// that loop cannot run while its thread waits, so the wait could
    /// never end (asyncio would hang there). It returns
    /// `Err(InvalidState)` at once, saying so; await the future instead.
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let fut = ringio::ConcurrentFuture::<u32>::new();
    /// assert!(fut.result(Some(Duration::from_millis(1))).unwrap_err().is_timeout());
    /// let setter = fut.clone();
    /// std::thread::spawn(move || setter.set_result(3).unwrap());
    /// assert_eq!(fut.result(None).unwrap(), 3);
    ///
    /// // On the loop's own thread: an error, not a hang.
    /// ringio::run(async {
    ///     let handle = ringio::get_running_loop().unwrap().handle();
    ///     let fut = ringio::run_coroutine_threadsafe(async { Ok::<_, ringio::Error>(4) }, &handle);
    ///     let e = fut.result(None).unwrap_err();
    ///     assert!(e.to_string().contains("would block the event loop that must complete it"));
    ///     assert_eq!(fut.await.unwrap(), 4);
    /// });
    /// ```
    pub fn result(&self, timeout: Option<Duration>) -> Result<T>
    where
        T: Clone,
    {
        let st = self.wait_done(timeout)?;
        match st.outcome.as_ref() {
            Some(Ok(v)) => Ok(v.clone()),
            Some(Err(e)) => Err(e.clone()),
            None => Err(Error::InvalidState("Result is not set.".into())),
        }
    }

    /// Like [`result`](Self::result), but moves the value out (for values
    /// that are not `Clone`); a later read of the value is
    /// `Err(InvalidState)`, errors stay readable. Same error as `result`
    /// on the thread of the loop that must complete it.
    pub fn take(&self, timeout: Option<Duration>) -> Result<T> {
        let mut st = self.wait_done(timeout)?;
        take_outcome(&mut st)
    }

    /// Blocks until done, then gives `Ok(None)` after a value, `Ok(Some(e))`
    /// after an exception, `Err(Cancelled)` if cancelled, `Err(Timeout)` if
    /// `timeout` passes first. Same error as [`result`](Self::result) on
    /// the thread of the loop that must complete it.
    pub fn exception(&self, timeout: Option<Duration>) -> Result<Option<Error>> {
        let st = self.wait_done(timeout)?;
        match st.outcome.as_ref() {
            _ if st.taken => Ok(None),
            Some(Err(e)) if e.is_cancelled() => Err(e.clone()),
            Some(Err(e)) => Ok(Some(e.clone())),
            _ => Ok(None),
        }
    }

    /// Calls `f(&future)` when it is done, on the thread that settles it —
    /// or at once, on this thread, if it is done already (as
    /// `concurrent.futures` does).
    pub fn add_done_callback(&self, f: impl FnOnce(&ConcurrentFuture<T>) + Send + 'static) {
        let mut st = self.lock();
        if st.outcome.is_none() {
            st.callbacks.push(Box::new(f));
            return;
        }
        drop(st);
        f(self);
    }

    /// Blocks until done: the locked state; `Err(Timeout)` when `timeout`
    /// passes first; `Err(InvalidState)` at once if pending and this thread
    /// runs the loop that must complete it.
    fn wait_done(&self, timeout: Option<Duration>) -> Result<MutexGuard<'_, CfState<T>>> {
        // A timeout too long to represent is no limit.
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        let mut st = self.lock();
        if st.outcome.is_none() && self.on_owner_thread() {
            return Err(Error::InvalidState(
                "cannot block on this future from its event loop's own thread: the call \
                 would block the event loop that must complete it (await it instead)"
                    .into(),
            ));
        }
        while st.outcome.is_none() {
            st = match deadline {
                None => self
                    .inner
                    .settled
                    .wait(st)
                    .unwrap_or_else(|e| e.into_inner()),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return Err(Error::Timeout);
                    }
                    self.inner
                        .settled
                        .wait_timeout(st, d - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
            };
        }
        Ok(st)
    }

    /// Whether this thread runs the loop that must complete the future.
    fn on_owner_thread(&self) -> bool {
        self.inner
            .owner
            .is_some_and(|id| context::with_loop(|lp| lp.id == id).unwrap_or(false))
    }

    pub(crate) fn settle(&self, result: Result<T>) -> Result<()> {
        let (callbacks, wakers) = {
            let mut st = self.lock();
            if st.outcome.is_some() {
                return Err(Error::InvalidState(
                    "invalid state: the future is already done".into(),
                ));
            }
            st.outcome = Some(result);
            st.canceller = None;
            (
                std::mem::take(&mut st.callbacks),
                std::mem::take(&mut st.wakers),
            )
        };
        self.inner.settled.notify_all();
        for w in wakers {
            w.wake();
        }
        for f in callbacks {
            // As concurrent.futures: a failing callback is logged and the
            // others still run.
            if let Err(p) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(self))) {
                eprintln!(
                    "exception calling callback for {self:?}: {}",
                    crate::task::raw::panic_message(&*p)
                );
            }
        }
        Ok(())
    }

    /// Installs how to cancel the work. If the future was cancelled
    /// meanwhile, installs nothing and gives the cancel message instead.
    fn set_canceller(&self, c: Box<dyn FnOnce(Option<String>) + Send>) -> Option<Option<String>> {
        let mut st = self.lock();
        match &st.outcome {
            None => {
                st.canceller = Some(c);
                None
            }
            Some(Err(Error::Cancelled { msg })) => Some(msg.clone()),
            Some(_) => None,
        }
    }
}

fn taken() -> Error {
    Error::InvalidState("the result was already moved out by an earlier await".into())
}

fn take_outcome<T>(st: &mut CfState<T>) -> Result<T> {
    match st.outcome.take() {
        Some(Ok(v)) => {
            st.taken = true;
            // Keep the future "done" after the value left.
            st.outcome = Some(Err(taken()));
            Ok(v)
        }
        Some(Err(e)) => {
            st.outcome = Some(Err(e.clone()));
            Err(e)
        }
        None => Err(Error::InvalidState("Result is not set.".into())),
    }
}

/// The future of awaiting a [`ConcurrentFuture`] (from a task on any loop,
/// or any executor). A ringio await point: cancelling the awaiting task
/// cancels the `ConcurrentFuture` (and its work) and returns
/// `Err(Cancelled)` at once.
#[must_use = "futures do nothing unless awaited"]
pub struct WaitConcurrent<T> {
    cf: ConcurrentFuture<T>,
    location: &'static Location<'static>,
}

impl<T> fmt::Debug for WaitConcurrent<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WaitConcurrent({:?})", self.cf)
    }
}

impl<T: Send + 'static> IntoFuture for ConcurrentFuture<T> {
    type Output = Result<T>;
    type IntoFuture = WaitConcurrent<T>;

    #[track_caller]
    fn into_future(self) -> WaitConcurrent<T> {
        WaitConcurrent {
            cf: self,
            location: Location::caller(),
        }
    }
}

impl<T: Send + 'static> Future for WaitConcurrent<T> {
    type Output = Result<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Result<T>> {
        let this = self.get_mut();
        if let Some(msg) = AwaitPoint::current().take() {
            // asyncio's wrap_future: cancelling the awaiter cancels the
            // source. Already done: the cancel still wins (cancellation rule 5) and
            // the value stays readable from the future.
            this.cf.cancel_inner(msg.clone());
            return Poll::Ready(Err(Error::Cancelled { msg }));
        }
        let mut st = this.cf.lock();
        if st.outcome.is_some() {
            return Poll::Ready(take_outcome(&mut st));
        }
        if !st.wakers.iter().any(|w| w.will_wake(cx.waker())) {
            st.wakers.push(cx.waker().clone());
        }
        drop(st);
        AwaitPoint::current().park(this.location);
        Poll::Pending
    }
}

static NEXT_TICKET: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// Tasks started for other threads, by ticket, so that a
    /// `ConcurrentFuture::cancel` from any thread can find its task (a
    /// `Task` is not `Send`; the ticket is). An entry goes when its task
    /// ends.
    static REMOTE_TASKS: RefCell<HashMap<u64, TaskRef>> = RefCell::new(HashMap::new());
}

/// Settles a `ConcurrentFuture` once; if dropped unsettled (the loop closed
/// before the work could start or finish), settles it with an error that
/// says so.
struct Completer<T: Send + 'static> {
    cf: Option<ConcurrentFuture<T>>,
    /// The loop ran the start closure (else it closed before that).
    started: bool,
}

impl<T: Send + 'static> Completer<T> {
    fn complete(mut self, r: Result<T>) {
        if let Some(cf) = self.cf.take() {
            let _ = cf.settle(r);
        }
    }
}

impl<T: Send + 'static> Drop for Completer<T> {
    fn drop(&mut self) {
        if let Some(cf) = self.cf.take() {
            let msg = if self.started {
                "the event loop closed before the coroutine finished"
            } else {
                "cannot run the coroutine: the event loop is closed"
            };
            let _ = cf.settle(Err(Error::InvalidState(msg.into())));
        }
    }
}

/// Submits `fut` to the loop of `handle` from any thread and returns a
/// [`ConcurrentFuture`] of its result (asyncio's
/// `run_coroutine_threadsafe`).
///
/// The future runs as a task on that loop, in a copy of the calling
/// thread's context. Its error or panic (`Error::Panic`) carries over;
/// [`ConcurrentFuture::cancel`] cancels the task (one not started yet still
/// runs its first step, as in asyncio, and sees the cancel at its first
/// await point). Block on the result from another thread; on the loop's own
/// thread, await it. A handle to a closed loop
/// gives a future already failed with `Error::InvalidState("the event loop
/// is closed")`.
///
/// ```
/// use std::time::Duration;
///
/// // A loop on another thread, kept running by its main future.
/// let (tx, rx) = std::sync::mpsc::channel();
/// let lp = std::thread::spawn(move || {
///     ringio::run(async move {
///         let stop = ringio::Promise::<()>::new();
///         let handle = ringio::get_running_loop().unwrap().handle();
///         tx.send(handle).unwrap();
///         ringio::sleep(Duration::from_millis(200)).await.unwrap();
///         drop(stop);
///     })
/// });
/// let handle = rx.recv().unwrap();
///
/// // Create a coroutine and submit it to the given loop.
/// let fut = ringio::run_coroutine_threadsafe(
///     ringio::sleep_with(Duration::from_millis(10), 3),
///     &handle,
/// );
/// // Wait for the result with an optional timeout argument.
/// match fut.result(Some(Duration::from_secs(5))) {
///     Ok(v) => assert_eq!(v, 3),
///     Err(ringio::Error::Timeout) => {
///         println!("The coroutine took too long, cancelling the task...");
///         fut.cancel();
///     }
///     Err(e) => println!("The coroutine raised an exception: {e:?}"),
/// }
/// lp.join().unwrap();
/// ```
pub fn run_coroutine_threadsafe<F, T, E>(fut: F, handle: &LoopHandle) -> ConcurrentFuture<T>
where
    F: Future<Output = std::result::Result<T, E>> + Send + 'static,
    T: Send + 'static,
    E: Into<Error> + 'static,
{
    let ctx = Context::current();
    spawn_on(handle, ctx, move || fut)
}

/// The shared path of `run_coroutine_threadsafe` and the `LoopHandle`
/// spawns: `make` builds the future on the loop's thread.
fn spawn_on<M, F, T, E>(handle: &LoopHandle, ctx: Context, make: M) -> ConcurrentFuture<T>
where
    M: FnOnce() -> F + Send + 'static,
    F: Future<Output = std::result::Result<T, E>> + 'static,
    T: Send + 'static,
    E: Into<Error> + 'static,
{
    let cf = ConcurrentFuture::with_owner(Some(handle.shared.id));
    let mut completer = Completer {
        cf: Some(cf.clone()),
        started: false,
    };
    let target = handle.clone();
    let start = move || {
        completer.started = true;
        let cf = match &completer.cf {
            Some(cf) => cf.clone(),
            None => return,
        };
        // The task is made even if the future was cancelled meanwhile, as
        // asyncio's `_chain_future` does: the cancel reaches the task after
        // its first step, at its first await point.
        let task: Task<T> = match Task::builder().context(ctx).spawn(make()) {
            Ok(t) => t,
            Err(e) => return completer.complete(Err(e)),
        };
        let ticket = NEXT_TICKET.fetch_add(1, Ordering::Relaxed);
        let obj: TaskRef = task.as_ref();
        REMOTE_TASKS.with(|m| m.borrow_mut().insert(ticket, obj.clone()));
        let done = task.clone();
        task.add_done_callback(move |_| {
            REMOTE_TASKS.with(|m| m.borrow_mut().remove(&ticket));
            completer.complete(done.take_outcome());
        });
        let cancelled_meanwhile = cf.set_canceller(Box::new(move |msg| {
            // Runs on the cancelling thread: reach the task on its loop.
            // The loop takes this callback in a later turn than the one
            // that made the task, so it runs after the task's first step.
            let _ = target.call_soon_threadsafe(move || {
                let task = REMOTE_TASKS.with(|m| m.borrow().get(&ticket).cloned());
                if let Some(t) = task {
                    match msg {
                        Some(m) => t.cancel_with(m),
                        None => t.cancel(),
                    };
                }
            });
        }));
        // Cancelled before the loop got here: forward the cancel the same
        // way, behind the task's first step on the run queue (asyncio's
        // `call_soon_threadsafe(source.cancel)`).
        if let Some(msg) = cancelled_meanwhile {
            let cancel = move || {
                match msg {
                    Some(m) => task.cancel_with(m),
                    None => task.cancel(),
                };
            };
            match crate::get_running_loop() {
                Ok(lp) => {
                    lp.call_soon(cancel);
                }
                // Not reached: this closure runs on its loop.
                Err(_) => cancel(),
            }
        }
    };
    // On a closed loop the closure comes back dropped, and its completer
    // has settled the future with the error.
    let _ = handle.call_soon_threadsafe(start);
    cf
}

impl LoopHandle {
    /// Runs the `Send` future `fut` as a task on this handle's loop, from
    /// any thread (another core's loop included), and returns a
    /// [`ConcurrentFuture`] of its result: block on it from a plain thread,
    /// or `.await` it from a task on another loop. Same as
    /// [`run_coroutine_threadsafe`]`(fut, self)`.
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// // One loop hands work to another through its handle.
    /// let (tx, rx) = std::sync::mpsc::channel();
    /// let worker = std::thread::spawn(move || {
    ///     ringio::run(async move {
    ///         tx.send(ringio::get_running_loop().unwrap().handle()).unwrap();
    ///         ringio::sleep(Duration::from_millis(200)).await.unwrap();
    ///     })
    /// });
    /// let other = rx.recv().unwrap();
    /// ringio::run(async move {
    ///     let answer = other.spawn(async { Ok::<_, ringio::Error>(6 * 7) });
    ///     assert_eq!(answer.await.unwrap(), 42);
    /// });
    /// worker.join().unwrap();
    /// ```
    pub fn spawn<F, T, E>(&self, fut: F) -> ConcurrentFuture<T>
    where
        F: Future<Output = std::result::Result<T, E>> + Send + 'static,
        T: Send + 'static,
        E: Into<Error> + 'static,
    {
        run_coroutine_threadsafe(fut, self)
    }

    /// Like [`spawn`](LoopHandle::spawn), for a future that need not be
    /// `Send`: the `Send` closure `make` builds it on the loop's thread (so
    /// it may hold `Rc`s and other loop-local state). The task runs in a
    /// copy of the caller's context.
    pub fn spawn_with<M, F, T, E>(&self, make: M) -> ConcurrentFuture<T>
    where
        M: FnOnce() -> F + Send + 'static,
        F: Future<Output = std::result::Result<T, E>> + 'static,
        T: Send + 'static,
        E: Into<Error> + 'static,
    {
        spawn_on(self, Context::current(), make)
    }
}
