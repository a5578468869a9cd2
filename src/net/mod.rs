//! Sockets on the ring: TCP, UDP and Unix-domain streams.
//!
//! Connecting, accepting, sending and receiving are io_uring operations
//! (`CONNECT`, `ACCEPT` — multishot for [`TcpListener::incoming`] —, `RECV`,
//! `SEND`, `RECVMSG`, `SENDMSG`, `SHUTDOWN`); creating, binding and
//! listening are plain syscalls, which never block. Sockets are blocking
//! descriptors: the ring does not need `O_NONBLOCK`.
//!
//! Every I/O call takes an owned buffer and gives it back with the result
//! (see [`crate::io`]), returns an [`Io`](crate::io::Io) future that takes a
//! deadline (`.timeout(d)`, an `IORING_OP_LINK_TIMEOUT`), and is a ringio
//! await point: cancelling the task cancels the operation in the kernel, and
//! a result that arrived first is returned rather than lost.
//!
//! ```no_run
//! use ringio::net::{TcpListener, TcpStream};
//!
//! ringio::run(async {
//!     let listener = TcpListener::bind("127.0.0.1:0")?;
//!     let addr = listener.local_addr()?;
//!     let client = TcpStream::connect(addr).await?;
//!     let (server, _peer) = listener.accept().await?;
//!     let (res, _) = client.write_all(b"hello".to_vec()).await;
//!     res?;
//!     let (res, buf) = server.read(Vec::with_capacity(64)).await;
//!     assert_eq!(&buf[..res?], b"hello");
//!     Ok::<(), ringio::Error>(())
//! })
//! .unwrap();
//! ```
//!
//! # Safety
//!
//! Adopting a descriptor (`RingFd::from_raw`, `OwnedFd::from_raw_fd`) is
//! `unsafe` because the new owner closes it: it is only ever done with a
//! descriptor the kernel has just created for us, or one a std type gave up,
//! so nothing else owns it.

mod addr;
pub(crate) mod direct;
mod recv_multi;
mod socket;
mod tcp;
mod udp;
mod udp_multi;
mod unix;

pub use direct::{DEFAULT_DIRECT_TABLE, DirectStream};
pub use recv_multi::RecvStream;
pub use tcp::{INCOMING_QUEUE_MAX, Incoming, ListenOptions, TcpListener, TcpStream};
pub use udp::UdpSocket;
pub use udp_multi::{DATAGRAM_QUEUE_MAX, Datagram, MIN_DATAGRAM_BUF, RecvFromStream};
pub use unix::{UnixListener, UnixStream};

/// The read, write and shutdown calls of a connected stream socket type
/// with an `fd: RingFd` field.
macro_rules! stream_io {
    () => {
        /// Receives into `buf` (its whole capacity, from its start; a
        /// `Vec`'s length becomes the count received) with
        /// `IORING_OP_RECV`. Gives the count and the buffer back, also on
        /// error, timeout or cancellation. `Ok(0)` means the peer closed its
        /// write half.
        ///
        /// A buffer with no capacity (`Vec::new()`, an empty slice) is
        /// `Error::InvalidArgument`, not `Ok(0)`, which would read as the
        /// peer closing: pass `Vec::with_capacity(n)`.
        ///
        /// Bytes a dropped [`RecvStream`](crate::net::RecvStream), `read`
        /// or `read_exact` had already received are returned first,
        /// without a ring operation.
        ///
        /// Dropping this future (a `select` that picked a timer, say)
        /// loses nothing: if the receive completed before the kernel saw
        /// the cancel, its bytes stay with the socket for the next read
        /// (see the guide's cancellation rule 7), which waits until the
        /// dropped receive has completed.
        #[track_caller]
        pub fn read<B: $crate::io::IoBufMut>(
            &self,
            buf: B,
        ) -> $crate::io::Io<
            impl ::std::future::Future<Output = $crate::io::BufResult<usize, B>> + '_,
        > {
            let fd = self.fd.raw();
            // The borrow of `self.rx` keeps the socket open until the op is
            // submitted.
            $crate::io::Io::new(async move { $crate::io::ops::recv_stream(fd, buf, &self.rx).await })
        }

        /// Receives until `buf`'s whole capacity is filled (from its start;
        /// a `Vec`'s length becomes the count received), as many
        /// `IORING_OP_RECV`s as it takes.
        ///
        /// If the peer closes first, the error is `UnexpectedEof`, saying
        /// how many bytes came, and the buffer comes back holding them. On
        /// any error, timeout or cancellation the buffer comes back with
        /// the bytes received so far. A buffer with no capacity is
        /// `Error::InvalidArgument`.
        ///
        /// If this future is dropped part-way (the buffer then cannot come
        /// back), the bytes already in the buffer and those of the receive
        /// in flight are copied back to the socket, and its next read
        /// returns them first: nothing is lost, but a `read_exact` raced
        /// against a timer starts over from the same bytes.
        #[track_caller]
        pub fn read_exact<B: $crate::io::IoBufMut>(
            &self,
            buf: B,
        ) -> $crate::io::Io<
            impl ::std::future::Future<Output = $crate::io::BufResult<(), B>> + '_,
        > {
            let fd = self.fd.raw();
            $crate::io::Io::new(async move {
                $crate::io::ops::recv_exact(fd, buf, &self.rx).await
            })
        }

        /// Receives into buffers of `ring` as they arrive: a stream of
        /// [`RingBuf`](crate::io::RingBuf)s, one multishot `IORING_OP_RECV`
        /// on Linux 6.0+ with a kernel-registered pool (see
        /// [`BufRing`](crate::io::BufRing) and
        /// [`RecvStream`](crate::net::RecvStream)). An idle connection
        /// waiting here holds no buffer. Bytes received but not yet handed
        /// out when the stream is dropped stay with the socket.
        pub fn recv_multishot(&self, ring: &$crate::io::BufRing) -> $crate::net::RecvStream<'_> {
            $crate::net::RecvStream::new(self.fd.raw(), ring, self.rx.get())
        }

        /// The socket's stash of received bytes not yet handed out (for
        /// `io::Compat`'s receive stream, which outlives a borrow).
        pub(crate) fn rx_stash(&self) -> $crate::io::buf_ring::Stash {
            self.rx.get()
        }

        /// Sends the initialised bytes of `buf` once with `IORING_OP_SEND`
        /// (`MSG_NOSIGNAL`: a reset peer gives `EPIPE`, not `SIGPIPE`).
        /// Gives the count sent and the buffer back.
        #[track_caller]
        pub fn write<B: $crate::io::IoBuf>(
            &self,
            buf: B,
        ) -> $crate::io::Io<
            impl ::std::future::Future<Output = $crate::io::BufResult<usize, B>> + '_,
        > {
            let fd = self.fd.raw();
            $crate::io::Io::new(async move {
                let _me = self;
                $crate::io::ops::write(fd, buf, $crate::io::ops::WriteTo::Socket(0)).await
            })
        }

        /// Sends every initialised byte of `buf`, as many sends as it takes.
        #[track_caller]
        pub fn write_all<B: $crate::io::IoBuf>(
            &self,
            buf: B,
        ) -> $crate::io::Io<
            impl ::std::future::Future<Output = $crate::io::BufResult<(), B>> + '_,
        > {
            let fd = self.fd.raw();
            $crate::io::Io::new(async move {
                let _me = self;
                $crate::io::ops::write_all(fd, buf, $crate::io::ops::WriteTo::Socket(0)).await
            })
        }

        /// Shuts down the read half, the write half (the peer reads end of
        /// stream) or both, with `IORING_OP_SHUTDOWN`.
        #[track_caller]
        pub fn shutdown(
            &self,
            how: ::std::net::Shutdown,
        ) -> $crate::io::Io<impl ::std::future::Future<Output = $crate::Result<()>> + '_> {
            let fd = self.fd.raw();
            let how = match how {
                ::std::net::Shutdown::Read => libc::SHUT_RD,
                ::std::net::Shutdown::Write => libc::SHUT_WR,
                ::std::net::Shutdown::Both => libc::SHUT_RDWR,
            };
            $crate::io::Io::new(async move {
                let _me = self;
                $crate::io::ops::shutdown(fd, how).await
            })
        }
    };
}

/// `AsRawFd`, `IntoRawFd` and `FromRawFd` for a type with an `fd: RingFd`.
macro_rules! fd_traits {
    ($t:ty) => {
        $crate::net::fd_traits!($t, fd,);
    };
    ($t:ty, rx) => {
        $crate::net::fd_traits!($t, fd, rx: ::std::default::Default::default());
    };
    ($t:ty, fd, $($extra:tt)*) => {
        impl ::std::os::fd::AsRawFd for $t {
            fn as_raw_fd(&self) -> ::std::os::fd::RawFd {
                self.fd.raw()
            }
        }

        impl ::std::os::fd::IntoRawFd for $t {
            fn into_raw_fd(self) -> ::std::os::fd::RawFd {
                self.fd.into_raw()
            }
        }

        impl ::std::os::fd::FromRawFd for $t {
            /// Takes ownership of `fd`, which must be an open descriptor of the
            /// right kind that nothing else will close.
            unsafe fn from_raw_fd(fd: ::std::os::fd::RawFd) -> Self {
                Self {
                    // SAFETY: forwarded from the caller.
                    fd: unsafe { $crate::io::fd::RingFd::from_raw(fd) },
                    $($extra)*
                }
            }
        }
    };
}

pub(crate) use {fd_traits, stream_io};
