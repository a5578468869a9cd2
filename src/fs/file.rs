//! `File`: an open file, read and written at explicit offsets.
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
use std::path::Path;

use super::{Metadata, OpenOptions};
use crate::error::Result;
use crate::io::fd::RingFd;
use crate::io::ops::{self, WriteTo};
use crate::io::{BufResult, Io, IoBuf, IoBufMut};

/// How much `read_to_end` asks for when it does not know the file's size.
const READ_CHUNK: usize = 64 * 1024;

/// An open file. Reads and writes name their offset (`pread`/`pwrite`
/// style), so one `File` can serve several tasks at once.
///
/// Prefer [`File::close`]: it closes on the ring and reports the close's
/// error. Dropping a `File` closes it with `close(2)` (after the loop's
/// queued submissions have gone to the kernel).
pub struct File {
    fd: RingFd,
}

impl File {
    pub(crate) fn from_ring_fd(fd: RingFd) -> File {
        File { fd }
    }

    /// Opens `path` for reading.
    #[track_caller]
    pub fn open(path: impl AsRef<Path>) -> Io<impl Future<Output = Result<File>>> {
        OpenOptions::new().read(true).open(path)
    }

    /// Opens `path` for writing, creating it or truncating it.
    #[track_caller]
    pub fn create(path: impl AsRef<Path>) -> Io<impl Future<Output = Result<File>>> {
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
    }

    /// A blank [`OpenOptions`].
    pub fn options() -> OpenOptions {
        OpenOptions::new()
    }

    /// Sends `len` bytes of the file from byte `offset` to the socket
    /// `sock` (a `TcpStream`, `UnixStream`, ...) without copying them
    /// through user space: `IORING_OP_SPLICE` (Linux 5.7) from the file
    /// into a pipe and from the pipe into the socket, 64 KiB at a time.
    /// Returns the result and how many bytes reached the socket, also on
    /// error, timeout or cancellation; fewer than `len` with `Ok` if the
    /// file ends first. On a kernel without the opcode it is
    /// `Error::Unsupported` naming it.
    #[track_caller]
    pub fn send_to<'a, S: std::os::fd::AsRawFd>(
        &'a self,
        sock: &'a S,
        offset: u64,
        len: u64,
    ) -> Io<impl Future<Output = (Result<()>, u64)> + 'a> {
        let fd = self.fd.raw();
        let out = sock.as_raw_fd();
        Io::new(async move {
            let _keep = (self, sock);
            ops::splice_to_socket(fd, out, offset, len).await
        })
    }

    /// Reads into registered buffer `buf` (its whole size, from its
    /// start; its length becomes the count) from byte `offset`, with
    /// `IORING_OP_READ_FIXED`: the kernel does not map the buffer for each
    /// read. With `O_DIRECT` the offset must be aligned as the device
    /// requires (4 KiB is safe). Gives the count and the buffer back, also
    /// on error. A buffer of another loop's ring is `InvalidArgument`.
    #[track_caller]
    pub fn read_fixed_at(
        &self,
        buf: crate::io::FixedBuf,
        offset: u64,
    ) -> Io<impl Future<Output = BufResult<usize, crate::io::FixedBuf>> + '_> {
        let fd = self.fd.raw();
        Io::new(async move {
            let _me = self;
            ops::read_fixed_at(fd, buf, offset).await
        })
    }

    /// Writes the first `len()` bytes of registered buffer `buf` at byte
    /// `offset`, once, with `IORING_OP_WRITE_FIXED`. Gives the count and
    /// the buffer back.
    #[track_caller]
    pub fn write_fixed_at(
        &self,
        buf: crate::io::FixedBuf,
        offset: u64,
    ) -> Io<impl Future<Output = BufResult<usize, crate::io::FixedBuf>> + '_> {
        let fd = self.fd.raw();
        Io::new(async move {
            let _me = self;
            ops::write_fixed_at(fd, buf, offset).await
        })
    }

    /// Reads into `buf` (its whole capacity, from its start; a `Vec`'s
    /// length becomes the count read) from byte `offset` of the file. Gives
    /// the count and the buffer back, also on error, timeout or
    /// cancellation. `Ok(0)` is end of file. A short count is not an error.
    /// A buffer with no capacity is `Error::InvalidArgument` (use
    /// `Vec::with_capacity(n)`), so that `Ok(0)` always means end of file.
    #[track_caller]
    pub fn read_at<B: IoBufMut>(
        &self,
        buf: B,
        offset: u64,
    ) -> Io<impl Future<Output = BufResult<usize, B>> + '_> {
        let fd = self.fd.raw();
        Io::new(async move {
            let _me = self;
            ops::read_at(fd, buf, offset).await
        })
    }

    /// Writes the initialised bytes of `buf` at byte `offset`, once. Gives
    /// the count written and the buffer back.
    #[track_caller]
    pub fn write_at<B: IoBuf>(
        &self,
        buf: B,
        offset: u64,
    ) -> Io<impl Future<Output = BufResult<usize, B>> + '_> {
        let fd = self.fd.raw();
        Io::new(async move {
            let _me = self;
            ops::write(fd, buf, WriteTo::File(offset)).await
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
        let fd = self.fd.raw();
        Io::new(async move {
            let _me = self;
            ops::write_all(fd, buf, WriteTo::File(offset)).await
        })
    }

    /// Reads from byte `offset` to the end of the file, appending to `buf`.
    /// Gives the count appended and the buffer (with whatever was read
    /// before an error). A pipe or character device, which has no offsets,
    /// is read from its current position to its end.
    #[track_caller]
    pub fn read_to_end_at(
        &self,
        buf: Vec<u8>,
        offset: u64,
    ) -> Io<impl Future<Output = BufResult<usize, Vec<u8>>> + '_> {
        let fd = self.fd.raw();
        Io::new(async move {
            let _me = self;
            read_to_end(fd, buf, offset).await
        })
    }

    /// Reads the whole file (from offset 0), appending to `buf`.
    #[track_caller]
    pub fn read_to_end(
        &self,
        buf: Vec<u8>,
    ) -> Io<impl Future<Output = BufResult<usize, Vec<u8>>> + '_> {
        self.read_to_end_at(buf, 0)
    }

    /// Flushes data and metadata to the device (`IORING_OP_FSYNC`).
    #[track_caller]
    pub fn sync_all(&self) -> Io<impl Future<Output = Result<()>> + '_> {
        let fd = self.fd.raw();
        Io::new(async move {
            let _me = self;
            ops::fsync(fd, false).await
        })
    }

    /// Flushes data, and only the metadata needed to read it back
    /// (`IORING_OP_FSYNC` with `IORING_FSYNC_DATASYNC`).
    #[track_caller]
    pub fn sync_data(&self) -> Io<impl Future<Output = Result<()>> + '_> {
        let fd = self.fd.raw();
        Io::new(async move {
            let _me = self;
            ops::fsync(fd, true).await
        })
    }

    /// The file's metadata (`IORING_OP_STATX` with `AT_EMPTY_PATH`).
    #[track_caller]
    pub fn metadata(&self) -> Io<impl Future<Output = Result<Metadata>> + '_> {
        let fd = self.fd.raw();
        Io::new(async move {
            let _me = self;
            ops::statx(fd, c"".to_owned(), libc::AT_EMPTY_PATH)
                .await
                .map(Metadata::from_statx)
        })
    }

    /// Closes the file on the ring (`IORING_OP_CLOSE`) and reports the
    /// close's error, if any. Dropping this future before it ran closes
    /// the file on drop instead.
    ///
    /// The file is closed whatever happens: a cancellation of the task
    /// that is pending when the close starts does not stop it (it is
    /// delivered at the task's next await point), and a deadline does not
    /// apply to it.
    #[track_caller]
    pub fn close(self) -> Io<impl Future<Output = Result<()>>> {
        Io::new(async move {
            // Given up only here, in the first poll: a future dropped unpolled
            // still owns (and closes) the descriptor.
            let raw = self.fd.into_raw();
            ops::close(raw).await
        })
    }

    /// Takes over a `std` file.
    pub fn from_std(file: std::fs::File) -> File {
        use std::os::fd::IntoRawFd;
        // SAFETY: the std file gave up its descriptor to us.
        File::from_ring_fd(unsafe { RingFd::from_raw(file.into_raw_fd()) })
    }
}

async fn read_to_end(fd: i32, mut buf: Vec<u8>, mut offset: u64) -> BufResult<usize, Vec<u8>> {
    let start = buf.len();
    // Size the buffer from the file's size when it has one (regular
    // files), so that a whole-file read is one read plus the one that sees
    // the end.
    if let Ok(stx) = ops::statx(fd, c"".to_owned(), libc::AT_EMPTY_PATH).await {
        let left = stx.stx_size.saturating_sub(offset);
        let want = usize::try_from(left)
            .unwrap_or(usize::MAX)
            .saturating_add(1);
        if buf.try_reserve(want).is_err() {
            return (
                Err(crate::Error::InvalidArgument(format!(
                    "read_to_end: cannot allocate {want} bytes for the file"
                ))),
                buf,
            );
        }
    }
    loop {
        if buf.capacity() == buf.len() {
            buf.reserve(READ_CHUNK.max(buf.len() / 2));
        }
        let len = buf.len();
        let slice = crate::io::IoBuf::slice(buf, len..);
        let (res, slice) = ops::read_at(fd, slice, offset).await;
        buf = slice.into_inner();
        match res {
            Ok(0) => return (Ok(buf.len() - start), buf),
            Ok(n) if offset != u64::MAX => offset += n as u64,
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
            // A pipe or character device has no offsets: read it from its
            // current position instead (offset -1), as `std::fs::read` does.
            Err(e) if e.raw_os_error() == Some(libc::ESPIPE) && offset != u64::MAX => {
                offset = u64::MAX;
            }
            Err(e) => return (Err(e), buf),
        }
    }
}

crate::net::fd_traits!(File);

impl fmt::Debug for File {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("File").field("fd", &self.fd).finish()
    }
}
