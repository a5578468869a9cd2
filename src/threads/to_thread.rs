//! `to_thread` and `Loop::run_in_executor`: blocking work on a pool
//! thread, awaited on the loop.
//!
//! The worker stores the closure's result in a shared slot and wakes the
//! awaiting task. The task's waker is the loop's own: from a pool thread it
//! queues the wake on the loop's remote queue and writes the eventfd whose
//! read is armed on the loop's ring, so the loop, blocked in
//! `io_uring_enter`, wakes with a completion — never by polling.
//!
//! Each loop keeps its default pool (and the count of jobs it handed to
//! it) in a thread-local registry: loops are per-thread, and the registry
//! needs no change to the loop itself. The loop's shutdown hook waits for
//! those jobs (asyncio's `shutdown_default_executor`).

use std::cell::RefCell;
use std::fmt;
use std::future::Future;
use std::panic::{AssertUnwindSafe, Location, catch_unwind};
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll, Waker};
use std::time::{Duration, Instant};

use super::pool::ThreadPool;
use crate::Loop;
use crate::error::{Error, Result};
use crate::runtime::context;
use crate::runtime::event_loop::LoopInner;
use crate::runtime::report::{Report, ReportKind};
use crate::runtime::shared::{LoopShared, Remote};
use crate::task::Context;
use crate::task::await_point::AwaitPoint;

/// Where a job's result goes: the awaiting future reads it from here.
struct Slot<T> {
    state: Mutex<SlotState<T>>,
}

enum SlotState<T> {
    /// Running or queued; the waker of the task awaiting it.
    Waiting(Option<Waker>),
    Ready(Result<T>),
    /// The awaiter is gone (cancelled or dropped): the result is dropped
    /// on the worker thread when it arrives.
    Abandoned,
    Taken,
}

impl<T> Slot<T> {
    fn lock(&self) -> std::sync::MutexGuard<'_, SlotState<T>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Called on the worker: store the result and wake the awaiter.
    fn complete(&self, result: Result<T>) {
        let mut st = self.lock();
        match std::mem::replace(&mut *st, SlotState::Taken) {
            SlotState::Waiting(waker) => {
                *st = SlotState::Ready(result);
                drop(st);
                if let Some(w) = waker {
                    w.wake();
                }
            }
            other => {
                *st = other;
                drop(st);
                // Nobody will read it; drop it here, off the loop.
                drop(result);
            }
        }
    }

    fn abandon(&self) {
        let mut st = self.lock();
        if let SlotState::Waiting(_) = &*st {
            *st = SlotState::Abandoned;
        }
    }
}

/// Jobs one loop handed to its default pool and that have not finished.
struct Outstanding {
    count: AtomicUsize,
    /// The loop's shutdown is waiting: each finished job wakes the loop.
    draining: AtomicBool,
    shared: Arc<LoopShared>,
}

/// Held by a job; dropped when it has run (or was dropped unrun).
struct OutstandingGuard(Arc<Outstanding>);

impl Drop for OutstandingGuard {
    fn drop(&mut self) {
        self.0.count.fetch_sub(1, Ordering::SeqCst);
        if self.0.draining.load(Ordering::SeqCst) {
            // A no-op through the remote queue wakes the loop's ring wait,
            // so the shutdown hook sees the count drop without polling.
            let _ = self.0.shared.push(Remote::Call(Box::new(|| {})));
        }
    }
}

/// One loop's executor state.
struct LoopExecutor {
    loop_id: u64,
    pool: ThreadPool,
    /// The loop made this pool itself (and shuts it down at the end of run).
    owned: bool,
    outstanding: Arc<Outstanding>,
    /// The shutdown hook for the current run is registered.
    hooked: bool,
}

thread_local! {
    /// The executors of the loops of this thread (usually one).
    static EXECUTORS: RefCell<Vec<LoopExecutor>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` on `lp`'s executor entry, creating it (with a lazily made
/// default pool) and registering the shutdown hook as needed.
fn with_executor<R>(lp: &Rc<LoopInner>, f: impl FnOnce(&mut LoopExecutor) -> R) -> R {
    let (r, hook) = EXECUTORS.with(|ex| {
        let mut ex = ex.borrow_mut();
        let i = match ex.iter().position(|e| e.loop_id == lp.id) {
            Some(i) => i,
            None => {
                ex.push(LoopExecutor {
                    loop_id: lp.id,
                    pool: ThreadPool::default(),
                    owned: true,
                    outstanding: Arc::new(Outstanding {
                        count: AtomicUsize::new(0),
                        draining: AtomicBool::new(false),
                        shared: lp.shared.clone(),
                    }),
                    hooked: false,
                });
                ex.len() - 1
            }
        };
        let e = &mut ex[i];
        let hook = !std::mem::replace(&mut e.hooked, true);
        (f(e), hook)
    });
    if hook {
        let weak = Rc::downgrade(lp);
        lp.shutdown_hooks
            .borrow_mut()
            .push(Box::new(move || shutdown_executor(weak)));
    }
    r
}

/// The loop's shutdown hook (asyncio's `shutdown_default_executor`): wait,
/// within the pool's bound, for the jobs this loop gave its default pool,
/// keeping the loop turning meanwhile (a job may still need the loop); then
/// shut down the pool if the loop made it. Reports if the bound passed.
fn shutdown_executor(lp: Weak<LoopInner>) {
    let Some(lp) = lp.upgrade() else { return };
    let entry = EXECUTORS.with(|ex| {
        let mut ex = ex.borrow_mut();
        let i = ex.iter().position(|e| e.loop_id == lp.id)?;
        ex[i].hooked = false;
        let e = &ex[i];
        let snapshot = (e.pool.clone(), e.owned, e.outstanding.clone());
        if e.owned {
            // The next run starts a fresh default pool.
            ex.remove(i);
        }
        Some(snapshot)
    });
    let Some((pool, owned, outstanding)) = entry else {
        return;
    };
    // Capped so the deadline and its timer stay representable.
    let bound = pool
        .shutdown_timeout()
        .min(Duration::from_secs(365 * 24 * 3600));
    let deadline = Instant::now() + bound;
    outstanding.draining.store(true, Ordering::SeqCst);
    // A timer at the deadline bounds the ring wait of each turn.
    let timer = crate::Loop::from_inner(lp.clone()).call_later(bound, || {});
    let mut finished = true;
    while outstanding.count.load(Ordering::SeqCst) > 0 {
        if Instant::now() >= deadline {
            finished = false;
            break;
        }
        lp.run_once();
    }
    timer.cancel();
    outstanding.draining.store(false, Ordering::SeqCst);
    if owned && finished {
        let left = deadline.saturating_duration_since(Instant::now());
        finished = pool.shutdown(Some(left));
    } else if owned {
        // Let the threads exit once their work ends; do not wait again.
        pool.shutdown(Some(Duration::ZERO));
    }
    if !finished {
        lp.report(Report::new(
            ReportKind::ExecutorShutdownTimeout,
            format!(
                "The executor did not finishing joining its threads within {} seconds.",
                bound.as_secs_f64()
            ),
        ));
    }
}

/// Hands `job` to `executor` (or the loop's default pool, counted for the
/// shutdown wait) and returns the slot its result lands in.
fn submit<T, F>(
    lp: &Rc<LoopInner>,
    executor: Option<&ThreadPool>,
    mut ctx: Context,
    f: F,
) -> Result<Arc<Slot<T>>>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let slot = Arc::new(Slot {
        state: Mutex::new(SlotState::Waiting(None)),
    });
    let out = slot.clone();
    let run = move || {
        // The closure runs in the caller's context (a copy): what it sets
        // stays in that copy. The panic is caught inside `Context::run` so
        // the worker's own context is always restored.
        let r = ctx.run(|| catch_unwind(AssertUnwindSafe(f)));
        out.complete(r.map_err(|p| Error::Panic(crate::task::raw::panic_message(&*p))));
    };
    match executor {
        Some(pool) => pool.inner.submit(Box::new(run))?,
        None => {
            let (pool, outstanding) =
                with_executor(lp, |e| (e.pool.clone(), e.outstanding.clone()));
            outstanding.count.fetch_add(1, Ordering::SeqCst);
            let guard = OutstandingGuard(outstanding);
            pool.inner.submit(Box::new(move || {
                let _guard = guard;
                run();
            }))?;
        }
    }
    Ok(slot)
}

/// The future of [`to_thread`] and [`Loop::run_in_executor`]. `Send`.
///
/// Awaiting it is a ringio await point: a cancellation of the awaiting task
/// returns `Err(Cancelled)` at once; the closure still runs to its end on
/// its thread, and its result is dropped there.
#[must_use = "futures do nothing unless awaited"]
pub struct ToThread<T> {
    state: State<T>,
    location: &'static Location<'static>,
}

enum State<T> {
    /// `to_thread` before its first poll (a coroutine starts when awaited).
    Start {
        f: Box<dyn FnOnce() -> T + Send>,
        ctx: Context,
    },
    Submitted(Arc<Slot<T>>),
    Failed(Error),
    Done,
}

impl<T> fmt::Debug for ToThread<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Start { .. } => "not started",
            State::Submitted(_) => "submitted",
            State::Failed(_) => "failed",
            State::Done => "done",
        };
        write!(f, "<ToThread {state}>")
    }
}

impl<T> Unpin for ToThread<T> {}

/// Runs `f` on a thread of the loop's pool and gives its result (asyncio's
/// `to_thread`). The context-variable values of the caller travel with `f`
/// (a copy: what `f` sets is not seen by the caller). A panic in `f` is
/// `Err(Error::Panic)`. Outside a loop the await gives "no running event
/// loop".
///
/// Like a coroutine, nothing runs until the future is first polled. The
/// pool is bounded (default `min(32, cpus + 4)` threads, asyncio's) and
/// started lazily; `run` waits for outstanding work before it returns.
///
/// The document's example, in tenths of seconds: the blocking call and the
/// sleep overlap, so the whole takes about 0.1 s, not 0.2 s. (`join!` here
/// is from the separate `futures-util` crate, which your `Cargo.toml` must
/// list; [`gather!`](crate::gather!) is ringio's own way to await both.)
///
/// ```
/// use std::time::{Duration, Instant};
///
/// fn blocking_io() {
///     // Any blocking call: file I/O, a C library, a sleep.
///     std::thread::sleep(Duration::from_millis(100));
/// }
///
/// ringio::run(async {
///     let t0 = Instant::now();
///     let (io, slept) = futures_util::join!(
///         ringio::to_thread(blocking_io),
///         ringio::sleep(Duration::from_millis(100)),
///     );
///     io.unwrap();
///     slept.unwrap();
///     assert!(t0.elapsed() < Duration::from_millis(190));
/// });
/// ```
#[track_caller]
pub fn to_thread<F, T>(f: F) -> ToThread<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    ToThread {
        state: State::Start {
            f: Box::new(f),
            ctx: Context::current(),
        },
        location: Location::caller(),
    }
}

impl<T: Send + 'static> Future for ToThread<T> {
    type Output = Result<T>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Result<T>> {
        let this = &mut *self;
        if let Some(msg) = AwaitPoint::current().take() {
            // Returns at once; the thread's work runs on, its result is
            // dropped when it arrives.
            if let State::Submitted(slot) = std::mem::replace(&mut this.state, State::Done) {
                slot.abandon();
            }
            return Poll::Ready(Err(Error::Cancelled { msg }));
        }
        if let State::Start { .. } = this.state {
            let State::Start { f, ctx } = std::mem::replace(&mut this.state, State::Done) else {
                unreachable!("checked above")
            };
            let Some(lp) = context::current_loop() else {
                return Poll::Ready(Err(Error::no_running_loop()));
            };
            this.state = match submit(&lp, None, ctx, f) {
                Ok(slot) => State::Submitted(slot),
                Err(e) => State::Failed(e),
            };
        }
        match std::mem::replace(&mut this.state, State::Done) {
            State::Failed(e) => Poll::Ready(Err(e)),
            State::Done | State::Start { .. } => Poll::Ready(Err(Error::InvalidState(
                "to_thread future polled after completion".into(),
            ))),
            State::Submitted(slot) => {
                let mut st = slot.lock();
                match std::mem::replace(&mut *st, SlotState::Taken) {
                    SlotState::Ready(r) => Poll::Ready(r),
                    SlotState::Waiting(old) => {
                        let waker = match old {
                            Some(w) if w.will_wake(cx.waker()) => w,
                            _ => cx.waker().clone(),
                        };
                        *st = SlotState::Waiting(Some(waker));
                        drop(st);
                        this.state = State::Submitted(slot);
                        AwaitPoint::current().park(this.location);
                        Poll::Pending
                    }
                    SlotState::Abandoned | SlotState::Taken => Poll::Ready(Err(
                        Error::InvalidState("to_thread result already taken".into()),
                    )),
                }
            }
        }
    }
}

impl<T> Drop for ToThread<T> {
    fn drop(&mut self) {
        if let State::Submitted(slot) = &self.state {
            slot.abandon();
        }
    }
}

impl Loop {
    /// Runs `f` on `executor` (`None`: the loop's default pool, the one
    /// [`to_thread`] uses) and returns a future of its result (asyncio's
    /// `run_in_executor`). The work is handed over at once, before the
    /// future is awaited; a panic in `f` is `Err(Error::Panic)`.
    ///
    /// As in asyncio, `f` runs without the caller's context variables; use
    /// [`to_thread`] to carry them. `run` waits only for work on the default
    /// pool; a pool passed here is the caller's to shut down.
    ///
    /// ```
    /// ringio::run(async {
    ///     let lp = ringio::get_running_loop().unwrap();
    ///     let fut = lp.run_in_executor(None, || std::fs::metadata("/").is_ok());
    ///     assert!(fut.await.unwrap());
    /// });
    /// ```
    #[track_caller]
    pub fn run_in_executor<F, T>(&self, executor: Option<&ThreadPool>, f: F) -> ToThread<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let state = match submit(&self.inner, executor, Context::default(), f) {
            Ok(slot) => State::Submitted(slot),
            Err(e) => State::Failed(e),
        };
        ToThread {
            state,
            location: Location::caller(),
        }
    }

    /// Makes `pool` the loop's default executor (asyncio's
    /// `set_default_executor`), used by [`to_thread`] and
    /// `run_in_executor(None, ..)` from now on. The pool the loop made
    /// itself, if any, stops taking work and its threads exit when idle.
    /// `run` waits (up to the pool's
    /// [`shutdown_timeout`](super::ThreadPoolBuilder::shutdown_timeout))
    /// for the work this loop gave it, but leaves the pool running: it is
    /// the caller's, and may serve other loops.
    pub fn set_default_executor(&self, pool: ThreadPool) {
        let old = with_executor(&self.inner, |e| {
            let owned = std::mem::replace(&mut e.owned, false);
            let old = std::mem::replace(&mut e.pool, pool);
            owned.then_some(old)
        });
        if let Some(old) = old {
            old.shutdown(Some(Duration::ZERO));
        }
    }

    /// The loop's default executor (made now if the loop has none yet).
    pub fn default_executor(&self) -> ThreadPool {
        with_executor(&self.inner, |e| e.pool.clone())
    }
}
