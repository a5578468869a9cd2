//! `TaskCore`: asyncio's Task fields — name, state, the pending
//! cancellation, where the task is parked, its context and its waiters —
//! kept in the task's header and touched only on its loop's thread.

use std::cell::Cell;
use std::panic::Location;
use std::sync::atomic::{AtomicU64, Ordering};

use super::context_var::{Context, ContextValues};
use super::handle::TaskRef;
use super::outcome::State;
use super::raw::TaskWaker;
use super::waiters::{CallbackId, Waiter, Waiters};
use crate::error::Error;

/// Task ids, and the `N` of default names `Task-N`: unique in the
/// process, like asyncio's. Each thread takes them from here in blocks, so
/// that a spawn pays no atomic operation.
static NEXT_TASK_IDS: AtomicU64 = AtomicU64::new(1);

/// How many ids a thread takes at once.
const ID_BLOCK: u64 = 1024;

thread_local! {
    /// This thread's block of ids: the next one and the end of the block.
    static TASK_IDS: Cell<(u64, u64)> = const { Cell::new((0, 0)) };
}

fn next_task_id() -> u64 {
    TASK_IDS.with(|ids| {
        let (mut next, mut end) = ids.get();
        if next == end {
            next = NEXT_TASK_IDS.fetch_add(ID_BLOCK, Ordering::Relaxed);
            end = next + ID_BLOCK;
        }
        ids.set((next + 1, end));
        next
    })
}

// The flags below share one word with the task's id and state (see
// `TaskCore::word`): the low 55 bits are the id, then these seven
// flags, then the state in the top two bits.

/// On the loop's run queue: further local wakes are no-ops.
const QUEUED: u8 = 1;
/// Polled at least once (a cancel before the first poll ends the task
/// without running any of it, as asyncio's does).
const STARTED: u8 = 1 << 1;
/// A cancellation waits for the task's next await point (its message, if
/// any, is in the cold fields).
const MUST_CANCEL: u8 = 1 << 2;
/// The pending cancellation was requested by the task itself, while it
/// ran: it holds even if the task then returns a value.
const CANCEL_FROM_SELF: u8 = 1 << 3;
/// Set by a ringio await point that parks during the current poll.
const PARKED_IN_RINGIO: u8 = 1 << 4;
/// Someone read the exception (for "exception was never retrieved").
const RETRIEVED: u8 = 1 << 5;
/// The future has gone and the task's stage holds its result (the raw
/// task's invariant 10: its stage has no tag of its own).
const STAGE_FINISHED: u8 = 1 << 6;

/// `TaskCore::key` of a task not in its loop's task table.
const NO_KEY: u32 = u32::MAX;

/// Bits of `TaskCore::word` that hold the id, and where the flags and the
/// state start.
const ID_MASK: u64 = (1 << 55) - 1;
const FLAGS_SHIFT: u32 = 55;
const STATE_SHIFT: u32 = 62;

fn state_bits(state: State) -> u64 {
    let n: u64 = match state {
        State::Pending => 0,
        State::Done => 1,
        State::Failed => 2,
        State::Cancelled => 3,
    };
    n << STATE_SHIFT
}

/// A done callback of a task.
pub(crate) type DoneCallback = Box<dyn FnOnce(&TaskRef)>;

/// What a task awaits right now, when that is a `Task` or `Promise`
/// (asyncio's `_fut_waiter`): `cancel()` of the awaiting task cancels it
/// at once.
pub(crate) enum FutWaiter {
    Task(TaskRef),
    Promise(std::rc::Rc<dyn CancelPromise>),
}

/// A promise of any value type, as something to cancel.
pub(crate) trait CancelPromise {
    /// Cancels it; `false` if it was already done.
    fn cancel_with(self: std::rc::Rc<Self>, msg: Option<String>) -> bool;
}

impl FutWaiter {
    fn cancel(&self, msg: Option<String>) -> bool {
        match self {
            FutWaiter::Task(t) => t.raw.request_cancel(msg),
            FutWaiter::Promise(p) => p.clone().cancel_with(msg),
        }
    }
}

/// The rarely used part of a task, boxed on first use: it keeps the task
/// small, and a small task is most of what a spawn costs when thousands
/// are alive.
#[derive(Default)]
struct ColdFields {
    name: Option<String>,
    /// The message of the pending cancellation.
    cancel_msg: Option<String>,
    next_callback: u64,
    fut_waiter: Option<FutWaiter>,
    /// asyncio's `_num_cancels_requested` (rarely above zero).
    num_cancels_requested: u32,
    /// The identity of the task's context, once drawn (by its first
    /// `ContextVar::set`, or given with the context at creation); `0`
    /// before. Its values are in the header.
    context_id: u64,
    /// Awaiters and done callbacks, in registration order, once there is
    /// more than the one awaiter the header keeps (`TaskCore::awaiter`).
    waiters: Waiters<DoneCallback>,
}

#[cold]
fn drop_cold(cold: Box<ColdFields>) {
    drop(cold);
}

/// The part of a task every handle can see, whatever its result type.
pub(crate) struct TaskCore {
    /// References held on the loop's thread (see `raw`'s invariants).
    pub(super) local: Cell<u32>,
    /// Slot in the loop's task table from the task's first suspension
    /// until it ends (`NO_KEY` before and after).
    key: Cell<u32>,
    /// The task's id (55 bits: unique for a century at ten million spawns
    /// a second), its flags and its state, in one word: a small task is
    /// most of what a spawn costs when thousands are alive.
    word: Cell<u64>,
    /// Where the task last parked (for `get_stack`).
    location: Cell<Option<&'static Location<'static>>>,
    /// The task's context-variable values, swapped in while it is polled
    /// (with the context's identity, from the cold fields).
    context: Cell<ContextValues>,
    cold: Cell<Option<Box<ColdFields>>>,
    /// The task's one awaiter, while it has exactly one, which is a ringio
    /// task, and nothing else is listed (most tasks): one word in the
    /// header. Anything more moves the whole list, this one first, to the
    /// cold fields' `waiters`, so registration order holds across both.
    awaiter: Cell<Option<TaskWaker>>,
}

impl TaskCore {
    /// The core of a new task in `context`, named `name` (else `Task-N`).
    #[inline]
    pub(crate) fn new(name: Option<String>, context: Context) -> TaskCore {
        let (context_id, values) = context.into_parts();
        let cold = (name.is_some() || context_id != 0).then(|| {
            Box::new(ColdFields {
                name,
                context_id,
                ..ColdFields::default()
            })
        });
        TaskCore {
            local: Cell::new(0),
            key: Cell::new(NO_KEY),
            word: Cell::new(next_task_id() & ID_MASK | state_bits(State::Pending)),
            location: Cell::new(None),
            context: Cell::new(values),
            cold: Cell::new(cold),
            awaiter: Cell::new(None),
        }
    }

    pub(crate) fn id(&self) -> u64 {
        self.word.get() & ID_MASK
    }

    fn flag(&self, f: u8) -> bool {
        self.word.get() & (u64::from(f) << FLAGS_SHIFT) != 0
    }

    /// Sets or clears `f`; returns whether it was set.
    fn set_flag(&self, f: u8, on: bool) -> bool {
        let old = self.word.get();
        let bit = u64::from(f) << FLAGS_SHIFT;
        self.word.set(if on { old | bit } else { old & !bit });
        old & bit != 0
    }

    pub(super) fn is_queued(&self) -> bool {
        self.flag(QUEUED)
    }

    pub(super) fn set_queued(&self, on: bool) {
        self.set_flag(QUEUED, on);
    }

    /// The task's slot in its loop's task table while it is live (with
    /// `id`, what a `Send` future may keep to find the task again on its
    /// loop's thread).
    /// The task's slot in its loop's task table, if it has one (from its
    /// first suspension until it ends).
    pub(crate) fn key(&self) -> Option<usize> {
        let key = self.key.get();
        (key != NO_KEY).then_some(key as usize)
    }

    pub(super) fn set_key(&self, key: Option<u32>) {
        self.key.set(key.unwrap_or(NO_KEY));
    }

    /// Runs `f` on the cold fields, if they exist.
    fn cold<R>(&self, f: impl FnOnce(&mut ColdFields) -> R) -> Option<R> {
        let mut cold = self.cold.take();
        let r = cold.as_deref_mut().map(f);
        self.cold.set(cold);
        r
    }

    /// Runs `f` on the cold fields, boxing them first if needed.
    fn cold_mut<R>(&self, f: impl FnOnce(&mut ColdFields) -> R) -> R {
        let mut cold = self.cold.take().unwrap_or_default();
        let r = f(&mut cold);
        self.cold.set(Some(cold));
        r
    }

    pub(crate) fn name(&self) -> String {
        match self.cold(|c| c.name.clone()).flatten() {
            Some(n) => n,
            None => format!("Task-{}", self.id()),
        }
    }

    pub(crate) fn set_name(&self, name: String) {
        self.cold_mut(|c| c.name = Some(name));
    }

    /// A copy of the task's context (for its done callbacks).
    pub(crate) fn context(&self) -> Context {
        let values = self.context.take();
        let copy = values.clone();
        self.context.set(values);
        Context::from_parts(self.context_id(), copy)
    }

    fn context_id(&self) -> u64 {
        self.cold(|c| c.context_id).unwrap_or(0)
    }

    /// Runs `f` in the task's context, keeping what it sets there.
    #[inline]
    pub(super) fn enter_context<R>(&self, f: impl FnOnce() -> R) -> R {
        let values = self.context.take();
        // An identity is only ever drawn by a `set`, which leaves values:
        // a task that never set one skips the cold fields.
        let id = if values.is_some() {
            self.context_id()
        } else {
            0
        };
        let ctx = Context::from_parts(id, values);
        let (ctx, r) = ctx.enter_returning(f);
        let (new_id, values) = ctx.into_parts();
        self.context.set(values);
        if new_id != id {
            self.cold_mut(|c| c.context_id = new_id);
        }
        r
    }

    pub(crate) fn state(&self) -> State {
        match self.word.get() >> STATE_SHIFT {
            0 => State::Pending,
            1 => State::Done,
            2 => State::Failed,
            _ => State::Cancelled,
        }
    }

    pub(super) fn set_state(&self, state: State) {
        self.word
            .set(self.word.get() & !(3 << STATE_SHIFT) | state_bits(state));
    }

    pub(crate) fn is_done(&self) -> bool {
        self.state() != State::Pending
    }

    /// Marks the task started; `true` if it already was.
    pub(super) fn start(&self) -> bool {
        self.set_flag(STARTED, true)
    }

    pub(crate) fn started(&self) -> bool {
        self.flag(STARTED)
    }

    /// Whether the stage holds the result (else the future): see
    /// `STAGE_FINISHED`.
    #[inline]
    pub(super) fn stage_finished(&self) -> bool {
        self.flag(STAGE_FINISHED)
    }

    /// The stage now holds the result. Only the raw task calls this, as it
    /// writes the result.
    pub(super) fn set_stage_finished(&self) {
        self.set_flag(STAGE_FINISHED, true);
    }

    pub(crate) fn location(&self) -> Option<&'static Location<'static>> {
        self.location.get()
    }

    pub(crate) fn mark_retrieved(&self) {
        self.set_flag(RETRIEVED, true);
    }

    pub(crate) fn retrieved(&self) -> bool {
        self.flag(RETRIEVED)
    }

    pub(crate) fn num_cancels_requested(&self) -> u32 {
        self.cold(|c| c.num_cancels_requested).unwrap_or(0)
    }

    /// Records a `cancel()` request. With a `Task`/`Promise` awaited right
    /// now, that one is cancelled at once (asyncio cancels `_fut_waiter`)
    /// and carries the cancellation; otherwise it waits for the task's
    /// next await point. `true` if the request must wake the task.
    /// `from_self`: the task asks while it runs.
    pub(super) fn record_cancel(&self, msg: Option<String>, from_self: bool) -> bool {
        self.cold_mut(|c| c.num_cancels_requested += 1);
        let waiter = self.cold(|c| c.fut_waiter.take()).flatten();
        if let Some(w) = waiter {
            let forwarded = w.cancel(msg.clone());
            self.cold(|c| c.fut_waiter = Some(w));
            if forwarded {
                return false;
            }
        }
        self.set_flag(MUST_CANCEL, true);
        self.set_flag(CANCEL_FROM_SELF, from_self);
        self.cold_mut(|c| c.cancel_msg = msg);
        true
    }

    pub(crate) fn cancel_pending(&self) -> bool {
        self.flag(MUST_CANCEL)
    }

    /// A cancellation the task requested of itself is pending.
    pub(super) fn self_cancel_pending(&self) -> bool {
        self.flag(MUST_CANCEL) && self.flag(CANCEL_FROM_SELF)
    }

    /// The pending cancellation's message, without taking it.
    #[inline]
    pub(crate) fn peek_cancel(&self) -> Option<Option<String>> {
        if !self.flag(MUST_CANCEL) {
            return None;
        }
        Some(self.cancel_msg(false))
    }

    /// Takes the pending cancellation: the caller delivers it.
    #[inline]
    pub(crate) fn take_cancel(&self) -> Option<Option<String>> {
        if !self.flag(MUST_CANCEL) {
            return None;
        }
        self.set_flag(MUST_CANCEL, false);
        Some(self.cancel_msg(true))
    }

    /// The pending cancellation's message, taken or cloned. Out of line:
    /// every await point checks for a cancel, few find one.
    #[cold]
    fn cancel_msg(&self, take: bool) -> Option<String> {
        self.cold(|c| {
            if take {
                c.cancel_msg.take()
            } else {
                c.cancel_msg.clone()
            }
        })
        .flatten()
    }

    /// Records that the task parks in a ringio await point at `location`,
    /// waiting for `waiter` if that is a `Task` or `Promise`.
    #[inline]
    pub(crate) fn park(&self, location: &'static Location<'static>, waiter: Option<FutWaiter>) {
        self.set_flag(PARKED_IN_RINGIO, true);
        self.location.set(Some(location));
        if let Some(w) = waiter {
            self.park_on_waiter(w);
        }
    }

    /// The rarer half of `park`, out of line: the task waits for a `Task`
    /// or `Promise` (a ring op, the usual await point, has none).
    #[cold]
    fn park_on_waiter(&self, waiter: FutWaiter) {
        self.cold_mut(|c| c.fut_waiter = Some(waiter));
    }

    /// Shows `location` as the await point the task parked in during this
    /// poll, if it parked in a ringio one.
    pub(crate) fn relocate(&self, location: &'static Location<'static>) {
        if self.flag(PARKED_IN_RINGIO) {
            self.location.set(Some(location));
        }
    }

    /// A poll begins: nothing is awaited until an await point parks again.
    pub(super) fn unpark(&self) {
        self.set_flag(PARKED_IN_RINGIO, false);
        self.cold(|c| c.fut_waiter = None);
    }

    pub(super) fn parked_in_ringio(&self) -> bool {
        self.flag(PARKED_IN_RINGIO)
    }

    pub(super) fn next_callback_id(&self) -> CallbackId {
        self.cold_mut(|c| {
            c.next_callback += 1;
            CallbackId(c.next_callback)
        })
    }

    pub(crate) fn remove_done_callback(&self, id: CallbackId) -> usize {
        self.cold(|c| c.waiters.remove_callback(id)).unwrap_or(0)
    }

    /// Registers `waker` to be woken when the task ends (once: a waker of
    /// a task already listed is not added again).
    pub(crate) fn add_waker(&self, waker: &std::task::Waker) {
        match self.awaiter.take() {
            Some(first) if first.wakes_same(waker) => self.awaiter.set(Some(first)),
            Some(first) => self.cold_mut(|c| {
                c.waiters.add_waker(&first.into_waker());
                c.waiters.add_waker(waker);
            }),
            None => {
                let listed = self.cold(|c| !c.waiters.is_empty()).unwrap_or(false);
                // The header keeps one only while nothing else is listed.
                let one = if listed { None } else { TaskWaker::of(waker) };
                match one {
                    Some(one) => self.awaiter.set(Some(one)),
                    None => self.cold_mut(|c| c.waiters.add_waker(waker)),
                }
            }
        }
    }

    /// Registers a done callback after everything listed so far.
    pub(super) fn add_callback(&self, id: CallbackId, callback: DoneCallback) {
        let first = self.awaiter.take();
        self.cold_mut(|c| {
            if let Some(first) = first {
                c.waiters.add_waker(&first.into_waker());
            }
            c.waiters.add_callback(id, callback);
        });
    }

    /// Takes every awaiter and callback and hands each to `f`, in
    /// registration order (the task has ended: each is told once). The
    /// list is out of the task before `f` runs, so `f` may use the task.
    pub(super) fn drain_waiters(&self, mut f: impl FnMut(Waiter<DoneCallback>)) {
        if let Some(one) = self.awaiter.take() {
            // Nothing else is listed while the header keeps an awaiter.
            f(Waiter::Wake(one.into_waker()));
            return;
        }
        if let Some(list) = self.cold(|c| std::mem::take(&mut c.waiters)) {
            list.drain(f);
        }
    }

    /// The `<Task ...>` description, given the task's error and, for a
    /// finished task whose value can be shown, that value.
    pub(crate) fn repr_with(
        &self,
        coro: &str,
        error: Option<Error>,
        result: Option<String>,
    ) -> String {
        let state = match self.state() {
            State::Pending if self.num_cancels_requested() > 0 => "cancelling",
            s => s.word(),
        };
        let mut s = format!("<Task {state} name='{}' coro=<{coro}>", self.name());
        if let Some(loc) = self.location.get().filter(|_| !self.is_done()) {
            s.push_str(&format!(" at {}:{}", loc.file(), loc.line()));
        }
        match self.state() {
            State::Failed => {
                if let Some(e) = error {
                    s.push_str(&format!(" exception={e}"));
                }
            }
            State::Done => {
                if let Some(r) = result {
                    s.push_str(&format!(" result={r}"));
                }
            }
            _ => {}
        }
        s.push('>');
        s
    }

    /// Drops what the task holds besides its stage (invariant 2 of `raw`).
    pub(super) fn drop_contents(&self) {
        drop(self.context.take());
        // Most tasks end with no cold box and no waiter left (their
        // awaiters were woken when they finished): no drop glue to call.
        if let Some(cold) = self.cold.take() {
            drop_cold(cold);
        }
        drop(self.awaiter.take());
    }
}
