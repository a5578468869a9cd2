//! Files on the ring: open, positional reads and writes, `fsync`, `statx`
//! and close are io_uring operations (`OPENAT`, `READ`, `WRITE`, `FSYNC`,
//! `STATX`, `CLOSE`), as are `unlink`, `rename` and `mkdir` — no blocking
//! thread pool.
//!
//! Reads and writes are positional (`read_at`, `write_at`): a `File` has
//! no cursor of its own, so several tasks can use one `File` at once.
//!
//! ```no_run
//! ringio::run(async {
//!     ringio::fs::write("/tmp/ringio-doc.txt", b"hello".to_vec()).await?;
//!     let file = ringio::fs::File::open("/tmp/ringio-doc.txt").await?;
//!     let (res, buf) = file.read_at(Vec::with_capacity(16), 0).await;
//!     assert_eq!(&buf[..res?], b"hello");
//!     file.close().await?;
//!     ringio::fs::remove_file("/tmp/ringio-doc.txt").await
//! })
//! .unwrap();
//! ```

mod direct;
mod file;
mod metadata;
mod open_options;

pub use direct::DirectFile;
pub use file::File;
pub use metadata::Metadata;
pub use open_options::OpenOptions;

use std::future::Future;
use std::path::Path;

use crate::error::Result;
use crate::io::ops::{self, c_path};
use crate::io::{Io, IoBuf};

/// Reads the whole file at `path` into a new vector.
#[track_caller]
pub fn read(path: impl AsRef<Path>) -> Io<impl Future<Output = Result<Vec<u8>>>> {
    let path = path.as_ref().to_path_buf();
    Io::new(async move {
        let file = File::open(&path).await?;
        let (res, buf) = file.read_to_end(Vec::new()).await;
        // Close on the ring either way; a read error wins over a close error.
        let closed = file.close().await;
        res?;
        closed?;
        Ok(buf)
    })
}

/// Writes `contents` (its initialised bytes) to the file at `path`,
/// creating it or truncating it first.
#[track_caller]
pub fn write<B: IoBuf>(
    path: impl AsRef<Path>,
    contents: B,
) -> Io<impl Future<Output = Result<()>>> {
    let path = path.as_ref().to_path_buf();
    Io::new(async move {
        let file = File::create(&path).await?;
        let (res, _) = file.write_all_at(contents, 0).await;
        let closed = file.close().await;
        res?;
        closed
    })
}

/// Removes the file (not a directory) at `path` (`IORING_OP_UNLINKAT`).
#[track_caller]
pub fn remove_file(path: impl AsRef<Path>) -> Io<impl Future<Output = Result<()>>> {
    let path = c_path(path.as_ref());
    Io::new(async move { ops::unlink_at(path?, 0).await })
}

/// Removes the empty directory at `path` (`IORING_OP_UNLINKAT` with
/// `AT_REMOVEDIR`).
#[track_caller]
pub fn remove_dir(path: impl AsRef<Path>) -> Io<impl Future<Output = Result<()>>> {
    let path = c_path(path.as_ref());
    Io::new(async move { ops::unlink_at(path?, libc::AT_REMOVEDIR).await })
}

/// Renames `from` to `to`, replacing `to` if it exists
/// (`IORING_OP_RENAMEAT`).
#[track_caller]
pub fn rename(
    from: impl AsRef<Path>,
    to: impl AsRef<Path>,
) -> Io<impl Future<Output = Result<()>>> {
    let from = c_path(from.as_ref());
    let to = c_path(to.as_ref());
    Io::new(async move { ops::rename_at(from?, to?).await })
}

/// Creates the directory `path` with mode 0o777 (less the umask)
/// (`IORING_OP_MKDIRAT`). Its parent must exist.
#[track_caller]
pub fn create_dir(path: impl AsRef<Path>) -> Io<impl Future<Output = Result<()>>> {
    let path = c_path(path.as_ref());
    Io::new(async move { ops::mkdir_at(path?, 0o777).await })
}

/// The metadata of the file at `path`, following symbolic links
/// (`IORING_OP_STATX`).
#[track_caller]
pub fn metadata(path: impl AsRef<Path>) -> Io<impl Future<Output = Result<Metadata>>> {
    let path = c_path(path.as_ref());
    Io::new(async move {
        ops::statx(libc::AT_FDCWD, path?, 0)
            .await
            .map(Metadata::from_statx)
    })
}

/// The metadata of the file at `path` itself, not following a symbolic
/// link (`IORING_OP_STATX` with `AT_SYMLINK_NOFOLLOW`).
#[track_caller]
pub fn symlink_metadata(path: impl AsRef<Path>) -> Io<impl Future<Output = Result<Metadata>>> {
    let path = c_path(path.as_ref());
    Io::new(async move {
        ops::statx(libc::AT_FDCWD, path?, libc::AT_SYMLINK_NOFOLLOW)
            .await
            .map(Metadata::from_statx)
    })
}
