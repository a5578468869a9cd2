//! `Loop`, `LoopHandle` and `CallbackHandle`: the public faces of a loop.

use std::fmt;
use std::future::Future;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::context;
use super::event_loop::{CallbackCell, LoopInner};
use super::report::{Report, ReportKind};
use super::shared::{LoopShared, Remote};
use crate::driver::DriverStats;
use crate::error::{Error, Result};
use crate::task::{Context, Promise};

/// The running event loop (asyncio's loop object), from
/// [`get_running_loop`]. Only usable on the loop's own thread; other
/// threads use its [`LoopHandle`]. Two `Loop`s compare equal when they are
/// the same loop.
#[derive(Clone)]
pub struct Loop {
    pub(crate) inner: Rc<LoopInner>,
}

/// Returns the loop running on this thread (asyncio's
/// `get_running_loop()`); `Err("no running event loop")` elsewhere.
pub fn get_running_loop() -> Result<Loop> {
    context::current_loop()
        .map(Loop::from_inner)
        .ok_or_else(Error::no_running_loop)
}

/// A callback scheduled with `call_soon`, `call_later` or `call_at`
/// (asyncio's `Handle`/`TimerHandle`). Dropping it does not cancel the
/// callback; [`cancel`](CallbackHandle::cancel) does.
#[derive(Clone)]
pub struct CallbackHandle {
    cell: Rc<CallbackCell>,
    lp: std::rc::Weak<LoopInner>,
}

impl CallbackHandle {
    /// Cancels the callback if it has not run; a timer callback leaves the
    /// timer heap at once.
    pub fn cancel(&self) {
        self.cell.cancelled.set(true);
        self.cell.f.borrow_mut().take();
        if let (Some(key), Some(lp)) = (self.cell.timer.take(), self.lp.upgrade()) {
            lp.timers.borrow_mut().remove(key);
        }
    }

    /// Whether [`cancel`](CallbackHandle::cancel) was called.
    pub fn cancelled(&self) -> bool {
        self.cell.cancelled.get()
    }

    /// For a timer callback, the `Loop::time()` it is due at.
    pub fn when(&self) -> Option<f64> {
        self.cell.when
    }
}

impl fmt::Debug for CallbackHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallbackHandle")
            .field("cancelled", &self.cancelled())
            .field("when", &self.cell.when)
            .finish()
    }
}

impl Loop {
    pub(crate) fn from_inner(inner: Rc<LoopInner>) -> Loop {
        Loop { inner }
    }

    /// The loop's clock, in seconds (monotonic; its origin is the loop's
    /// creation). `call_at` takes times on this clock.
    pub fn time(&self) -> f64 {
        self.inner.instant_to_time(Instant::now())
    }

    /// A handle other threads can use to reach this loop.
    pub fn handle(&self) -> LoopHandle {
        LoopHandle {
            shared: self.inner.shared.clone(),
        }
    }

    /// Schedules `f` for the next loop turn, in the current context.
    pub fn call_soon(&self, f: impl FnOnce() + 'static) -> CallbackHandle {
        let cell = self.inner.call_soon(Box::new(f), Context::current());
        self.handle_of(cell)
    }

    /// Schedules `f` to run after `delay`. Callbacks due at the same time run
    /// in the order they were scheduled.
    pub fn call_later(&self, delay: Duration, f: impl FnOnce() + 'static) -> CallbackHandle {
        let deadline = crate::time::deadline_after(delay);
        let cell = self
            .inner
            .call_at_instant(deadline, Box::new(f), Context::current());
        self.handle_of(cell)
    }

    /// Schedules `f` at loop time `when` (see [`Loop::time`]).
    pub fn call_at(&self, when: f64, f: impl FnOnce() + 'static) -> CallbackHandle {
        let deadline = self.inner.time_to_instant(when);
        let cell = self
            .inner
            .call_at_instant(deadline, Box::new(f), Context::current());
        self.handle_of(cell)
    }

    fn handle_of(&self, cell: Rc<CallbackCell>) -> CallbackHandle {
        CallbackHandle {
            cell,
            lp: Rc::downgrade(&self.inner),
        }
    }

    /// A new pending [`Promise`] on this loop (asyncio's `create_future()`).
    pub fn create_future<T: 'static>(&self) -> Promise<T> {
        Promise::new()
    }

    /// Installs the handler that receives reports (asyncio's
    /// `set_exception_handler`); `None` restores the default (the logger).
    pub fn set_exception_handler(&self, handler: Option<impl Fn(&Loop, &Report) + 'static>) {
        *self.inner.exception_handler.borrow_mut() =
            handler.map(|h| Rc::new(h) as Rc<dyn Fn(&Loop, &Report)>);
    }

    /// Sends a report through the exception handler (asyncio's
    /// `call_exception_handler`).
    pub fn call_exception_handler(&self, message: impl Into<String>, error: Option<Error>) {
        let mut report = Report::new(ReportKind::Custom, message);
        report.error = error;
        self.inner.report(report);
    }

    /// What the default exception handler does: hand the report to the logger.
    pub fn default_exception_handler(&self, report: &Report) {
        self.inner.default_report(report);
    }

    /// Whether debug mode is on.
    pub fn get_debug(&self) -> bool {
        self.inner.debug.get()
    }

    /// Turns debug mode on or off.
    pub fn set_debug(&self, on: bool) {
        self.inner.debug.set(on);
    }

    /// The slow-callback threshold of debug mode.
    pub fn slow_callback_duration(&self) -> Duration {
        self.inner.slow_callback_duration.get()
    }

    /// Sets the slow-callback threshold of debug mode.
    pub fn set_slow_callback_duration(&self, d: Duration) {
        self.inner.slow_callback_duration.set(d);
    }

    /// Whether the loop has closed.
    pub fn is_closed(&self) -> bool {
        self.inner.closed.get()
    }

    /// Counters of the ring driver: operations in flight, completions
    /// reaped, kernel cancellations, enters.
    pub fn stats(&self) -> LoopStats {
        LoopStats {
            driver: self.inner.driver.borrow().stats(),
            timers: self.inner.timers.borrow().len(),
            tasks: self.inner.live_task_count(),
            run_queue: self.inner.ready_len(),
            slow_polls: self.inner.slow_polls.get(),
            wakeups_msg_ring: self
                .inner
                .shared
                .wakeups_msg_ring
                .load(std::sync::atomic::Ordering::Relaxed),
            wakeups_eventfd: self
                .inner
                .shared
                .wakeups_eventfd
                .load(std::sync::atomic::Ordering::Relaxed),
        }
    }

    /// Runs `f` at the end of `run`, before the ring is drained (used by the
    /// `to_thread` pool to shut down with the loop).
    pub fn on_shutdown(&self, f: impl FnOnce() + 'static) {
        self.inner.shutdown_hooks.borrow_mut().push(Box::new(f));
    }
}

impl PartialEq for Loop {
    fn eq(&self, other: &Self) -> bool {
        Rc::ptr_eq(&self.inner, &other.inner)
    }
}

impl Eq for Loop {}

impl fmt::Debug for Loop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "<Loop id={} closed={} debug={}>",
            self.inner.id,
            self.is_closed(),
            self.get_debug()
        )
    }
}

/// Counters of one loop.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LoopStats {
    /// The ring driver's counters.
    pub driver: DriverStats,
    /// Armed timers.
    pub timers: usize,
    /// Tasks not done.
    pub tasks: usize,
    /// Tasks and callbacks waiting on the run queue: a queue that stays
    /// long means the loop is saturated.
    pub run_queue: usize,
    /// Polls and callbacks that held the loop longer than
    /// `slow_callback_duration` (measured in debug mode only).
    pub slow_polls: u64,
    /// Times another loop woke this one with an `IORING_OP_MSG_RING`
    /// posted into its ring.
    pub wakeups_msg_ring: u64,
    /// Times another thread woke this one through its eventfd (plain
    /// threads, or a kernel without MSG_RING).
    pub wakeups_eventfd: u64,
}

/// A `Send + Sync + Clone` handle to a loop, for other threads.
#[derive(Clone)]
pub struct LoopHandle {
    pub(crate) shared: Arc<LoopShared>,
}

impl LoopHandle {
    /// Schedules `f` on the loop from any thread (asyncio's
    /// `call_soon_threadsafe`); the loop wakes through its ring.
    /// `Err(InvalidState)` if the loop has closed.
    pub fn call_soon_threadsafe(&self, f: impl FnOnce() + Send + 'static) -> Result<()> {
        self.shared.push(Remote::Call(Box::new(f)))
    }

    /// Whether the loop has closed.
    pub fn is_closed(&self) -> bool {
        self.shared.is_closed()
    }

    /// Whether this handle's loop is the one running on this thread.
    pub fn is_current(&self) -> bool {
        context::with_loop(|lp| lp.id == self.shared.id).unwrap_or(false)
    }

    /// Creates a task on the loop from any thread, for a `Send` future;
    /// its outcome is dropped. `Err` if the loop has closed.
    pub fn spawn_detached<F, T, E>(&self, fut: F) -> Result<()>
    where
        F: Future<Output = std::result::Result<T, E>> + Send + 'static,
        T: 'static,
        E: Into<Error> + 'static,
    {
        self.call_soon_threadsafe(move || {
            let _ = crate::Task::builder().spawn(fut);
        })
    }
}

impl PartialEq for LoopHandle {
    fn eq(&self, other: &Self) -> bool {
        self.shared.id == other.shared.id
    }
}

impl Eq for LoopHandle {}

impl fmt::Debug for LoopHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "<LoopHandle id={} closed={}>",
            self.shared.id,
            self.is_closed()
        )
    }
}
