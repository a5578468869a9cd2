//! A task's life on its loop: spawned into the task table, polled from the
//! run queue, ended (value, exception, cancellation), and the reports
//! asyncio makes when one is lost.

use std::future::Future;
use std::rc::Rc;
use std::task::{Context as TaskContext, Poll};
use std::time::Instant;

use super::context_var::Context;
use super::core::{DoneCallback, TaskCore};
use super::handle::TaskRef;
use super::outcome::State;
use super::raw::RawTask;
use super::waiters::{CallbackId, Waiter};
use crate::error::{Error, Result};
use crate::runtime::context;
use crate::runtime::event_loop::{LoopInner, Runnable};
use crate::runtime::report::{Report, ReportKind};

/// Creates a task on `lp` and schedules its first poll; `N` names its
/// coroutine (`get_coro()`).
pub(crate) fn spawn<N, F, T>(
    lp: &Rc<LoopInner>,
    future: F,
    name: Option<String>,
    context: Context,
) -> Result<RawTask>
where
    N: ?Sized,
    F: Future<Output = Result<T>> + 'static,
    T: 'static,
{
    if lp.closed.get() {
        return Err(Error::InvalidState("the event loop is closed".into()));
    }
    let raw = RawTask::new::<N, F, T>(future, TaskCore::new(name, context), lp.shared.clone());
    // Until its first poll the run queue's entry keeps the task (and
    // `all_tasks` finds it there); it joins the task table only if it
    // suspends (`keep_live`): a task that ends in its first poll never
    // touches the table.
    raw.core().set_queued(true);
    lp.schedule(Runnable::Task(raw.clone()));
    Ok(raw)
}

impl RawTask {
    /// Polls the task once (its run-queue entry came up).
    pub(crate) fn run(self, lp: &Rc<LoopInner>) {
        let core = self.core();
        core.set_queued(false);
        if core.is_done() {
            return;
        }
        if !core.start() {
            // Cancelled before it ever ran: none of it runs (asyncio).
            if let Some(msg) = core.take_cancel() {
                let state = self.end_with(Error::Cancelled { msg });
                self.finish(lp, state);
                return;
            }
        }
        let start = lp.debug.get().then(Instant::now);
        #[cfg(feature = "tracing")]
        let _span =
            tracing::trace_span!(target: "ringio::task", "poll", task_id = core.id()).entered();
        core.unpark();
        let prev = context::set_task(&self);
        let poll = {
            let waker = self.waker_ref();
            let mut cx = TaskContext::from_waker(&waker);
            core.enter_context(|| self.poll(&mut cx))
        };
        context::restore_task(prev);
        if let Some(start) = start {
            lp.check_slow(start, || self.repr());
        }
        let state = match poll {
            // A cancellation that found no ringio await point to deliver it
            // (the task is parked in a foreign future) ends the task: its
            // future is dropped (cancellation rule 6).
            Poll::Pending if core.parked_in_ringio() => {
                self.keep_live(lp);
                return;
            }
            Poll::Pending => match core.take_cancel() {
                Some(msg) => self.end_with(Error::Cancelled { msg }),
                None => {
                    self.keep_live(lp);
                    return;
                }
            },
            // asyncio: a task that asked for its own cancellation and then
            // returns normally ends cancelled (`_must_cancel` at the end).
            // A cancel from elsewhere that met a completed operation keeps
            // the value the task made of it (rule 5: nothing is lost).
            Poll::Ready(State::Done) if core.self_cancel_pending() => {
                let msg = core.take_cancel().flatten();
                self.end_with(Error::Cancelled { msg })
            }
            Poll::Ready(state) => state,
        };
        self.finish(lp, state);
    }

    /// Puts the task in the loop's task table, if it is not there yet,
    /// and returns its key: from its first suspension (or earlier, for
    /// one that is to be found by key) until it ends, the table holds it,
    /// so that it lives (and `all_tasks` and the end of `run` find it)
    /// whoever else lets it go.
    pub(crate) fn keep_live(&self, lp: &LoopInner) -> usize {
        let core = self.core();
        if let Some(key) = core.key() {
            return key;
        }
        let mut tasks = lp.tasks.borrow_mut();
        let entry = tasks.vacant_entry();
        // 2^32 suspended tasks would take far more memory than there is.
        let key = u32::try_from(entry.key()).expect("fewer than 2^32 tasks alive on one loop");
        core.set_key(Some(key));
        entry.insert(TaskRef { raw: self.clone() });
        key as usize
    }

    /// Ends the task in `state` (its slot is already written): leave the
    /// task table, then tell the waiters and schedule the done callbacks,
    /// in the order they were registered.
    pub(crate) fn finish(&self, lp: &Rc<LoopInner>, state: State) {
        let core = self.core();
        core.set_state(state);
        lp.tasks_ended.set(lp.tasks_ended.get() + 1);
        #[cfg(feature = "tracing")]
        tracing::debug!(target: "ringio::task", task_id = core.id(), state = state.word(), cancelled = (state == State::Cancelled), "task ended");
        core.take_cancel();
        let removed = core.key().and_then(|key| {
            core.set_key(None);
            lp.tasks.borrow_mut().try_remove(key)
        });
        core.drain_waiters(|waiter| match waiter {
            Waiter::Wake(w) => w.wake(),
            Waiter::Call(_, f) => self.schedule_done_callback(lp, f),
        });
        // The table's reference goes last: the task may die with it.
        drop(removed);
    }

    /// Schedules done callback `f` of this task, which has ended. Out of
    /// line: most tasks have none, and `finish` stays small without it.
    #[inline(never)]
    fn schedule_done_callback(&self, lp: &Rc<LoopInner>, f: DoneCallback) {
        let me = TaskRef { raw: self.clone() };
        schedule_callback(lp, me, f, self.core().context());
    }

    /// Drops the future of a task that cannot finish (shutdown only); it
    /// ends cancelled.
    pub(crate) fn abandon(&self, lp: &Rc<LoopInner>) {
        let state = self.end_with(Error::Cancelled { msg: None });
        self.finish(lp, state);
    }

    /// `task.cancel()`: a request (rules 1–2): recorded, forwarded to an
    /// awaited `Task`/`Promise` at once, and the task woken so that its
    /// await point can act. `false` if the task is done.
    pub(crate) fn request_cancel(&self, msg: Option<String>) -> bool {
        let core = self.core();
        // asyncio's `cancel()` first clears `_log_traceback`: a failed
        // task's exception counts as retrieved once someone cancels it.
        core.mark_retrieved();
        if core.is_done() {
            return false;
        }
        #[cfg(feature = "tracing")]
        tracing::debug!(target: "ringio::task", task_id = core.id(), msg = ?msg, "cancel requested");
        let from_self = context::with_task(|t| t.addr() == self.addr()).unwrap_or(false);
        if core.record_cancel(msg, from_self) {
            self.schedule();
        }
        true
    }

    /// Adds a done callback; `me` is the handle the callback receives.
    pub(crate) fn add_done_callback(&self, me: TaskRef, f: DoneCallback) -> CallbackId {
        let core = self.core();
        let id = core.next_callback_id();
        if core.is_done() {
            // Done already: schedule it right away (asyncio does the same).
            if let Some(lp) = context::current_loop().filter(|lp| lp.id == self.loop_id()) {
                schedule_callback(&lp, me, f, core.context());
            }
            return id;
        }
        core.add_callback(id, f);
        id
    }

    /// Its `<Task ...>` description.
    pub(crate) fn repr(&self) -> String {
        self.core().repr_with(self.coro(), self.error(), None)
    }

    /// The exception of a task that failed (not cancelled).
    pub(crate) fn failed_error(&self) -> Option<Error> {
        (self.core().state() == State::Failed)
            .then(|| self.error())
            .flatten()
    }
}

/// Schedules a done callback `f` of `task` on `lp`, never inline.
fn schedule_callback(lp: &LoopInner, task: TaskRef, f: DoneCallback, ctx: Context) {
    lp.call_soon(Box::new(move || f(&task)), ctx);
}

/// The reports of a handle's end: a task dropped while pending (debug
/// mode), an exception nobody retrieved. Called when the last handle of a
/// task goes (the task table holds one while the task is live).
pub(crate) fn report_lost(raw: &RawTask) {
    let core = raw.core();
    let report = match core.state() {
        State::Pending if core.started() => Some(
            Report::new(
                ReportKind::TaskDestroyedPending,
                "Task was destroyed but it is pending!",
            )
            .task(raw.repr()),
        ),
        State::Failed if !core.retrieved() => raw.error().map(|e| {
            Report::new(
                ReportKind::ExceptionNeverRetrieved,
                "Task exception was never retrieved",
            )
            .error(e.clone())
            .task(raw.repr())
        }),
        _ => None,
    };
    let Some(report) = report else { return };
    // `try_`: the last handle may go in a thread-local's destructor.
    let lp = context::with_loop(Rc::clone).filter(|lp| lp.id == raw.loop_id());
    match lp {
        Some(lp) if report.kind == ReportKind::ExceptionNeverRetrieved || lp.debug.get() => {
            lp.report(report)
        }
        Some(_) => {}
        None => crate::runtime::report::stderr_logger(&report),
    }
}
