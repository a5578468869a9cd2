//! The loop thread's signal mask: a signal is blocked in the calling
//! thread while at least one listener for it exists there.
//!
//! A signal can only be read from a `signalfd` while it is blocked: an
//! unblocked one is delivered the ordinary way (its handler, or its default
//! action) instead. The counts are per thread because masks are.
//!
//! # Safety
//!
//! The `unsafe` here is signal-mask calls (`sigemptyset`, `sigaddset`,
//! `pthread_sigmask`, `sigismember`) on `sigset_t` values that are all-zero
//! or filled in by the call before they are read; they change only the
//! calling thread's mask.

use std::cell::RefCell;
use std::collections::HashMap;
use std::marker::PhantomData;

use crate::error::{Error, Result};

thread_local! {
    /// Per signal number: how many listeners this thread has, and whether
    /// the first of them blocked the signal (it may have been blocked
    /// already, by the program; then it stays blocked at the end).
    static LISTENERS: RefCell<HashMap<i32, (usize, bool)>> = RefCell::new(HashMap::new());
}

/// A set holding just `signum`.
pub(super) fn sigset_of(signum: i32) -> libc::sigset_t {
    // SAFETY: sigemptyset initialises the set it is given; sigaddset only
    // fails for a number out of range, which `signal()` rejected before.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, signum);
        set
    }
}

/// One listener's hold on the calling thread's mask. `!Send`: it must be
/// dropped on the thread whose mask it changed.
pub(super) struct MaskGuard {
    signum: i32,
    _thread_bound: PhantomData<*const ()>,
}

impl MaskGuard {
    /// Blocks `signum` in the calling thread, unless a listener of this
    /// thread already did.
    pub(super) fn acquire(signum: i32) -> Result<MaskGuard> {
        LISTENERS.with(|l| {
            let mut l = l.borrow_mut();
            if let Some((count, _)) = l.get_mut(&signum) {
                *count += 1;
            } else {
                let set = sigset_of(signum);
                // SAFETY: an all-zero sigset_t is valid output space.
                let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
                // SAFETY: both sets are valid for the call; this changes only
                // the calling thread's mask.
                let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old) };
                if rc != 0 {
                    return Err(Error::from(std::io::Error::from_raw_os_error(rc)));
                }
                // SAFETY: `old` was filled in by pthread_sigmask.
                let was_blocked = unsafe { libc::sigismember(&old, signum) } == 1;
                l.insert(signum, (1, !was_blocked));
            }
            Ok(MaskGuard {
                signum,
                _thread_bound: PhantomData,
            })
        })
    }
}

impl Drop for MaskGuard {
    fn drop(&mut self) {
        let signum = self.signum;
        // `try_with`: at thread exit the table may be gone already; the
        // mask dies with the thread then.
        let _ = LISTENERS.try_with(|l| {
            let mut l = l.borrow_mut();
            let Some((count, we_blocked)) = l.get_mut(&signum) else {
                return;
            };
            *count -= 1;
            if *count > 0 {
                return;
            }
            let we_blocked = *we_blocked;
            l.remove(&signum);
            if !we_blocked {
                return;
            }
            let set = sigset_of(signum);
            // Deliveries that arrived while someone was listening but were
            // never received are discarded here, rather than taking their
            // default action (ending the process, for most) the moment the
            // signal is unblocked.
            let zero = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            // SAFETY: `set` and `zero` are valid; a null siginfo pointer is
            // allowed. With a zero timeout the call never blocks.
            while unsafe { libc::sigtimedwait(&set, std::ptr::null_mut(), &zero) } == signum {}
            // SAFETY: as in `acquire`.
            unsafe { libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut()) };
        });
    }
}
