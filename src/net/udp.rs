//! UDP sockets on the ring (`IORING_OP_SENDMSG`/`RECVMSG` for addressed
//! datagrams, `SEND`/`RECV` once connected).
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

use super::addr::{from_raw, resolve, to_raw};
use super::fd_traits;
use super::socket::{bind, connect_now, socket, with_std};
use super::tcp::domain_of;
use super::udp_multi::{DgramStashCell, RecvFromStream};
use crate::error::{Error, Result};
use crate::io::fd::RingFd;
use crate::io::ops::{self, WriteTo};
use crate::io::{BufResult, BufRing, Io, IoBuf, IoBufMut};

/// A UDP socket.
pub struct UdpSocket {
    fd: RingFd,
    /// Datagrams a dropped [`RecvFromStream`] had received, returned first.
    rx: DgramStashCell,
}

impl UdpSocket {
    /// Binds a UDP socket to `addr` (port 0 picks a free port), trying each
    /// resolved address in turn.
    pub fn bind(addr: impl ToSocketAddrs) -> Result<UdpSocket> {
        let mut last = None;
        for a in resolve(addr)? {
            let attempt = socket(domain_of(&a), libc::SOCK_DGRAM).and_then(|fd| {
                bind(fd.raw(), &to_raw(&a))?;
                Ok(UdpSocket {
                    fd,
                    rx: DgramStashCell::default(),
                })
            });
            match attempt {
                Ok(s) => return Ok(s),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| Error::InvalidArgument("no address to bind".into())))
    }

    /// Sets the default peer: [`UdpSocket::send`] goes there and
    /// [`UdpSocket::recv`] takes datagrams only from there. (A plain
    /// `connect(2)`: for UDP it only records the address.)
    pub fn connect(&self, addr: impl ToSocketAddrs) -> Result<()> {
        let mut last = None;
        for a in resolve(addr)? {
            match connect_now(self.fd.raw(), &to_raw(&a)) {
                Ok(()) => return Ok(()),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| Error::InvalidArgument("no address to connect to".into())))
    }

    /// Sends the initialised bytes of `buf` as one datagram to `target`.
    #[track_caller]
    pub fn send_to<B: IoBuf>(
        &self,
        buf: B,
        target: impl ToSocketAddrs,
    ) -> Io<impl Future<Output = BufResult<usize, B>> + '_> {
        let fd = self.fd.raw();
        let target = resolve(target).map(|v| v[0]);
        Io::new(async move {
            let _me = self;
            match target {
                Ok(t) => ops::send_msg(fd, buf, Some(to_raw(&t))).await,
                Err(e) => (Err(e), buf),
            }
        })
    }

    /// Receives one datagram into `buf` (its whole capacity; a longer
    /// datagram is truncated): its length and sender. A buffer with no
    /// capacity is `Error::InvalidArgument` (use `Vec::with_capacity(n)`).
    /// Datagrams a dropped [`RecvFromStream`] had already received are
    /// returned first, without a ring operation.
    #[track_caller]
    pub fn recv_from<B: IoBufMut>(
        &self,
        mut buf: B,
    ) -> Io<impl Future<Output = BufResult<(usize, SocketAddr), B>> + '_> {
        let fd = self.fd.raw();
        Io::new(async move {
            let _me = self;
            if buf.bytes_total() > 0 {
                if let Some(got) = self.rx.recv_into(&mut buf) {
                    return (Ok(got), buf);
                }
            }
            let (res, buf) = ops::recv_msg(fd, buf).await;
            let res = res.and_then(|(n, storage, len)| Ok((n, from_raw(&storage, len)?)));
            (res, buf)
        })
    }

    /// Sends `buf` as one datagram to the connected peer.
    #[track_caller]
    pub fn send<B: IoBuf>(&self, buf: B) -> Io<impl Future<Output = BufResult<usize, B>> + '_> {
        let fd = self.fd.raw();
        Io::new(async move {
            let _me = self;
            ops::write(fd, buf, WriteTo::Socket(0)).await
        })
    }

    /// Receives one datagram from the connected peer into `buf`. A buffer
    /// with no capacity is `Error::InvalidArgument` (use
    /// `Vec::with_capacity(n)`). Datagrams a dropped [`RecvFromStream`] had
    /// already received are returned first.
    #[track_caller]
    pub fn recv<B: IoBufMut>(
        &self,
        mut buf: B,
    ) -> Io<impl Future<Output = BufResult<usize, B>> + '_> {
        let fd = self.fd.raw();
        Io::new(async move {
            let _me = self;
            if buf.bytes_total() > 0 {
                if let Some((n, _)) = self.rx.recv_into(&mut buf) {
                    return (Ok(n), buf);
                }
            }
            ops::recv(fd, buf, 0).await
        })
    }

    /// Receives datagrams into buffers of `ring` as they arrive: a stream
    /// of [`Datagram`](crate::net::Datagram)s with their sources, one
    /// multishot `IORING_OP_RECVMSG` on Linux 6.0+ with a kernel-registered
    /// pool, a `recv_from` per datagram with a user-space one (see
    /// [`RecvFromStream`]). Datagrams received but not yet handed out when
    /// the stream is dropped stay with the socket, for its next
    /// `recv_from`, `recv` or stream.
    pub fn recv_from_multishot(&self, ring: &BufRing) -> RecvFromStream<'_> {
        RecvFromStream::new(self.fd.raw(), ring, self.rx.get())
    }

    /// The address the socket is bound to.
    pub fn local_addr(&self) -> Result<SocketAddr> {
        with_std(self.fd.raw(), |s: &std::net::UdpSocket| s.local_addr())
    }

    /// The connected peer's address.
    pub fn peer_addr(&self) -> Result<SocketAddr> {
        with_std(self.fd.raw(), |s: &std::net::UdpSocket| s.peer_addr())
    }

    /// Sets `SO_BROADCAST`.
    pub fn set_broadcast(&self, on: bool) -> Result<()> {
        with_std(self.fd.raw(), |s: &std::net::UdpSocket| s.set_broadcast(on))
    }

    /// Takes over a `std` UDP socket.
    pub fn from_std(sock: std::net::UdpSocket) -> UdpSocket {
        use std::os::fd::IntoRawFd;
        UdpSocket {
            // SAFETY: the std socket gave up its descriptor to us.
            fd: unsafe { RingFd::from_raw(sock.into_raw_fd()) },
            rx: DgramStashCell::default(),
        }
    }
}

fd_traits!(UdpSocket, rx);

impl fmt::Debug for UdpSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UdpSocket")
            .field("fd", &self.fd)
            .field("local", &self.local_addr().ok())
            .finish()
    }
}
