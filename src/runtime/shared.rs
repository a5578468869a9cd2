//! `LoopShared`: the part of a loop other threads may touch.
//!
//! Everything else in a loop is single-threaded (`Rc`, `RefCell`). Other
//! threads reach a loop only through this: a queue of remote work, and a
//! wake-up through the loop's ring, so a remote push wakes a loop blocked in
//! `io_uring_enter` without any polling. The wake-up is an
//! `IORING_OP_MSG_RING` CQE posted into the ring when the pusher is itself a
//! loop thread whose ring supports it (a ring is `SINGLE_ISSUER`: only the
//! sender's own ring may carry the message), else a write to an eventfd
//! whose read is kept armed on the ring.
//!
//! # Safety
//!
//! The `unsafe` here is the `write(2)` that wakes a loop through its eventfd:
//! the eventfd stays open while the shared state lives, and the call reads 8
//! bytes from a live integer.

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use super::context;

use crate::error::{Error, Result};
use crate::sync::{AtomicBool, Mutex};
use crate::task::raw::RemoteTask;

/// Work handed to a loop from outside its thread.
pub(crate) enum Remote {
    /// Wake a task of this loop (woken from another thread).
    Wake(RemoteTask),
    /// Run a closure on the loop (`call_soon_threadsafe`).
    Call(Box<dyn FnOnce() + Send>),
}

pub(crate) struct LoopShared {
    pub(crate) id: u64,
    queue: Mutex<Vec<Remote>>,
    /// The queue is not empty: the loop checks this once per turn.
    pending: AtomicBool,
    /// An eventfd write is outstanding; later pushes need not write again.
    notified: AtomicBool,
    closed: AtomicBool,
    /// Owned here, not by the driver, so a handle that outlives the loop
    /// never writes to a closed (and perhaps reused) descriptor number.
    eventfd: OwnedFd,
    /// A duplicate of the loop's ring descriptor, the target of MSG_RING
    /// wake-ups from other loops (unset if the kernel lacks MSG_RING).
    ring_fd: OnceLock<OwnedFd>,
    /// Wake-ups sent to this loop: through MSG_RING, through the eventfd.
    pub(crate) wakeups_msg_ring: AtomicU64,
    pub(crate) wakeups_eventfd: AtomicU64,
    /// The eventfd as the loom models see it (the real one is written too).
    #[cfg(all(test, loom))]
    pub(crate) model_eventfd: crate::sync::model::EventFd,
}

impl LoopShared {
    pub(crate) fn new(id: u64, eventfd: OwnedFd) -> LoopShared {
        LoopShared {
            id,
            queue: Mutex::new(Vec::new()),
            pending: AtomicBool::new(false),
            notified: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            eventfd,
            ring_fd: OnceLock::new(),
            wakeups_msg_ring: AtomicU64::new(0),
            wakeups_eventfd: AtomicU64::new(0),
            #[cfg(all(test, loom))]
            model_eventfd: crate::sync::model::EventFd::new(),
        }
    }

    /// Whether other loops wake this one with MSG_RING.
    pub(crate) fn accepts_msg_ring(&self) -> bool {
        self.ring_fd.get().is_some()
    }

    /// Queues `item` without waking the loop: a wake-up lost on the way
    /// (for tests of the bounded wait).
    #[cfg(test)]
    pub(crate) fn push_without_wakeup(&self, item: Remote) {
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        q.push(item);
        self.pending.store(true, Ordering::Release);
    }

    /// Records the ring descriptor other loops may send MSG_RING to.
    pub(crate) fn set_ring_fd(&self, fd: OwnedFd) {
        let _ = self.ring_fd.set(fd);
    }

    pub(crate) fn eventfd(&self) -> std::os::fd::RawFd {
        self.eventfd.as_raw_fd()
    }

    /// Queues `item` and wakes the loop. Fails once the loop has closed.
    pub(crate) fn push(self: &Arc<Self>, item: Remote) -> Result<()> {
        {
            let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
            if self.closed.load(Ordering::Acquire) {
                return Err(Error::InvalidState("the event loop is closed".into()));
            }
            q.push(item);
            self.pending.store(true, Ordering::Release);
        }
        self.notify();
        Ok(())
    }

    /// Wakes the loop after a push, once per batch of pushes.
    fn notify(self: &Arc<Self>) {
        // Pushed from the loop's own thread: the loop looks at its queue
        // before it blocks, so no wake-up is needed (and marking one as
        // outstanding would make later pushes from other threads skip
        // theirs).
        let own = context::with_loop(|lp| lp.id == self.id).unwrap_or(false);
        if own || self.notified.swap(true, Ordering::AcqRel) {
            return;
        }
        if let Some(ring) = self.ring_fd.get() {
            let sent = context::with_loop(|lp| {
                // The driver is busy only if the push comes from inside a
                // reap; the eventfd serves then.
                let Ok(mut driver) = lp.driver.try_borrow_mut() else {
                    return false;
                };
                if !driver.supports_msg_ring() {
                    return false;
                }
                let target = self.clone();
                driver.send_msg_ring(
                    ring.as_raw_fd(),
                    Box::new(move |res| {
                        // Not posted (the target ring is gone or its CQ
                        // overflowed): fall back to the eventfd so the
                        // wake-up is not lost.
                        if res < 0 {
                            target.write_eventfd();
                        }
                    }),
                );
                true
            })
            .unwrap_or(false);
            if sent {
                self.wakeups_msg_ring.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
        self.write_eventfd();
    }

    fn write_eventfd(&self) {
        self.wakeups_eventfd.fetch_add(1, Ordering::Relaxed);
        let one: u64 = 1;
        // SAFETY: the eventfd is open for as long as `self` lives, and we
        // pass a pointer to 8 readable bytes, as eventfd requires.
        let n = unsafe { libc::write(self.eventfd.as_raw_fd(), (&one as *const u64).cast(), 8) };
        // EAGAIN only when the counter is at its maximum: the loop is
        // already due to wake.
        let _ = n;
        #[cfg(all(test, loom))]
        self.model_eventfd.write();
    }

    /// Whether remote work is waiting.
    #[inline]
    pub(crate) fn has_pending(&self) -> bool {
        self.pending.load(Ordering::Acquire)
    }

    /// The eventfd read completed: the next push must write again.
    ///
    /// A swap, not a store: a push that found the flag still set wrote no
    /// wake-up and relies on the loop's next look at `pending`. Only by
    /// reading its write (acquire) is that look sure to see the push;
    /// after a plain store the loop may read an older `pending`, block in
    /// the ring, and nothing wakes it (loom_c_* in
    /// task/raw/loom_tests.rs). The loop's side of the protocol: call this
    /// before it takes the queue, and look at `has_pending` before every
    /// block.
    pub(crate) fn rearm(&self) {
        self.notified.swap(false, Ordering::Acquire);
    }

    /// Takes everything queued.
    pub(crate) fn take(&self) -> Vec<Remote> {
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        // What was pushed is taken now, so the next push must wake the loop
        // again, even if the wake-up that announced these items never
        // arrived (a MSG_RING lost on the way, or one not reaped yet): else
        // a lost wake-up would leave `notified` set for good, and every
        // later push would wait for the loop's bounded wait. Cleared under
        // the lock: a push after it sees it clear and wakes; a push before
        // it is taken here. At worst a wake-up more than needed.
        self.notified.store(false, Ordering::Release);
        self.pending.store(false, Ordering::Release);
        std::mem::take(&mut *q)
    }

    /// Refuses further pushes; returns what was still queued.
    pub(crate) fn close(&self) -> Vec<Remote> {
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        self.closed.store(true, Ordering::Release);
        self.pending.store(false, Ordering::Release);
        std::mem::take(&mut *q)
    }

    /// Re-opens after a `run` finished (a `Runtime` may run again).
    pub(crate) fn reopen(&self) {
        let _q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        self.closed.store(false, Ordering::Release);
        // The eventfd read was cancelled at the last shutdown; a write
        // flagged since then must not stop the next push from writing.
        self.notified.store(false, Ordering::Release);
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}
