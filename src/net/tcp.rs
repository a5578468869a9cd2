//! TCP: `TcpListener` (accept, multishot `incoming`) and `TcpStream`.
//!
//! # Safety
//!
//! Adopting a descriptor (`RingFd::from_raw`, `OwnedFd::from_raw_fd`) is
//! `unsafe` because the new owner closes it: it is only ever done with a
//! descriptor the kernel has just created for us, or one a std type gave up,
//! so nothing else owns it. Ring submissions (`ops::submit`,
//! `Op::try_submit`) are `unsafe` because the kernel reads and writes the
//! memory an SQE names until the CQE: every SQE here points into heap memory
//! the op owns (moved into its data before submission, handed back with the
//! result, parked in the op table if the future is dropped), or into no
//! memory at all.

use std::fmt;
use std::future::Future;
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::RawFd;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::stream::Stream;
use io_uring::opcode;
use io_uring::types::Fd;

use super::addr::{from_raw, resolve, to_boxed, to_raw};
use super::socket::{bind, get_int_opt, listen, set_int_opt, socket, with_std};
use super::{fd_traits, stream_io};
use crate::driver::OrphanCleanup;
use crate::error::{Error, Result};
use crate::io::buf_ring::StashCell;
use crate::io::fd::{RingFd, close_orphan};
use crate::io::{Io, ops};
use crate::runtime::Op;

/// How [`TcpListener::bind_with`] sets up the listening socket.
#[derive(Clone, Copy, Debug)]
pub struct ListenOptions {
    backlog: i32,
    reuse_address: bool,
    reuse_port: bool,
}

impl Default for ListenOptions {
    fn default() -> ListenOptions {
        ListenOptions::new()
    }
}

impl ListenOptions {
    /// A backlog of 1024, `SO_REUSEADDR` on (as `std` does), `SO_REUSEPORT`
    /// off.
    pub fn new() -> ListenOptions {
        ListenOptions {
            backlog: 1024,
            reuse_address: true,
            reuse_port: false,
        }
    }

    /// The `listen(2)` backlog (the kernel caps it at `somaxconn`).
    pub fn backlog(mut self, n: i32) -> ListenOptions {
        self.backlog = n;
        self
    }

    /// `SO_REUSEADDR`: bind while old connections linger in `TIME_WAIT`.
    pub fn reuse_address(mut self, on: bool) -> ListenOptions {
        self.reuse_address = on;
        self
    }

    /// `SO_REUSEPORT`: several sockets (one per core) listen on one port and
    /// the kernel spreads incoming connections among them.
    pub fn reuse_port(mut self, on: bool) -> ListenOptions {
        self.reuse_port = on;
        self
    }
}

/// A TCP socket listening for connections.
///
/// Closing (dropping) it is a plain `close(2)` once the loop's queued
/// submissions are in the kernel, so the port is free when `drop` returns.
pub struct TcpListener {
    fd: RingFd,
}

impl TcpListener {
    /// Binds to `addr` and listens (backlog 1024, `SO_REUSEADDR`). Each
    /// resolved address is tried in turn; the last error is returned if
    /// none works. Port 0 picks a free port ([`TcpListener::local_addr`]).
    pub fn bind(addr: impl ToSocketAddrs) -> Result<TcpListener> {
        TcpListener::bind_with(addr, ListenOptions::new())
    }

    /// Like [`TcpListener::bind`], with options (e.g. `SO_REUSEPORT` for
    /// one listener per core).
    pub fn bind_with(addr: impl ToSocketAddrs, opts: ListenOptions) -> Result<TcpListener> {
        let mut last = None;
        for a in resolve(addr)? {
            match TcpListener::bind_one(&a, &opts) {
                Ok(l) => return Ok(l),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| Error::InvalidArgument("no address to bind".into())))
    }

    fn bind_one(addr: &SocketAddr, opts: &ListenOptions) -> Result<TcpListener> {
        let fd = socket(domain_of(addr), libc::SOCK_STREAM)?;
        if opts.reuse_address {
            set_int_opt(fd.raw(), libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)?;
        }
        if opts.reuse_port {
            set_int_opt(fd.raw(), libc::SOL_SOCKET, libc::SO_REUSEPORT, 1)?;
        }
        bind(fd.raw(), &to_raw(addr))?;
        listen(fd.raw(), opts.backlog)?;
        Ok(TcpListener { fd })
    }

    /// Accepts one connection (`IORING_OP_ACCEPT`): the stream and the
    /// peer's address. A connection the kernel accepted after this future
    /// was dropped is closed, not leaked; one accepted before a task cancel
    /// reached the kernel is returned (the cancel comes at the next await).
    #[track_caller]
    pub fn accept(&self) -> Io<impl Future<Output = Result<(TcpStream, SocketAddr)>> + '_> {
        let fd = self.fd.raw();
        Io::new(async move {
            let _me = self;
            let (raw, addr) = ops::accept(fd).await?;
            // SAFETY: a fresh descriptor the kernel created for us.
            let stream = TcpStream::from_fd(unsafe { RingFd::from_raw(raw) });
            let peer = from_raw(&addr.storage, addr.len)?;
            Ok((stream, peer))
        })
    }

    /// The connections coming in, from one multishot `IORING_OP_ACCEPT`
    /// (Linux 5.19): the kernel keeps accepting without a new submission per
    /// connection. Connections it accepted that were not taken when the
    /// stream is dropped are closed. The stream never ends; an error item
    /// (e.g. `EMFILE`) ends the kernel's multishot, and the next poll arms a
    /// new one.
    pub fn incoming(&self) -> Incoming<'_> {
        Incoming {
            listener: self,
            op: None,
        }
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> Result<SocketAddr> {
        with_std(self.fd.raw(), |s: &std::net::TcpListener| s.local_addr())
    }

    /// Takes over a `std` listener (blocking or not: the ring does not care).
    pub fn from_std(listener: std::net::TcpListener) -> TcpListener {
        use std::os::fd::IntoRawFd;
        TcpListener {
            // SAFETY: the std listener gave up its descriptor to us.
            fd: unsafe { RingFd::from_raw(listener.into_raw_fd()) },
        }
    }
}

fd_traits!(TcpListener);

impl fmt::Debug for TcpListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TcpListener")
            .field("fd", &self.fd)
            .field("addr", &self.local_addr().ok())
            .finish()
    }
}

/// The stream of [`TcpListener::incoming`] connections (a multishot accept).
///
/// Use it as a `futures` `Stream` or call [`Incoming::next`].
#[must_use = "streams do nothing unless polled"]
pub struct Incoming<'a> {
    listener: &'a TcpListener,
    op: Option<Op<()>>,
}

impl Incoming<'_> {
    /// The next connection. `None` never comes; errors are items.
    pub async fn next(&mut self) -> Option<Result<TcpStream>> {
        std::future::poll_fn(|cx| Pin::new(&mut *self).poll_next(cx)).await
    }

    fn arm(&mut self) -> Result<()> {
        Op::<()>::require(opcode::Accept::CODE)?;
        // The probe has no bit for the multishot flag; IORING_OP_SOCKET came
        // in the same release (5.19), so it stands in for it.
        if Op::<()>::require(opcode::Socket::CODE).is_err() {
            return Err(Error::Unsupported(
                "multishot IORING_OP_ACCEPT is not supported by this kernel (it needs Linux 5.19); \
                 use TcpListener::accept"
                    .into(),
            ));
        }
        let sqe = opcode::AcceptMulti::new(Fd(self.listener.fd.raw()))
            .flags(libc::SOCK_CLOEXEC)
            .build();
        // SAFETY: a multishot accept points to no memory (no address out).
        let mut op =
            unsafe { Op::submit_with(sqe, None, (), Some(close_orphan as OrphanCleanup)) }?;
        op.limit_queued(INCOMING_QUEUE_MAX);
        self.op = Some(op);
        Ok(())
    }
}

/// How many accepted connections a multishot accept may hold unread before
/// it is stopped: past that, new connections wait in the listen backlog
/// (the kernel's own pushback) until the stream is read again.
pub const INCOMING_QUEUE_MAX: u32 = 256;

impl Stream for Incoming<'_> {
    type Item = Result<TcpStream>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.op.is_none() {
            if let Err(e) = this.arm() {
                return Poll::Ready(Some(Err(e)));
            }
        }
        let Some(op) = this.op.as_mut() else {
            return Poll::Pending;
        };
        match op.poll_next(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => {
                // Cannot happen (the op is dropped at its final CQE below);
                // re-arm on the next poll rather than end the stream.
                this.op = None;
                cx.waker().wake_by_ref();
                Poll::Pending
            }
            Poll::Ready(Some((res, flags))) => {
                if !io_uring::cqueue::more(flags) {
                    // The kernel ended this multishot: arm a new one next time.
                    this.op = None;
                    if matches!(&res, Err(e) if e.raw_os_error() == Some(libc::ECANCELED)) {
                        // Stopped because `INCOMING_QUEUE_MAX` connections
                        // waited unread (not the task's cancel, which comes
                        // as `Error::Cancelled`): everything queued has been
                        // read now, so accept again.
                        return Pin::new(this).poll_next(cx);
                    }
                }
                Poll::Ready(Some(match res {
                    // SAFETY: a fresh descriptor the kernel created for us.
                    Ok(fd) => Ok(TcpStream::from_fd(unsafe { RingFd::from_raw(fd as RawFd) })),
                    Err(e) => Err(e),
                }))
            }
        }
    }
}

impl fmt::Debug for Incoming<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Incoming")
            .field("listener", &self.listener)
            .field("armed", &self.op.is_some())
            .finish()
    }
}

/// A TCP connection.
///
/// Reads and writes take `&self`, so one task may read while another
/// writes. Dropping the stream closes it (after the loop's queued
/// submissions went to the kernel, so no queued op can reach a reused
/// descriptor number); with no loop reachable (another thread, or a
/// thread-local's destructor) it is a plain `close(2)`. A close blocks
/// when `SO_LINGER` is set (see [`TcpStream::set_linger`]).
pub struct TcpStream {
    fd: RingFd,
    /// Bytes a dropped receive stream left behind.
    rx: StashCell,
}

impl TcpStream {
    fn from_fd(fd: RingFd) -> TcpStream {
        TcpStream {
            fd,
            rx: StashCell::default(),
        }
    }

    /// Connects to `addr` (`IORING_OP_CONNECT`), trying each resolved
    /// address in turn; the last error is returned if none accepts
    /// (`ECONNREFUSED` "Connection refused" for a closed port). Name lookup,
    /// if `addr` is a name, blocks; IP addresses do not.
    #[track_caller]
    pub fn connect(addr: impl ToSocketAddrs) -> Io<impl Future<Output = Result<TcpStream>>> {
        let addrs = resolve(addr);
        Io::new(async move {
            let mut last = None;
            for a in addrs? {
                let fd = socket(domain_of(&a), libc::SOCK_STREAM)?;
                match ops::connect(fd.raw(), to_boxed(&a)).await {
                    Ok(()) => return Ok(TcpStream::from_fd(fd)),
                    // A cancel or a deadline ends the whole call.
                    Err(e @ (Error::Cancelled { .. } | Error::Timeout)) => return Err(e),
                    Err(e) => last = Some(e),
                }
            }
            Err(last.unwrap_or_else(|| Error::InvalidArgument("no address to connect to".into())))
        })
    }

    stream_io!();

    /// Sends the initialised bytes of `buf` once, without copying them
    /// (`IORING_OP_SEND_ZC`, Linux 6.0): the kernel reads the buffer while
    /// the data goes out, and the call returns (with the count sent and the
    /// buffer) only when the kernel's second completion says it no longer
    /// reads it. Worth it for large sends (tens of KiB and up) to a real
    /// network device; on loopback, or for small buffers, the kernel copies
    /// anyway and a plain [`write`](TcpStream::write) is cheaper. Where
    /// the ring lacks the opcode it is a plain send. Cancelling or dropping
    /// it follows the guide's rules: the buffer stays with the runtime
    /// until the kernel's last completion. That notification comes only
    /// once the network stack has let go of the data, so a send the peer
    /// has not taken (a slow or stalled reader) holds its buffer, and this
    /// call, until it does.
    #[track_caller]
    pub fn send_zc<B: crate::io::IoBuf>(
        &self,
        buf: B,
    ) -> Io<impl Future<Output = crate::io::BufResult<usize, B>> + '_> {
        let fd = self.fd.raw();
        Io::new(async move {
            let _me = self;
            ops::send_zc(fd, buf).await
        })
    }

    /// The address of the other end.
    pub fn peer_addr(&self) -> Result<SocketAddr> {
        with_std(self.fd.raw(), |s: &std::net::TcpStream| s.peer_addr())
    }

    /// This end's address.
    pub fn local_addr(&self) -> Result<SocketAddr> {
        with_std(self.fd.raw(), |s: &std::net::TcpStream| s.local_addr())
    }

    /// Sets `TCP_NODELAY` (no Nagle delay for small writes).
    pub fn set_nodelay(&self, on: bool) -> Result<()> {
        set_int_opt(
            self.fd.raw(),
            libc::IPPROTO_TCP,
            libc::TCP_NODELAY,
            on as i32,
        )
    }

    /// Whether `TCP_NODELAY` is set.
    pub fn nodelay(&self) -> Result<bool> {
        Ok(get_int_opt(self.fd.raw(), libc::IPPROTO_TCP, libc::TCP_NODELAY)? != 0)
    }

    /// Sets `SO_LINGER`: `Some(ZERO)` makes a close reset the connection.
    ///
    /// With a non-zero linger time, closing the socket waits until its
    /// unsent data is acknowledged or the time runs out, and dropping the
    /// stream closes it with a plain `close(2)`: the drop blocks the loop's
    /// thread for up to that time. Shut the write half down and read to end
    /// of stream first, or set the linger time back to `None`, before
    /// dropping such a stream on a loop thread.
    pub fn set_linger(&self, dur: Option<std::time::Duration>) -> Result<()> {
        let linger = libc::linger {
            l_onoff: dur.is_some() as i32,
            l_linger: dur.map_or(0, |d| d.as_secs().min(i32::MAX as u64) as i32),
        };
        // SAFETY: the option value is a live `linger` of the size we pass.
        let rc = unsafe {
            libc::setsockopt(
                self.fd.raw(),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                (&linger as *const libc::linger).cast(),
                std::mem::size_of::<libc::linger>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        Ok(())
    }

    /// Takes over a `std` stream (blocking or not: the ring does not care).
    pub fn from_std(stream: std::net::TcpStream) -> TcpStream {
        use std::os::fd::IntoRawFd;
        // SAFETY: the std stream gave up its descriptor to us.
        TcpStream::from_fd(unsafe { RingFd::from_raw(stream.into_raw_fd()) })
    }
}

fd_traits!(TcpStream, rx);

impl fmt::Debug for TcpStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TcpStream")
            .field("fd", &self.fd)
            .field("local", &self.local_addr().ok())
            .field("peer", &self.peer_addr().ok())
            .finish()
    }
}

pub(crate) fn domain_of(addr: &SocketAddr) -> i32 {
    match addr {
        SocketAddr::V4(_) => libc::AF_INET,
        SocketAddr::V6(_) => libc::AF_INET6,
    }
}
