//! The task itself: a boxed future, its outcome, and the cancellation state
//! of SPEC §2; and how the loop polls it.
//!
//! `TaskCore` is the type-erased header (everything `TaskRef` can see);
//! `TaskCell<T>` adds the future and the typed value.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::future::Future;
use std::panic::{AssertUnwindSafe, Location, catch_unwind};
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context as TaskContext, Poll, Waker};
use std::time::Instant;

use super::context_var::Context;
use super::outcome::{Outcome, State};
use crate::error::{Error, Result};
use crate::runtime::context;
use crate::runtime::event_loop::LoopInner;
use crate::runtime::report::{Report, ReportKind};
use crate::runtime::waker::TaskWaker;

/// Task ids, and the `N` of default names `Task-N` (one counter per
/// process, like asyncio's).
static NEXT_TASK_ID: AtomicU64 = AtomicU64::new(1);

/// How many finished tasks' waker states a loop keeps for reuse.
const WAKER_POOL_MAX: usize = 1024;

/// Identifies a done callback, for `remove_done_callback`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CallbackId(pub(crate) u64);

type DoneCallback = Box<dyn FnOnce(&crate::TaskRef)>;

/// The rarely used part of a task.
#[derive(Default)]
struct ColdFields {
    name: Option<String>,
    /// The message of the pending cancellation.
    cancel_msg: Option<String>,
    callbacks: Vec<(CallbackId, DoneCallback)>,
    next_callback: u64,
}

/// The part of a task every handle can see, whatever its result type.
pub(crate) struct TaskCore {
    pub(crate) id: u64,
    /// Slot in the loop's task table while the task is live.
    key: u32,
    num_cancels_requested: Cell<u32>,
    /// The type name of the future (a function, not the `&str` itself:
    /// half the size, and only `get_coro` and reports ever call it).
    coro: fn() -> &'static str,
    lp: Weak<LoopInner>,
    /// What the task's wakers point to. `None` only while the cell is being
    /// dropped (the state goes back to the loop's pool for the next task).
    /// The task keeps no `Waker` of its own: a poll lends one out of this.
    waker_state: Option<Arc<TaskWaker>>,
    /// Polled at least once (a cancel before the first poll ends the task
    /// without running any of it, as asyncio's does).
    started: Cell<bool>,
    /// A cancellation waiting for the task's next await point: the message.
    /// A cancellation is waiting for the task's next await point (its
    /// message, if any, is in the cold fields).
    must_cancel: Cell<bool>,
    /// Set by a ringio await point that parks during the current poll.
    parked_in_ringio: Cell<bool>,
    /// Where the task last parked (for `get_stack`).
    location: Cell<Option<&'static Location<'static>>>,
    /// The task's context-variable values, swapped in while it is polled
    /// (a `Cell`: taken out for the poll and put back).
    context: Cell<Context>,
    /// What most tasks never use (a name, done callbacks), boxed on first
    /// use: it keeps the task small, and a small task is most of what a
    /// spawn costs when thousands are alive.
    cold: RefCell<Option<Box<ColdFields>>>,
    /// State and error, mirrored here for type-erased access.
    state: Cell<State>,
    retrieved: Cell<bool>,
}

/// The future a task runs, boxed so every task of result `T` has one type.
pub(crate) type TaskFuture<T> = Pin<Box<dyn Future<Output = Result<T>>>>;

/// A task of result type `T`.
pub(crate) struct TaskCell<T> {
    pub(crate) core: TaskCore,
    /// Taken out of the cell for each poll and put back if still pending.
    future: Cell<Option<TaskFuture<T>>>,
    pub(crate) outcome: Outcome<T>,
}

/// What the loop and `TaskRef` need of a task, with `T` erased.
pub(crate) trait TaskObj {
    fn core(&self) -> &TaskCore;
    /// Polls the task once (called from the run queue).
    fn run(self: Rc<Self>, lp: &Rc<LoopInner>);
    /// Its `<Task ...>` description.
    fn repr(&self) -> String {
        self.core().repr_with(self.error())
    }
    /// The error of a failed or cancelled task.
    fn error(&self) -> Option<Error>;
    /// The exception of a task that failed (not cancelled).
    fn failed_error(&self) -> Option<Error> {
        (self.core().state() == State::Failed)
            .then(|| self.error())
            .flatten()
    }
    /// Registers `waker` for the task's end.
    fn add_waiter(&self, waker: &Waker);
    /// Marks the result as read (awaited through a type-erased handle).
    fn mark_retrieved(&self);
    /// Drops the future of a task that cannot finish (shutdown only); the
    /// task ends cancelled.
    fn abandon(&self, lp: &Rc<LoopInner>);
}

impl TaskCore {
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// The task's slot in its loop's task table while it is live (with
    /// `id`, what a `Send` future may keep to find the task again on its
    /// loop's thread: `wait_for` over a `Send` future does).
    pub(crate) fn key(&self) -> usize {
        self.key as usize
    }

    pub(crate) fn name(&self) -> String {
        match self.cold.borrow().as_ref().and_then(|c| c.name.clone()) {
            Some(n) => n,
            None => format!("Task-{}", self.id),
        }
    }

    pub(crate) fn set_name(&self, name: String) {
        self.cold_mut(|c| c.name = Some(name));
    }

    /// Runs `f` on the cold fields, boxing them first if needed.
    fn cold_mut<R>(&self, f: impl FnOnce(&mut ColdFields) -> R) -> R {
        f(self.cold.borrow_mut().get_or_insert_with(Default::default))
    }

    pub(crate) fn coro(&self) -> &'static str {
        (self.coro)()
    }

    /// A copy of the task's context (for its done callbacks).
    pub(crate) fn context(&self) -> Context {
        let ctx = self.context.take();
        let copy = ctx.clone();
        self.context.set(ctx);
        copy
    }

    pub(crate) fn state(&self) -> State {
        self.state.get()
    }

    pub(crate) fn is_done(&self) -> bool {
        self.state.get() != State::Pending
    }

    pub(crate) fn location(&self) -> Option<&'static Location<'static>> {
        self.location.get()
    }

    pub(crate) fn mark_retrieved(&self) {
        self.retrieved.set(true);
    }

    pub(crate) fn num_cancels_requested(&self) -> u32 {
        self.num_cancels_requested.get()
    }

    /// `task.cancel()`: record the request and wake the task so its await
    /// point can act on it (SPEC §2.1–2.2).
    pub(crate) fn request_cancel(&self, msg: Option<String>) -> bool {
        if self.is_done() {
            return false;
        }
        self.num_cancels_requested
            .set(self.num_cancels_requested.get() + 1);
        self.set_cancel(msg);
        if let Some(ws) = &self.waker_state {
            futures_util::task::ArcWake::wake_by_ref(ws);
        }
        true
    }

    /// Whether a clone of the task's waker exists beyond the task's own
    /// reference to its waker state: something (a timer, an op, an awaited
    /// outcome, a foreign future, another thread) could still wake it.
    pub(crate) fn waker_held_elsewhere(&self) -> bool {
        self.waker_state
            .as_ref()
            .is_some_and(|ws| Arc::strong_count(ws) > 1)
    }

    pub(crate) fn cancel_pending(&self) -> bool {
        self.must_cancel.get()
    }

    pub(crate) fn peek_cancel(&self) -> Option<Option<String>> {
        if !self.must_cancel.get() {
            return None;
        }
        Some(
            self.cold
                .borrow()
                .as_ref()
                .and_then(|c| c.cancel_msg.clone()),
        )
    }

    /// Marks a cancellation pending, with its message (a later cancel's
    /// message replaces an earlier one, as in asyncio).
    fn set_cancel(&self, msg: Option<String>) {
        self.must_cancel.set(true);
        if msg.is_some() || self.cold.borrow().is_some() {
            self.cold_mut(|c| c.cancel_msg = msg);
        }
    }

    pub(crate) fn take_cancel(&self) -> Option<Option<String>> {
        if !self.must_cancel.replace(false) {
            return None;
        }
        Some(
            self.cold
                .borrow_mut()
                .as_mut()
                .and_then(|c| c.cancel_msg.take()),
        )
    }

    pub(crate) fn note_await_point(&self, location: &'static Location<'static>) {
        self.parked_in_ringio.set(true);
        self.location.set(Some(location));
    }

    /// Adds a done callback; `me` is the handle the callback receives.
    pub(crate) fn add_done_callback(&self, me: crate::TaskRef, f: DoneCallback) -> CallbackId {
        let id = self.cold_mut(|c| {
            c.next_callback += 1;
            CallbackId(c.next_callback)
        });
        if self.is_done() {
            // Done already: schedule it right away (asyncio does the same).
            if let Some(lp) = self.lp.upgrade() {
                schedule_callback(&lp, me, f, self.context());
            }
            return id;
        }
        self.cold_mut(|c| c.callbacks.push((id, f)));
        id
    }

    pub(crate) fn remove_done_callback(&self, id: CallbackId) -> usize {
        let mut cold = self.cold.borrow_mut();
        let Some(cbs) = cold.as_mut().map(|c| &mut c.callbacks) else {
            return 0;
        };
        let before = cbs.len();
        cbs.retain(|(i, _)| *i != id);
        before - cbs.len()
    }

    /// The `<Task ...>` description, given the task's error (kept in the
    /// typed outcome, not here).
    pub(crate) fn repr_with(&self, error: Option<Error>) -> String {
        let state = match self.state.get() {
            State::Pending => "pending",
            State::Done | State::Failed => "finished",
            State::Cancelled => "cancelled",
        };
        let mut s = format!(
            "<Task {state} name='{}' coro=<{}>",
            self.name(),
            self.coro()
        );
        if let Some(loc) = self.location.get().filter(|_| !self.is_done()) {
            s.push_str(&format!(" at {}:{}", loc.file(), loc.line()));
        }
        if self.state.get() == State::Failed {
            if let Some(e) = error {
                s.push_str(&format!(" exception={e}"));
            }
        }
        s.push('>');
        s
    }
}

/// Schedules a done callback `f` of task `task` on `lp`, never inline.
fn schedule_callback(lp: &LoopInner, task: crate::TaskRef, f: DoneCallback, ctx: Context) {
    lp.call_soon(Box::new(move || f(&task)), ctx);
}

impl<T: 'static> TaskCell<T> {
    /// Creates a task on `lp` and schedules its first poll.
    pub(crate) fn spawn(
        lp: &Rc<LoopInner>,
        future: TaskFuture<T>,
        coro: fn() -> &'static str,
        name: Option<String>,
        context: Context,
    ) -> Result<Rc<TaskCell<T>>> {
        if lp.closed.get() {
            return Err(Error::InvalidState("the event loop is closed".into()));
        }
        let id = NEXT_TASK_ID.fetch_add(1, Ordering::Relaxed);
        let mut tasks = lp.tasks.borrow_mut();
        let entry = tasks.vacant_entry();
        let key = entry.key();
        let key32 = u32::try_from(key)
            .map_err(|_| Error::InvalidState("more than 2^32 tasks alive on one loop".into()))?;
        // Reuse a finished task's waker state: pooled ones are unique (see
        // `Drop for TaskCell`), so `get_mut` succeeds and neither an atomic
        // refcount nor an allocation is paid.
        let mut pooled = lp.waker_pool.borrow_mut().pop();
        let reused = pooled.as_mut().and_then(Arc::get_mut).map(|w| {
            w.key = key32;
            w.id = id;
            *w.scheduled.get_mut() = true;
        });
        let waker_state = match (reused, pooled) {
            (Some(()), Some(ws)) => ws,
            _ => Arc::new(TaskWaker {
                key: key32,
                id,
                scheduled: std::sync::atomic::AtomicBool::new(true),
                shared: lp.shared.clone(),
            }),
        };
        let cell = Rc::new(TaskCell {
            core: TaskCore {
                id,
                key: key32,
                num_cancels_requested: Cell::new(0),
                coro,
                lp: Rc::downgrade(lp),
                waker_state: Some(waker_state),
                started: Cell::new(false),
                must_cancel: Cell::new(false),
                parked_in_ringio: Cell::new(false),
                location: Cell::new(None),
                context: Cell::new(context),
                cold: RefCell::new(name.map(|name| {
                    Box::new(ColdFields {
                        name: Some(name),
                        ..ColdFields::default()
                    })
                })),
                state: Cell::new(State::Pending),
                retrieved: Cell::new(false),
            },
            future: Cell::new(Some(future)),
            outcome: Outcome::default(),
        });
        entry.insert(cell.clone() as Rc<dyn TaskObj>);
        drop(tasks);
        lp.schedule(crate::runtime::event_loop::Runnable::Task { key, id });
        Ok(cell)
    }

    /// Ends the task with `result`: store it, leave the task table, wake
    /// the awaiters, schedule the done callbacks.
    fn finish(self: &Rc<Self>, lp: &Rc<LoopInner>, result: Result<T>) {
        let core = &self.core;
        match &result {
            Ok(_) => core.state.set(State::Done),
            Err(e) => {
                core.state.set(if e.is_cancelled() {
                    State::Cancelled
                } else {
                    State::Failed
                });
            }
        }
        core.take_cancel();
        // Done callbacks are queued before the awaiters are woken, so they
        // run first, as in asyncio (where an awaiter's wakeup is itself a
        // done callback, added when it starts awaiting).
        let callbacks = core
            .cold
            .borrow_mut()
            .as_mut()
            .map(|c| std::mem::take(&mut c.callbacks))
            .unwrap_or_default();
        if !callbacks.is_empty() {
            let me = crate::TaskRef::from_rc(self.clone() as Rc<dyn TaskObj>);
            let ctx = core.context();
            for (_, f) in callbacks {
                schedule_callback(lp, me.clone(), f, ctx.clone());
            }
        }
        self.outcome.settle(result);
        lp.tasks.borrow_mut().try_remove(core.key());
    }
}

impl<T: 'static> TaskObj for TaskCell<T> {
    fn core(&self) -> &TaskCore {
        &self.core
    }

    fn run(self: Rc<Self>, lp: &Rc<LoopInner>) {
        let core = &self.core;
        if let Some(ws) = &core.waker_state {
            ws.scheduled.store(false, Ordering::Release);
        }
        if core.is_done() {
            return;
        }
        if !core.started.replace(true) {
            // Cancelled before it ever ran: none of it runs (asyncio).
            // (Taken in its own statement, before `finish`, which takes
            // the pending cancel again.)
            let pending = core.take_cancel();
            if let Some(msg) = pending {
                drop(self.future.take());
                self.finish(lp, Err(Error::Cancelled { msg }));
                return;
            }
        }
        let start = lp.debug.get().then(Instant::now);
        let Some(ws) = &core.waker_state else {
            return;
        };
        let Some(mut fut) = self.future.take() else {
            return;
        };
        core.parked_in_ringio.set(false);
        let prev_task = context::set_task(Some(self.clone() as Rc<dyn TaskObj>));
        // The poll writes its result in place; `catch_unwind` returns only
        // the (rare) panic payload.
        let mut poll = Poll::Pending;
        let (ctx, panicked) = core.context.take().enter_returning(|| {
            let waker = futures_util::task::waker_ref(ws);
            let mut cx = TaskContext::from_waker(&waker);
            catch_unwind(AssertUnwindSafe(|| poll = fut.as_mut().poll(&mut cx))).err()
        });
        core.context.set(ctx);
        context::set_task(prev_task);
        if let Some(start) = start {
            lp.check_slow(start, || self.repr());
        }
        let poll = match panicked {
            None => Ok(poll),
            Some(payload) => Err(payload),
        };
        match poll {
            Ok(Poll::Pending) => {
                // SPEC §2.6: a cancel that found no ringio await point to
                // deliver it (the task is parked in a foreign future) ends
                // the task: its future is dropped.
                if core.parked_in_ringio.get() {
                    self.future.set(Some(fut));
                    return;
                }
                let Some(msg) = core.take_cancel() else {
                    self.future.set(Some(fut));
                    return;
                };
                drop(fut);
                self.finish(lp, Err(Error::Cancelled { msg }));
            }
            Ok(Poll::Ready(result)) => {
                drop(fut);
                self.finish(lp, result);
            }
            Err(payload) => {
                drop(fut);
                self.finish(lp, Err(Error::Panic(panic_message(&*payload))));
            }
        }
    }

    fn add_waiter(&self, waker: &Waker) {
        self.outcome.add_waiter(waker);
    }

    fn mark_retrieved(&self) {
        self.core.retrieved.set(true);
        self.outcome.mark_retrieved();
    }

    fn error(&self) -> Option<Error> {
        self.outcome.error()
    }

    fn abandon(&self, lp: &Rc<LoopInner>) {
        drop(self.future.take());
        let core = &self.core;
        core.state.set(State::Cancelled);
        self.outcome.settle(Err(Error::Cancelled { msg: None }));
        lp.tasks.borrow_mut().try_remove(core.key());
    }
}

impl<T> Drop for TaskCell<T> {
    fn drop(&mut self) {
        // Hand the waker state back to the loop for the next task, if no
        // waker clone is still out there (a stale clone keeps it alive,
        // harmlessly: its key and id no longer match any task).
        if let (Some(mut ws), Some(lp)) = (self.core.waker_state.take(), self.core.lp.upgrade()) {
            if Arc::get_mut(&mut ws).is_some() {
                let mut pool = lp.waker_pool.borrow_mut();
                if pool.len() < WAKER_POOL_MAX {
                    pool.push(ws);
                }
            }
        }
        let core = &self.core;
        let report = match core.state.get() {
            State::Pending if core.started.get() => Some(
                Report::new(
                    ReportKind::TaskDestroyedPending,
                    "Task was destroyed but it is pending!",
                )
                .task(core.repr_with(None)),
            ),
            State::Failed if !core.retrieved.get() && !self.outcome.retrieved() => {
                self.outcome.error().map(|e| {
                    Report::new(
                        ReportKind::ExceptionNeverRetrieved,
                        "Task exception was never retrieved",
                    )
                    .error(e.clone())
                    .task(core.repr_with(Some(e)))
                })
            }
            _ => None,
        };
        if let Some(report) = report {
            match core.lp.upgrade() {
                Some(lp)
                    if report.kind == ReportKind::ExceptionNeverRetrieved || lp.debug.get() =>
                {
                    lp.report(report)
                }
                Some(_) => {}
                None => crate::runtime::report::stderr_logger(&report),
            }
        }
    }
}

/// The message of a panic payload.
pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "Box<dyn Any>".to_string()
    }
}
