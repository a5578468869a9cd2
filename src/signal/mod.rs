//! Unix signals as awaitables: [`ctrl_c`] and [`signal`].
//!
//! asyncio's `loop.add_signal_handler` runs a callback when a signal
//! arrives; here a signal is something to await. A listener ([`Signal`])
//! owns a `signalfd` for its signal, and waiting for the next delivery is a
//! poll of that descriptor on the loop's ring (`IORING_OP_POLL_ADD`),
//! followed by a non-blocking `read` of the `signalfd` in the loop thread
//! once the kernel says a delivery is there. So waiting costs nothing while
//! no signal comes, and it is an ordinary ringio await point:
//!
//! - cancelling the waiting task cancels the poll (`IORING_OP_ASYNC_CANCEL`)
//!   and the await returns `Err(Error::Cancelled)`, or the signal if it was
//!   already there (guide, cancellation rules 2 and 5);
//! - dropping the wait (in a `select!`) cancels the poll (rule 7).
//!
//! Either way no delivery is lost: a signal is consumed only by the `read`
//! that `recv` returns it from, never by a ring operation whose result
//! might go unread, so one that arrived meanwhile stays queued for the next
//! `recv`. (A ring `READ` on the `signalfd` would consume the signal in the
//! kernel; if its future were dropped as it completed, that delivery would
//! have no reader.)
//!
//! # The thread mask
//!
//! A signal reaches a `signalfd` only while it is *blocked*; an unblocked
//! one is delivered the ordinary way (its handler or default action; for
//! `SIGINT`, ending the process). While a listener for a signal exists,
//! ringio blocks it in the mask of the thread that created the listener
//! (the loop's thread), and restores that thread's mask when the last
//! listener goes; a delivery that arrived but was never received is then
//! discarded rather than acted on.
//!
//! Other threads are not touched. A signal sent to the process (`kill`,
//! Ctrl-C at a terminal) goes to any one thread that does not block it; if
//! another thread of the process does not block it too, the kernel may pick
//! that thread and the listener never sees the signal. So create the
//! listeners (or block the signals yourself with `pthread_sigmask`) in the
//! main thread *before* spawning other threads, which inherit its mask, or
//! block them in each thread. A signal sent to the loop's thread itself
//! (`raise`, `pthread_kill`) always reaches it.
//!
//! ```
//! ringio::run(async {
//!     let mut usr1 = ringio::signal::signal(libc::SIGUSR1)?;
//!     // SAFETY: raise sends a signal to this thread, where it is blocked
//!     // now, so it waits for the listener instead of ending the process.
//!     unsafe { libc::raise(libc::SIGUSR1) };
//!     usr1.recv().await?;
//!     Ok::<_, ringio::Error>(())
//! })
//! .unwrap();
//! ```

mod mask;

use std::future::Future;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use io_uring::opcode;
use io_uring::types::Fd;

use crate::error::{Error, Result};
use crate::runtime::Op;
use mask::{MaskGuard, sigset_of};

/// A listener for one signal number on the calling thread: made by
/// [`signal`]; [`recv`](Signal::recv) waits for the next delivery.
///
/// While it exists the signal is blocked in the thread that made it (see
/// [the module docs](crate::signal) for what that means for other threads); it is
/// `!Send` for that reason. Several listeners may exist for one signal;
/// each delivery is received by one of them.
pub struct Signal {
    fd: OwnedFd,
    signum: i32,
    // Dropped after `fd`: the descriptor closes before the mask is restored.
    _mask: MaskGuard,
}

impl std::fmt::Debug for Signal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signal")
            .field("signum", &self.signum)
            .field("fd", &self.fd.as_raw_fd())
            .finish()
    }
}

/// Starts listening for signal `signum` (such as `libc::SIGUSR1`) on the
/// calling thread; await [`Signal::recv`] for each delivery. asyncio's
/// `loop.add_signal_handler`, as an awaitable.
///
/// Needs no running loop (only `recv` does), so a listener made in `main`
/// before any thread is spawned covers the whole process (see the module
/// docs).
///
/// `Err(Error::InvalidArgument)` for a number that is not a signal (below 1
/// or above `SIGRTMAX`), for one the C library keeps for itself (the two
/// below `SIGRTMIN`), and for one that cannot be received this way:
/// `SIGKILL` and `SIGSTOP` cannot be blocked, and `SIGSEGV`, `SIGBUS`,
/// `SIGILL` and `SIGFPE` report faults of the thread itself.
///
/// ```
/// let e = ringio::signal::signal(libc::SIGKILL).unwrap_err();
/// assert!(matches!(e, ringio::Error::InvalidArgument(_)));
/// assert!(ringio::signal::signal(0).is_err());
/// ```
pub fn signal(signum: i32) -> Result<Signal> {
    check_signum(signum)?;
    let mask = MaskGuard::acquire(signum)?;
    let set = sigset_of(signum);
    // SAFETY: `set` is a valid sigset_t; -1 asks for a new descriptor.
    let fd = unsafe { libc::signalfd(-1, &set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    Ok(Signal {
        // SAFETY: `fd` is a fresh descriptor that nothing else owns.
        fd: unsafe { OwnedFd::from_raw_fd(fd) },
        signum,
        _mask: mask,
    })
}

/// Waits for Ctrl-C (`SIGINT`): asyncio's `KeyboardInterrupt`, as an
/// awaitable. `Ok(())` once it arrives.
///
/// The listener is made when `ctrl_c()` is called, not when the future is
/// first polled, and lives as long as the future: from the call on,
/// `SIGINT` no longer ends the process (on this thread; see the module docs
/// for the others). Dropping the future stops listening; to wait for
/// Ctrl-C repeatedly (say, in a `select!` in a loop) keep one listener,
/// `signal(libc::SIGINT)`, and call its [`recv`](Signal::recv) each time,
/// so that no press falls between two listeners.
///
/// ```no_run
/// ringio::run(async {
///     println!("press Ctrl-C to stop");
///     ringio::signal::ctrl_c().await?;
///     println!("stopping");
///     Ok::<_, ringio::Error>(())
/// })
/// .unwrap();
/// ```
pub fn ctrl_c() -> impl Future<Output = Result<()>> {
    let listener = signal(libc::SIGINT);
    async move { listener?.recv().await }
}

impl Signal {
    /// The signal number this listener receives.
    pub fn signum(&self) -> i32 {
        self.signum
    }

    /// Waits for the next delivery of the signal. A delivery that arrived
    /// since the listener was made (or since the last `recv`) is returned at
    /// once, on the loop's next turn. Deliveries of a standard signal that
    /// arrive before one is received merge into one, as the kernel keeps at
    /// most one of each pending; real-time signals queue.
    ///
    /// A ringio await point: `Err(Error::Cancelled)` if the task is
    /// cancelled while waiting (no delivery is consumed then),
    /// `Err(InvalidState)` "no running event loop" outside a loop.
    ///
    /// The future borrows the listener, so it is not a task of its own: for
    /// a deadline, race it against [`sleep`](crate::sleep) (for instance
    /// with `futures_util::future::select`, from the separate
    /// `futures-util` crate). Dropping the losing wait loses no delivery.
    pub async fn recv(&mut self) -> Result<()> {
        loop {
            let sqe = opcode::PollAdd::new(Fd(self.fd.as_raw_fd()), libc::POLLIN as u32).build();
            // SAFETY: a poll SQE points to no memory; the descriptor stays
            // open while this future borrows the listener, and the kernel
            // holds its own reference to the file while the poll is armed.
            let op = unsafe { Op::submit(sqe, ()) }?;
            op.await.result?;
            if self.try_read()? {
                return Ok(());
            }
            // Another listener of the same signal took the delivery: wait
            // for the next one.
        }
    }

    /// Reads one delivery from the `signalfd` without blocking: `true` if
    /// there was one.
    fn try_read(&self) -> Result<bool> {
        // SAFETY: all-zero is a valid signalfd_siginfo.
        let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
        let size = std::mem::size_of::<libc::signalfd_siginfo>();
        loop {
            // SAFETY: `info` is writable for `size` bytes; the descriptor is
            // open (owned by `self`).
            let n = unsafe {
                libc::read(
                    self.fd.as_raw_fd(),
                    (&mut info as *mut libc::signalfd_siginfo).cast(),
                    size,
                )
            };
            if n == size as isize {
                return Ok(true);
            }
            let err = std::io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::EAGAIN) => return Ok(false),
                Some(libc::EINTR) => continue,
                _ if n >= 0 => {
                    return Err(Error::msg(format!(
                        "signalfd read gave {n} bytes, not {size}"
                    )));
                }
                _ => return Err(err.into()),
            }
        }
    }
}

/// Rejects what is not a signal a `signalfd` can receive.
fn check_signum(signum: i32) -> Result<()> {
    let why = if signum < 1 || signum > libc::SIGRTMAX() {
        Some(format!(
            "{signum} is not a signal number (1 to {})",
            libc::SIGRTMAX()
        ))
    } else if signum == libc::SIGKILL || signum == libc::SIGSTOP {
        Some(format!(
            "signal {signum} (SIGKILL or SIGSTOP) cannot be blocked or received"
        ))
    } else if [libc::SIGSEGV, libc::SIGBUS, libc::SIGILL, libc::SIGFPE].contains(&signum) {
        Some(format!(
            "signal {signum} reports a fault of the thread that caused it and cannot be \
             received through a signalfd"
        ))
    } else if signum > 31 && signum < libc::SIGRTMIN() {
        Some(format!(
            "signal {signum} is reserved by the C library's threads (real-time signals start \
             at SIGRTMIN = {})",
            libc::SIGRTMIN()
        ))
    } else {
        None
    };
    match why {
        Some(m) => Err(Error::InvalidArgument(m)),
        None => Ok(()),
    }
}
