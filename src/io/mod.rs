//! Plain operations on file descriptors, submitted to the ring.
//!
//! These are the building blocks the socket and file types use; they take
//! owned buffers and give them back with the result, whatever happened.

use std::os::fd::{AsRawFd, RawFd};

use io_uring::{opcode, types};

use crate::error::Result;
use crate::runtime::Op;

/// A no-op through the ring (`IORING_OP_NOP`): the cost of one op, and a
/// cancellation point.
pub async fn nop() -> Result<()> {
    // SAFETY: NOP points to no memory.
    let op = unsafe { Op::submit(opcode::Nop::new().build(), ())? };
    op.await.result.map(|_| ())
}

/// Reads up to `buf.capacity()` bytes from `fd` at its current position
/// (`IORING_OP_READ` with offset -1) into `buf`, replacing its contents.
/// Returns the count and the buffer (also on error or cancellation).
pub async fn read<F: AsRawFd>(fd: &F, mut buf: Vec<u8>) -> (Result<usize>, Vec<u8>) {
    buf.clear();
    let raw: RawFd = fd.as_raw_fd();
    let cap = buf.capacity().min(u32::MAX as usize) as u32;
    let sqe = opcode::Read::new(types::Fd(raw), buf.as_mut_ptr(), cap)
        .offset(u64::MAX)
        .build();
    // SAFETY: the SQE points into `buf`'s heap allocation, which the Op owns
    // (and parks in the op table if dropped) until the CQE.
    let op = match unsafe { Op::submit(sqe, buf) } {
        Ok(op) => op,
        Err(e) => return (Err(e), Vec::new()),
    };
    let out = op.await;
    let mut buf = out.data;
    match out.result {
        Ok(n) => {
            // SAFETY: the kernel initialised the first `n` bytes.
            unsafe { buf.set_len(n as usize) };
            (Ok(n as usize), buf)
        }
        Err(e) => (Err(e), buf),
    }
}

/// Writes `buf` to `fd` at its current position (`IORING_OP_WRITE`).
/// Returns the count written and the buffer.
pub async fn write<F: AsRawFd>(fd: &F, buf: Vec<u8>) -> (Result<usize>, Vec<u8>) {
    let raw: RawFd = fd.as_raw_fd();
    let len = buf.len().min(u32::MAX as usize) as u32;
    let sqe = opcode::Write::new(types::Fd(raw), buf.as_ptr(), len)
        .offset(u64::MAX)
        .build();
    // SAFETY: the SQE points into `buf`'s heap allocation, owned by the Op
    // until the CQE.
    let op = match unsafe { Op::submit(sqe, buf) } {
        Ok(op) => op,
        Err(e) => return (Err(e), Vec::new()),
    };
    let out = op.await;
    (out.result.map(|n| n as usize), out.data)
}
