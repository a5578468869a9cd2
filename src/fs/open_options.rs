//! `OpenOptions`: how to open a file, as `std::fs::OpenOptions`.
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

use std::future::Future;
use std::path::Path;

use super::File;
use crate::error::{Error, Result};
use crate::io::Io;
use crate::io::fd::RingFd;
use crate::io::ops::{self, c_path};

/// Options for opening a file, as `std::fs::OpenOptions`, plus
/// [`OpenOptions::custom_flags`] (e.g. `O_DIRECT`) and
/// [`OpenOptions::mode`]. The open is an `IORING_OP_OPENAT`.
#[derive(Clone, Debug)]
pub struct OpenOptions {
    read: bool,
    write: bool,
    append: bool,
    truncate: bool,
    create: bool,
    create_new: bool,
    custom_flags: i32,
    mode: u32,
}

impl Default for OpenOptions {
    fn default() -> OpenOptions {
        OpenOptions::new()
    }
}

impl OpenOptions {
    /// Every option off; mode 0o666 (less the umask) for created files.
    pub fn new() -> OpenOptions {
        OpenOptions {
            read: false,
            write: false,
            append: false,
            truncate: false,
            create: false,
            create_new: false,
            custom_flags: 0,
            mode: 0o666,
        }
    }

    /// Open for reading.
    pub fn read(&mut self, on: bool) -> &mut OpenOptions {
        self.read = on;
        self
    }

    /// Open for writing.
    pub fn write(&mut self, on: bool) -> &mut OpenOptions {
        self.write = on;
        self
    }

    /// Open for appending (`O_APPEND`; implies writing). Positional writes
    /// to such a file still go to its end (Linux ignores the offset).
    pub fn append(&mut self, on: bool) -> &mut OpenOptions {
        self.append = on;
        self
    }

    /// Truncate to length 0 (`O_TRUNC`; needs writing).
    pub fn truncate(&mut self, on: bool) -> &mut OpenOptions {
        self.truncate = on;
        self
    }

    /// Create the file if it does not exist (`O_CREAT`; needs writing).
    pub fn create(&mut self, on: bool) -> &mut OpenOptions {
        self.create = on;
        self
    }

    /// Create the file, failing if it exists (`O_CREAT | O_EXCL`).
    pub fn create_new(&mut self, on: bool) -> &mut OpenOptions {
        self.create_new = on;
        self
    }

    /// Extra `open(2)` flags, e.g. `libc::O_DIRECT` or `libc::O_NOATIME`.
    /// The access mode bits are ignored (use `read`/`write`).
    pub fn custom_flags(&mut self, flags: i32) -> &mut OpenOptions {
        self.custom_flags = flags;
        self
    }

    /// The permission bits of a created file (before the umask).
    pub fn mode(&mut self, mode: u32) -> &mut OpenOptions {
        self.mode = mode;
        self
    }

    /// Opens `path` with these options.
    #[track_caller]
    pub fn open<P: AsRef<Path>>(&self, path: P) -> Io<impl Future<Output = Result<File>> + use<P>> {
        let flags = self.flags(path.as_ref());
        let path = c_path(path.as_ref());
        let mode = self.mode;
        Io::new(async move {
            let fd = ops::open_at(path?, flags?, mode).await?;
            // SAFETY: a fresh descriptor the kernel opened for us.
            Ok(File::from_ring_fd(unsafe { RingFd::from_raw(fd) }))
        })
    }

    /// Opens `path` with these options into the running loop's direct
    /// descriptor table (`IORING_OP_OPENAT` with `IORING_FILE_INDEX_ALLOC`,
    /// Linux 5.19): the kernel picks a free slot, and no file descriptor
    /// is created. The table is registered on first use
    /// ([`DEFAULT_DIRECT_TABLE`](crate::net::DEFAULT_DIRECT_TABLE) slots,
    /// or as [`DirectStream::reserve_table`](crate::net::DirectStream::reserve_table)
    /// set; direct accepts share it). A full table is an error that says
    /// so; an older kernel gives `Error::Unsupported`. A file opened after
    /// this future was dropped is closed, not leaked.
    #[track_caller]
    pub fn open_direct<P: AsRef<Path>>(
        &self,
        path: P,
    ) -> Io<impl Future<Output = Result<super::DirectFile>> + use<P>> {
        let flags = self.flags(path.as_ref());
        let path = c_path(path.as_ref());
        let mode = self.mode;
        Io::new(async move { super::direct::open(path?, flags?, mode).await })
    }

    fn flags(&self, path: &Path) -> Result<i32> {
        let access = match (self.read, self.write || self.append) {
            (true, false) => libc::O_RDONLY,
            (false, true) => libc::O_WRONLY,
            (true, true) => libc::O_RDWR,
            (false, false) => {
                return Err(Error::InvalidArgument(format!(
                    "opening {}: the options ask for neither reading nor writing",
                    path.display()
                )));
            }
        };
        let writes = self.write || self.append;
        if !writes && (self.truncate || self.create || self.create_new) {
            return Err(Error::InvalidArgument(format!(
                "opening {}: create, create_new and truncate need write or append",
                path.display()
            )));
        }
        if self.append && self.truncate && !self.create_new {
            return Err(Error::InvalidArgument(format!(
                "opening {}: append and truncate together make no sense",
                path.display()
            )));
        }
        let creation = if self.create_new {
            libc::O_CREAT | libc::O_EXCL
        } else {
            (if self.create { libc::O_CREAT } else { 0 })
                | (if self.truncate { libc::O_TRUNC } else { 0 })
        };
        let append = if self.append { libc::O_APPEND } else { 0 };
        Ok(access | creation | append | (self.custom_flags & !libc::O_ACCMODE))
    }
}
