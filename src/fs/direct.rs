//! `DirectFile`: a file opened straight into the ring's direct descriptor
//! table (`IORING_OP_OPENAT` with `IORING_FILE_INDEX_ALLOC`), read and
//! written with `IOSQE_FIXED_FILE`.
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

use crate::error::{Error, Result};
use crate::io::ops::{self, Target, WriteTo, submit};
use crate::io::{BufResult, Io, IoBuf, IoBufMut};
use crate::net::DEFAULT_DIRECT_TABLE;
use crate::net::direct::{close_orphan_slot, release_slot, table, table_full};
use crate::runtime::{Op, context};

/// A file held only as a slot of the ring's direct descriptor table (from
/// [`OpenOptions::open_direct`](super::OpenOptions::open_direct)): no file
/// descriptor in the process's table, and each operation names the slot
/// (`IOSQE_FIXED_FILE`), which spares the kernel a descriptor lookup and
/// reference count per operation. It shares the table with
/// [`DirectStream`](crate::net::DirectStream)s and belongs to the loop
/// that opened it.
///
/// Prefer [`DirectFile::close`], which closes on the ring and reports the
/// close's error; dropping it closes the slot through the ring
/// (`IORING_OP_CLOSE` on the slot) after the operations already queued.
pub struct DirectFile {
    slot: u32,
    loop_id: u64,
}

/// Opens `path` into a free slot of the running loop's table.
pub(crate) async fn open(path: std::ffi::CString, flags: i32, mode: u32) -> Result<DirectFile> {
    let size = table(DEFAULT_DIRECT_TABLE)?;
    let bytes = crate::io::ops::KernelBox::from_box(path.into_bytes_with_nul().into_boxed_slice());
    let ptr = bytes.as_ptr().cast::<libc::c_char>().cast_const();
    // No O_CLOEXEC: a slot is not inherited by exec, and the kernel
    // refuses the flag for a direct open.
    let sqe = opcode::OpenAt::new(Fd(libc::AT_FDCWD), ptr)
        .flags(flags & !libc::O_CLOEXEC)
        .mode(mode)
        .file_index(Some(DestinationSlot::auto_target()))
        .build();
    // SAFETY: the SQE points into the path's heap bytes, owned by the op.
    let (res, _, _) = unsafe {
        submit(
            sqe,
            bytes,
            Some(close_orphan_slot as crate::driver::OrphanCleanup),
        )
    }
    .await;
    match res {
        Ok(slot) => Ok(DirectFile {
            slot,
            loop_id: context::with_loop(|lp| lp.id).unwrap_or(0),
        }),
        Err(e) if e.raw_os_error() == Some(libc::ENFILE) => Err(table_full(size)),
        Err(e) if e.raw_os_error() == Some(libc::ENXIO) => Err(Error::InvalidState(
            "the ring has no direct descriptor table registered (ENXIO)".into(),
        )),
        Err(e) => Err(e),
    }
}

impl DirectFile {
    /// The file's slot in the table.
    pub fn slot(&self) -> u32 {
        self.slot
    }

    fn check_loop(&self) -> Result<()> {
        match context::with_loop(|lp| lp.id) {
            Some(id) if id == self.loop_id => Ok(()),
            Some(_) => Err(Error::InvalidArgument(
                "a DirectFile is a slot of the ring that opened it; this is another loop".into(),
            )),
            None => Err(Error::no_running_loop()),
        }
    }

    /// Reads into `buf` (its whole capacity, from its start; a `Vec`'s
    /// length becomes the count read) from byte `offset`,
    /// `IORING_OP_READ` on the slot. `Ok(0)` is end of file; a short count
    /// is not an error. A buffer with no capacity is
    /// `Error::InvalidArgument`.
    #[track_caller]
    pub fn read_at<B: IoBufMut>(
        &self,
        buf: B,
        offset: u64,
    ) -> Io<impl Future<Output = BufResult<usize, B>> + '_> {
        Io::new(async move {
            if let Err(e) = self.check_loop() {
                return (Err(e), buf);
            }
            ops::read_at(Target::Fixed(self.slot), buf, offset).await
        })
    }

    /// Writes the initialised bytes of `buf` at byte `offset`, once,
    /// `IORING_OP_WRITE` on the slot. Gives the count written and the
    /// buffer back.
    #[track_caller]
    pub fn write_at<B: IoBuf>(
        &self,
        buf: B,
        offset: u64,
    ) -> Io<impl Future<Output = BufResult<usize, B>> + '_> {
        Io::new(async move {
            if let Err(e) = self.check_loop() {
                return (Err(e), buf);
            }
            ops::write(Target::Fixed(self.slot), buf, WriteTo::File(offset)).await
        })
    }

    /// Writes every initialised byte of `buf` from byte `offset` on, as
    /// many writes as it takes.
    #[track_caller]
    pub fn write_all_at<B: IoBuf>(
        &self,
        buf: B,
        offset: u64,
    ) -> Io<impl Future<Output = BufResult<(), B>> + '_> {
        Io::new(async move {
            if let Err(e) = self.check_loop() {
                return (Err(e), buf);
            }
            ops::write_all(Target::Fixed(self.slot), buf, WriteTo::File(offset)).await
        })
    }

    /// Flushes data and metadata to the device (`IORING_OP_FSYNC` on the
    /// slot).
    #[track_caller]
    pub fn sync_all(&self) -> Io<impl Future<Output = Result<()>> + '_> {
        Io::new(async move {
            self.check_loop()?;
            let sqe = opcode::Fsync::new(Fixed(self.slot)).build();
            // SAFETY: the SQE points to no memory.
            let (res, _, ()) = unsafe { submit(sqe, (), None) }.await;
            res.map(|_| ())
        })
    }

    /// Closes the slot on the ring (`IORING_OP_CLOSE` on the slot) and
    /// reports the close's error. The slot is freed whatever happens: a
    /// pending cancellation of the task does not stop the close (it is
    /// delivered at the next await point); from another loop, or if the
    /// kernel cancelled the close before it ran, the slot is closed as on
    /// drop.
    #[track_caller]
    pub fn close(self) -> Io<impl Future<Output = Result<()>>> {
        Io::new(async move {
            self.check_loop()?;
            let this = std::mem::ManuallyDrop::new(self);
            let (slot, id) = (this.slot, this.loop_id);
            let sqe = opcode::Close::new(Fixed(slot)).build();
            // SAFETY: the SQE points to no memory.
            let mut op = match unsafe { Op::try_submit(sqe, None, (), None, None) } {
                Ok(op) => op,
                Err((e, ())) => {
                    release_slot(slot, id);
                    return Err(e);
                }
            };
            op.start_now();
            match op.await.result {
                Ok(_) => Ok(()),
                Err(e) if e.is_cancelled() || e.raw_os_error() == Some(libc::ECANCELED) => {
                    release_slot(slot, id);
                    Err(e)
                }
                Err(e) => Err(e),
            }
        })
    }
}

impl Drop for DirectFile {
    fn drop(&mut self) {
        release_slot(self.slot, self.loop_id);
    }
}

impl fmt::Debug for DirectFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DirectFile")
            .field("slot", &self.slot)
            .finish()
    }
}
