//! Unix-domain stream sockets on the ring.
//!
//! # Safety
//!
//! Adopting a descriptor (`RingFd::from_raw`, `OwnedFd::from_raw_fd`) is
//! `unsafe` because the new owner closes it: it is only ever done with a
//! descriptor the kernel has just created for us, or one a std type gave up,
//! so nothing else owns it. `socketpair(2)` writes two descriptors into a
//! two-element array. Ring submissions (`ops::submit`, `Op::try_submit`) are
//! `unsafe` because the kernel reads and writes the memory an SQE names until
//! the CQE: every SQE here points into heap memory the op owns (moved into
//! its data before submission, handed back with the result, parked in the op
//! table if the future is dropped), or into no memory at all.

use std::fmt;
use std::future::Future;
use std::os::unix::net::SocketAddr;
use std::path::Path;

use super::addr::unix_raw;
use super::socket::{bind, listen, socket, with_std};
use super::{fd_traits, stream_io};
use crate::error::Result;
use crate::io::Io;
use crate::io::buf_ring::StashCell;
use crate::io::fd::RingFd;
use crate::io::ops::{self, SockAddrBuf};

/// A Unix-domain socket listening for connections.
///
/// Dropping it closes the socket but, as with `std`, does not remove the
/// socket file.
pub struct UnixListener {
    fd: RingFd,
}

impl UnixListener {
    /// Binds to the socket file `path` (which must not exist) and listens
    /// (backlog 1024).
    pub fn bind(path: impl AsRef<Path>) -> Result<UnixListener> {
        let addr = unix_raw(path.as_ref())?;
        let fd = socket(libc::AF_UNIX, libc::SOCK_STREAM)?;
        bind(fd.raw(), &addr)?;
        listen(fd.raw(), 1024)?;
        Ok(UnixListener { fd })
    }

    /// Accepts one connection (`IORING_OP_ACCEPT`): the stream and the
    /// peer's address (usually unnamed). A connection accepted after the
    /// future was dropped is closed, not leaked.
    #[track_caller]
    pub fn accept(&self) -> Io<impl Future<Output = Result<(UnixStream, SocketAddr)>> + '_> {
        let fd = self.fd.raw();
        Io::new(async move {
            let _me = self;
            let (raw, _) = ops::accept(fd).await?;
            // SAFETY: a fresh descriptor the kernel created for us.
            let stream = UnixStream::from_fd(unsafe { RingFd::from_raw(raw) });
            let peer = stream.peer_addr()?;
            Ok((stream, peer))
        })
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> Result<SocketAddr> {
        with_std(self.fd.raw(), |s: &std::os::unix::net::UnixListener| {
            s.local_addr()
        })
    }
}

fd_traits!(UnixListener);

impl fmt::Debug for UnixListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UnixListener")
            .field("fd", &self.fd)
            .field("addr", &self.local_addr().ok())
            .finish()
    }
}

/// A Unix-domain stream connection.
pub struct UnixStream {
    fd: RingFd,
    /// Bytes a dropped receive stream left behind.
    rx: StashCell,
}

impl UnixStream {
    fn from_fd(fd: RingFd) -> UnixStream {
        UnixStream {
            fd,
            rx: StashCell::default(),
        }
    }

    /// Connects to the socket file `path` (`IORING_OP_CONNECT`).
    #[track_caller]
    pub fn connect(path: impl AsRef<Path>) -> Io<impl Future<Output = Result<UnixStream>>> {
        let addr = unix_raw(path.as_ref());
        Io::new(async move {
            let (storage, len) = addr?;
            let fd = socket(libc::AF_UNIX, libc::SOCK_STREAM)?;
            ops::connect(fd.raw(), Box::new(SockAddrBuf { storage, len })).await?;
            Ok(UnixStream::from_fd(fd))
        })
    }

    /// A connected pair of sockets (`socketpair(2)`).
    pub fn pair() -> Result<(UnixStream, UnixStream)> {
        let mut fds = [0; 2];
        // SAFETY: socketpair writes two descriptors into `fds`.
        let rc = unsafe {
            libc::socketpair(
                libc::AF_UNIX,
                libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
                0,
                fds.as_mut_ptr(),
            )
        };
        if rc < 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        // SAFETY: two fresh descriptors nothing else owns.
        let (a, b) = unsafe { (RingFd::from_raw(fds[0]), RingFd::from_raw(fds[1])) };
        Ok((UnixStream::from_fd(a), UnixStream::from_fd(b)))
    }

    stream_io!();

    /// The address of the other end.
    pub fn peer_addr(&self) -> Result<SocketAddr> {
        with_std(self.fd.raw(), |s: &std::os::unix::net::UnixStream| {
            s.peer_addr()
        })
    }

    /// This end's address.
    pub fn local_addr(&self) -> Result<SocketAddr> {
        with_std(self.fd.raw(), |s: &std::os::unix::net::UnixStream| {
            s.local_addr()
        })
    }
}

fd_traits!(UnixStream, rx);

impl fmt::Debug for UnixStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UnixStream").field("fd", &self.fd).finish()
    }
}
