//! `RecvStream`: receives into a [`BufRing`]'s buffers, as a `Stream`.
//!
//! # Safety
//!
//! Ring submissions (`ops::submit`, `Op::try_submit`) are `unsafe` because
//! the kernel reads and writes the memory an SQE names until the CQE: every
//! SQE here points into heap memory the op owns (moved into its data before
//! submission, handed back with the result, parked in the op table if the
//! future is dropped), or into no memory at all. A multishot receive writes
//! only into buffers of its provided-buffer pool, whose memory the op's data
//! keeps alive (an `Rc`) until the final CQE.

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::os::fd::RawFd;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use futures_util::stream::Stream;
use io_uring::types::Fd;
use io_uring::{cqueue, opcode};

use crate::driver::OrphanCleanup;
use crate::error::{Error, Result};
use crate::io::buf_ring::{Inner, Stash};
use crate::io::{BufRing, RingBuf};
use crate::runtime::Op;

/// What a receive into the pool owns while the kernel runs it: the pool
/// (so its memory outlives the op, also once the stream is dropped and the
/// op waits in the loop's table for its final completion), the socket's
/// stash (for bytes that arrive after the stream is gone) and, for a plain
/// receive, the buffer it reads into.
struct RecvData {
    ring: Rc<Inner>,
    stash: Stash,
    lease: Option<u16>,
}

impl Drop for RecvData {
    fn drop(&mut self) {
        if let Some(bid) = self.lease.take() {
            self.ring.recycle(bid, true);
        }
    }
}

/// A completion of a receive whose stream was dropped: its bytes go to the
/// socket's stash, so the next read or stream returns them (nothing lost),
/// and an unused buffer goes back to the pool.
fn stash_orphan(res: i32, flags: u32, data: Option<&mut dyn std::any::Any>) {
    let Some(d) = data.and_then(|d| d.downcast_mut::<RecvData>()) else {
        return;
    };
    let bid = match cqueue::buffer_select(flags) {
        Some(bid) => {
            d.ring.took();
            Some(bid)
        }
        None if res > 0 => d.lease.take(),
        None => None,
    };
    let Some(bid) = bid else { return };
    if res > 0 {
        d.stash
            .push_back(RingBuf::new(d.ring.clone(), bid, res as u32));
    } else {
        // Called while the loop reaps: no waking from here. A receive
        // waiting for a buffer is woken by the next one to come back.
        d.ring.recycle(bid, false);
    }
}

enum RecvOp {
    /// A multishot `IORING_OP_RECV` selecting from the kernel's ring.
    Multi(Op<RecvData>),
    /// A plain `IORING_OP_RECV` into one buffer of a user-space pool.
    Single(Op<RecvData>),
}

/// The bytes arriving on a stream socket, in buffers of a [`BufRing`]: a
/// `futures` `Stream` of `Result<RingBuf>`, from
/// [`TcpStream::recv_multishot`](crate::net::TcpStream::recv_multishot) or
/// [`UnixStream::recv_multishot`](crate::net::UnixStream::recv_multishot).
///
/// With a pool registered with the kernel, one multishot `IORING_OP_RECV`
/// delivers buffer after buffer; when the kernel ends it (the pool ran dry:
/// `ENOBUFS`, whose data waits in the socket) the stream arms a new one as
/// soon as a buffer comes back. With a user-space pool, each item is one
/// plain receive.
///
/// The stream ends (`None`) when the peer closes its write half. An error
/// is an item, and the next poll receives again.
///
/// Cancellation follows the guide's rules: a task cancelled while it waits
/// here gets the items that arrived before the kernel confirmed the
/// cancel, then `Err(Cancelled)`. Dropping the stream cancels the receive;
/// bytes the kernel had already put into buffers (and those it puts in
/// before the cancel lands) are kept with the socket and returned first by
/// its next `read` or `recv_multishot`. Only one stream (or read) should
/// receive from a socket at a time.
#[must_use = "streams do nothing unless polled"]
pub struct RecvStream<'a> {
    fd: RawFd,
    ring: BufRing,
    stash: Stash,
    op: Option<RecvOp>,
    eof: bool,
    _socket: PhantomData<&'a ()>,
}

impl<'a> RecvStream<'a> {
    pub(crate) fn new(fd: RawFd, ring: &BufRing, stash: Stash) -> RecvStream<'a> {
        RecvStream {
            fd,
            ring: ring.clone(),
            stash,
            op: None,
            eof: false,
            _socket: PhantomData,
        }
    }

    /// The next buffer of received bytes; `None` once the peer closed.
    pub async fn next(&mut self) -> Option<Result<RingBuf>> {
        std::future::poll_fn(|cx| Pin::new(&mut *self).poll_next(cx)).await
    }

    /// Submits the next receive, or `Ok(false)` if the pool has no free
    /// buffer (the waker is woken when one comes back).
    fn arm(&mut self, cx: &mut Context<'_>) -> Result<bool> {
        let inner = &self.ring.inner;
        inner.check_loop()?;
        if inner.available() == 0 {
            inner.wait(cx.waker());
            return Ok(false);
        }
        let data = RecvData {
            ring: inner.clone(),
            stash: self.stash.clone(),
            lease: None,
        };
        let cleanup = Some(stash_orphan as OrphanCleanup);
        self.op = Some(match inner.bgid() {
            Some(bgid) => {
                let sqe = opcode::RecvMulti::new(Fd(self.fd), bgid).build();
                // SAFETY: the receive writes only into buffers of the pool,
                // whose memory `data` keeps alive (an Rc) until the op's
                // final completion, also if the op is orphaned.
                RecvOp::Multi(unsafe { Op::submit_with(sqe, None, data, cleanup) }?)
            }
            None => {
                let Some(bid) = inner.take_free() else {
                    inner.wait(cx.waker());
                    return Ok(false);
                };
                let mut data = data;
                data.lease = Some(bid);
                let sqe =
                    opcode::Recv::new(Fd(self.fd), inner.buf_ptr(bid), inner.buf_size()).build();
                // SAFETY: the SQE points into buffer `bid` of the pool,
                // leased to `data` (which returns it on drop) and kept
                // alive by its Rc until the op's final completion.
                RecvOp::Single(unsafe { Op::submit_with(sqe, None, data, cleanup) }?)
            }
        });
        Ok(true)
    }
}

impl Stream for RecvStream<'_> {
    type Item = Result<RingBuf>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            let stashed = this.stash.pop_front();
            if let Some(buf) = stashed {
                return Poll::Ready(Some(Ok(buf)));
            }
            if this.eof {
                return Poll::Ready(None);
            }
            let (res, buf, more) = match this.op.as_mut() {
                // A plain read dropped in flight first puts its bytes in
                // the stash (they come before anything received now).
                None if this.stash.poll_settled(cx).is_pending() => return Poll::Pending,
                None => match this.arm(cx) {
                    Ok(true) => continue,
                    Ok(false) => return Poll::Pending,
                    Err(e) => return Poll::Ready(Some(Err(e))),
                },
                Some(RecvOp::Multi(op)) => match op.poll_next(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(None) => {
                        this.op = None;
                        continue;
                    }
                    Poll::Ready(Some((res, flags))) => {
                        let buf = cqueue::buffer_select(flags).map(|bid| {
                            this.ring.inner.took();
                            RingBuf::new(this.ring.inner.clone(), bid, 0)
                        });
                        (res, buf, cqueue::more(flags))
                    }
                },
                Some(RecvOp::Single(op)) => match Pin::new(op).poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(out) => {
                        let mut data = out.data;
                        let buf = data
                            .lease
                            .take()
                            .map(|bid| RingBuf::new(this.ring.inner.clone(), bid, 0));
                        (out.result, buf, false)
                    }
                },
            };
            if !more {
                this.op = None;
            }
            match res {
                Ok(0) => {
                    // End of stream (the buffer, if any, goes back).
                    this.eof = true;
                }
                Ok(n) => {
                    let Some(mut buf) = buf else {
                        return Poll::Ready(Some(Err(Error::from(std::io::Error::other(
                            "a receive into a buffer ring completed without a buffer",
                        )))));
                    };
                    buf.set_len(n);
                    return Poll::Ready(Some(Ok(buf)));
                }
                // The pool ran dry; the data waits in the socket. Re-arm
                // (once a buffer is back).
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {}
                Err(e) => return Poll::Ready(Some(Err(e))),
            }
        }
    }
}

impl fmt::Debug for RecvStream<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecvStream")
            .field("fd", &self.fd)
            .field("ring", &self.ring)
            .field("armed", &self.op.is_some())
            .field("eof", &self.eof)
            .finish()
    }
}
