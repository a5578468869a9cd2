//! Direct descriptors: connections accepted straight into the ring's
//! table of registered files, used with `IOSQE_FIXED_FILE`.
//!
//! # Safety
//!
//! Ring submissions (`ops::submit`, `Op::try_submit`) are `unsafe` because
//! the kernel reads and writes the memory an SQE names until the CQE: every
//! SQE here points into heap memory the op owns (moved into its data before
//! submission, handed back with the result, parked in the op table if the
//! future is dropped), or into no memory at all.

use std::fmt;
use std::future::Future;

use io_uring::opcode;
use io_uring::types::{DestinationSlot, Fd, Fixed};

use super::TcpListener;
use crate::error::{Error, Result};
use crate::io::buf_ring::StashCell;
use crate::io::ops::{self, Target, WriteTo, submit};
use crate::io::{BufResult, Io, IoBuf, IoBufMut};
use crate::runtime::context;

/// Slots of the direct descriptor table a loop registers on its first
/// direct accept, unless [`DirectStream::reserve_table`] asked for another
/// size first.
pub const DEFAULT_DIRECT_TABLE: u32 = 4096;

/// A TCP connection held only as a slot of the ring's direct descriptor
/// table (from [`TcpListener::accept_direct`]): no file descriptor in the
/// process's table, and each operation on it names the slot
/// (`IOSQE_FIXED_FILE`), which spares the kernel a descriptor lookup and
/// reference count per operation. It belongs to the loop that accepted it.
/// Dropping it closes the slot through the ring (`IORING_OP_CLOSE` on the
/// slot), after the operations already queued.
pub struct DirectStream {
    slot: u32,
    loop_id: u64,
    /// Bytes a dropped read had received, returned first by the next one.
    rx: StashCell,
}

fn unsupported() -> Error {
    Error::Unsupported(
        "accepting into the direct descriptor table (IORING_FILE_INDEX_ALLOC) is not supported \
         by this kernel's io_uring; it needs Linux 5.19 or later (use TcpListener::accept)"
            .into(),
    )
}

/// The running loop's direct descriptor table size, registering one of
/// `size` slots if it has none. Unsupported before 5.19. Shared by direct
/// accepts and direct opens (`fs::OpenOptions::open_direct`).
pub(crate) fn table(size: u32) -> Result<u32> {
    context::with_loop(|lp| {
        let mut d = lp.driver.borrow_mut();
        // The probe has no bit for IORING_FILE_INDEX_ALLOC; IORING_OP_SOCKET
        // came in the same release (5.19).
        if !d.supports(opcode::Socket::CODE) {
            return Err(unsupported());
        }
        d.file_table(size).map_err(|e| match e.raw_os_error() {
            Some(libc::EINVAL | libc::ENOSYS) => unsupported(),
            _ => Error::from(std::io::Error::new(
                e.kind(),
                format!("registering a direct descriptor table of {size} slots failed: {e}"),
            )),
        })
    })
    .unwrap_or_else(|| Err(Error::no_running_loop()))
}

/// The error of an op that found every slot of the table taken (`ENFILE`).
pub(crate) fn table_full(size: u32) -> Error {
    Error::from(std::io::Error::new(
        std::io::ErrorKind::QuotaExceeded,
        format!(
            "the ring's direct descriptor table is full (all {size} slots in use): \
             drop DirectStreams and DirectFiles, or reserve a larger table before the first \
             direct accept or open (DirectStream::reserve_table)"
        ),
    ))
}

/// Closes direct descriptor `slot` of loop `loop_id` through the ring,
/// after the SQEs already queued; nothing if that loop is not running here
/// (with the loop gone, its table is gone too).
pub(crate) fn release_slot(slot: u32, loop_id: u64) {
    context::with_loop(|lp| {
        if lp.id != loop_id {
            return;
        }
        match lp.driver.try_borrow_mut() {
            Ok(mut d) => d.close_fixed(slot),
            Err(_) => crate::driver::close_fixed_later(slot),
        }
    });
}

/// Orphan cleanup of an op that put a new descriptor into the table: a
/// slot nobody will read is closed, not leaked.
pub(crate) fn close_orphan_slot(res: i32, _flags: u32, _data: Option<&mut dyn std::any::Any>) {
    if res >= 0 {
        crate::driver::close_fixed_later(res as u32);
    }
}

impl TcpListener {
    /// Accepts one connection into the ring's direct descriptor table
    /// (`IORING_OP_ACCEPT` with `IORING_FILE_INDEX_ALLOC`, Linux 5.19): the
    /// kernel picks a free slot. The table is registered on the first call
    /// ([`DEFAULT_DIRECT_TABLE`] slots, or as
    /// [`DirectStream::reserve_table`] set). A full table is an error that
    /// says so (`ENFILE`): the kernel has then taken the connection off the
    /// backlog and closed it (the peer sees a reset), so keep the table
    /// larger than the connections you hold. A connection accepted after
    /// this future was dropped is closed, not leaked.
    #[track_caller]
    pub fn accept_direct(&self) -> Io<impl Future<Output = Result<DirectStream>> + '_> {
        let fd = std::os::fd::AsRawFd::as_raw_fd(self);
        Io::new(async move {
            let _me = self;
            let size = table(DEFAULT_DIRECT_TABLE)?;
            let sqe = opcode::Accept::new(Fd(fd), std::ptr::null_mut(), std::ptr::null_mut())
                .file_index(Some(DestinationSlot::auto_target()))
                .build();
            // SAFETY: the SQE points to no memory (no address out).
            let (res, _, ()) = unsafe {
                submit(
                    sqe,
                    (),
                    Some(close_orphan_slot as crate::driver::OrphanCleanup),
                )
            }
            .await;
            match res {
                Ok(slot) => Ok(DirectStream {
                    slot,
                    loop_id: context::with_loop(|lp| lp.id).unwrap_or(0),
                    rx: StashCell::default(),
                }),
                Err(e) if e.raw_os_error() == Some(libc::ENFILE) => Err(table_full(size)),
                Err(e) => Err(e),
            }
        })
    }
}

impl DirectStream {
    /// Registers the running loop's direct descriptor table with `slots`
    /// slots (1 to the process's `RLIMIT_NOFILE`), before its first
    /// [`TcpListener::accept_direct`] or
    /// [`OpenOptions::open_direct`](crate::fs::OpenOptions::open_direct)
    /// (both share the table). Returns the table's size: a table
    /// registered earlier keeps its size.
    pub fn reserve_table(slots: u32) -> Result<u32> {
        if slots == 0 {
            return Err(Error::InvalidArgument(
                "a direct descriptor table needs at least 1 slot".into(),
            ));
        }
        table(slots)
    }

    /// The connection's slot in the table.
    pub fn slot(&self) -> u32 {
        self.slot
    }

    fn check_loop(&self) -> Result<()> {
        match context::with_loop(|lp| lp.id) {
            Some(id) if id == self.loop_id => Ok(()),
            Some(_) => Err(Error::InvalidArgument(
                "a DirectStream is a slot of the ring that accepted it; this is another loop"
                    .into(),
            )),
            None => Err(Error::no_running_loop()),
        }
    }

    /// Receives into `buf` (its whole capacity, from its start; a `Vec`'s
    /// length becomes the count), `IORING_OP_RECV` on the slot. `Ok(0)`:
    /// the peer closed its write half. A buffer with no capacity is
    /// `Error::InvalidArgument`.
    ///
    /// Dropping this future loses nothing, as for `TcpStream::read`: bytes
    /// its receive got before the cancel landed stay with the stream, and
    /// the next read returns them first.
    #[track_caller]
    pub fn read<B: IoBufMut>(&self, buf: B) -> Io<impl Future<Output = BufResult<usize, B>> + '_> {
        Io::new(async move {
            if let Err(e) = self.check_loop() {
                return (Err(e), buf);
            }
            ops::recv_stream(Target::Fixed(self.slot), buf, &self.rx).await
        })
    }

    /// Receives until `buf`'s whole capacity is filled, as many
    /// `IORING_OP_RECV`s on the slot as it takes. If the peer closes
    /// first, the error is `UnexpectedEof` and the buffer comes back with
    /// the bytes that came; dropped part-way, the bytes it had go back to
    /// the stream for the next read (as for `TcpStream::read_exact`).
    #[track_caller]
    pub fn read_exact<B: IoBufMut>(
        &self,
        buf: B,
    ) -> Io<impl Future<Output = BufResult<(), B>> + '_> {
        Io::new(async move {
            if let Err(e) = self.check_loop() {
                return (Err(e), buf);
            }
            ops::recv_exact(Target::Fixed(self.slot), buf, &self.rx).await
        })
    }

    /// Sends every initialised byte of `buf`, `IORING_OP_SEND` on the slot
    /// as many times as it takes (`MSG_NOSIGNAL`).
    #[track_caller]
    pub fn write_all<B: IoBuf>(&self, buf: B) -> Io<impl Future<Output = BufResult<(), B>> + '_> {
        Io::new(async move {
            if let Err(e) = self.check_loop() {
                return (Err(e), buf);
            }
            ops::write_all(Target::Fixed(self.slot), buf, WriteTo::Socket(0)).await
        })
    }

    /// Shuts down the write half (the peer reads end of stream),
    /// `IORING_OP_SHUTDOWN` on the slot.
    #[track_caller]
    pub fn shutdown_write(&self) -> Io<impl Future<Output = Result<()>> + '_> {
        Io::new(async move {
            self.check_loop()?;
            let sqe = opcode::Shutdown::new(Fixed(self.slot), libc::SHUT_WR).build();
            // SAFETY: the SQE points to no memory.
            let (res, _, ()) = unsafe { submit(sqe, (), None) }.await;
            res.map(|_| ())
        })
    }
}

impl Drop for DirectStream {
    fn drop(&mut self) {
        release_slot(self.slot, self.loop_id);
    }
}

impl fmt::Debug for DirectStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DirectStream")
            .field("slot", &self.slot)
            .finish()
    }
}
