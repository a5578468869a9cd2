//! `Metadata`: what `statx(2)` says about a file.

use std::fmt;
use std::time::{Duration, SystemTime};

use crate::error::{Error, Result};

/// A file's metadata, from `IORING_OP_STATX`.
#[derive(Clone, Copy)]
pub struct Metadata {
    stx: libc::statx,
}

impl Metadata {
    pub(crate) fn from_statx(stx: libc::statx) -> Metadata {
        Metadata { stx }
    }

    /// Size in bytes.
    pub fn len(&self) -> u64 {
        self.stx.stx_size
    }

    /// Whether the size is 0.
    pub fn is_empty(&self) -> bool {
        self.stx.stx_size == 0
    }

    fn file_type(&self) -> u32 {
        self.stx.stx_mode as u32 & libc::S_IFMT
    }

    /// Whether it is a regular file.
    pub fn is_file(&self) -> bool {
        self.file_type() == libc::S_IFREG
    }

    /// Whether it is a directory.
    pub fn is_dir(&self) -> bool {
        self.file_type() == libc::S_IFDIR
    }

    /// Whether it is a symbolic link (only from `symlink_metadata`).
    pub fn is_symlink(&self) -> bool {
        self.file_type() == libc::S_IFLNK
    }

    /// The mode: file type and permission bits (`st_mode`).
    pub fn mode(&self) -> u32 {
        self.stx.stx_mode as u32
    }

    /// The inode number.
    pub fn ino(&self) -> u64 {
        self.stx.stx_ino
    }

    /// The number of hard links.
    pub fn nlink(&self) -> u32 {
        self.stx.stx_nlink
    }

    /// The owner's user id.
    pub fn uid(&self) -> u32 {
        self.stx.stx_uid
    }

    /// The owner's group id.
    pub fn gid(&self) -> u32 {
        self.stx.stx_gid
    }

    /// The preferred I/O block size.
    pub fn blksize(&self) -> u32 {
        self.stx.stx_blksize
    }

    /// The number of 512-byte blocks allocated.
    pub fn blocks(&self) -> u64 {
        self.stx.stx_blocks
    }

    /// Last modification time.
    pub fn modified(&self) -> Result<SystemTime> {
        self.time(libc::STATX_MTIME, self.stx.stx_mtime, "modification")
    }

    /// Last access time.
    pub fn accessed(&self) -> Result<SystemTime> {
        self.time(libc::STATX_ATIME, self.stx.stx_atime, "access")
    }

    /// Creation (birth) time, where the filesystem records it.
    pub fn created(&self) -> Result<SystemTime> {
        self.time(libc::STATX_BTIME, self.stx.stx_btime, "creation")
    }

    fn time(&self, bit: u32, ts: libc::statx_timestamp, what: &str) -> Result<SystemTime> {
        if self.stx.stx_mask & bit == 0 {
            return Err(Error::Unsupported(format!(
                "this filesystem does not report the {what} time"
            )));
        }
        let nanos = Duration::new(0, ts.tv_nsec);
        let t = if ts.tv_sec >= 0 {
            SystemTime::UNIX_EPOCH + Duration::from_secs(ts.tv_sec as u64) + nanos
        } else {
            SystemTime::UNIX_EPOCH - Duration::from_secs(ts.tv_sec.unsigned_abs()) + nanos
        };
        Ok(t)
    }
}

impl fmt::Debug for Metadata {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metadata")
            .field("len", &self.len())
            .field("mode", &format_args!("{:o}", self.mode()))
            .field("ino", &self.ino())
            .finish()
    }
}
