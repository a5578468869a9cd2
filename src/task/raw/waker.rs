//! The waker of a raw task: a pointer to the task and this vtable.
//!
//! Woken on the task's loop thread it puts the task on the run queue
//! directly: no allocation, no atomic. Woken on another thread it queues a
//! [`RemoteTask`] on the loop's remote queue, which wakes the loop through
//! its ring (at most one such wake queued per task at a time). The
//! invariants are in the parent module.

use std::cell::Cell;
use std::marker::PhantomData;
use std::mem::ManuallyDrop;
use std::ops::Deref;
use std::ptr::NonNull;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::task::{RawWaker, RawWakerVTable, Waker};

use super::{Header, RawTask, RemoteTask, SyncHeader, increment_refs, release_ref};
use crate::runtime::event_loop::{LoopInner, Runnable};
use crate::runtime::shared::Remote;
use crate::task::outcome::State;

static VTABLE: RawWakerVTable = RawWakerVTable::new(clone, wake, wake_by_ref, drop_waker);

thread_local! {
    /// The loop running on this thread, as a pointer without a count, for
    /// the wake path (every local wake looks it up): null when none runs.
    /// Set by the runtime's loop guard from the `Rc` it keeps in the
    /// context's own slot while the loop runs (see
    /// [`set_running_loop`]).
    static RUNNING_LOOP: Cell<*const LoopInner> = const { Cell::new(std::ptr::null()) };
}

/// Makes `lp` the loop that local wakes on this thread schedule onto, and
/// returns the previous one.
///
/// # Safety
///
/// `lp` is null, or `Rc::as_ptr` of a strong `Rc` of the loop that the
/// caller holds until this slot is set back to what it was, which the
/// caller does before it lets that `Rc` go.
pub(crate) unsafe fn set_running_loop(lp: *const LoopInner) -> *const LoopInner {
    RUNNING_LOOP.with(|c| c.replace(lp))
}

/// Runs `f` with the loop running on this thread, if any: the `Rc` the
/// loop guard holds, borrowed through the pointer slot (no count change,
/// no borrow flag, no destructor check). Every spawn and every op looks
/// the loop up this way.
#[inline]
pub(crate) fn with_running_loop<R>(f: impl FnOnce(&Rc<LoopInner>) -> R) -> Option<R> {
    let lp = RUNNING_LOOP.with(Cell::get);
    if lp.is_null() {
        return None;
    }
    // SAFETY: non-null, so the loop guard that set it holds an `Rc` of
    // this loop whose `as_ptr` it is (invariant 9), until it puts the slot
    // back — not while `f` runs, as the guard is further up this thread's
    // stack. This `Rc` is never dropped (`ManuallyDrop`): it gives back no
    // count it did not take.
    let rc = ManuallyDrop::new(unsafe { Rc::from_raw(lp) });
    Some(f(&rc))
}

/// The vtable of a waker counted on the loop's side (see
/// [`loop_local_waker`]).
static LOCAL_VTABLE: RawWakerVTable =
    RawWakerVTable::new(local_clone, local_wake, local_wake_by_ref, local_drop);

/// For a waiter the loop keeps to itself (the ring driver's op table): a
/// waker of the same task as `waker` whose count is the task's local one
/// — no atomic operation to make, wake or drop it — when `waker` is a
/// ringio task's waker of the loop `loop_id`; otherwise a plain clone.
///
/// # Safety
///
/// The calling thread runs the loop `loop_id`, and the returned waker is
/// woken, cloned and dropped on this thread only (its count is a `Cell`).
/// A clone of it is an ordinary waker, free to go anywhere.
pub(crate) unsafe fn loop_local_waker(waker: &Waker, loop_id: u64) -> Waker {
    if std::ptr::eq(waker.vtable(), &VTABLE) {
        let ptr =
            NonNull::new(waker.data() as *mut Header).expect("task waker with a null pointer");
        if sync_of(waker.data()).queue.id == loop_id {
            // SAFETY: this thread runs the task's loop (the caller's
            // promise; invariant 6), and the waker's count keeps it alive.
            let core = unsafe { &ptr.as_ref().core };
            if core.local.get() != 0 {
                // SAFETY: on the loop's thread with `local > 0`; the new
                // local reference is owned by the returned waker.
                std::mem::forget(unsafe { RawTask::from_ptr(ptr) });
                let raw = RawWaker::new(waker.data(), &LOCAL_VTABLE);
                // SAFETY: the vtable keeps `RawWaker`'s contract on this
                // thread, which the caller promises is the only one.
                return unsafe { Waker::from_raw(raw) };
            }
        }
    }
    waker.clone()
}

/// Wakes `waker`, which the driver of loop `lp` kept and handed back with
/// a completion, on that loop's thread. A loop-local waker (made by
/// [`loop_local_waker`] for the op) goes straight onto the run queue, its
/// count moving into the queue entry: every completion takes this path,
/// and it needs no look-up of the current loop and no count traffic.
pub(crate) fn wake_reaped(waker: Waker, lp: &LoopInner) {
    if !std::ptr::eq(waker.vtable(), &LOCAL_VTABLE) {
        waker.wake();
        return;
    }
    let waker = ManuallyDrop::new(waker);
    let ptr = NonNull::new(waker.data() as *mut Header).expect("task waker with a null pointer");
    debug_assert_eq!(sync_of(waker.data()).queue.id, lp.id);
    // A loop-local waker holds one local reference to a task of the loop
    // it was made for (that loop's driver kept it, and the loop runs on
    // this thread: invariant 6); that reference moves from the forgotten
    // waker into `task`, as in `local_drop`.
    let task = RawTask {
        ptr,
        _not_send: PhantomData,
    };
    let core = task.core();
    if core.state() == State::Pending && !core.is_queued() {
        core.set_queued(true);
        lp.schedule(Runnable::Task(task));
    }
}

/// Whether two wakers wake the same ringio task (whichever of the two
/// vtables each has), else `Waker::will_wake`.
pub(crate) fn same_task(a: &Waker, b: &Waker) -> bool {
    let ours =
        |w: &Waker| std::ptr::eq(w.vtable(), &VTABLE) || std::ptr::eq(w.vtable(), &LOCAL_VTABLE);
    if ours(a) && ours(b) {
        a.data() == b.data()
    } else {
        a.will_wake(b)
    }
}

/// A waker of a ringio task kept in one word: the task pointer and one
/// count of its `refs`, exactly what a `Waker` of this module's vtable
/// holds, without the vtable pointer. A task's single awaiter is kept so
/// (most tasks have at most one, and it is a task), which keeps every
/// task's header a word smaller.
pub(crate) struct TaskWaker {
    ptr: NonNull<Header>,
}

impl TaskWaker {
    /// A new count on `waker`'s task, if `waker` is an ordinary ringio
    /// task waker (any other waker is `None`: keep it as a `Waker`).
    pub(crate) fn of(waker: &Waker) -> Option<TaskWaker> {
        if !std::ptr::eq(waker.vtable(), &VTABLE) {
            return None;
        }
        let ptr = NonNull::new(waker.data() as *mut Header)?;
        // The count `waker` holds keeps the task alive while a new one is
        // taken, as `clone` does.
        increment_refs(sync_of(waker.data()));
        Some(TaskWaker { ptr })
    }

    /// Whether `waker` wakes the same task.
    pub(crate) fn wakes_same(&self, waker: &Waker) -> bool {
        (std::ptr::eq(waker.vtable(), &VTABLE) || std::ptr::eq(waker.vtable(), &LOCAL_VTABLE))
            && waker.data() == self.ptr.as_ptr() as *const ()
    }

    /// The same count as an ordinary `Waker`.
    pub(crate) fn into_waker(self) -> Waker {
        let this = ManuallyDrop::new(self);
        let raw = RawWaker::new(this.ptr.as_ptr() as *const (), &VTABLE);
        // SAFETY: the count this value held moves into the waker (`self`
        // is not dropped), whose vtable gives it back when it goes.
        unsafe { Waker::from_raw(raw) }
    }
}

impl Drop for TaskWaker {
    fn drop(&mut self) {
        // SAFETY: the count taken in `TaskWaker::of` is ours.
        unsafe { release_ref(self.ptr) };
    }
}

/// A waker lent out for one poll: it holds no count of its own.
pub(crate) struct WakerRef<'a> {
    waker: ManuallyDrop<Waker>,
    _task: PhantomData<&'a RawTask>,
}

impl WakerRef<'_> {
    pub(super) fn new(ptr: NonNull<Header>) -> Self {
        let raw = RawWaker::new(ptr.as_ptr() as *const (), &VTABLE);
        WakerRef {
            // SAFETY: the vtable's functions keep the contract of
            // `RawWaker`; the borrowed `RawTask` keeps the task alive for
            // the lifetime of this value, which never drops the waker
            // (`ManuallyDrop`), so no count is given back that was not taken.
            waker: ManuallyDrop::new(unsafe { Waker::from_raw(raw) }),
            _task: PhantomData,
        }
    }
}

impl Deref for WakerRef<'_> {
    type Target = Waker;
    fn deref(&self) -> &Waker {
        &self.waker
    }
}

fn sync_of<'a>(data: *const ()) -> &'a SyncHeader {
    // SAFETY: `data` is a task pointer (only this vtable makes wakers) whose
    // allocation the waker's count keeps alive; `SyncHeader` is the first
    // field of the `repr(C)` header.
    unsafe { &*data.cast::<SyncHeader>() }
}

unsafe fn clone(data: *const ()) -> RawWaker {
    increment_refs(sync_of(data));
    RawWaker::new(data, &VTABLE)
}

unsafe fn wake(data: *const ()) {
    // SAFETY: forwarded: `data` is a live task with our count.
    unsafe { wake_task(data) };
    // SAFETY: the waker's own count is given back.
    unsafe { drop_waker(data) };
}

unsafe fn wake_by_ref(data: *const ()) {
    // SAFETY: forwarded.
    unsafe { wake_task(data) }
}

/// A wake, inlined into `wake` and `wake_by_ref`: on the task's loop
/// thread the whole path is a handful of compares and a push.
///
/// # Safety
///
/// `data` is a live task whose allocation a count of the caller keeps.
#[inline(always)]
unsafe fn wake_task(data: *const ()) {
    let ptr = NonNull::new(data as *mut Header).expect("task waker with a null pointer");
    if !schedule_local(ptr) {
        // SAFETY: forwarded.
        unsafe { wake_remote(ptr) };
    }
}

/// A wake from a thread that does not run the task's loop: through the
/// loop's remote queue.
///
/// # Safety
///
/// As for [`wake_task`].
#[cold]
unsafe fn wake_remote(ptr: NonNull<Header>) {
    let sync = sync_of(ptr.as_ptr() as *const ());
    if sync.remote_queued.swap(true, Ordering::AcqRel) {
        return;
    }
    // SAFETY: this waker's count keeps the allocation alive meanwhile.
    let remote = unsafe { RemoteTask::new(ptr) };
    // Refused only once the loop has closed: its tasks are done, and the
    // refused entry's drop gives its count back.
    let _ = sync.queue.push(Remote::Wake(remote));
}

unsafe fn drop_waker(data: *const ()) {
    let ptr = NonNull::new(data as *mut Header).expect("task waker with a null pointer");
    // SAFETY: the waker's own count.
    unsafe { release_ref(ptr) };
}

unsafe fn local_clone(data: *const ()) -> RawWaker {
    // An ordinary waker: it may leave the thread.
    // SAFETY: forwarded: `data` is a live task.
    unsafe { clone(data) }
}

unsafe fn local_wake(data: *const ()) {
    // SAFETY: forwarded.
    unsafe { local_wake_by_ref(data) };
    // SAFETY: the waker's own local count is given back.
    unsafe { local_drop(data) };
}

unsafe fn local_wake_by_ref(data: *const ()) {
    let ptr = NonNull::new(data as *mut Header).expect("task waker with a null pointer");
    // On the loop's thread (the promise of `loop_local_waker`).
    schedule_local(ptr);
}

unsafe fn local_drop(data: *const ()) {
    let ptr = NonNull::new(data as *mut Header).expect("task waker with a null pointer");
    // The local reference `loop_local_waker` took, given back on the
    // loop's thread.
    drop(RawTask {
        ptr,
        _not_send: PhantomData,
    });
}

/// If this thread runs the task's loop: queues the task to be polled
/// (unless it is done or already queued) and returns `true`. Otherwise
/// `false`: the wake must go through the loop's remote queue.
#[inline(always)]
pub(super) fn schedule_local(ptr: NonNull<Header>) -> bool {
    let loop_id = sync_of(ptr.as_ptr() as *const ()).queue.id;
    // A slot with no destructor: also readable while this thread's
    // thread-locals are destroyed (a waker woken by another one's drop).
    let lp = RUNNING_LOOP.with(Cell::get);
    if lp.is_null() {
        return false;
    }
    // SAFETY: non-null, so the loop guard that set it still holds the
    // loop's `Rc` (the contract of `set_running_loop`).
    let lp = unsafe { &*lp };
    if lp.id != loop_id {
        return false;
    }
    // SAFETY: this thread runs the task's loop (invariant 6), and the
    // caller's count keeps the allocation alive.
    let core = unsafe { &ptr.as_ref().core };
    if core.local.get() != 0 && core.state() == State::Pending && !core.is_queued() {
        core.set_queued(true);
        // SAFETY: on the loop's thread with `local > 0`.
        lp.schedule(Runnable::Task(unsafe { RawTask::from_ptr(ptr) }));
    }
    true
}
