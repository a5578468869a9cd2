//! `Compat`: the `futures-util` `AsyncRead`/`AsyncWrite` traits over a ring
//! stream, for code written against them.
//!
//! Those traits lend the caller's `&mut [u8]` for one poll only, but the
//! kernel needs a buffer that lives until the completion is reaped. So the
//! adapter owns a read buffer and a write buffer, hands them to the ring,
//! and copies between them and the caller's slices. A read the caller
//! stopped waiting for keeps going and its bytes are served by the next
//! `poll_read` (nothing lost).

use std::fmt;
use std::future::Future;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use futures_util::io::{AsyncRead, AsyncWrite};
use io_uring::opcode;
use io_uring::types::Fd;

use crate::error::Error;
use crate::runtime::Op;

/// Default size of each of the adapter's two buffers.
const DEFAULT_CAPACITY: usize = 64 * 1024;

/// A stream (socket, pipe or file at its current position) as
/// `futures_util::io::AsyncRead + AsyncWrite`, through the ring.
///
/// Writes are write-behind: `poll_write` copies the bytes into the
/// adapter's buffer, starts sending them and reports them written; an error
/// from the ring shows up at the next `poll_write`, `poll_flush` or
/// `poll_close`. `poll_close` flushes and shuts down the write half of a
/// socket.
///
/// Errors are `std::io::Error`s; a ringio error (cancellation, timeout) is
/// carried inside one (`io::Error::other`, find it with `get_ref` and
/// `downcast_ref::<ringio::Error>`).
pub struct Compat<S> {
    inner: S,
    fd: RawFd,
    socket: bool,
    cap: usize,
    /// Bytes read and not yet handed out: `rbuf[rpos..]`. `None` while the
    /// buffer is with the kernel.
    rbuf: Option<Vec<u8>>,
    rpos: usize,
    read_op: Option<Op<Vec<u8>>>,
    /// The write buffer, `None` while it is with the kernel.
    wbuf: Option<Vec<u8>>,
    /// How much of the in-flight write buffer has gone out.
    wpos: usize,
    write_op: Option<Op<Vec<u8>>>,
    shutdown_op: Option<Op<()>>,
    shut_down: bool,
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
            wpos: 0,
            write_op: None,
            shutdown_op: None,
            shut_down: false,
        }
    }

    /// The wrapped stream.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped stream back. A read or write still in flight is
    /// cancelled (its bytes are lost), and buffered read bytes are dropped:
    /// call `poll_flush` first to finish writes.
    pub fn into_inner(self) -> S {
        self.inner
    }

    fn start_read(&mut self) -> io::Result<()> {
        let mut buf = self.rbuf.take().unwrap_or_default();
        buf.clear();
        buf.reserve(self.cap);
        let len = buf.capacity().min(u32::MAX as usize) as u32;
        let sqe = if self.socket {
            opcode::Recv::new(Fd(self.fd), buf.as_mut_ptr(), len).build()
        } else {
            opcode::Read::new(Fd(self.fd), buf.as_mut_ptr(), len)
                .offset(u64::MAX)
                .build()
        };
        // SAFETY: the SQE points into `buf`'s heap allocation, which the Op
        // owns (and parks in the op table if dropped) until the CQE.
        let op = unsafe { Op::submit(sqe, buf) }.map_err(to_io)?;
        self.read_op = Some(op);
        Ok(())
    }

    fn submit_write(&mut self, buf: Vec<u8>) -> io::Result<()> {
        let ptr = buf.as_ptr().wrapping_add(self.wpos);
        let len = (buf.len() - self.wpos).min(u32::MAX as usize) as u32;
        let sqe = if self.socket {
            opcode::Send::new(Fd(self.fd), ptr, len)
                .flags(libc::MSG_NOSIGNAL)
                .build()
        } else {
            opcode::Write::new(Fd(self.fd), ptr, len)
                .offset(u64::MAX)
                .build()
        };
        // SAFETY: the SQE points into `buf`'s heap allocation, owned by the
        // Op until the CQE.
        let op = unsafe { Op::submit(sqe, buf) }.map_err(to_io)?;
        self.write_op = Some(op);
        Ok(())
    }

    /// Drives the in-flight write until its buffer has gone out entirely.
    fn poll_write_done(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some(op) = self.write_op.as_mut() {
            let out = ready!(Pin::new(op).poll(cx));
            self.write_op = None;
            let mut buf = out.data;
            match out.result {
                Ok(0) if self.wpos < buf.len() => {
                    buf.clear();
                    self.wbuf = Some(buf);
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                Ok(n) => {
                    self.wpos += n as usize;
                    if self.wpos < buf.len() {
                        self.submit_write(buf)?;
                        continue;
                    }
                    buf.clear();
                    self.wpos = 0;
                    self.wbuf = Some(buf);
                }
                Err(e) => {
                    buf.clear();
                    self.wpos = 0;
                    self.wbuf = Some(buf);
                    return Poll::Ready(Err(to_io(e)));
                }
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsRawFd + Unpin> AsyncRead for Compat<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        loop {
            if let Some(buf) = this.rbuf.as_ref() {
                if this.rpos < buf.len() {
                    let n = out.len().min(buf.len() - this.rpos);
                    out[..n].copy_from_slice(&buf[this.rpos..this.rpos + n]);
                    this.rpos += n;
                    return Poll::Ready(Ok(n));
                }
            }
            if let Some(op) = this.read_op.as_mut() {
                let res = ready!(Pin::new(op).poll(cx));
                this.read_op = None;
                let mut buf = res.data;
                this.rpos = 0;
                match res.result {
                    Ok(n) => {
                        // SAFETY: the kernel initialised the first `n` bytes.
                        unsafe { buf.set_len(n as usize) };
                        this.rbuf = Some(buf);
                        if n == 0 {
                            return Poll::Ready(Ok(0));
                        }
                        continue;
                    }
                    Err(e) => {
                        buf.clear();
                        this.rbuf = Some(buf);
                        return Poll::Ready(Err(to_io(e)));
                    }
                }
            }
            if out.is_empty() {
                return Poll::Ready(Ok(0));
            }
            this.start_read()?;
        }
    }
}

impl<S: AsRawFd + Unpin> AsyncWrite for Compat<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_write_done(cx))?;
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if this.shut_down {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "write after poll_close",
            )));
        }
        let mut buf = this.wbuf.take().unwrap_or_default();
        let n = data.len().min(this.cap);
        buf.clear();
        buf.extend_from_slice(&data[..n]);
        this.wpos = 0;
        this.submit_write(buf)?;
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_write_done(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_write_done(cx))?;
        if !this.socket || this.shut_down {
            return Poll::Ready(Ok(()));
        }
        if this.shutdown_op.is_none() {
            Op::<()>::require(opcode::Shutdown::CODE).map_err(to_io)?;
            let sqe = opcode::Shutdown::new(Fd(this.fd), libc::SHUT_WR).build();
            // SAFETY: the SQE points to no memory.
            this.shutdown_op = Some(unsafe { Op::submit(sqe, ()) }.map_err(to_io)?);
        }
        let Some(op) = this.shutdown_op.as_mut() else {
            return Poll::Ready(Ok(()));
        };
        let out = ready!(Pin::new(op).poll(cx));
        this.shutdown_op = None;
        this.shut_down = true;
        match out.result {
            // Already shut down or reset by the peer: the write half is closed.
            Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => Poll::Ready(Ok(())),
            r => Poll::Ready(r.map(|_| ()).map_err(to_io)),
        }
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
/// travel inside (`get_ref().downcast_ref::<ringio::Error>()`).
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
