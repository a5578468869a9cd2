//! Model checks of the cross-thread wake protocol with `loom`
//! (`ci/loom.sh`: `RUSTFLAGS="--cfg loom" cargo test --release --lib
//! loom_tests::`, in its own target dir).
//!
//! What runs is ringio's own code: `RawTask`, its wakers, `RemoteTask` and
//! `LoopShared`, whose atomics and mutex come from `crate::sync` and are
//! `loom`'s in this build. loom runs each model once for every interleaving
//! of its threads (up to `LOOM_MAX_PREEMPTIONS` preemptions, when set) and,
//! for every atomic load, every value the memory model lets it read, so an
//! ordering that is too weak shows up as a lost wake-up (a deadlock loom
//! reports), a double free or a data race on a tracked cell.
//!
//! What is modelled rather than run:
//! - The loop. [`ModelLoop::turn`] makes the calls of `EventLoop::turn`
//!   for a loop with no I/O and no timers, in its order: look at the
//!   remote queue before blocking (`has_pending`), block in the ring only
//!   with nothing ready, re-arm after a kernel wake-up (`rearm`), then take
//!   the queue (`take`, `RemoteTask::into_local`) and run what is ready.
//!   Its scheduling and polling are those of `waker::schedule_local` and
//!   `RawTask::run`, which are single-threaded (no loop context exists
//!   here, so the real ones cannot be reached).
//! - The kernel: the eventfd, its armed read and MSG_RING are
//!   `crate::sync::model::EventFd` (see there for what that leaves out).
//! - Memory: loom does not see a free. `dealloc` tells [`freeing`], which
//!   counts frees and writes two loom-tracked cells standing for the
//!   task's memory: its header, which each thread holding a count reads
//!   before it gives the count back, and its contents, which the drops of
//!   the future and of the result write (on the loop's thread). A free that
//!   does not happen after all of these is a data race loom reports; one
//!   that comes twice, or never, fails the model's asserts.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::Future;
use std::os::fd::{FromRawFd, OwnedFd};
use std::pin::Pin;
use std::ptr::NonNull;
use std::sync::Arc;
// Bookkeeping of the models, not part of the protocol: `std`'s atomics,
// which loom neither sees nor branches on. loom runs every model thread on
// this one OS thread, so they count exactly.
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::task::{Context as TaskContext, Poll, Waker};

use loom::sync::atomic::AtomicBool;
use loom::thread::{self, ThreadId};

use super::{Header, RawTask};
use crate::error::{Error, Result};
use crate::runtime::shared::{LoopShared, Remote};
use crate::task::context_var::Context;
use crate::task::core::TaskCore;
use crate::task::outcome::State;

/// Runs `f` under loom, with the task memory watch reset around it.
fn model(f: impl Fn() + Send + Sync + 'static) {
    loom::model(move || {
        WATCHED.with(|w| w.borrow_mut().clear());
        f();
        WATCHED.with(|w| w.borrow_mut().clear());
    });
}

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

/// A loop thread as the protocol sees it (see the module's docs).
struct ModelLoop {
    shared: Arc<LoopShared>,
    ready: RefCell<VecDeque<RawTask>>,
}

impl ModelLoop {
    fn new(shared: &Arc<LoopShared>) -> ModelLoop {
        ModelLoop {
            shared: shared.clone(),
            ready: RefCell::new(VecDeque::new()),
        }
    }

    /// A wake on the loop's thread (`waker::schedule_local`).
    fn schedule(&self, task: RawTask) {
        let core = task.core();
        if core.state() == State::Pending && !core.is_queued() {
            core.set_queued(true);
            self.ready.borrow_mut().push_back(task);
        }
    }

    /// One turn of `EventLoop::turn`; `block`: may wait in the ring.
    fn turn(&self, block: bool) {
        // 1. Anything ready, here or in the remote queue?
        let has_ready = !self.ready.borrow().is_empty() || self.shared.has_pending();
        // 2. Nothing: block in the ring until the eventfd read (or a
        // MSG_RING CQE) completes; the reap reports a remote wake-up and
        // the loop re-arms.
        if !has_ready && block {
            self.shared.model_eventfd.wait();
            self.shared.rearm();
        }
        // 3. Work from other threads.
        if self.shared.has_pending() {
            let mut wakes = 0;
            for item in self.shared.take() {
                match item {
                    Remote::Wake(remote) => {
                        wakes += 1;
                        if let Some(task) = remote.into_local() {
                            self.schedule(task);
                        }
                    }
                    Remote::Call(f) => f(),
                }
            }
            // The models have one task: at most one remote wake of it is
            // queued at a time.
            assert!(wakes <= 1, "a task was queued {wakes} times at once");
        }
        // 5. Run what is ready now (`RawTask::run`).
        let n = self.ready.borrow().len();
        for _ in 0..n {
            let task = self.ready.borrow_mut().pop_front().unwrap();
            let core = task.core();
            core.set_queued(false);
            if core.is_done() {
                continue;
            }
            let waker = task.waker_ref();
            let mut cx = TaskContext::from_waker(&waker);
            if let Poll::Ready(state) = task.poll(&mut cx) {
                core.set_state(state);
            }
        }
    }

    /// The end of `EventLoop::shutdown`: refuse further pushes and drop
    /// what is still queued, on the loop's thread.
    fn close(&self) {
        for leftover in self.shared.close() {
            drop(leftover);
        }
        self.ready.borrow_mut().clear();
    }
}

/// Ready once every flag is set (each by a waking thread, before its wake).
struct AllSet {
    flags: Arc<Vec<AtomicBool>>,
}

impl Future for AllSet {
    type Output = Result<()>;
    fn poll(self: Pin<&mut Self>, _: &mut TaskContext<'_>) -> Poll<Result<()>> {
        // No waker is registered: the models' threads hold clones made
        // before, so the flags (which synchronize nothing else) are all
        // the task sees of them, and a poll must see every flag set before
        // the wake that made it.
        if self.flags.iter().all(|f| f.load(Ordering::Acquire)) {
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    }
}

/// A remote wake after the loop took an earlier one of the same task from
/// its queue, while the task is polled: deduplicated by `remote_queued`,
/// it must still lead to a poll that sees what the waking thread wrote.
#[test]
fn loom_a_remote_wake_racing_the_drain_and_the_poll_is_never_lost() {
    model(|| {
        let q = queue();
        let flags = Arc::new(vec![AtomicBool::new(false)]);
        let task = spawn(
            AllSet {
                flags: flags.clone(),
            },
            &q,
        );
        let w = task.waker_ref().clone();
        let lp = ModelLoop::new(&q);
        // Spawned: its first poll is queued.
        lp.schedule(task.clone());
        let th = thread::spawn(move || {
            // An early wake (nothing to see yet), then the one that counts.
            w.wake_by_ref();
            flags[0].store(true, Ordering::Release);
            w.wake();
        });
        // A lost wake leaves this loop blocked for good: loom reports the
        // deadlock.
        while task.core().state() == State::Pending {
            lp.turn(true);
        }
        th.join().unwrap();
        assert_eq!(task.core().state(), State::Done);
        lp.close();
    });
}

/// Two threads wake the task at once, each after setting its flag: both
/// wakes reach a poll, and the task is never queued twice.
#[test]
fn loom_a_concurrent_remote_wakes_queue_once_and_are_not_lost() {
    model(|| {
        let q = queue();
        let flags = Arc::new(vec![AtomicBool::new(false), AtomicBool::new(false)]);
        let task = spawn(
            AllSet {
                flags: flags.clone(),
            },
            &q,
        );
        let lp = ModelLoop::new(&q);
        lp.schedule(task.clone());
        let threads: Vec<_> = (0..2)
            .map(|i| {
                let w = task.waker_ref().clone();
                let flags = flags.clone();
                thread::spawn(move || {
                    flags[i].store(true, Ordering::Release);
                    w.wake();
                })
            })
            .collect();
        while task.core().state() == State::Pending {
            lp.turn(true);
        }
        for th in threads {
            th.join().unwrap();
        }
        lp.close();
    });
}

thread_local! {
    /// The task memory the running model watches, by address. loom runs
    /// all of a model's threads on this OS thread, so this is the model's.
    static WATCHED: RefCell<Vec<(usize, Arc<Memory>)>> = const { RefCell::new(Vec::new()) };
}

/// Stands for a task's memory: loom-tracked accesses, and the frees.
struct Memory {
    /// The sync header, which any thread holding a count may use.
    header: loom::cell::UnsafeCell<()>,
    /// The contents, which only the loop's thread touches.
    contents: loom::cell::UnsafeCell<()>,
    frees: AtomicU32,
}

// SAFETY: the cells hold no data; loom checks every access to them.
unsafe impl Sync for Memory {}

impl Memory {
    fn new() -> Arc<Memory> {
        Arc::new(Memory {
            header: loom::cell::UnsafeCell::new(()),
            contents: loom::cell::UnsafeCell::new(()),
            frees: AtomicU32::new(0),
        })
    }

    /// Watches the task's memory: `dealloc` reports its free here.
    fn watch(self: &Arc<Self>, task: &RawTask) {
        WATCHED.with(|w| w.borrow_mut().push((task.addr(), self.clone())));
    }

    /// A thread's use of the header, before it gives back its count.
    fn use_header(&self) {
        self.header.with(|_| ());
    }

    /// A drop of (part of) the contents.
    fn drop_contents(&self) {
        self.contents.with_mut(|_| ());
    }

    /// The free: after every use of the header and every drop of the
    /// contents, else loom reports a race.
    fn free(&self) {
        self.header.with_mut(|_| ());
        self.contents.with_mut(|_| ());
    }
}

/// Called by `dealloc` with the task about to be freed.
pub(super) fn freeing(ptr: NonNull<Header>) {
    let addr = ptr.as_ptr() as usize;
    let watched = WATCHED.with(|w| {
        w.borrow()
            .iter()
            .find(|(a, _)| *a == addr)
            .map(|(_, m)| m.clone())
    });
    if let Some(m) = watched {
        m.free();
        let before = m.frees.fetch_add(1, Ordering::Relaxed);
        assert_eq!(before, 0, "a task was freed twice");
    }
}

/// Records a drop of the task's contents: once, on the loop's thread.
struct Dropped {
    memory: Arc<Memory>,
    on: ThreadId,
    count: Arc<AtomicUsize>,
}

impl Drop for Dropped {
    fn drop(&mut self) {
        assert_eq!(
            thread::current().id(),
            self.on,
            "contents dropped off the loop's thread"
        );
        self.memory.drop_contents();
        self.count.fetch_add(1, Ordering::Relaxed);
    }
}

/// Ready at the first poll with a value that records its drop (`done`),
/// or never (`!done`); the future records its own drop too.
struct Finish {
    done: bool,
    value: Option<Dropped>,
    _own: Dropped,
}

impl Future for Finish {
    type Output = Result<Dropped>;
    fn poll(mut self: Pin<&mut Self>, _: &mut TaskContext<'_>) -> Poll<Result<Dropped>> {
        if self.done {
            Poll::Ready(Ok(self.value.take().unwrap()))
        } else {
            Poll::Pending
        }
    }
}

/// A task whose waker another thread holds, with its memory watched;
/// returns the task, that waker, the memory and the count of drops of its
/// contents (two: the future and the value, or the future alone).
fn watched_task(
    q: &Arc<LoopShared>,
    done: bool,
) -> (RawTask, Waker, Arc<Memory>, Arc<AtomicUsize>) {
    let memory = Memory::new();
    let count = Arc::new(AtomicUsize::new(0));
    let dropped = || Dropped {
        memory: memory.clone(),
        on: thread::current().id(),
        count: count.clone(),
    };
    let task = spawn(
        Finish {
            done,
            value: Some(dropped()),
            _own: dropped(),
        },
        q,
    );
    memory.watch(&task);
    let w = task.waker_ref().clone();
    (task, w, memory, count)
}

/// The task finishes and the loop lets go of it while another thread
/// wakes it and drops the last waker: the contents are dropped once, on
/// the loop's thread, and the memory is freed once, after every use,
/// on whichever thread let go last.
#[test]
fn loom_b_last_waker_dropped_remotely_while_the_loop_drops_the_task() {
    model(|| {
        let q = queue();
        let (task, w, memory, count) = watched_task(&q, true);
        let lp = ModelLoop::new(&q);
        lp.schedule(task.clone());
        let m = memory.clone();
        let th = thread::spawn(move || {
            m.use_header();
            w.wake();
        });
        lp.turn(false);
        assert_eq!(task.core().state(), State::Done);
        // The last local reference: the contents go here.
        drop(task);
        assert_eq!(count.load(Ordering::Relaxed), 2);
        // A remote wake queued meanwhile finds the task gone.
        lp.turn(false);
        lp.close();
        th.join().unwrap();
        assert_eq!(count.load(Ordering::Relaxed), 2);
        assert_eq!(memory.frees.load(Ordering::Relaxed), 1, "freed once");
        assert_eq!(
            Arc::strong_count(&q),
            2,
            "the task's handle of the loop is gone"
        );
    });
}

/// A pending task is cancelled and dropped by its loop while another
/// thread drops its last waker (no wake).
#[test]
fn loom_b_last_waker_dropped_remotely_while_the_loop_cancels_the_task() {
    model(|| {
        let q = queue();
        let (task, w, memory, count) = watched_task(&q, false);
        let lp = ModelLoop::new(&q);
        lp.schedule(task.clone());
        let m = memory.clone();
        let th = thread::spawn(move || {
            m.use_header();
            drop(w);
        });
        lp.turn(false);
        assert_eq!(task.core().state(), State::Pending);
        // As `finish` does for a cancelled task: the future goes at once.
        let state = task.end_with(Error::Cancelled { msg: None });
        task.core().set_state(state);
        drop(task);
        assert_eq!(count.load(Ordering::Relaxed), 2);
        lp.close();
        th.join().unwrap();
        assert_eq!(memory.frees.load(Ordering::Relaxed), 1, "freed once");
        assert_eq!(
            Arc::strong_count(&q),
            2,
            "the task's handle of the loop is gone"
        );
    });
}

/// Pushes `n` closures that count their runs, as `call_soon_threadsafe`.
fn push_calls(q: &Arc<LoopShared>, ran: &Arc<AtomicUsize>, n: usize) {
    for _ in 0..n {
        let ran = ran.clone();
        q.push(Remote::Call(Box::new(move || {
            ran.fetch_add(1, Ordering::Relaxed);
        })))
        .unwrap();
    }
}

/// Pushes race the loop going to sleep and re-arming: every push is run,
/// with no wake-up lost (a lost one leaves the loop blocked: a deadlock).
#[test]
fn loom_c_a_push_while_the_loop_goes_to_sleep_wakes_it() {
    model(|| {
        let q = queue();
        let ran = Arc::new(AtomicUsize::new(0));
        let lp = ModelLoop::new(&q);
        let th = {
            let (q, ran) = (q.clone(), ran.clone());
            thread::spawn(move || push_calls(&q, &ran, 2))
        };
        while ran.load(Ordering::Relaxed) < 2 {
            lp.turn(true);
        }
        th.join().unwrap();
        lp.close();
    });
}

/// Two threads push at once while the loop sleeps and re-arms.
#[test]
fn loom_c_concurrent_pushes_while_the_loop_goes_to_sleep_wake_it() {
    model(|| {
        let q = queue();
        let ran = Arc::new(AtomicUsize::new(0));
        let lp = ModelLoop::new(&q);
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let (q, ran) = (q.clone(), ran.clone());
                thread::spawn(move || push_calls(&q, &ran, 1))
            })
            .collect();
        while ran.load(Ordering::Relaxed) < 2 {
            lp.turn(true);
        }
        for th in threads {
            th.join().unwrap();
        }
        lp.close();
    });
}
