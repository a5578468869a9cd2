//! The raw task: one allocation per task, holding its header (reference
//! counts, asyncio's Task fields), its future, and — in the same place,
//! once the future is gone — its result. Its waker is a pointer to it.
//!
//! # Layout
//!
//! ```text
//! TaskCell<F, T> (repr C, one Box)
//! ├── Header
//! │   ├── SyncHeader   refs, remote_queued, vtable, loop queue: what any thread may touch
//! │   └── TaskCore     asyncio's fields and the local count: the loop thread only
//! └── stage            running: F  →  finished: Slot<T>   (a union)
//! ```
//!
//! # Invariants
//!
//! Every `unsafe` block in this module and in `waker.rs` relies on these:
//!
//! 1. **Two counts.** `TaskCore::local` counts the references held on the
//!    loop's thread ([`RawTask`] values: `Task`/`TaskRef` handles, the task
//!    table's entry, run-queue entries). `SyncHeader::refs` counts `Waker`s,
//!    queued remote wakes ([`RemoteTask`]), plus one for the whole local
//!    side while `local > 0`.
//! 2. **Contents die on the loop's thread.** When `local` reaches zero, the
//!    contents — the future or result, the context, the cold fields, the
//!    waiters — are dropped right there (on the loop's thread, because a
//!    `RawTask` is `!Send`), and the local side's share of `refs` is given
//!    back. Only then can `refs` reach zero.
//! 3. **Memory dies anywhere.** When `refs` reaches zero the allocation is
//!    freed, on whichever thread let go last (a waker may be dropped on any
//!    thread). By invariant 2 nothing that is `!Send` is left in it then:
//!    freeing drops only empty values and the `Arc` of the loop's queue.
//! 4. **Live tasks are held by the loop.** A task not yet done holds a
//!    local reference through its loop: its run-queue entry until its
//!    first poll, its task-table entry from its first suspension until it
//!    ends (a task that ends in its first poll never enters the table). So
//!    `local == 0` implies the task is done; a wake that finds
//!    `local == 0` does nothing.
//! 5. **The future is pinned.** It lives in the allocation, which never
//!    moves, and is only ever dropped in place (the running future is
//!    replaced through a pointer, never moved out).
//! 6. **One thread for the core.** `TaskCore` and `stage` are touched only
//!    on the loop's thread: through a `RawTask`, or by a waker after it has
//!    checked that the current thread runs the task's loop. Other threads
//!    touch only `SyncHeader`, reached by a pointer cast (it is the first
//!    field of a `repr(C)` header), never through a `&Header`.
//! 7. **Typed access matches.** The vtable is built for the task's own
//!    `F` and `T`; a `Task<T>` is only ever made from a task whose result
//!    type is `T`, so the slot pointer the vtable gives is a `Slot<T>`.
//! 8. **The current task is borrowed.** The current-task slot holds a
//!    pointer without a count; it is set only while `RawTask::run` holds
//!    its own reference to that task, and put back before that goes.
//! 9. **The running loop is borrowed.** The waker's running-loop slot
//!    (`waker::RUNNING_LOOP`) holds a pointer to the loop without a count;
//!    the runtime's loop guard sets it, from `Rc::as_ptr`, while it holds
//!    that loop's `Rc`, and puts the previous one back before it lets that
//!    `Rc` go. So the slot can also lend that `Rc` out for a call
//!    (`with_running_loop`), never dropping it.
//! 10. **The core says which stage is live.** The stage is a union with no
//!     tag of its own: the future is live until the core's
//!     `stage_finished` flag is set, the result slot from then on. Only
//!     `finish_stage` sets the flag, in the same step that writes the slot.

mod waker;

use std::cell::{Cell, UnsafeCell};
use std::future::Future;
use std::marker::PhantomData;
use std::mem::ManuallyDrop;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::pin::Pin;
use std::ptr::{self, NonNull};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context as TaskContext, Poll};

pub(crate) use waker::{
    TaskWaker, WakerRef, loop_local_waker, same_task, set_running_loop, wake_reaped,
    with_running_loop,
};

use super::core::TaskCore;
use super::outcome::{Slot, State};
use crate::error::{Error, Result};
use crate::runtime::shared::LoopShared;
use crate::sync::{AtomicBool, AtomicU32, fence};

/// The part of the header other threads may touch (through a waker).
#[repr(C)]
struct SyncHeader {
    /// Wakers, queued remote wakes, and one for the local side while it
    /// holds any reference (invariant 1). 32 bits, with the flag below in
    /// the same word: a waker clone past 2^31 aborts, as `Arc`'s overflow
    /// does.
    refs: AtomicU32,
    /// A remote wake of this task is queued on its loop: later remote
    /// wakes need not queue another.
    remote_queued: AtomicBool,
    vtable: &'static Vtable,
    /// The task's loop: its id and its queue for remote wakes.
    queue: Arc<LoopShared>,
}

/// The header of every task, whatever its future and result types.
#[repr(C)]
pub(crate) struct Header {
    sync: SyncHeader,
    pub(crate) core: TaskCore,
}

/// The functions that know the task's types.
struct Vtable {
    poll: unsafe fn(NonNull<Header>, &mut TaskContext<'_>) -> Poll<State>,
    end_with: unsafe fn(NonNull<Header>, Error) -> State,
    slot: unsafe fn(NonNull<Header>) -> *mut (),
    error: unsafe fn(NonNull<Header>) -> Option<Error>,
    drop_contents: unsafe fn(NonNull<Header>),
    dealloc: unsafe fn(NonNull<Header>),
    drop_and_dealloc: unsafe fn(NonNull<Header>) -> std::thread::Result<()>,
    /// The future's type name (asyncio's `get_coro()`).
    coro: fn() -> &'static str,
}

/// The future while it runs, then its result, in the same bytes: which
/// one is live is the core's `stage_finished` flag (invariant 10), so the
/// stage needs no tag of its own and a task is a word smaller.
union Stage<F, T> {
    running: ManuallyDrop<F>,
    finished: ManuallyDrop<Slot<T>>,
}

#[repr(C)]
struct TaskCell<F, T> {
    header: Header,
    stage: UnsafeCell<Stage<F, T>>,
}

thread_local! {
    /// The task being polled on this thread: a pointer, no count. Set by
    /// [`set_task`] for the length of one poll, while the caller's own
    /// reference keeps the task alive, and put back by [`restore_task`].
    static CURRENT_TASK: Cell<Option<NonNull<Header>>> = const { Cell::new(None) };
}

/// Runs `f` with the task being polled, if any.
#[inline]
pub(crate) fn with_task<R>(f: impl FnOnce(&RawTask) -> R) -> Option<R> {
    let ptr = CURRENT_TASK.with(Cell::get)?;
    // Never dropped, so it gives back no count it did not take: it borrows
    // the reference the poller holds for as long as the slot is set
    // (invariant 8).
    let task = ManuallyDrop::new(RawTask {
        ptr,
        _not_send: PhantomData,
    });
    Some(f(&task))
}

/// The task being polled, if any, as a reference that holds no count: it
/// borrows the poller's reference (invariant 8) and must be dropped before
/// that poll returns, which `ManuallyDrop` makes free.
///
/// # Safety
///
/// The caller drops the value within the poll it was made in (never keeps
/// it in a future's state, never holds it across an `.await`).
#[inline]
pub(crate) unsafe fn current_task_borrowed() -> Option<ManuallyDrop<RawTask>> {
    let ptr = CURRENT_TASK.with(Cell::get)?;
    Some(ManuallyDrop::new(RawTask {
        ptr,
        _not_send: PhantomData,
    }))
}

/// Makes `task` the task being polled, for one poll; the caller keeps its
/// reference until [`restore_task`]. Returns the previous one.
#[inline]
pub(crate) fn set_task(task: &RawTask) -> Option<NonNull<Header>> {
    CURRENT_TASK.with(|c| c.replace(Some(task.ptr)))
}

/// Puts back the task [`set_task`] replaced.
#[inline]
pub(crate) fn restore_task(prev: Option<NonNull<Header>>) {
    CURRENT_TASK.with(|c| c.set(prev));
}

/// A reference to a task held on its loop's thread (invariant 1). `!Send`.
pub(crate) struct RawTask {
    ptr: NonNull<Header>,
    _not_send: PhantomData<*const ()>,
}

/// A reference to a task that may cross threads: a remote wake queued on
/// the task's loop. It only ever touches the sync header until it is
/// turned into a [`RawTask`] on the loop's thread.
pub(crate) struct RemoteTask {
    ptr: NonNull<Header>,
}

// SAFETY: a `RemoteTask` touches only `SyncHeader` (atomics and an `Arc`
// of a `Send + Sync` queue) off the loop's thread (invariant 6); its
// reference is counted in `refs`, which may be released anywhere
// (invariant 3).
unsafe impl Send for RemoteTask {}

impl RawTask {
    /// Allocates a task running `future`, with `core` as its header;
    /// `get_coro()` names the type `N` (the user's future, which `future`
    /// may wrap). The returned reference is the first local one.
    pub(crate) fn new<N, F, T>(future: F, core: TaskCore, queue: Arc<LoopShared>) -> RawTask
    where
        N: ?Sized,
        F: Future<Output = Result<T>> + 'static,
        T: 'static,
    {
        core.local.set(1);
        let cell = Box::new(TaskCell {
            header: Header {
                sync: SyncHeader {
                    refs: AtomicU32::new(1),
                    remote_queued: AtomicBool::new(false),
                    vtable: vtable::<N, F, T>(),
                    queue,
                },
                core,
            },
            stage: UnsafeCell::new(Stage::<F, T> {
                running: ManuallyDrop::new(future),
            }),
        });
        // `Header` is the first field of the `repr(C)` cell.
        let ptr = NonNull::from(Box::leak(cell)).cast::<Header>();
        RawTask {
            ptr,
            _not_send: PhantomData,
        }
    }

    /// A new local reference to the task at `ptr`.
    ///
    /// # Safety
    ///
    /// On the task's loop thread, with the allocation alive and
    /// `local > 0` (some reference keeps the contents alive).
    unsafe fn from_ptr(ptr: NonNull<Header>) -> RawTask {
        // SAFETY: the caller guarantees the allocation is alive and that we
        // are on the loop's thread, where the core may be read.
        let core = unsafe { &ptr.as_ref().core };
        increment_local(core);
        RawTask {
            ptr,
            _not_send: PhantomData,
        }
    }

    pub(crate) fn header(&self) -> &Header {
        // SAFETY: a `RawTask` keeps the allocation alive (invariant 1) and
        // lives on the loop's thread (invariant 6).
        unsafe { self.ptr.as_ref() }
    }

    pub(crate) fn core(&self) -> &TaskCore {
        &self.header().core
    }

    /// Whether a waker of the task, or a queued remote wake, exists: then
    /// something outside the loop's own structures may still wake it.
    pub(crate) fn waker_held_elsewhere(&self) -> bool {
        // The local side holds one count of its own (invariant 1).
        self.header().sync.refs.load(Ordering::Acquire) > 1
    }

    /// The task's identity: the address of its allocation.
    pub(crate) fn addr(&self) -> usize {
        self.ptr.as_ptr() as usize
    }

    /// The id of the loop the task belongs to.
    pub(crate) fn loop_id(&self) -> u64 {
        self.header().sync.queue.id
    }

    pub(crate) fn coro(&self) -> &'static str {
        (self.header().sync.vtable.coro)()
    }

    /// A waker for this task, borrowed for one poll (no count changes).
    pub(crate) fn waker_ref(&self) -> WakerRef<'_> {
        WakerRef::new(self.ptr)
    }

    /// Polls the future once. On `Ready` the future has been dropped in
    /// place and its result stored where it was; a panic in the poll (or
    /// in that drop) is caught and stored as `Error::Panic`.
    pub(crate) fn poll(&self, cx: &mut TaskContext<'_>) -> Poll<State> {
        // SAFETY: the vtable matches the cell's types (invariant 7); we are
        // on the loop's thread with the contents alive (invariant 6).
        unsafe { (self.header().sync.vtable.poll)(self.ptr, cx) }
    }

    /// Ends the task's stage with `error`: drops the future (or a value
    /// already stored) in place. Returns the state it ended in (`Failed`
    /// with `Error::Panic` if that drop panicked).
    pub(crate) fn end_with(&self, error: Error) -> State {
        // SAFETY: as for `poll`.
        unsafe { (self.header().sync.vtable.end_with)(self.ptr, error) }
    }

    /// The error of a failed or cancelled task.
    pub(crate) fn error(&self) -> Option<Error> {
        // SAFETY: as for `poll`.
        unsafe { (self.header().sync.vtable.error)(self.ptr) }
    }

    /// Runs `f` on the task's result slot, if the future has finished.
    ///
    /// # Safety
    ///
    /// `T` must be the task's result type (invariant 7), and `f` must not
    /// reach this task's slot again (it is lent out mutably).
    pub(crate) unsafe fn with_slot<T, R>(&self, f: impl FnOnce(&mut Slot<T>) -> R) -> Option<R> {
        // SAFETY: the vtable gives a pointer to the `Slot<T>` of this
        // task's own types, or null while its future runs.
        let slot = unsafe { (self.header().sync.vtable.slot)(self.ptr) }.cast::<Slot<T>>();
        // SAFETY: non-null means a live slot; the caller promises no other
        // borrow of it exists while `f` runs (single loop thread).
        unsafe { slot.as_mut() }.map(f)
    }

    /// Queues a poll of the task on its loop (a wake from the loop's own
    /// thread). Does nothing if it is done, already queued, or this
    /// thread runs another loop.
    pub(crate) fn schedule(&self) {
        waker::schedule_local(self.ptr);
    }
}

impl Clone for RawTask {
    #[inline]
    fn clone(&self) -> Self {
        increment_local(self.core());
        RawTask {
            ptr: self.ptr,
            _not_send: PhantomData,
        }
    }
}

impl Drop for RawTask {
    #[inline]
    fn drop(&mut self) {
        let core = self.core();
        if core.local.get() == 1 && core.state() != State::Done {
            // The last reference: asyncio's reports of a lost task (none
            // for one that finished with a value).
            super::run::report_lost(self);
        }
        let n = core.local.get() - 1;
        core.local.set(n);
        if n == 0 {
            // SAFETY: this was the last local reference (invariant 2): the
            // contents die here, on the loop's thread.
            unsafe { release_local_side(self.ptr) };
        }
    }
}

#[inline]
fn increment_local(core: &TaskCore) {
    let n = core.local.get();
    if n == u32::MAX {
        // As `Rc` does: an overflow here would free a live task.
        std::process::abort();
    }
    core.local.set(n + 1);
}

/// Drops the contents and gives back the local side's share of `refs`.
///
/// # Safety
///
/// On the loop's thread, once `local` has reached zero.
unsafe fn release_local_side(ptr: NonNull<Header>) {
    // SAFETY: the caller says the last local reference just went; the
    // allocation is alive (the local share of `refs` is still held).
    let vtable = unsafe { ptr.as_ref().sync.vtable };
    // SAFETY: as above; only the sync header is read.
    let sync = unsafe { &*ptr.as_ptr().cast::<SyncHeader>() };
    if sync.refs.load(Ordering::Acquire) == 1 {
        // No waker and no queued wake exists, and none can appear (a new
        // count is only ever made from an existing one, and no local
        // reference is left to lend a waker): the contents and the memory
        // go together, in one pass over the cell.
        // SAFETY: invariant 2, and the local share is the last count.
        if let Err(payload) = unsafe { (vtable.drop_and_dealloc)(ptr) } {
            resume_unwind(payload);
        }
        return;
    }
    // A panicking `Drop` of the result must not leave the count unreleased.
    // SAFETY: invariant 2; the vtable matches the cell (invariant 7).
    let dropped = catch_unwind(AssertUnwindSafe(|| unsafe { (vtable.drop_contents)(ptr) }));
    if sync.refs.load(Ordering::Acquire) == 1 {
        // The other counts went meanwhile (wakers dropped on other
        // threads), and none can appear: the local share is the last. Free
        // without the read-modify-write.
        // SAFETY: as in `release_ref` once the count reached zero.
        unsafe { (vtable.dealloc)(ptr) };
    } else {
        // SAFETY: the local share is ours to give back.
        unsafe { release_ref(ptr) };
    }
    if let Err(payload) = dropped {
        resume_unwind(payload);
    }
}

/// Gives back one count of `refs`; frees the task on the last.
///
/// # Safety
///
/// The caller owns one count of `refs` on a live allocation.
unsafe fn release_ref(ptr: NonNull<Header>) {
    // SAFETY: `SyncHeader` is the first field of the `repr(C)` header, and
    // the allocation is alive while the caller's count is held.
    let sync = unsafe { &*ptr.as_ptr().cast::<SyncHeader>() };
    if sync.refs.fetch_sub(1, Ordering::Release) != 1 {
        return;
    }
    // Every other thread's last use of the task happens before the free.
    fence(Ordering::Acquire);
    let dealloc = sync.vtable.dealloc;
    // SAFETY: the count reached zero: nobody else can reach the task, and
    // its contents are already gone (invariant 3).
    unsafe { dealloc(ptr) };
}

impl RemoteTask {
    /// Takes a new count of `refs` for a remote wake.
    ///
    /// # Safety
    ///
    /// The caller holds a count on the live allocation at `ptr`.
    unsafe fn new(ptr: NonNull<Header>) -> RemoteTask {
        // SAFETY: as the caller says; only the sync header is touched.
        let sync = unsafe { &*ptr.as_ptr().cast::<SyncHeader>() };
        increment_refs(sync);
        RemoteTask { ptr }
    }

    /// On the task's loop thread: the task to poll, unless it is already
    /// done (then nothing is left to wake). Later remote wakes queue again.
    pub(crate) fn into_local(self) -> Option<RawTask> {
        // SAFETY: our count keeps the allocation alive; only the sync
        // header is read here.
        let sync = unsafe { &*self.ptr.as_ptr().cast::<SyncHeader>() };
        // A swap, not a store: a remote wake that found the flag still set
        // queued nothing and relies on the poll this entry leads to. Only
        // by reading its write (acquire) does that poll see what the waker
        // wrote before waking; after a plain store the poll may read older
        // values, return `Pending`, and the wake is lost (loom_a_* in
        // loom_tests.rs).
        sync.remote_queued.swap(false, Ordering::Acquire);
        // SAFETY: the loop calls this on its own thread (invariant 6).
        let core = unsafe { &self.ptr.as_ref().core };
        if core.local.get() == 0 {
            return None;
        }
        // SAFETY: on the loop's thread, with `local > 0`.
        Some(unsafe { RawTask::from_ptr(self.ptr) })
    }
}

impl Drop for RemoteTask {
    fn drop(&mut self) {
        // SAFETY: the count taken in `RemoteTask::new` is ours.
        unsafe { release_ref(self.ptr) };
    }
}

fn increment_refs(sync: &SyncHeader) {
    // Relaxed, as `Arc::clone`: a new count is made from an existing one.
    if sync.refs.fetch_add(1, Ordering::Relaxed) > i32::MAX as u32 {
        std::process::abort();
    }
}

fn vtable<N, F, T>() -> &'static Vtable
where
    N: ?Sized,
    F: Future<Output = Result<T>> + 'static,
    T: 'static,
{
    &Vtable {
        poll: poll::<F, T>,
        end_with: end_with::<F, T>,
        slot: slot::<F, T>,
        error: error::<F, T>,
        drop_contents: drop_contents::<F, T>,
        dealloc: dealloc::<F, T>,
        drop_and_dealloc: drop_and_dealloc::<F, T>,
        coro: std::any::type_name::<N>,
    }
}

/// The stage of the cell at `ptr`.
///
/// # Safety
///
/// `ptr` is a live `TaskCell<F, T>` (invariant 7), on its loop's thread.
unsafe fn stage<F, T>(ptr: NonNull<Header>) -> *mut Stage<F, T> {
    // SAFETY: the header is the first field of the `repr(C)` cell, so the
    // cast recovers the cell the allocation was made as.
    unsafe { (*ptr.cast::<TaskCell<F, T>>().as_ptr()).stage.get() }
}

/// Which part of the stage at `ptr` is live: the result slot (`Some`) or
/// the future (`None`).
///
/// # Safety
///
/// As for [`stage`].
unsafe fn finished_slot<F, T>(ptr: NonNull<Header>) -> Option<*mut Slot<T>> {
    // SAFETY: the caller's promise: a live cell, on its loop's thread.
    let core = unsafe { &ptr.as_ref().core };
    // SAFETY: as above; by invariant 10 the flag names the live field,
    // and only its address is taken (`ManuallyDrop` is transparent).
    core.stage_finished()
        .then(|| unsafe { (&raw mut (*stage::<F, T>(ptr)).finished).cast::<Slot<T>>() })
}

/// Drops the live part of the stage in place (a future is never moved:
/// invariant 5), then stores `slot` as the result. `Some(message)` if
/// that drop panicked (the new slot is stored all the same).
///
/// # Safety
///
/// As for [`stage`], with no reference into the stage alive.
unsafe fn finish_stage<F, T>(ptr: NonNull<Header>, slot: Slot<T>) -> Option<String> {
    // SAFETY: the caller's promise.
    let stage = unsafe { stage::<F, T>(ptr) };
    // SAFETY: as above.
    let live = unsafe { finished_slot::<F, T>(ptr) };
    // SAFETY: the live field is initialised and nothing borrows it; after
    // a panic in its drop it counts as dropped, and is overwritten unread.
    let dropped = catch_unwind(AssertUnwindSafe(|| unsafe {
        match live {
            Some(old) => ptr::drop_in_place(old),
            None => ManuallyDrop::drop(&mut (*stage).running),
        }
    }));
    // SAFETY: the old value was dropped just above.
    unsafe {
        ptr::write(
            stage,
            Stage {
                finished: ManuallyDrop::new(slot),
            },
        );
        // Invariant 10: the slot is live from here on.
        ptr.as_ref().core.set_stage_finished();
    }
    dropped.err().map(|p| panic_message(&*p))
}

unsafe fn poll<F, T>(ptr: NonNull<Header>, cx: &mut TaskContext<'_>) -> Poll<State>
where
    F: Future<Output = Result<T>>,
{
    // SAFETY: the vtable is this cell's (invariant 7); loop thread.
    if unsafe { ptr.as_ref() }.core.stage_finished() {
        // Already finished: nothing to poll (the caller checks first).
        return Poll::Pending;
    }
    // SAFETY: as above; the future is live (invariant 10) and nothing else
    // borrows the stage during a poll (the task is polled only from its
    // run-queue entry, never re-entrantly); it is never moved (invariant
    // 5).
    let fut = unsafe { Pin::new_unchecked(&mut *(*stage::<F, T>(ptr)).running) };
    let polled = catch_unwind(AssertUnwindSafe(|| fut.poll(cx)));
    let result = match polled {
        Ok(Poll::Pending) => return Poll::Pending,
        Ok(Poll::Ready(result)) => result,
        Err(payload) => Err(Error::Panic(panic_message(&*payload))),
    };
    let state = State::of(&result);
    // SAFETY: the borrow of the future ended above.
    match unsafe { finish_stage::<F, T>(ptr, Slot::from_result(result)) } {
        None => Poll::Ready(state),
        Some(msg) => {
            // The future's drop panicked after it finished: that panic is
            // the task's exception.
            // SAFETY: as above.
            unsafe { finish_stage::<F, T>(ptr, Slot::Error(Box::new(Error::Panic(msg)))) };
            Poll::Ready(State::Failed)
        }
    }
}

unsafe fn end_with<F, T>(ptr: NonNull<Header>, error: Error) -> State {
    let state = State::of::<()>(&Err(error.clone()));
    // SAFETY: the vtable is this cell's; loop thread; not borrowed.
    match unsafe { finish_stage::<F, T>(ptr, Slot::Error(Box::new(error))) } {
        None => state,
        Some(msg) => {
            // SAFETY: as above.
            unsafe { finish_stage::<F, T>(ptr, Slot::Error(Box::new(Error::Panic(msg)))) };
            State::Failed
        }
    }
}

unsafe fn slot<F, T>(ptr: NonNull<Header>) -> *mut () {
    // SAFETY: the vtable is this cell's; loop thread.
    unsafe { finished_slot::<F, T>(ptr) }.map_or(ptr::null_mut(), |slot| slot.cast())
}

unsafe fn error<F, T>(ptr: NonNull<Header>) -> Option<Error> {
    // SAFETY: the vtable is this cell's; loop thread; a live slot, read.
    unsafe { finished_slot::<F, T>(ptr) }.and_then(|slot| unsafe { &*slot }.error())
}

unsafe fn drop_contents<F, T>(ptr: NonNull<Header>) {
    // A result that was taken, or one with no drop glue (the usual end),
    // leaves nothing to drop.
    // SAFETY: called once `local` reached zero, on the loop's thread
    // (invariant 2): nothing borrows the stage or the core; only the
    // slot's discriminant is read.
    let emptied = match unsafe { finished_slot::<F, T>(ptr) } {
        Some(slot) => match unsafe { &*slot } {
            Slot::Empty => true,
            Slot::Value(_) => !std::mem::needs_drop::<T>(),
            Slot::Error(_) => false,
        },
        None => false,
    };
    // SAFETY: as above.
    let panicked = (!emptied)
        .then(|| unsafe { finish_stage::<F, T>(ptr, Slot::Empty) })
        .flatten();
    // SAFETY: as above.
    unsafe { ptr.as_ref() }.core.drop_contents();
    if let Some(msg) = panicked {
        std::panic::panic_any(msg);
    }
}

/// Drops what the cell still holds — the stage, the core's context, cold
/// fields and waiters, the loop's queue — in place, and frees it: the
/// local side's last reference went while no other count existed (see
/// `release_local_side`). A panic in one of those drops is returned, after
/// the memory is freed.
///
/// # Safety
///
/// On the loop's thread, with `local` zero and `refs` one (the local
/// share): nothing else can reach the cell, now or later.
unsafe fn drop_and_dealloc<F, T>(ptr: NonNull<Header>) -> std::thread::Result<()> {
    #[cfg(all(test, loom))]
    loom_tests::freeing(ptr);
    let cell = ptr.cast::<TaskCell<F, T>>().as_ptr();
    // SAFETY: the cell is live and ours alone (the caller's promise); each
    // field is dropped once, here, and never read again.
    let stage = catch_unwind(AssertUnwindSafe(|| unsafe {
        match finished_slot::<F, T>(ptr) {
            Some(slot) => ptr::drop_in_place(slot),
            None => ManuallyDrop::drop(&mut (*(*cell).stage.get()).running),
        }
    }));
    // SAFETY: as above.
    let core = catch_unwind(AssertUnwindSafe(|| unsafe {
        ptr::drop_in_place(&raw mut (*cell).header.core)
    }));
    // SAFETY: as above; the memory was allocated by `RawTask::new` as a
    // `Box` of this cell type (invariant 7), and everything in it has been
    // dropped.
    unsafe {
        ptr::drop_in_place(&raw mut (*cell).header.sync.queue);
        std::alloc::dealloc(cell.cast(), std::alloc::Layout::new::<TaskCell<F, T>>());
    }
    stage.and(core)
}

unsafe fn dealloc<F, T>(ptr: NonNull<Header>) {
    #[cfg(all(test, loom))]
    loom_tests::freeing(ptr);
    let cell = ptr.cast::<TaskCell<F, T>>().as_ptr();
    // Everything but the loop's queue was emptied when the local side went
    // (invariant 2: the stage holds `Slot::Empty`, the core's context,
    // cold box and waiters are empty), so only the queue's `Arc` is dropped
    // before the memory goes: running the whole cell's drop glue again is
    // most of what freeing a task would cost.
    // SAFETY: `refs` reached zero: this is the only pointer left, to a
    // cell `RawTask::new` allocated as a `Box` with these types (invariant
    // 7); the `Arc` is `Send` (invariant 3) and dropped once, here.
    unsafe {
        ptr::drop_in_place(&raw mut (*cell).header.sync.queue);
        std::alloc::dealloc(cell.cast(), std::alloc::Layout::new::<TaskCell<F, T>>());
    }
}

/// The message of a panic payload.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "Box<dyn Any>".to_string()
    }
}
#[cfg(all(test, loom))]
mod loom_tests;
#[cfg(test)]
mod tests;
