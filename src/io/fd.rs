//! `RingFd`: an owned file descriptor whose close keeps order with the ring.
//!
//! The kernel looks an SQE's descriptor up when it consumes the entry, not
//! when ringio queues it. An SQE still sitting in the submission queue when
//! its descriptor is closed would, after the number is reused by a new
//! socket or file, run on the wrong file. So before `close(2)` the loop's
//! queued SQEs are handed to the kernel; if the kernel cannot take them all
//! right now, the close itself goes through the ring, behind them.
//!
//! This orders the close after the SQEs of the loop running on the
//! dropping thread. For descriptors ringio does not own (the `AsRawFd`
//! types `io::read`, `io::write` and `Compat` accept), the op side makes
//! the same guarantee: an op future dropped while its SQE is still queued
//! hands that SQE to the kernel before its `drop` returns, so by the time
//! the caller can close the descriptor, the kernel has resolved it.
//!
//! # Safety
//!
//! Adopting a descriptor (`RingFd::from_raw`, `OwnedFd::from_raw_fd`) is
//! `unsafe` because the new owner closes it: it is only ever done with a
//! descriptor the kernel has just created for us, or one a std type gave up,
//! so nothing else owns it. `close(2)` runs only on a descriptor this module
//! owns and that no queued SQE of its loop names any more.

use std::fmt;
use std::os::fd::RawFd;

use io_uring::{opcode, types};

use crate::runtime::context;

/// An owned descriptor, closed on drop (see the module docs for how).
pub(crate) struct RingFd {
    fd: RawFd,
}

impl RingFd {
    /// Takes ownership of `fd`.
    ///
    /// # Safety
    ///
    /// `fd` must be an open descriptor that nothing else will close.
    pub(crate) unsafe fn from_raw(fd: RawFd) -> RingFd {
        RingFd { fd }
    }

    /// The descriptor number, still owned by `self`.
    pub(crate) fn raw(&self) -> RawFd {
        self.fd
    }

    /// Gives up ownership without closing.
    pub(crate) fn into_raw(self) -> RawFd {
        let fd = self.fd;
        std::mem::forget(self);
        fd
    }
}

impl Drop for RingFd {
    fn drop(&mut self) {
        close_fd(self.fd);
    }
}

impl fmt::Debug for RingFd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.fd)
    }
}

/// Closes `fd` after every SQE the current loop has queued (module docs).
/// With no loop reachable (none running, or this thread's thread-locals
/// being destroyed), a plain `close(2)`.
pub(crate) fn close_fd(fd: RawFd) {
    let queued_on_ring = context::with_loop(|lp| {
        // The driver is borrowed only inside the loop's own reap/submit
        // code, which drops op data but never a descriptor owner (op data
        // holds descriptor numbers, not `RingFd`s); this branch is a safety
        // net that falls back to a plain close rather than panic.
        let Ok(mut driver) = lp.driver.try_borrow_mut() else {
            return false;
        };
        if driver.submit_queued() {
            return false;
        }
        driver.submit_detached(opcode::Close::new(types::Fd(fd)).build());
        true
    })
    .unwrap_or(false);
    if !queued_on_ring {
        // SAFETY: we own `fd`; no queued SQE of this loop names it any more.
        unsafe { libc::close(fd) };
    }
}

/// Closes a descriptor the kernel created for an operation nobody awaits
/// any more (an accepted connection or an opened file): the orphan cleanup
/// of those ops. Errors (negative results) created nothing.
pub(crate) fn close_orphan(res: i32, _flags: u32, _data: Option<&mut dyn std::any::Any>) {
    if res < 0 {
        return;
    }
    // SAFETY: `res` is a descriptor the kernel just created for us and that
    // nobody else has seen, so nothing else owns or uses it.
    unsafe { libc::close(res) };
}
