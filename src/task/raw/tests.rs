//! The raw task without a ring: allocation, polls, wakes from this and
//! other threads, reading the result twice, drops in every state, panics
//! in a poll and in a drop. They run under Miri (`ci/miri.sh`), which
//! checks every access against the borrow rules and reports any leak.
//!
//! No loop runs here, so every wake takes the remote path: it lands in
//! the loop's remote queue, where the test takes it as a loop would.

use std::cell::Cell;
use std::future::Future;
use std::os::fd::{FromRawFd, OwnedFd};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll, Waker};

use super::RawTask;
use crate::error::{Error, Result};
use crate::runtime::shared::{LoopShared, Remote};
use crate::task::context_var::Context;
use crate::task::core::TaskCore;
use crate::task::outcome::{Slot, State};

fn queue() -> Arc<LoopShared> {
    // SAFETY: eventfd(2) with valid flags; the result is checked.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    assert!(fd >= 0);
    // SAFETY: a fresh descriptor nobody else owns.
    Arc::new(LoopShared::new(u64::MAX, unsafe {
        OwnedFd::from_raw_fd(fd)
    }))
}

fn spawn<F, T>(fut: F, q: &Arc<LoopShared>) -> RawTask
where
    F: Future<Output = Result<T>> + 'static,
    T: 'static,
{
    RawTask::new::<F, F, T>(fut, TaskCore::new(None, Context::default()), q.clone())
}

/// Polls the task once with its own waker, as the loop does.
fn poll(task: &RawTask) -> Poll<State> {
    let waker = task.waker_ref();
    let mut cx = TaskContext::from_waker(&waker);
    let p = task.poll(&mut cx);
    if let Poll::Ready(state) = p {
        task.core().set_state(state);
    }
    p
}

/// The tasks woken through the remote queue, as the loop takes them.
fn woken(q: &LoopShared) -> Vec<RawTask> {
    q.take()
        .into_iter()
        .filter_map(|r| match r {
            Remote::Wake(t) => t.into_local(),
            Remote::Call(_) => None,
        })
        .collect()
}

/// Pending until woken once, keeping the waker it was given.
struct Gate {
    waker: Rc<Cell<Option<Waker>>>,
    open: Rc<Cell<bool>>,
}

impl Future for Gate {
    type Output = Result<u32>;
    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Result<u32>> {
        if self.open.get() {
            return Poll::Ready(Ok(7));
        }
        self.waker.set(Some(cx.waker().clone()));
        Poll::Pending
    }
}

/// A task parked in a [`Gate`], polled once: the task, the waker the gate
/// kept, and the gate's switch.
fn gated(q: &Arc<LoopShared>) -> (RawTask, Waker, Rc<Cell<bool>>) {
    let (waker, open) = (Rc::new(Cell::new(None)), Rc::new(Cell::new(false)));
    let task = spawn(
        Gate {
            waker: waker.clone(),
            open: open.clone(),
        },
        q,
    );
    assert_eq!(poll(&task), Poll::Pending);
    let w = waker.take().expect("the gate kept a waker");
    (task, w, open)
}

/// Counts its drops.
struct DropFlag(Rc<Cell<u32>>);
impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.set(self.0.get() + 1);
    }
}

#[test]
fn a_value_is_read_twice_then_moved_out_once() {
    let q = queue();
    let task = spawn(async { Ok::<_, Error>(String::from("value")) }, &q);
    assert_eq!(poll(&task), Poll::Ready(State::Done));
    // SAFETY: the task's result type is `String`.
    let read = |t: &RawTask| unsafe { t.with_slot::<String, _>(|s| s.read(State::Done)) };
    assert_eq!(read(&task).unwrap().unwrap(), "value");
    assert_eq!(read(&task.clone()).unwrap().unwrap(), "value");
    // SAFETY: as above.
    let taken = unsafe { task.with_slot::<String, _>(|s| s.take(State::Done)) };
    assert_eq!(taken.unwrap().unwrap(), "value");
    assert!(read(&task).unwrap().is_err(), "moved out");
}

#[test]
fn a_wake_from_another_thread_queues_the_task_once() {
    let q = queue();
    let (task, w, open) = gated(&q);
    assert!(w.will_wake(&task.waker_ref()));
    let w2 = w.clone();
    std::thread::spawn(move || {
        w2.wake_by_ref();
        w2.wake(); // a second wake while one is queued adds nothing
    })
    .join()
    .unwrap();
    let again = woken(&q);
    assert_eq!(again.len(), 1);
    open.set(true);
    assert_eq!(poll(&again[0]), Poll::Ready(State::Done));
    // The waker outlives every handle, and goes last on another thread.
    drop((task, again));
    std::thread::spawn(move || drop(w)).join().unwrap();
}

#[test]
fn a_waker_that_outlives_the_task_wakes_nothing() {
    let q = queue();
    let (task, w, _open) = gated(&q);
    task.core().set_state(State::Cancelled);
    drop(task); // the contents go now; the allocation stays for the waker
    w.wake_by_ref();
    assert!(
        woken(&q).is_empty(),
        "a task with no local reference is done"
    );
    drop(w);
}

#[test]
fn dropping_a_pending_task_drops_its_future_once() {
    let q = queue();
    let drops = Rc::new(Cell::new(0));
    let flag = DropFlag(drops.clone());
    let task = spawn(
        async move {
            let _flag = flag;
            std::future::pending::<()>().await;
            Ok::<_, Error>(())
        },
        &q,
    );
    assert_eq!(poll(&task), Poll::Pending);
    let other = task.clone();
    drop(task);
    assert_eq!(drops.get(), 0, "another handle keeps it");
    drop(other);
    assert_eq!(drops.get(), 1);
}

#[test]
fn a_result_nobody_read_is_dropped_with_the_last_handle() {
    let q = queue();
    let drops = Rc::new(Cell::new(0));
    let flag = DropFlag(drops.clone());
    let task = spawn(async move { Ok::<_, Error>(flag) }, &q);
    assert_eq!(poll(&task), Poll::Ready(State::Done));
    assert_eq!(drops.get(), 0, "the value is kept for the handles");
    drop(task);
    assert_eq!(drops.get(), 1);
}

#[test]
fn end_with_drops_a_future_never_polled() {
    let q = queue();
    let drops = Rc::new(Cell::new(0));
    let flag = DropFlag(drops.clone());
    let task = spawn(
        async move {
            drop(flag);
            Ok::<_, Error>(1)
        },
        &q,
    );
    let state = task.end_with(Error::Cancelled { msg: None });
    assert_eq!(state, State::Cancelled);
    assert_eq!(drops.get(), 1, "the unpolled future is dropped in place");
    assert!(task.error().unwrap().is_cancelled());
}

#[test]
fn a_panic_in_poll_becomes_the_tasks_exception() {
    let q = queue();
    let task = spawn(
        async {
            if true {
                panic!("boom in poll");
            }
            Ok::<_, Error>(())
        },
        &q,
    );
    assert_eq!(poll(&task), Poll::Ready(State::Failed));
    match task.error() {
        Some(Error::Panic(m)) => assert_eq!(m, "boom in poll"),
        other => panic!("expected the panic, got {other:?}"),
    }
    task.core().mark_retrieved();
}

struct PanicOnDrop;
impl Drop for PanicOnDrop {
    fn drop(&mut self) {
        panic!("boom in drop");
    }
}

#[test]
fn a_panic_in_the_futures_drop_becomes_the_tasks_exception() {
    let q = queue();
    let task = spawn(
        async {
            let _p = PanicOnDrop;
            std::future::pending::<()>().await;
            Ok::<_, Error>(())
        },
        &q,
    );
    assert_eq!(poll(&task), Poll::Pending);
    let state = task.end_with(Error::Cancelled { msg: None });
    assert_eq!(state, State::Failed);
    assert!(matches!(task.error(), Some(Error::Panic(m)) if m == "boom in drop"));
    task.core().mark_retrieved();
}

#[test]
fn a_panic_in_the_results_drop_at_the_last_handle_still_frees_the_task() {
    // The last handle, with no waker left: contents and memory go in one
    // pass (`drop_and_dealloc`); the panic reaches the dropper, and Miri
    // checks that nothing (the name's cold box, the cell) is leaked.
    let q = queue();
    let task = RawTask::new::<(), _, PanicOnDrop>(
        async { Ok::<_, Error>(PanicOnDrop) },
        TaskCore::new(Some("named".into()), Context::default()),
        q.clone(),
    );
    assert_eq!(poll(&task), Poll::Ready(State::Done));
    let dropped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(task)));
    assert!(dropped.is_err(), "the result's panic reaches the dropper");
}

#[test]
fn the_last_handle_frees_a_task_whose_waker_went_first() {
    // A waker dropped on another thread before the last handle: the local
    // side's release then finds only its own count and frees at once.
    let q = queue();
    let (task, w, open) = gated(&q);
    std::thread::spawn(move || drop(w)).join().unwrap();
    open.set(true);
    assert_eq!(poll(&task), Poll::Ready(State::Done));
    drop(task);
}

#[test]
fn an_error_is_read_by_every_reader() {
    let q = queue();
    let task = spawn(async { Err::<u8, _>(Error::msg("bad")) }, &q);
    assert_eq!(poll(&task), Poll::Ready(State::Failed));
    for _ in 0..2 {
        // SAFETY: the task's result type is `u8`.
        let r = unsafe { task.with_slot::<u8, _>(|s: &mut Slot<u8>| s.take(State::Failed)) };
        assert_eq!(r.unwrap().unwrap_err().to_string(), "bad");
    }
    task.core().mark_retrieved();
}

#[test]
fn many_tasks_woken_from_many_threads_all_end_and_free() {
    let q = queue();
    let mut tasks = Vec::new();
    let mut wakers = Vec::new();
    for _ in 0..16 {
        let (t, w, open) = gated(&q);
        wakers.push(w);
        tasks.push((t, open));
    }
    let threads: Vec<_> = wakers
        .chunks(4)
        .map(|c| {
            let c = c.to_vec();
            std::thread::spawn(move || c.into_iter().for_each(Waker::wake))
        })
        .collect();
    threads.into_iter().for_each(|t| t.join().unwrap());
    drop(wakers);
    let again = woken(&q);
    assert_eq!(again.len(), 16);
    for (_, open) in &tasks {
        open.set(true);
    }
    for t in &again {
        assert_eq!(poll(t), Poll::Ready(State::Done));
    }
}

#[test]
fn a_loop_local_waker_counts_on_the_loop_side_and_clones_to_an_ordinary_one() {
    let q = queue();
    let (task, plain, _open) = gated(&q);
    // SAFETY: this thread stands for the loop `q.id`, and the waker stays
    // on it.
    let local = unsafe { super::loop_local_waker(&plain, q.id) };
    assert!(super::same_task(&local, &plain));
    assert_eq!(task.core().local.get(), 2, "counted on the local side");
    let cloned = local.clone(); // an ordinary waker again
    drop(local);
    assert_eq!(task.core().local.get(), 1);
    // A waker of another loop is simply cloned.
    // SAFETY: as above.
    let other = unsafe { super::loop_local_waker(&plain, q.id - 1) };
    assert_eq!(task.core().local.get(), 1);
    drop((other, plain));
    std::thread::spawn(move || cloned.wake()).join().unwrap();
    assert_eq!(woken(&q).len(), 1);
}

/// The header is what every task pays before its future: a guard against
/// a field that quietly grows it. At 72 bytes, a task whose future and
/// result fit in 16 (the stage has no tag: invariant 10) is one 96-byte
/// heap chunk.
#[test]
fn the_header_stays_at_72_bytes() {
    assert_eq!(std::mem::size_of::<super::Header>(), 72);
    let i = 5usize;
    fn cell_size<F: std::future::Future<Output = crate::error::Result<usize>>>(_: &F) -> usize {
        std::mem::size_of::<super::TaskCell<F, usize>>()
    }
    assert_eq!(cell_size(&async move { Ok(i) }), 88);
}

#[test]
fn the_id_flags_and_state_share_a_word_without_clobbering_each_other() {
    use crate::task::outcome::State;
    let q = queue();
    let (task, _waker, _open) = gated(&q);
    let core = task.core();
    let id = core.id();
    for state in [State::Done, State::Failed, State::Cancelled, State::Pending] {
        core.set_state(state);
        core.set_queued(true);
        assert_eq!(core.state(), state);
        assert!(core.is_queued());
        core.set_queued(false);
        assert!(!core.is_queued());
        assert_eq!(core.state(), state);
        assert_eq!(core.id(), id);
    }
}

/// The one awaiter a task keeps in its header holds a count like the
/// waker it came from: a second awaiter and a callback join it in a list
/// in registration order, a drain wakes the first through the remote
/// queue, and a task dropped with its awaiter still listed gives the count
/// back (Miri reports a leak otherwise).
#[test]
fn a_header_awaiter_wakes_once_and_gives_its_count_back() {
    use crate::task::waiters::Waiter;
    let q = queue();
    let (awaited, _wk, _open) = gated(&q);
    let (first, w1, _o1) = gated(&q);
    let (second, w2, _o2) = gated(&q);
    let core = awaited.core();
    core.add_waker(&first.waker_ref());
    core.add_waker(&first.waker_ref()); // the same task: listed once
    assert!(first.waker_held_elsewhere(), "the awaiter holds a count");
    core.add_callback(crate::task::waiters::CallbackId(1), Box::new(|_| {}));
    core.add_waker(&second.waker_ref());
    let mut order = Vec::new();
    core.drain_waiters(|w| match w {
        Waiter::Wake(w) => {
            order.push(if super::same_task(&w, &first.waker_ref()) {
                "first"
            } else {
                "second"
            });
            w.wake();
        }
        Waiter::Call(..) => order.push("callback"),
    });
    assert_eq!(order, ["first", "callback", "second"]);
    let woken = woken(&q);
    assert_eq!(woken.len(), 2);
    drop(woken);
    // Kept in the header and never drained: dropped with the task.
    let (other, _w3, _o3) = gated(&q);
    other.core().add_waker(&first.waker_ref());
    drop(other);
    drop((w1, w2));
    assert!(!first.waker_held_elsewhere(), "every count came back");
}
