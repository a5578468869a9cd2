//! `Compat`: the `futures-util` `AsyncRead`/`AsyncWrite` traits over a ring
//! stream, for code written against them.
//!
//! Those traits lend the caller's `&mut [u8]` for one poll only, but the
//! kernel needs a buffer that lives until the completion is reaped. So the
//! adapter owns a read buffer and a write buffer, hands them to the ring
//! (through the same operations as the owned-buffer API, so probe checks,
//! deadlines and cancellation behave the same), and copies between them and
//! the caller's slices. A read the caller stopped waiting for keeps going
//! and its bytes are served by the next `poll_read` (nothing lost).
//!
//! With a [`BufRing`] (`Compat::with_buf_ring`, TCP and Unix streams), the
//! read side is instead the socket's receive stream
//! ([`RecvStream`]): one multishot receive stays armed from one read to the
//! next, the kernel picks a pool buffer per arrival, and the bytes are
//! copied out of it into the caller's slice. Unread bytes go to the
//! socket's stash at `into_inner`, where its next read finds them.
//!
//! The operations in flight are named futures (`ops::ReadOp`,
//! `ops::WriteAllOp`) kept in the adapter's fields, not boxed `async fn`
//! futures: a read or a write costs no allocation, and both buffers are
//! reused from one operation to the next.
//!
//! # Safety
//!
//! The `unsafe` here is one `fstat(2)` into an all-zero `stat`, read only
//! when the call succeeded.

use std::fmt;
use std::future::Future;
use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use futures_util::io::{AsyncRead, AsyncWrite};
use futures_util::stream::Stream;

use super::buf_ring::{BufRing, RingBuf, Stash};
use super::ops::{self, ReadOp, WriteAllOp, WriteTo};
use crate::error::{Error, Result};
use crate::net::{RecvStream, TcpStream, UnixStream};
use crate::task::await_point::AwaitPoint;

/// Default size of each of the adapter's two buffers.
const DEFAULT_CAPACITY: usize = 64 * 1024;

type OpFuture<T> = Pin<Box<dyn Future<Output = T>>>;

/// A stream (socket, pipe or file at its current position) as
/// `futures_util::io::AsyncRead + AsyncWrite`, through the ring.
///
/// Writes are write-behind: `poll_write` copies the bytes into the
/// adapter's buffer, starts sending them and reports them written; an error
/// from the ring shows up at the next `poll_write`, `poll_flush` or
/// `poll_close`. `poll_flush` waits for the send to complete — except on an
/// adapter made by [`with_buf_ring`](Compat::with_buf_ring) with a pool
/// the kernel registered (Linux 6.0+), where it returns as soon as the send
/// is with the ring: that send is then the kernel's to finish (with
/// `MSG_WAITALL`, so a short send needs no further poll), it is not
/// cancelled if the adapter is dropped (a task of its own sees it to the
/// end), and its error shows at the next `poll_write` or `poll_close`,
/// not at the flush. This spares a wake-up of the task per flush.
/// `poll_close` always waits for the send, then shuts down the write half
/// of a socket. A vectored write (`poll_write_vectored`) gathers its
/// slices, in order and up to the buffer's capacity, into one ring write.
///
/// A deadline applies as for the owned-buffer calls: poll the adapter's
/// futures inside [`with_timeout`](crate::io::with_timeout) and the ring
/// operations they start carry a linked timeout.
///
/// Errors are `std::io::Error`s. OS errors keep their errno; a ringio error
/// (cancellation, timeout) travels inside one, and `?` into a
/// `ringio::Error` gives it back as it was, so a cancelled task still ends
/// cancelled.
pub struct Compat<S> {
    fd: RawFd,
    socket: bool,
    cap: usize,
    /// Bytes read and not yet handed out: `rbuf[rpos..]`. `None` while the
    /// buffer is with the kernel.
    rbuf: Option<Vec<u8>>,
    rpos: usize,
    /// The read in flight. Held in place, not boxed: one allocation
    /// fewer per read.
    read_op: Option<ReadOp<Vec<u8>>>,
    /// The write buffer, `None` while it is with the kernel.
    wbuf: Option<Vec<u8>>,
    /// The write in flight, held in place as `read_op`.
    write_op: WriteSlot,
    /// The reads of an adapter made with `with_buf_ring`: one multishot
    /// receive into the pool, kept armed across reads, instead of
    /// `read_op`.
    multi: Option<MultiRead>,
    /// Rare (once per stream), so boxed.
    shutdown_op: Option<OpFuture<Result<()>>>,
    shut_down: bool,
    /// Declared last so that it drops last: the op futures above drop
    /// first, and dropping one hands its queued SQE to the kernel at once
    /// (the kernel then holds its own reference to the file), so closing
    /// `inner` afterwards cannot send that op to a reused descriptor number.
    inner: S,
}

impl<S: AsRawFd> Compat<S> {
    /// Wraps `inner` with buffers of 64 KiB.
    pub fn new(inner: S) -> Compat<S> {
        Compat::with_capacity(DEFAULT_CAPACITY, inner)
    }

    /// Wraps `inner` with buffers of `capacity` bytes (at least 1).
    pub fn with_capacity(capacity: usize, inner: S) -> Compat<S> {
        let fd = inner.as_raw_fd();
        Compat {
            fd,
            socket: is_socket(fd),
            cap: capacity.max(1),
            inner,
            rbuf: Some(Vec::new()),
            rpos: 0,
            read_op: None,
            wbuf: Some(Vec::new()),
            write_op: WriteSlot {
                op: None,
                flush_early: false,
            },
            multi: None,
            shutdown_op: None,
            shut_down: false,
        }
    }

    /// Wraps a ringio [`TcpStream`] or [`UnixStream`] whose reads come
    /// from one multishot receive into `ring`'s buffers, kept armed across
    /// reads (Linux 6.0+ with a kernel-registered pool; else one plain
    /// receive into a pool buffer per read), instead of a receive per read
    /// into the adapter's own buffer. Writes are as with
    /// [`with_capacity`](Compat::with_capacity) (`capacity` bytes). Any
    /// other stream is wrapped as by `with_capacity`.
    ///
    /// One pool can serve all the loop's connections: a connection holds a
    /// buffer only from the receive that filled it until its bytes are
    /// read out, so `ring` needs about one buffer per connection with
    /// unread bytes; when it runs dry, receives wait for a buffer (the data
    /// waits in the socket).
    ///
    /// Bytes received and not yet read stay with the socket at
    /// [`into_inner`](Compat::into_inner), as do those the receive still
    /// brings once the adapter is gone: the socket's next read returns
    /// them. A deadline from [`with_timeout`](crate::io::with_timeout) does
    /// not apply to these reads (a multishot receive carries no linked
    /// timeout); bound them with a timer instead, as hyper's header-read
    /// timeout does.
    pub fn with_buf_ring(ring: &BufRing, capacity: usize, inner: S) -> Compat<S>
    where
        S: 'static,
    {
        let stash = socket_stash(&inner);
        let fd = inner.as_raw_fd();
        let mut c = Compat::with_capacity(capacity, inner);
        if let Some(stash) = stash {
            c.multi = Some(MultiRead {
                stream: RecvStream::new(fd, ring, stash.clone()),
                stash,
                cur: None,
            });
            // A kernel pool means Linux 6.0+, whose sends finish short
            // writes themselves with MSG_WAITALL (5.18+).
            c.write_op.flush_early = ring.is_kernel();
        }
        c
    }

    /// The wrapped stream.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped stream back. A write still in flight is cancelled,
    /// except on an adapter whose flush returns early (see the type's
    /// doc), where the kernel finishes it: call `poll_flush` first to
    /// finish writes. Read bytes buffered in the adapter, and a read still
    /// in flight, are lost — except with
    /// [`with_buf_ring`](Compat::with_buf_ring), whose unread bytes stay
    /// with the socket for its next read.
    pub fn into_inner(mut self) -> S {
        if let Some(m) = self.multi.as_mut() {
            m.give_back();
        }
        // The other fields (the op futures) drop when this returns, before
        // the caller can close the stream.
        self.inner
    }

    fn start_read(&mut self) {
        let mut buf = self.rbuf.take().unwrap_or_default();
        buf.clear();
        buf.reserve(self.cap);
        let fd = self.fd;
        // The op owns the buffer. It may outlive this poll with its SQE
        // still queued; the descriptor stays open meanwhile because `inner`
        // is the last field of `self`, dropped after the ops, and a dropped
        // op issues its SQE before its drop returns.
        self.read_op = Some(if self.socket {
            ReadOp::recv(fd.into(), buf, 0)
        } else {
            ReadOp::read_at(fd.into(), buf, u64::MAX)
        });
    }

    /// The read side of every adapter over `Compat` (futures-io, tokio-io,
    /// hyper): hands up to `want` buffered bytes to `put` (starting a ring
    /// read when none are buffered) and returns how many it took.
    pub(crate) fn poll_read_into(
        &mut self,
        cx: &mut Context<'_>,
        want: usize,
        put: impl FnOnce(&[u8]),
    ) -> Poll<io::Result<usize>> {
        let this = self;
        if let Some(m) = this.multi.as_mut() {
            return m.poll_read_into(cx, want, put);
        }
        loop {
            if let Some(buf) = this.rbuf.as_ref() {
                if this.rpos < buf.len() {
                    let n = want.min(buf.len() - this.rpos);
                    put(&buf[this.rpos..this.rpos + n]);
                    this.rpos += n;
                    return Poll::Ready(Ok(n));
                }
            }
            if let Some(op) = this.read_op.as_mut() {
                let (res, mut buf) = ready!(Pin::new(op).poll(cx));
                this.read_op = None;
                this.rpos = 0;
                match res {
                    // The read set the buffer's length to the count.
                    Ok(0) => {
                        this.rbuf = Some(buf);
                        return Poll::Ready(Ok(0));
                    }
                    Ok(_) => {
                        this.rbuf = Some(buf);
                        continue;
                    }
                    Err(e) => {
                        buf.clear();
                        this.rbuf = Some(buf);
                        return Poll::Ready(Err(to_io(e)));
                    }
                }
            }
            if want == 0 {
                return Poll::Ready(Ok(0));
            }
            this.start_read();
        }
    }

    /// Drives the in-flight write until its buffer has gone out entirely.
    pub(crate) fn poll_write_done(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Some(op) = self.write_op.op.as_mut() else {
            return Poll::Ready(Ok(()));
        };
        let (res, mut buf) = ready!(Pin::new(op).poll(cx));
        self.write_op.op = None;
        buf.clear();
        self.wbuf = Some(buf);
        Poll::Ready(res.map_err(to_io))
    }

    /// The write side of every adapter over `Compat`: waits for the
    /// previous write, then copies up to the buffer's capacity from `bufs`,
    /// in order, into the write buffer and starts one ring write (a send
    /// on a socket) for all of it. Returns how many bytes it took.
    pub(crate) fn poll_write_from(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        ready!(self.poll_write_done(cx))?;
        if bufs.iter().all(|b| b.is_empty()) {
            return Poll::Ready(Ok(0));
        }
        if self.shut_down {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "write after poll_close",
            )));
        }
        let mut buf = self.wbuf.take().unwrap_or_default();
        buf.clear();
        let mut room = self.cap;
        for b in bufs {
            let n = b.len().min(room);
            buf.extend_from_slice(&b[..n]);
            room -= n;
            if room == 0 {
                break;
            }
        }
        let n = buf.len();
        let to = if self.socket {
            // With an early flush nobody may poll the send until the next
            // write: MSG_WAITALL has the kernel finish a short send itself
            // (a partial count then means an error stopped it).
            WriteTo::Socket(if self.write_op.flush_early {
                libc::MSG_WAITALL
            } else {
                0
            })
        } else {
            WriteTo::File(u64::MAX)
        };
        let op = WriteAllOp::new(self.fd.into(), buf, to);
        // An op that never reached the ring, or one held back because the
        // task has a cancellation pending, ends at its first poll: poll it
        // now, so that this write reports that error (or delivers the
        // cancellation) instead of taking the bytes. A submitted op is not
        // done yet (its SQE reaches the kernel at the loop's next
        // submission), and the next write or flush polls it anyway.
        let settle_now = !op.submitted() || AwaitPoint::current().is_pending();
        self.write_op.op = Some(op);
        if settle_now {
            if let Poll::Ready(Err(e)) = self.poll_write_done(cx) {
                return Poll::Ready(Err(e));
            }
        }
        Poll::Ready(Ok(n))
    }

    /// The flush of every adapter over `Compat`: waits for the write in
    /// flight, except with an early flush (`with_buf_ring` on a kernel
    /// pool), where a write handed to the ring counts as flushed: the
    /// kernel finishes it whatever the adapter does next (see
    /// [`WriteSlot`]), and its error shows at the next write or close.
    pub(crate) fn poll_flush_inner(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let handed_over = self.write_op.flush_early
            && self.write_op.op.as_ref().is_some_and(WriteAllOp::submitted)
            // A pending cancellation is delivered by the op, as without
            // an early flush.
            && !AwaitPoint::current().is_pending();
        if handed_over {
            return Poll::Ready(Ok(()));
        }
        self.poll_write_done(cx)
    }

    /// Flushes, then shuts down a socket's write half (once).
    pub(crate) fn poll_close_inner(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_write_done(cx))?;
        if !self.socket || self.shut_down {
            return Poll::Ready(Ok(()));
        }
        let fd = self.fd;
        let op = self
            .shutdown_op
            .get_or_insert_with(|| Box::pin(ops::shutdown(fd, libc::SHUT_WR)));
        let res = ready!(op.as_mut().poll(cx));
        self.shutdown_op = None;
        self.shut_down = true;
        match res {
            // Already shut down or reset by the peer: the write half is closed.
            Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => Poll::Ready(Ok(())),
            r => Poll::Ready(r.map_err(to_io)),
        }
    }
}

/// The write in flight. With an early flush, a write still in flight when
/// the adapter is dropped is finished by a task of its own rather than
/// cancelled: the caller was told it was flushed.
struct WriteSlot {
    op: Option<WriteAllOp<Vec<u8>>>,
    flush_early: bool,
}

impl Drop for WriteSlot {
    fn drop(&mut self) {
        let Some(op) = self.op.take().filter(|_| self.flush_early) else {
            return;
        };
        // Usually done already (its completion unread); a send the kernel
        // still holds (a full socket buffer) runs to its end. Its error has
        // nobody to go to. Outside a loop the op drops (cancelled) with the
        // future, as any op.
        let _ = crate::task::Task::builder().spawn(async move {
            let _ = op.await;
            Ok::<(), Error>(())
        });
    }
}

/// The read side of a [`Compat`] made with a [`BufRing`]: a receive
/// stream (one multishot receive, re-armed when the kernel ends it) and
/// the buffer being handed out.
struct MultiRead {
    stream: RecvStream<'static>,
    /// The socket's stash, where `into_inner` leaves `cur`'s bytes.
    stash: Stash,
    /// Received bytes not yet handed out. Dropped (back to the pool) as
    /// soon as it is used up.
    cur: Option<RingBuf>,
}

impl MultiRead {
    fn poll_read_into(
        &mut self,
        cx: &mut Context<'_>,
        want: usize,
        put: impl FnOnce(&[u8]),
    ) -> Poll<io::Result<usize>> {
        loop {
            if let Some(cur) = self.cur.as_mut() {
                let n = want.min(cur.len());
                put(&cur[..n]);
                cur.advance(n);
                if cur.is_empty() {
                    self.cur = None;
                }
                return Poll::Ready(Ok(n));
            }
            if want == 0 {
                return Poll::Ready(Ok(0));
            }
            match ready!(Pin::new(&mut self.stream).poll_next(cx)) {
                None => return Poll::Ready(Ok(0)),
                Some(Ok(buf)) if buf.is_empty() => {}
                Some(Ok(buf)) => self.cur = Some(buf),
                Some(Err(e)) => return Poll::Ready(Err(to_io(e))),
            }
        }
    }

    /// Leaves the bytes not handed out with the socket, ahead of anything
    /// stashed (the receive stream, dropped next, stashes what its
    /// receive still brings behind them).
    fn give_back(&mut self) {
        if let Some(cur) = self.cur.take() {
            self.stash.push_front(cur);
        }
    }
}

/// The stash of a ringio stream socket (`TcpStream`, `UnixStream`): where
/// it keeps received bytes that a reader took from the kernel but did not
/// hand out. `None` for any other stream.
fn socket_stash<S: 'static>(inner: &S) -> Option<Stash> {
    let any: &dyn std::any::Any = inner;
    if let Some(s) = any.downcast_ref::<TcpStream>() {
        Some(s.rx_stash())
    } else {
        any.downcast_ref::<UnixStream>().map(UnixStream::rx_stash)
    }
}

impl<S: AsRawFd + Unpin> AsyncRead for Compat<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let want = out.len();
        self.get_mut()
            .poll_read_into(cx, want, |bytes| out[..bytes.len()].copy_from_slice(bytes))
    }
}

impl<S: AsRawFd + Unpin> AsyncWrite for Compat<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().poll_write_from(cx, &[IoSlice::new(data)])
    }

    /// Gathers the slices into one ring write (up to the buffer's
    /// capacity), instead of a write per slice.
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().poll_write_from(cx, bufs)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_flush_inner(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_close_inner(cx)
    }
}

impl<S: fmt::Debug> fmt::Debug for Compat<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Compat")
            .field("inner", &self.inner)
            .field("capacity", &self.cap)
            .finish()
    }
}

/// A ringio error as an `io::Error`: OS errors keep their errno, the rest
/// travel inside (`From<io::Error> for ringio::Error` unwraps them).
fn to_io(e: Error) -> io::Error {
    match e.raw_os_error() {
        Some(code) => io::Error::from_raw_os_error(code),
        None => {
            let kind = match &e {
                Error::Timeout => io::ErrorKind::TimedOut,
                _ => io::ErrorKind::Other,
            };
            io::Error::new(kind, e)
        }
    }
}

fn is_socket(fd: RawFd) -> bool {
    // SAFETY: all-zero is a valid `stat`; fstat writes into it and we only
    // read it when the call succeeded.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat on any number is safe; a bad one gives EBADF.
    let rc = unsafe { libc::fstat(fd, &mut st) };
    rc == 0 && (st.st_mode & libc::S_IFMT) == libc::S_IFSOCK
}
