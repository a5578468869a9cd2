//! `tokio::io::{AsyncRead, AsyncWrite}` for [`Compat`] (cargo feature
//! `tokio-io`).
//!
//! [`Compat`] is ringio's one adapter from owned-buffer ring operations to
//! poll-style I/O traits; with this feature it implements tokio's traits
//! besides the `futures-util` ones, for any stream it wraps: a
//! [`TcpStream`](crate::net::TcpStream), a
//! [`UnixStream`](crate::net::UnixStream), or a [`File`](crate::fs::File)
//! at its current position. Only tokio's trait definitions are used (the
//! `tokio` dependency has no features): no tokio runtime runs, and the
//! futures must be polled by a ringio loop.
//!
//! The rules are `Compat`'s:
//!
//! - **Reads** go to the ring with the adapter's own buffer; `poll_read`
//!   copies from it into tokio's `ReadBuf` (no zeroing of the caller's
//!   buffer). A read the caller stopped waiting for keeps going, and its
//!   bytes are served by the next `poll_read`.
//! - **Writes are write-behind**: `poll_write` copies the bytes into the
//!   adapter's buffer, submits the send and reports them written at once.
//!   The next `poll_write` waits for that send to finish, and an error it
//!   got shows up there or at `poll_flush`/`poll_shutdown`. So call
//!   `poll_flush` (`flush().await`) before relying on the peer having the
//!   bytes; `poll_shutdown` flushes, then shuts the socket's write half. A
//!   vectored write gathers its slices into the buffer and sends them with
//!   one ring operation (`is_write_vectored` is `true`).
//! - **Cancellation**: the operations are ringio await points. Cancelling
//!   the task that polls the adapter cancels the operation in flight
//!   (`IORING_OP_ASYNC_CANCEL`) and the poll returns an `io::Error` that
//!   carries [`Error::Cancelled`](crate::Error::Cancelled); `?` into a
//!   [`ringio::Error`](crate::Error) gives the cancellation back unchanged.
//!   Dropping the adapter cancels what is in flight: bytes of a write not
//!   yet flushed may be lost, as with any write-behind buffer.
//!
//! ```
//! use ringio::io::Compat;
//! use ringio::net::UnixStream;
//! use tokio::io::{AsyncRead, AsyncWrite};
//!
//! fn tokio_io<T: AsyncRead + AsyncWrite + Unpin>(_: &T) {}
//!
//! ringio::run(async {
//!     let (a, _b) = UnixStream::pair()?;
//!     let a = Compat::new(a);
//!     tokio_io(&a);
//!     Ok::<_, ringio::Error>(())
//! })
//! .unwrap();
//! ```

use std::io::{self, IoSlice};
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::io::Compat;

impl<S: AsRawFd + Unpin> AsyncRead for Compat<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let want = buf.remaining();
        self.get_mut()
            .poll_read_into(cx, want, |bytes| buf.put_slice(bytes))
            .map_ok(|_| ())
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

    /// Gathers the slices into one ring write (up to the adapter's buffer
    /// capacity), instead of a write per slice.
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().poll_write_from(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_flush_inner(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_close_inner(cx)
    }
}
