//! `Op<D>`: the future of one kernel operation, and the await point where a
//! task's cancellation meets the ring (the guide's cancellation rules 2, 5 and 7).
//!
//! # Safety
//!
//! Ring submissions (`ops::submit`, `Op::try_submit`) are `unsafe` because
//! the kernel reads and writes the memory an SQE names until the CQE: every
//! SQE here points into heap memory the op owns (moved into its data before
//! submission, handed back with the result, parked in the op table if the
//! future is dropped), or into no memory at all. `Op` and `Deferred` keep
//! that memory (`data`) until the final CQE; the op table takes it over from
//! a dropped `Op`.

use std::any::Any;
use std::future::Future;
use std::panic::Location;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use io_uring::squeue;

use super::context;
use super::event_loop::LoopInner;
use crate::driver::{Driver, OpKey, OrphanCleanup};
use crate::error::{Error, Result};
use crate::task::await_point::AwaitPoint;
use crate::task::raw;

/// What an operation gives back: its result and the data it owned. The
/// buffer comes back whatever happened, so nothing is lost.
#[derive(Debug)]
pub struct OpOutput<D> {
    /// The CQE's result as a count (`res >= 0`), `Error::Io` for `-errno`,
    /// or `Error::Cancelled` when the task's cancellation cancelled it.
    pub result: Result<u32>,
    /// The CQE's flags (`IORING_CQE_F_*`).
    pub flags: u32,
    /// The data handed over at submission (buffers, addresses).
    pub data: D,
}

/// One operation on the current loop's ring.
///
/// The SQE may point only into heap memory owned by `data` (a `Vec`'s
/// buffer, memory owned through a raw pointer), never into `data` itself:
/// `data` moves with the future, and into the op table if the future is
/// dropped first. (A `Box` asserts unique access when it moves, so a
/// pointer taken from one before the move is not sound to write through.)
/// There is no access to `data` while the op runs: the kernel may be
/// writing into it.
///
/// Awaiting it is a ringio await point: if the task is cancelled while the
/// op is in flight, an `IORING_OP_ASYNC_CANCEL` goes to the kernel and the
/// future resolves once the op's CQE is reaped — to `Err(Cancelled)` if the
/// kernel cancelled it, or to the op's real result if it completed first
/// (the cancel then waits for the task's next await point). Dropping it
/// mid-flight cancels the op the same way and parks `data` until the CQE.
///
/// `Op` is `!Send`: it belongs to the loop whose ring runs it.
#[must_use = "an Op is cancelled when dropped"]
pub struct Op<D: 'static> {
    lp: Rc<LoopInner>,
    key: OpKey,
    data: Option<D>,
    location: &'static Location<'static>,
    /// What only a cancelled op needs, boxed: every parked task holds an
    /// `Op`, and few of them are ever cancelled.
    rare: Option<Box<Rare>>,
}

/// The rare states of an [`Op`].
enum Rare {
    /// Created while its task had a cancellation pending: the SQEs were
    /// not submitted (see [`Deferred`]).
    Deferred(Deferred),
    /// Cancelled for its task: the task-cancel message.
    CancelledForTask(Option<String>),
}

/// The SQEs of an op created while its task had a cancellation pending.
/// Its first poll delivers that cancellation without starting the op
/// (nothing happened, so nothing is lost), or submits them if the request
/// was delivered by another await point in the meantime. Without this, an
/// op that completes at once (a NOP, a read with data ready) always beats
/// its ASYNC_CANCEL, and a task looping on such ops never sees its cancel.
struct Deferred {
    sqe: squeue::Entry,
    link_timeout: Option<squeue::Entry>,
    cleanup: Option<OrphanCleanup>,
}

impl Deferred {
    /// Hands the SQEs to the ring.
    ///
    /// # Safety
    ///
    /// As for [`Op::submit`]: the memory they point to is owned by the op.
    unsafe fn submit(self, lp: &LoopInner) -> OpKey {
        let mut driver = lp.driver.borrow_mut();
        // SAFETY: forwarded from the caller.
        unsafe {
            match self.link_timeout {
                Some(t) => driver.submit_linked(self.sqe, t, self.cleanup, None),
                None => driver.submit(self.sqe, self.cleanup, None),
            }
        }
    }
}

impl<D: 'static> Op<D> {
    /// Submits `sqe` on the current loop's ring, owning `data` until the
    /// completion.
    ///
    /// # Safety
    ///
    /// Every pointer in `sqe` must point into heap memory owned by `data`
    /// (or memory otherwise valid until the op's CQE is reaped).
    #[track_caller]
    pub unsafe fn submit(sqe: squeue::Entry, data: D) -> Result<Op<D>> {
        // SAFETY: forwarded from the caller.
        unsafe { Self::submit_with(sqe, None, data, None) }
    }

    /// Like [`Op::submit`], with a linked `IORING_OP_LINK_TIMEOUT` SQE and a
    /// cleanup run on a successful result nobody will read (an fd to
    /// close), so that nothing leaks when the future is dropped.
    ///
    /// # Safety
    ///
    /// As for [`Op::submit`]; `link_timeout` must point into `data` too.
    #[track_caller]
    pub(crate) unsafe fn submit_with(
        sqe: squeue::Entry,
        link_timeout: Option<squeue::Entry>,
        data: D,
        cleanup: Option<OrphanCleanup>,
    ) -> Result<Op<D>> {
        // SAFETY: forwarded from the caller.
        unsafe { Self::try_submit(sqe, link_timeout, data, cleanup, None) }.map_err(|(e, _)| e)
    }

    /// [`Op::submit_with`] that first checks, under the same borrow of the
    /// driver, that the ring supports the opcode (and `LINK_TIMEOUT` if one
    /// is linked), and gives `data` back with the error when it cannot
    /// submit: no running loop, or `Error::Unsupported` naming the opcode.
    ///
    /// `poller` is the waker of the poll this is called from, if the op's
    /// future submits it while being polled: it is registered with the op
    /// at once, and [`Op::waits_registered`] then says that this poll needs
    /// no look at the op table.
    ///
    /// # Safety
    ///
    /// As for [`Op::submit_with`].
    #[track_caller]
    pub(crate) unsafe fn try_submit(
        sqe: squeue::Entry,
        link_timeout: Option<squeue::Entry>,
        data: D,
        cleanup: Option<OrphanCleanup>,
        poller: Option<&Waker>,
    ) -> std::result::Result<Op<D>, (Error, D)> {
        let location = Location::caller();
        let Some(lp) = context::current_loop() else {
            return Err((Error::no_running_loop(), data));
        };
        let mut driver = lp.driver.borrow_mut();
        let supported = driver
            .require(sqe.get_opcode() as u8)
            .and_then(|()| match link_timeout {
                Some(_) => driver.require(io_uring::opcode::LinkTimeout::CODE),
                None => Ok(()),
            });
        if let Err(e) = supported {
            return Err((e, data));
        }
        if AwaitPoint::current().is_pending() {
            drop(driver);
            return Ok(Op {
                lp,
                key: OpKey::DONE,
                data: Some(data),
                location,
                rare: Some(Box::new(Rare::Deferred(Deferred {
                    sqe,
                    link_timeout,
                    cleanup,
                }))),
            });
        }
        // SAFETY: `Op` is `!Send` and made here, on the running loop's
        // thread, whose driver keeps the waker on this thread (as in
        // `poll_op`).
        let waker = poller.map(|w| unsafe { raw::loop_local_waker(w, lp.id) });
        // SAFETY: the caller promises the SQE points into `data`'s heap
        // memory, which this `Op` (or, once dropped, the op table) owns
        // until the final CQE.
        let key = unsafe {
            match link_timeout {
                Some(t) => driver.submit_linked(sqe, t, cleanup, waker),
                None => driver.submit(sqe, cleanup, waker),
            }
        };
        drop(driver);
        Ok(Op {
            lp,
            key,
            data: Some(data),
            location,
            rare: None,
        })
    }

    /// Marks the poll that submitted this op (with its waker, through
    /// [`Op::try_submit`]) as the op's first: the task parks here, and
    /// `Pending` is the answer, with no look at the op table (no
    /// completion can have been reaped since the submission, and the waker
    /// is registered already). `false` for an op whose submission was
    /// deferred (its task has a cancellation pending): poll it instead.
    pub(crate) fn waits_registered(&self) -> bool {
        if self.rare.is_some() {
            return false;
        }
        AwaitPoint::current().park(self.location);
        true
    }

    /// `Ok` if the running loop's ring supports `opcode`, else
    /// `Error::Unsupported` naming it and the kernel that brings it.
    pub fn require(opcode: u8) -> Result<()> {
        context::with_loop(|lp| lp.driver.borrow().require(opcode))
            .unwrap_or_else(|| Err(Error::no_running_loop()))
    }

    /// Polls for the next completion of a multishot op: `Ready(None)` once
    /// the kernel posted its final CQE.
    pub fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<(Result<u32>, u32)>> {
        // A deferred op (key still DONE) starts or delivers its cancel first.
        if self.data.is_some() && self.start_deferred() {
            let msg = self.take_cancelled_for_task().flatten();
            return Poll::Ready(Some((Err(Error::Cancelled { msg }), 0)));
        }
        if self.data.is_none() || self.key.is_done() {
            // The final CQE was already handed out.
            return Poll::Ready(None);
        }
        let mut d = self.lp.driver.borrow_mut();
        if let Some((res, flags, last)) = poll_op(&mut d, self.key, self.lp.id, cx.waker()) {
            drop(d);
            if last {
                // The kernel is done with the data; keep it until drop.
                self.finished_multishot();
                if res == -libc::ECANCELED && self.cancelled_for_task().is_some() {
                    // This completion delivers the task's cancellation, as
                    // `poll` does for a one-shot op: take it so that it is
                    // not delivered twice.
                    AwaitPoint::current().take();
                }
            }
            return Poll::Ready(Some((
                to_result(res, self.cancelled_for_task().cloned()),
                flags,
            )));
        }
        let point = AwaitPoint::current();
        if self.cancelled_for_task().is_none() && point.is_pending() {
            self.rare = Some(Box::new(Rare::CancelledForTask(point.pending().flatten())));
            d.cancel(self.key);
        }
        drop(d);
        point.park(self.location);
        Poll::Pending
    }

    /// Submits an op that was deferred because its task had a cancellation
    /// pending, without delivering that cancellation: for an op that
    /// releases a resource (a close), which must run whatever happens. The
    /// cancellation stays pending for the task's next await point (or this
    /// op's own CQE, if the kernel cancels it).
    pub(crate) fn start_now(&mut self) {
        if let Some(deferred) = self.take_deferred() {
            // SAFETY: the SQEs point into `self.data`'s heap memory, as
            // promised to `submit`.
            self.key = unsafe { deferred.submit(&self.lp) };
        }
    }

    /// Bounds how many unread completions this multishot op may queue: past
    /// `max` the ring cancels it (its final completion is `ECANCELED`), and
    /// the owner arms a new one when it has read the rest.
    pub(crate) fn limit_queued(&mut self, max: u32) {
        if !self.key.is_done() {
            self.lp.driver.borrow_mut().limit_queued(self.key, max);
        }
    }

    /// For a deferred op: `true` if the pending cancellation was taken
    /// here (its message is left in `rare`; the op never started), else
    /// submits it now. `false` for an op already started.
    fn start_deferred(&mut self) -> bool {
        let Some(deferred) = self.take_deferred() else {
            return false;
        };
        if let Some(msg) = AwaitPoint::current().take() {
            self.rare = Some(Box::new(Rare::CancelledForTask(msg)));
            return true;
        }
        // SAFETY: the SQEs point into `self.data`'s heap memory, as
        // promised to `submit`.
        self.key = unsafe { deferred.submit(&self.lp) };
        false
    }

    fn take_deferred(&mut self) -> Option<Deferred> {
        if !matches!(self.rare.as_deref(), Some(Rare::Deferred(_))) {
            return None;
        }
        match self.rare.take().map(|r| *r) {
            Some(Rare::Deferred(d)) => Some(d),
            _ => None,
        }
    }

    /// The task-cancel message, if this op was cancelled for its task.
    fn cancelled_for_task(&self) -> Option<&Option<String>> {
        match self.rare.as_deref() {
            Some(Rare::CancelledForTask(msg)) => Some(msg),
            _ => None,
        }
    }

    fn take_cancelled_for_task(&mut self) -> Option<Option<String>> {
        self.cancelled_for_task()?;
        match self.rare.take().map(|r| *r) {
            Some(Rare::CancelledForTask(msg)) => Some(msg),
            _ => None,
        }
    }

    fn finished_multishot(&mut self) {
        // Mark done: the slot is gone, so Drop must not orphan it.
        self.key = OpKey::DONE;
    }
}

// `data` is never pinned: the kernel points into its heap memory, which
// does not move when the `Op` does.
impl<D: 'static> Unpin for Op<D> {}

/// Takes the next completion of op `key` of loop `loop_id`, or registers
/// `waker` to be woken when it comes. A ringio task's waker is kept
/// counted on the loop's side: no atomic operation to register, wake or
/// drop it, on the path every completion takes.
#[inline]
fn poll_op(d: &mut Driver, key: OpKey, loop_id: u64, waker: &Waker) -> Option<(i32, u32, bool)> {
    d.poll_op(key, waker, raw::same_task, |w| {
        // SAFETY: an `Op` is polled on its loop's thread (it is `!Send`,
        // made on the running loop), and the driver keeps the waker on
        // that thread until it wakes or drops it.
        unsafe { raw::loop_local_waker(w, loop_id) }
    })
}

#[inline]
fn to_result(res: i32, cancelled: Option<Option<String>>) -> Result<u32> {
    if res >= 0 {
        Ok(res as u32)
    } else if res == -libc::ECANCELED {
        match cancelled {
            Some(msg) => Err(Error::Cancelled { msg }),
            None => Err(Error::from_errno(libc::ECANCELED)),
        }
    } else {
        Err(Error::from_errno(-res))
    }
}

impl<D: 'static> Future for Op<D> {
    type Output = OpOutput<D>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<OpOutput<D>> {
        let this = &mut *self;
        if this.rare.is_some() && this.start_deferred() {
            let msg = this.take_cancelled_for_task().flatten();
            let data = this.data.take().expect("Op data present until completion");
            return Poll::Ready(OpOutput {
                result: Err(Error::Cancelled { msg }),
                flags: 0,
                data,
            });
        }
        let mut d = this.lp.driver.borrow_mut();
        let Some((res, flags, _)) = poll_op(&mut d, this.key, this.lp.id, cx.waker()) else {
            if this.data.is_none() {
                drop(d);
                panic!("ringio: Op polled after completion");
            }
            // The task was asked to cancel: cancel the op in the kernel and
            // stay here until its CQE says how it ended (cancellation rule 2).
            let point = AwaitPoint::current();
            point.park(this.location);
            if this.cancelled_for_task().is_none() && point.is_pending() {
                this.rare = Some(Box::new(Rare::CancelledForTask(point.pending().flatten())));
                d.cancel(this.key);
            }
            return Poll::Pending;
        };
        drop(d);
        this.key = OpKey::DONE;
        let cancelled = this.take_cancelled_for_task();
        if res == -libc::ECANCELED && cancelled.is_some() {
            // This await point delivers the cancellation. A successful
            // result instead leaves it pending for the next await (rule 5).
            AwaitPoint::current().take();
        }
        let result = to_result(res, cancelled);
        let data = this.data.take().expect("Op data present until completion");
        Poll::Ready(OpOutput {
            result,
            flags,
            data,
        })
    }
}

impl<D: 'static> Drop for Op<D> {
    #[inline]
    fn drop(&mut self) {
        // The usual end: the op completed and its result was taken. Kept
        // apart from the rest, which is out of line, so that dropping a
        // finished op costs two compares rather than a large call frame.
        if self.key.is_done() && self.rare.is_none() {
            return;
        }
        self.drop_unfinished();
    }
}

impl<D: 'static> Op<D> {
    /// `Drop` of an op that did not complete (or was deferred, or
    /// cancelled for its task).
    #[cold]
    #[inline(never)]
    fn drop_unfinished(&mut self) {
        if let Some(deferred) = self.take_deferred() {
            // Dropped before its first poll: it goes to the kernel as any
            // dropped op does (submitted when created, before deferral
            // existed), so a fire-and-forget op (a close) still happens.
            if self.lp.driver.try_borrow_mut().is_err() {
                // Dropped from inside the driver (which the loop avoids):
                // the kernel never saw the op, so dropping it is safe.
                return;
            }
            // SAFETY: the SQEs point into `self.data`'s heap memory, which
            // `orphan` parks in the op table until the CQE.
            self.key = unsafe { deferred.submit(&self.lp) };
        }
        if self.key.is_done() {
            return;
        }
        let data = self.data.take().map(|d| Box::new(d) as Box<dyn Any>);
        let Ok(mut driver) = self.lp.driver.try_borrow_mut() else {
            // Dropped from inside the driver (op data dropped while it is
            // borrowed, which the loop avoids): the kernel may still write
            // into `data`, and the op table cannot take it, so leak it
            // rather than free it (or panic in a drop).
            std::mem::forget(data);
            return;
        };
        // Parks `data` in the op table until the CQE if the kernel still owns
        // the op, and sends ASYNC_CANCEL. Data handed back is dropped after
        // the borrow ends: its `Drop` may use the loop.
        let unparked = driver.orphan(self.key, data);
        drop(driver);
        drop(unparked);
    }
}
