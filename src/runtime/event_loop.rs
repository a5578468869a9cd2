//! `LoopInner`: one event loop — its ring driver, run queue, timers and task
//! table — and the turn that drives them.
//!
//! A turn is asyncio's `_run_once`: work out how long the ring may wait (zero
//! if something is ready, else until the earliest timer), enter the kernel
//! once to submit and wait, wake what completed, move expired timers to the
//! run queue, then run exactly what was ready at that point.
//!
//! One departure from asyncio, for timer precision under load: a turn of
//! more than 1,024 runnables checks the clock every few dozen polls from
//! then on, and a timer that expired meanwhile has what it wakes run next,
//! ahead of the rest of the turn. asyncio would run it after the whole
//! turn; the order differs only in such long turns, and only when a timer
//! expires during one.
//!
//! A turn that ends with work ready and nothing else in the loop (no op
//! with the kernel, no timer, nothing from other threads) runs the next
//! turn itself, up to `QUIET_TURNS` times: that turn's checks could only
//! come back empty. It stops as soon as a task ends, so that `run` still
//! sees its main task finish in the turn it finished in.
//!
//! # Safety
//!
//! The `unsafe` here is making the loop's eventfd: `eventfd(2)` with fixed
//! flags, its result checked, and the fresh descriptor adopted by an
//! `OwnedFd` that nothing else owns.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::os::fd::{FromRawFd, OwnedFd};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::Waker;
use std::time::{Duration, Instant};

use slab::Slab;

use super::report::{Logger, Report, ReportKind};
use super::shared::{LoopShared, Remote};
use crate::driver::Driver;
use crate::error::{Error, Result};
use crate::task::TaskRef;
use crate::task::context_var::Context;
use crate::task::raw::{self, RawTask};
use crate::time::heap::{TimerHeap, TimerKey};

static NEXT_LOOP_ID: AtomicU64 = AtomicU64::new(1);

/// How long shutdown waits, with nothing that could wake a leftover task,
/// before it gives up on that task.
const STUCK_TASK_GRACE: Duration = Duration::from_secs(1);

/// A turn longer than this many runnables starts looking at the timers
/// (shorter turns keep asyncio's order exactly: what a timer wakes runs
/// after everything that was ready when the turn began).
const LONG_TURN: usize = 1024;

/// The longest a loop that other loops wake with `IORING_OP_MSG_RING`
/// blocks in the kernel with nothing else to wake it: there are reports of
/// MSG_RING wake-ups lost on some 6.1 stable kernels, and a lost one must
/// delay the work it announced by this much at most, never hang the loop.
const MSG_RING_WAIT_BOUND: Duration = Duration::from_secs(1);

/// How many runnables a long turn runs between two looks at the timers.
const TIMER_CHECK_INTERVAL: usize = 32;

/// How many times one turn may run the run queue again when nothing else
/// could have happened between two turns (see `next_turn_is_quiet`): a
/// bound, so that the caller of `run_once` still gets control back now
/// and then.
const QUIET_TURNS: u32 = 64;

/// Capacity the run queue and the wake buffer shrink back to after a
/// burst (see `shrink_queues`): enough for ordinary turns without
/// reallocating.
const IDLE_QUEUE_CAPACITY: usize = 1024;

/// Something on the run queue.
pub(crate) enum Runnable {
    /// Poll a task.
    Task(RawTask),
    /// Run a callback.
    Call(Rc<CallbackCell>),
}

/// A scheduled callback (`call_soon`, `call_later`, done callbacks).
pub(crate) struct CallbackCell {
    pub(crate) f: RefCell<Option<Box<dyn FnOnce()>>>,
    pub(crate) cancelled: Cell<bool>,
    pub(crate) context: Context,
    /// The timer of a `call_later`/`call_at` callback while armed.
    pub(crate) timer: Cell<Option<TimerKey>>,
    /// `Loop::time()` at which it is due, for timer callbacks.
    pub(crate) when: Option<f64>,
}

/// What a timer does when it fires.
pub(crate) enum TimerAction {
    Wake(Waker),
    Call(Rc<CallbackCell>),
}

/// Options a loop is built with.
#[derive(Clone)]
pub(crate) struct LoopConfig {
    pub(crate) ring_entries: u32,
    pub(crate) debug: bool,
    pub(crate) slow_callback_duration: Duration,
    pub(crate) logger: Logger,
    /// Let other loops wake this one with `IORING_OP_MSG_RING`.
    pub(crate) msg_ring: bool,
    /// See `Builder::timer_slack`.
    pub(crate) timer_slack: Duration,
}

/// A user-installed exception handler.
pub(crate) type ExceptionHandler = Rc<dyn Fn(&crate::Loop, &Report)>;

pub(crate) struct LoopInner {
    pub(crate) id: u64,
    pub(crate) shared: Arc<LoopShared>,
    pub(crate) driver: RefCell<Driver>,
    pub(crate) timers: RefCell<TimerHeap<TimerAction>>,
    ready: RefCell<VecDeque<Runnable>>,
    /// The tasks not yet done that have suspended at least once (with the
    /// run queue's not yet polled ones, asyncio's `all_tasks()`).
    pub(crate) tasks: RefCell<Slab<TaskRef>>,
    /// The origin of `Loop::time()`, and of the timer slack's grid.
    pub(crate) origin: Instant,
    /// The step of the grid idle timer waits end on (`Builder::timer_slack`):
    /// nanoseconds, zero for none.
    timer_slack_ns: u64,
    pub(crate) debug: Cell<bool>,
    pub(crate) slow_callback_duration: Cell<Duration>,
    /// Slow polls and callbacks reported (debug mode measures them).
    pub(crate) slow_polls: Cell<u64>,
    pub(crate) logger: RefCell<Logger>,
    pub(crate) exception_handler: RefCell<Option<ExceptionHandler>>,
    pub(crate) closed: Cell<bool>,
    /// Called at the end of `run`, before the ring is drained (the
    /// `to_thread` pool registers its shutdown here).
    pub(crate) shutdown_hooks: RefCell<Vec<Box<dyn FnOnce()>>>,
    /// Reused buffer for the wakers of one reap.
    wake_buf: RefCell<Vec<Waker>>,
    /// The run queue or the wake buffer has held more than
    /// `IDLE_QUEUE_CAPACITY` entries since they were last shrunk: only then
    /// does a turn look at their capacity (`shrink_queues`).
    queues_grew: Cell<bool>,
    /// Tasks that have ended on this loop: a turn whose runnables ended a
    /// task gives control back to its caller, which may be waiting for
    /// just that (`run` waits for its main task).
    pub(crate) tasks_ended: Cell<u64>,
}

impl LoopInner {
    pub(crate) fn new(config: &LoopConfig) -> Result<Rc<LoopInner>> {
        // SAFETY: eventfd(2) with valid flags; the result is checked.
        let efd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if efd < 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        // SAFETY: `efd` is a fresh descriptor that nothing else owns.
        let eventfd = unsafe { OwnedFd::from_raw_fd(efd) };
        let id = NEXT_LOOP_ID.fetch_add(1, Ordering::Relaxed);
        let shared = Arc::new(LoopShared::new(id, eventfd));
        let driver = Driver::new(config.ring_entries, shared.eventfd())?;
        if config.msg_ring && driver.supports_msg_ring() {
            // Other loops wake this one with IORING_OP_MSG_RING into this
            // ring; without a duplicate they keep using the eventfd.
            if let Ok(fd) = driver.dup_ring_fd() {
                shared.set_ring_fd(fd);
            }
        }
        Ok(Rc::new(LoopInner {
            id,
            shared,
            driver: RefCell::new(driver),
            timers: RefCell::new(TimerHeap::default()),
            ready: RefCell::new(VecDeque::with_capacity(64)),
            tasks: RefCell::new(Slab::new()),
            origin: Instant::now(),
            timer_slack_ns: u64::try_from(config.timer_slack.as_nanos()).unwrap_or(u64::MAX),
            debug: Cell::new(config.debug),
            slow_callback_duration: Cell::new(config.slow_callback_duration),
            slow_polls: Cell::new(0),
            logger: RefCell::new(config.logger.clone()),
            exception_handler: RefCell::new(None),
            closed: Cell::new(false),
            shutdown_hooks: RefCell::new(Vec::new()),
            wake_buf: RefCell::new(Vec::new()),
            queues_grew: Cell::new(false),
            tasks_ended: Cell::new(0),
        }))
    }

    /// How many runnables wait on the run queue.
    pub(crate) fn ready_len(&self) -> usize {
        self.ready.borrow().len()
    }

    /// Puts `r` on the run queue.
    #[inline(always)]
    pub(crate) fn schedule(&self, r: Runnable) {
        self.ready.borrow_mut().push_back(r);
    }

    /// Schedules `f` to run on a later turn, in `context`.
    pub(crate) fn call_soon(&self, f: Box<dyn FnOnce()>, context: Context) -> Rc<CallbackCell> {
        let cell = Rc::new(CallbackCell {
            f: RefCell::new(Some(f)),
            cancelled: Cell::new(false),
            context,
            timer: Cell::new(None),
            when: None,
        });
        self.schedule(Runnable::Call(cell.clone()));
        cell
    }

    /// Schedules `f` at `deadline`, in `context`.
    pub(crate) fn call_at_instant(
        &self,
        deadline: Instant,
        f: Box<dyn FnOnce()>,
        context: Context,
    ) -> Rc<CallbackCell> {
        let cell = Rc::new(CallbackCell {
            f: RefCell::new(Some(f)),
            cancelled: Cell::new(false),
            context,
            timer: Cell::new(None),
            when: Some(self.instant_to_time(deadline)),
        });
        let key = self
            .timers
            .borrow_mut()
            .insert(deadline, TimerAction::Call(cell.clone()));
        cell.timer.set(Some(key));
        cell
    }

    /// `Loop::time()` of an instant.
    pub(crate) fn instant_to_time(&self, t: Instant) -> f64 {
        match t.checked_duration_since(self.origin) {
            Some(d) => d.as_secs_f64(),
            None => -(self.origin.duration_since(t).as_secs_f64()),
        }
    }

    /// The instant of a `Loop::time()` value.
    pub(crate) fn time_to_instant(&self, when: f64) -> Instant {
        if when >= 0.0 {
            self.origin + Duration::from_secs_f64(when.min(1e12))
        } else {
            self.origin
                .checked_sub(Duration::from_secs_f64((-when).min(1e9)))
                .unwrap_or(self.origin)
        }
    }

    /// Hands `report` to the exception handler, or the logger.
    pub(crate) fn report(self: &Rc<Self>, report: Report) {
        let handler = self.exception_handler.borrow().clone();
        match handler {
            Some(h) => {
                let lp = crate::Loop::from_inner(self.clone());
                if catch_unwind(AssertUnwindSafe(|| h(&lp, &report))).is_err() {
                    // asyncio: an error in the handler is logged, not raised.
                    self.default_report(&report);
                }
            }
            None => self.default_report(&report),
        }
    }

    /// The default exception handler: the logger.
    pub(crate) fn default_report(&self, report: &Report) {
        let logger = self.logger.borrow().clone();
        logger(report);
    }

    /// One turn of the loop.
    pub(crate) fn run_once(self: &Rc<Self>) {
        self.turn(None)
    }

    /// One turn, waiting in the ring at most `max_wait` (beyond timers).
    fn turn(self: &Rc<Self>, max_wait: Option<Duration>) {
        // 1. How long may the ring wait?
        let has_ready = !self.ready.borrow().is_empty() || self.shared.has_pending();
        let timeout = if has_ready {
            Some(Duration::ZERO)
        } else {
            let timer = self
                .timers
                .borrow_mut()
                .next_deadline()
                .map(|d| self.wake_time(d).saturating_duration_since(Instant::now()));
            let max_wait = match (max_wait, self.shared.accepts_msg_ring()) {
                (Some(m), true) => Some(m.min(MSG_RING_WAIT_BOUND)),
                (None, true) => Some(MSG_RING_WAIT_BOUND),
                (m, false) => m,
            };
            match (timer, max_wait) {
                (Some(t), Some(m)) => Some(t.min(m)),
                (t, m) => t.or(m),
            }
        };

        // 2. Enter the kernel once: submit, wait, reap. Skipped when work is
        // ready and the kernel has nothing of ours to report or take.
        let mut driver = self.driver.borrow_mut();
        let must_enter =
            !has_ready || driver.has_ops_in_flight() || driver.has_pending_submissions();
        if must_enter {
            let mut wake = std::mem::take(&mut *self.wake_buf.borrow_mut());
            if !has_ready {
                driver.arm_eventfd();
            }
            let reaped = driver.park(timeout, &mut wake);
            if wake.len() > IDLE_QUEUE_CAPACITY {
                self.queues_grew.set(true);
            }
            drop(driver);
            if reaped.remote_wakeup {
                self.shared.rearm();
            }
            // Data of dropped ops the kernel finished with, dropped now that
            // the driver is no longer borrowed (its `Drop` may use the loop).
            drop(reaped.dead);
            for w in wake.drain(..) {
                raw::wake_reaped(w, self);
            }
            *self.wake_buf.borrow_mut() = wake;
        } else {
            drop(driver);
        }

        // 3. Work from other threads.
        if self.shared.has_pending() {
            for item in self.shared.take() {
                match item {
                    Remote::Wake(remote) => {
                        if let Some(task) = remote.into_local() {
                            task.schedule();
                        }
                    }
                    Remote::Call(f) => {
                        self.call_soon(Box::new(f), Context::default());
                    }
                }
            }
        }

        // 4. Expired timers.
        if self.timers.borrow().len() > 0 {
            self.fire_timers(Instant::now());
        }

        if self.queues_grew.get() {
            self.shrink_queues();
        }

        // 5. Run what is ready now; what these schedule runs next turn.
        // When that next turn would find nothing but the run queue (see
        // `next_turn_is_quiet`), it is run here instead, without the
        // checks above that would all come back empty: tasks that only wake
        // each other (a channel, a lock, a queue between tasks) pay for
        // none of them.
        let mut quiet_turns = 0;
        loop {
            let ended = self.tasks_ended.get();
            self.run_ready();
            quiet_turns += 1;
            if quiet_turns == QUIET_TURNS
                || self.tasks_ended.get() != ended
                || !self.next_turn_is_quiet()
            {
                break;
            }
        }
    }

    /// When an idle wait for a timer due at `deadline` ends: at `deadline`,
    /// or with a timer slack, at the end of the grid step `deadline` falls
    /// in, so that the timers due in one step share one wake.
    fn wake_time(&self, deadline: Instant) -> Instant {
        let step = u128::from(self.timer_slack_ns);
        if step == 0 {
            return deadline;
        }
        let since = deadline.saturating_duration_since(self.origin).as_nanos();
        let end = since.div_ceil(step) * step;
        u64::try_from(end)
            .ok()
            .and_then(|ns| self.origin.checked_add(Duration::from_nanos(ns)))
            .unwrap_or(deadline)
    }

    /// Whether a turn starting now would do nothing but run the run queue:
    /// something is ready (so the ring would not wait), the kernel has
    /// nothing of ours to report or take (so the turn would not enter it),
    /// no other thread has sent work, no timer is armed, and no queue is
    /// due to shrink. Such a turn can run as part of the current one:
    /// nothing could tell the two apart.
    fn next_turn_is_quiet(&self) -> bool {
        !self.ready.borrow().is_empty()
            && !self.queues_grew.get()
            && self.timers.borrow().len() == 0
            && !self.shared.has_pending()
            && self.driver.borrow_mut().is_quiet()
    }

    /// Runs what is on the run queue now; what these schedule waits for
    /// the next call. A long run (more than `LONG_TURN` runnables:
    /// thousands of tasks made at once) looks at the clock every
    /// `TIMER_CHECK_INTERVAL` runnables from then on, and what an expired
    /// timer wakes runs next, ahead of the rest: a burst of ready work
    /// delays a timer by a bounded number of polls, not by the whole burst.
    fn run_ready(self: &Rc<Self>) {
        let mut remaining = self.ready.borrow().len();
        if remaining > IDLE_QUEUE_CAPACITY {
            self.queues_grew.set(true);
        }
        let mut ran = 0usize;
        while remaining > 0 {
            ran += 1;
            if ran > LONG_TURN && ran % TIMER_CHECK_INTERVAL == 0 {
                remaining += self.fire_timers_ahead();
            }
            remaining -= 1;
            let Some(item) = self.ready.borrow_mut().pop_front() else {
                break;
            };
            match item {
                Runnable::Task(task) => task.run(self),
                Runnable::Call(cell) => self.run_callback(&cell),
            }
        }
    }

    /// Gives back what a burst (10,000 tasks made in one turn) left in the
    /// run queue's and the wake buffer's capacity once it has passed, so a
    /// loop holds memory for its live tasks, not for its busiest turn.
    /// Shrinking only below a quarter of the capacity keeps a steady load
    /// from reallocating every turn.
    fn shrink_queues(&self) {
        let mut ready = self.ready.borrow_mut();
        let (len, cap) = (ready.len(), ready.capacity());
        if cap > IDLE_QUEUE_CAPACITY && len < cap / 4 {
            ready.shrink_to((len * 2).max(IDLE_QUEUE_CAPACITY));
        }
        let ready_idle = ready.capacity() <= IDLE_QUEUE_CAPACITY;
        drop(ready);
        let mut wake = self.wake_buf.borrow_mut();
        if wake.capacity() > IDLE_QUEUE_CAPACITY {
            // Empty between turns.
            wake.shrink_to(IDLE_QUEUE_CAPACITY);
        }
        // Both back to their ordinary size: nothing to look at until the
        // next burst.
        self.queues_grew.set(!ready_idle);
    }

    /// Moves the timers expired at `now` to the run queue, in deadline
    /// order (equal deadlines in the order they were armed).
    fn fire_timers(&self, now: Instant) {
        loop {
            let action = self.timers.borrow_mut().pop_expired(now);
            match action {
                Some(TimerAction::Wake(w)) => w.wake(),
                Some(TimerAction::Call(cell)) => {
                    cell.timer.set(None);
                    self.schedule(Runnable::Call(cell));
                }
                None => break,
            }
        }
    }

    /// Mid-turn: fires the timers that have expired and puts what they
    /// scheduled at the front of the run queue. Returns how many runnables
    /// it put there.
    fn fire_timers_ahead(&self) -> usize {
        let Some(next) = self.timers.borrow_mut().next_deadline() else {
            return 0;
        };
        let now = Instant::now();
        if next > now {
            return 0;
        }
        let before = self.ready.borrow().len();
        self.fire_timers(now);
        let mut ready = self.ready.borrow_mut();
        let added = ready.len() - before;
        ready.rotate_right(added);
        added
    }

    fn run_callback(self: &Rc<Self>, cell: &CallbackCell) {
        if cell.cancelled.get() {
            return;
        }
        let Some(f) = cell.f.borrow_mut().take() else {
            return;
        };
        let start = self.debug.get().then(Instant::now);
        let ctx = cell.context.clone();
        let result = ctx.enter(|| catch_unwind(AssertUnwindSafe(f)));
        if let Err(payload) = result {
            let msg = crate::task::raw::panic_message(&*payload);
            self.report(
                Report::new(ReportKind::CallbackError, "Exception in callback")
                    .error(Error::Panic(msg)),
            );
        }
        if let Some(start) = start {
            self.check_slow(start, || "<Handle callback>".to_string());
        }
    }

    /// Debug mode: report a poll or callback that held the loop too long.
    pub(crate) fn check_slow(self: &Rc<Self>, start: Instant, what: impl FnOnce() -> String) {
        let took = start.elapsed();
        if took >= self.slow_callback_duration.get() {
            self.slow_polls.set(self.slow_polls.get() + 1);
            let message = format!(
                "Executing {} took {:.3} seconds",
                what(),
                took.as_secs_f64()
            );
            #[cfg(feature = "tracing")]
            tracing::warn!(target: "ringio::loop", loop_id = self.id, "{message}");
            self.report(Report::new(ReportKind::SlowCallback, message));
        }
    }

    /// Whether anything local could still wake a task: ready work, a
    /// timer, or a ring operation in flight.
    fn can_make_progress(&self) -> bool {
        !self.ready.borrow().is_empty()
            || self.shared.has_pending()
            || self.timers.borrow().len() > 0
            || self.driver.borrow().has_ops_in_flight()
    }

    /// A turn that waits at most 100 ms (shutdown must notice when it is
    /// stuck instead of blocking forever).
    fn run_once_bounded(self: &Rc<Self>) {
        self.turn(Some(Duration::from_millis(100)))
    }

    /// Drops the futures of tasks that will never finish, reporting each;
    /// returns how many. A task whose waker is held somewhere (a thread
    /// doing its `to_thread` work, a foreign future) may still be woken
    /// from outside the loop: it is left to finish, as asyncio's run()
    /// would wait for it.
    fn drop_stuck_tasks(self: &Rc<Self>, left: &[TaskRef]) -> usize {
        let mut dropped = 0;
        for t in left
            .iter()
            .filter(|t| !t.core().is_done() && !t.raw.waker_held_elsewhere())
        {
            dropped += 1;
            self.report(
                Report::new(
                    ReportKind::TaskDestroyedPending,
                    "Task was destroyed but it is pending!",
                )
                .task(t.repr()),
            );
            t.raw.abandon(self);
        }
        dropped
    }

    /// Tasks not yet done: those that have suspended (the task table),
    /// the one in its first poll now, if any, and those waiting for their
    /// first poll (on the run queue).
    pub(crate) fn live_tasks(&self) -> Vec<TaskRef> {
        let mut live: Vec<TaskRef> = self.tasks.borrow().iter().map(|(_, t)| t.clone()).collect();
        self.for_each_untabled_task(|t| live.push(TaskRef { raw: t.clone() }));
        live
    }

    /// How many tasks are not done (see `live_tasks`).
    pub(crate) fn live_task_count(&self) -> usize {
        let mut n = self.tasks.borrow().len();
        self.for_each_untabled_task(|_| n += 1);
        n
    }

    /// Calls `f` on each task of this loop that is not done and not in
    /// the task table: the task in its first poll, then those on the run
    /// queue that were never polled.
    fn for_each_untabled_task(&self, mut f: impl FnMut(&RawTask)) {
        let untabled = |t: &RawTask| t.core().key().is_none() && !t.core().is_done();
        crate::runtime::context::with_task(|t| {
            if t.loop_id() == self.id && untabled(t) {
                f(t);
            }
        });
        for r in self.ready.borrow().iter() {
            if let Runnable::Task(t) = r {
                if !t.core().started() && untabled(t) {
                    f(t);
                }
            }
        }
    }

    /// The end of `run` (asyncio's `_cancel_all_tasks` and
    /// `shutdown_default_executor`): cancel what is left and let it clean
    /// up, report errors it raised doing so, shut down the hooks, then take
    /// back from the kernel everything it still owns.
    pub(crate) fn shutdown(self: &Rc<Self>) {
        loop {
            let left = self.live_tasks();
            if left.is_empty() {
                break;
            }
            for t in &left {
                t.raw.request_cancel(None);
            }
            let mut idle_since: Option<Instant> = None;
            while left.iter().any(|t| !t.core().is_done()) {
                // A task that suppressed its cancellation and now waits on
                // something nothing can complete would hang asyncio's run()
                // forever. Here, once the loop has had nothing that could
                // wake it (no ready work, timer or ring op) for a second,
                // such tasks are dropped and reported.
                if self.can_make_progress() {
                    idle_since = None;
                } else if idle_since.get_or_insert_with(Instant::now).elapsed() > STUCK_TASK_GRACE {
                    self.drop_stuck_tasks(&left);
                    // The others wait for a wakeup from another thread.
                    idle_since = None;
                    continue;
                }
                self.run_once_bounded();
            }
            for t in &left {
                let core = t.core();
                if let Some(e) = t.failed_error() {
                    core.mark_retrieved();
                    self.report(
                        Report::new(
                            ReportKind::ShutdownError,
                            "unhandled exception during run() shutdown",
                        )
                        .error(e)
                        .task(t.repr()),
                    );
                }
            }
        }
        let hooks = std::mem::take(&mut *self.shutdown_hooks.borrow_mut());
        for hook in hooks {
            hook();
        }
        // Callbacks still queued (done callbacks of the cancelled tasks) run
        // now, so their effects are not lost.
        for _ in 0..16 {
            if self.ready.borrow().is_empty() && !self.shared.has_pending() {
                break;
            }
            self.run_once();
        }
        for leftover in self.shared.close() {
            drop(leftover);
        }
        let timers = self.timers.borrow_mut().drain();
        drop(timers);
        self.ready.borrow_mut().clear();
        let dead = self.driver.borrow_mut().drain();
        drop(dead);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    use std::task::{Poll, Waker};
    use std::time::{Duration, Instant};

    use super::{IDLE_QUEUE_CAPACITY, MSG_RING_WAIT_BOUND};
    use crate::runtime::shared::Remote;

    #[test]
    fn a_lost_msg_ring_wakeup_delays_remote_work_by_the_bound_at_most() {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut rt = crate::Runtime::new().unwrap();
            let shared = rt.event_loop().inner.shared.clone();
            let accepts = shared.accepts_msg_ring();
            let done = Arc::new(AtomicBool::new(false));
            let waker: Arc<Mutex<Option<Waker>>> = Arc::default();
            let (d, w) = (done.clone(), waker.clone());
            let pusher = std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(100));
                // Work announced by a wake-up that never arrives.
                shared.push_without_wakeup(Remote::Call(Box::new(move || {
                    d.store(true, Ordering::SeqCst);
                    if let Some(w) = w.lock().unwrap().take() {
                        w.wake();
                    }
                })));
            });
            let start = Instant::now();
            // Nothing of the loop's own can wake it: no timer, no I/O.
            rt.run(std::future::poll_fn(move |cx| {
                if done.load(Ordering::SeqCst) {
                    return Poll::Ready(());
                }
                *waker.lock().unwrap() = Some(cx.waker().clone());
                Poll::Pending
            }))
            .unwrap();
            pusher.join().unwrap();
            let _ = tx.send((accepts, start.elapsed()));
        });
        let (accepts, took) = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("the loop hung on a lost wake-up");
        assert!(accepts, "this kernel has MSG_RING: the loop accepts it");
        assert!(took < MSG_RING_WAIT_BOUND * 5, "{took:?}");
    }

    #[test]
    fn a_burst_of_spawns_leaves_no_queue_capacity_behind() {
        let mut rt = crate::Runtime::new().unwrap();
        let inner = rt.event_loop().inner.clone();
        let capacity = move || inner.ready.borrow().capacity();
        let cap = capacity.clone();
        let (during, after) = rt
            .run(async move {
                // 10,000 tasks made in one turn, all ready at once.
                let tasks: Vec<_> = (0..10_000)
                    .map(|_| crate::create_task(async { Ok::<(), crate::Error>(()) }))
                    .collect();
                crate::sleep(Duration::ZERO).await.unwrap();
                let during = cap();
                for t in tasks {
                    t.await.unwrap();
                }
                // The burst has passed: a turn or two later the queue is
                // back to its ordinary size.
                crate::sleep(Duration::ZERO).await.unwrap();
                crate::sleep(Duration::ZERO).await.unwrap();
                (during, cap())
            })
            .unwrap();
        assert!(during >= 10_000, "the burst grew the queue: {during}");
        assert!(
            after <= IDLE_QUEUE_CAPACITY,
            "{after} slots kept after the burst"
        );
        assert!(capacity() <= IDLE_QUEUE_CAPACITY);
    }
}
