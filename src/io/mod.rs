//! I/O on the ring: owned buffers, deadlines, and plain operations on file
//! descriptors.
//!
//! Every operation is submitted to the current loop's io_uring and is a
//! ringio await point ([the guide's cancellation rules](crate::guide)): cancelling the task sends
//! `IORING_OP_ASYNC_CANCEL`, and the call returns `Err(Cancelled)` once the
//! kernel confirmed it — or its real result if it completed first (nothing
//! is lost; the cancellation then waits for the next await point).
//! Dropping the future mid-flight cancels the operation the same way; its
//! buffer stays owned by the loop until the kernel is done with it.
//!
//! Buffers are moved into an operation and come back with its result
//! ([`BufResult`]); see [`IoBuf`] and [`IoBufMut`]. Calls return an [`Io`]
//! future, whose [`Io::timeout`] puts an `IORING_OP_LINK_TIMEOUT` on the
//! call's ring operations. [`Compat`] adapts a stream to the
//! `futures-util` `AsyncRead`/`AsyncWrite` traits. [`BufRing`] is a pool of
//! receive buffers the kernel fills as data arrives (provided-buffer ring,
//! multishot receive), handed out as [`RingBuf`]s.
//!
//! # Safety
//!
//! Ring submissions (`ops::submit`, `Op::try_submit`) are `unsafe` because
//! the kernel reads and writes the memory an SQE names until the CQE: every
//! SQE here points into heap memory the op owns (moved into its data before
//! submission, handed back with the result, parked in the op table if the
//! future is dropped), or into no memory at all.

mod buf;
pub(crate) mod buf_ring;
mod compat;
pub(crate) mod fd;
mod fixed_buf;
pub(crate) mod ops;
mod timeout;

use std::os::fd::AsRawFd;

use io_uring::opcode;

pub use buf::{AlignedBuf, BufResult, IoBuf, IoBufMut, Slice};
pub use buf_ring::{BufRing, BufRingMode, BufRingOptions, RingBuf};
pub use compat::Compat;
pub use fixed_buf::{FixedBuf, FixedBufs};
pub use timeout::{Io, with_timeout};

use crate::error::Result;
use ops::WriteTo;

/// A no-op through the ring (`IORING_OP_NOP`): the cost of one op, and a
/// cancellation point.
#[track_caller]
pub fn nop() -> Io<impl Future<Output = Result<()>>> {
    Io::new(async {
        // SAFETY: NOP points to no memory.
        let (res, _, ()) = unsafe { ops::submit(opcode::Nop::new().build(), (), None) }.await;
        res.map(|_| ())
    })
}

/// Reads from `fd` at its current position (`IORING_OP_READ`, offset -1)
/// into `buf` (its whole capacity, from its start; a `Vec`'s length becomes
/// the count read). Gives the count and the buffer back, also on error,
/// timeout or cancellation. `Ok(0)` is end of file.
///
/// A buffer with no capacity (`Vec::new()`, an empty slice) is
/// `Error::InvalidArgument`, not `Ok(0)`, which would read as end of file:
/// a `Vec` is read into up to its capacity, so pass
/// `Vec::with_capacity(n)`.
///
/// Bytes the kernel read for a future that is then dropped (rather than
/// cancelled or timed out) are lost with its buffer: unlike a socket's
/// `read`, there is nowhere to keep them (the guide's cancellation rule 7).
#[track_caller]
pub fn read<'a, F: AsRawFd, B: IoBufMut>(
    fd: &'a F,
    buf: B,
) -> Io<impl Future<Output = BufResult<usize, B>> + 'a> {
    let raw = fd.as_raw_fd();
    Io::new(async move {
        // Borrowing `fd` for the future's life keeps the descriptor open
        // until the operation has been submitted.
        let _fd = fd;
        ops::read_at(raw, buf, u64::MAX).await
    })
}

/// Writes the initialised bytes of `buf` to `fd` at its current position
/// (`IORING_OP_WRITE`, offset -1), once. Gives the count and the buffer.
#[track_caller]
pub fn write<'a, F: AsRawFd, B: IoBuf>(
    fd: &'a F,
    buf: B,
) -> Io<impl Future<Output = BufResult<usize, B>> + 'a> {
    let raw = fd.as_raw_fd();
    Io::new(async move {
        let _fd = fd;
        ops::write(raw, buf, WriteTo::File(u64::MAX)).await
    })
}

/// Writes every initialised byte of `buf` to `fd` at its current position,
/// as many `IORING_OP_WRITE`s as it takes.
#[track_caller]
pub fn write_all<'a, F: AsRawFd, B: IoBuf>(
    fd: &'a F,
    buf: B,
) -> Io<impl Future<Output = BufResult<(), B>> + 'a> {
    let raw = fd.as_raw_fd();
    Io::new(async move {
        let _fd = fd;
        ops::write_all(raw, buf, WriteTo::File(u64::MAX)).await
    })
}
