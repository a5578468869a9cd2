//! `LoopShared`: the part of a loop other threads may touch.
//!
//! Everything else in a loop is single-threaded (`Rc`, `RefCell`). Other
//! threads reach a loop only through this: a queue of remote work, and an
//! eventfd whose read is kept armed on the loop's ring, so a remote push
//! wakes a loop blocked in `io_uring_enter` without any polling.

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::{Error, Result};

/// Work handed to a loop from outside its thread.
pub(crate) enum Remote {
    /// Wake the task at `key` (if it still has id `id`).
    Wake { key: usize, id: u64 },
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
        }
    }

    pub(crate) fn eventfd(&self) -> std::os::fd::RawFd {
        self.eventfd.as_raw_fd()
    }

    /// Queues `item` and wakes the loop. Fails once the loop has closed.
    pub(crate) fn push(&self, item: Remote) -> Result<()> {
        {
            let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
            if self.closed.load(Ordering::Acquire) {
                return Err(Error::InvalidState("the event loop is closed".into()));
            }
            q.push(item);
            self.pending.store(true, Ordering::Release);
        }
        if !self.notified.swap(true, Ordering::AcqRel) {
            let one: u64 = 1;
            // SAFETY: the eventfd is open for as long as `self` lives, and we
            // pass a pointer to 8 readable bytes, as eventfd requires.
            let n =
                unsafe { libc::write(self.eventfd.as_raw_fd(), (&one as *const u64).cast(), 8) };
            // EAGAIN only when the counter is at its maximum: the loop is
            // already due to wake.
            let _ = n;
        }
        Ok(())
    }

    /// Whether remote work is waiting.
    #[inline]
    pub(crate) fn has_pending(&self) -> bool {
        self.pending.load(Ordering::Acquire)
    }

    /// The eventfd read completed: the next push must write again.
    pub(crate) fn rearm(&self) {
        self.notified.store(false, Ordering::Release);
    }

    /// Takes everything queued.
    pub(crate) fn take(&self) -> Vec<Remote> {
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
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
