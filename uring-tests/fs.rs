//! Integration tests: fs (against a real ring).
//!
//! Every test takes `SERIAL`: the fd-leak checks count `/proc/self/fd`,
//! which all threads of the test process share.

mod common;
use common::*;

use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd};
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use futures_util::io::AsyncReadExt;
use ringio::Error;
use ringio::fs::{self, File, OpenOptions};
use ringio::io::{AlignedBuf, Compat, IoBuf};

/// A fresh directory under the temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("ringio-fs-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A pipe: (read end, write end), as std files.
fn pipe() -> (std::fs::File, std::fs::File) {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into `fds`.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: fresh descriptors we own.
    unsafe {
        (
            std::fs::File::from(OwnedFd::from_raw_fd(fds[0])),
            std::fs::File::from(OwnedFd::from_raw_fd(fds[1])),
        )
    }
}

#[test]
fn write_read_fsync_metadata_round_trip() {
    let _g = serial();
    let dir = TempDir::new("roundtrip");
    let path = dir.path("data.bin");
    ringio::run(async move {
        let data = pattern(1, 5 << 20);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .await
            .unwrap();
        let (res, back) = file.write_all_at(data.clone(), 0).await;
        res.unwrap();
        assert!(back == data, "the buffer comes back unchanged");
        file.sync_all().await.unwrap();
        file.sync_data().await.unwrap();
        let md = file.metadata().await.unwrap();
        assert_eq!(md.len(), 5 << 20);
        assert!(md.is_file() && !md.is_dir());
        let age = SystemTime::now()
            .duration_since(md.modified().unwrap())
            .unwrap_or_default();
        assert!(age < Duration::from_secs(60), "{age:?}");
        // Whole file.
        let (res, all) = file.read_to_end(Vec::new()).await;
        assert_eq!(res.unwrap(), data.len());
        assert!(all == data);
        // Positional reads at odd offsets, into Vec, Box<[u8]> and a slice.
        for off in [0u64, 1, 4095, 4096, 1 << 20, (5 << 20) - 10] {
            let (res, buf) = file.read_at(Vec::with_capacity(10_000), off).await;
            let n = res.unwrap();
            let o = off as usize;
            assert_eq!(n, 10_000.min(data.len() - o));
            assert_eq!(&buf[..], &data[o..o + n]);
            let (res, buf) = file.read_at(vec![0u8; 333].into_boxed_slice(), off).await;
            let n = res.unwrap();
            assert_eq!(&buf[..n], &data[o..o + n]);
        }
        // Reading into the spare capacity of a Vec appends.
        let mut v = b"head:".to_vec();
        v.reserve(16);
        let len = v.len();
        let (res, s) = file.read_at(v.slice(len..len + 8), 100).await;
        assert_eq!(res.unwrap(), 8);
        let v = s.into_inner();
        assert_eq!(&v[..5], b"head:");
        assert_eq!(&v[5..], &data[100..108]);
        // Past the end: 0.
        let (res, _) = file.read_at(Vec::with_capacity(8), 6 << 20).await;
        assert_eq!(res.unwrap(), 0);
        // Overwrite in the middle, read back.
        let (res, _) = file.write_at(&b"RINGIO"[..], 1000).await;
        assert_eq!(res.unwrap(), 6);
        let (res, buf) = file.read_at(Vec::with_capacity(10), 998).await;
        assert_eq!(res.unwrap(), 10);
        assert_eq!(&buf[2..8], b"RINGIO");
        assert_eq!(&buf[..2], &data[998..1000]);
        assert_eq!(&buf[8..], &data[1006..1008]);
        file.close().await.unwrap();
        // std agrees about the bytes.
        let on_disk = std::fs::read(&path).unwrap();
        assert_eq!(&on_disk[1000..1006], b"RINGIO");
        assert_eq!(on_disk.len(), data.len());
    });
}

#[test]
fn whole_file_helpers_and_directories() {
    let _g = serial();
    let dir = TempDir::new("helpers");
    let d = dir.0.clone();
    ringio::run(async move {
        let a = d.join("a.txt");
        let b = d.join("b.txt");
        fs::write(&a, b"hello ring".to_vec()).await.unwrap();
        assert_eq!(fs::read(&a).await.unwrap(), b"hello ring");
        assert_eq!(fs::metadata(&a).await.unwrap().len(), 10);
        // Overwrite truncates.
        fs::write(&a, &b"hi"[..]).await.unwrap();
        assert_eq!(fs::read(&a).await.unwrap(), b"hi");
        fs::rename(&a, &b).await.unwrap();
        assert_eq!(
            fs::metadata(&a).await.unwrap_err().raw_os_error(),
            Some(libc::ENOENT)
        );
        assert_eq!(fs::read(&b).await.unwrap(), b"hi");
        fs::remove_file(&b).await.unwrap();
        assert_eq!(
            fs::remove_file(&b).await.unwrap_err().raw_os_error(),
            Some(libc::ENOENT)
        );
        // Directories.
        let sub = d.join("sub");
        fs::create_dir(&sub).await.unwrap();
        assert!(fs::metadata(&sub).await.unwrap().is_dir());
        assert_eq!(
            fs::create_dir(&sub).await.unwrap_err().raw_os_error(),
            Some(libc::EEXIST)
        );
        fs::write(sub.join("f"), vec![1u8; 10]).await.unwrap();
        assert_eq!(
            fs::remove_dir(&sub).await.unwrap_err().raw_os_error(),
            Some(libc::ENOTEMPTY)
        );
        assert_eq!(
            fs::remove_file(&sub).await.unwrap_err().raw_os_error(),
            Some(libc::EISDIR)
        );
        fs::remove_file(sub.join("f")).await.unwrap();
        fs::remove_dir(&sub).await.unwrap();
        // Symlinks: metadata follows, symlink_metadata does not.
        let target = d.join("target");
        fs::write(&target, vec![0u8; 3]).await.unwrap();
        let link = d.join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(fs::metadata(&link).await.unwrap().is_file());
        assert!(fs::symlink_metadata(&link).await.unwrap().is_symlink());
        // Large file through the helpers.
        let big = pattern(7, (3 << 20) + 17);
        fs::write(d.join("big"), big.clone()).await.unwrap();
        assert!(fs::read(d.join("big")).await.unwrap() == big);
    });
}

#[test]
fn open_options_and_bad_input() {
    let _g = serial();
    let dir = TempDir::new("options");
    let d = dir.0.clone();
    ringio::run(async move {
        let p = d.join("x");
        // Missing file.
        let e = File::open(&p).await.unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOENT), "{e}");
        // create_new, then again: EEXIST.
        let f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&p)
            .await
            .unwrap();
        f.close().await.unwrap();
        let e = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&p)
            .await
            .unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EEXIST));
        // Neither read nor write; create without write: clear errors.
        let e = OpenOptions::new().open(&p).await.unwrap_err();
        assert!(matches!(e, Error::InvalidArgument(_)), "{e}");
        let e = OpenOptions::new()
            .read(true)
            .create(true)
            .open(&p)
            .await
            .unwrap_err();
        assert!(matches!(e, Error::InvalidArgument(_)), "{e}");
        // A NUL in a path.
        let e = File::open("bad\0path").await.unwrap_err();
        assert!(matches!(e, Error::InvalidArgument(_)), "{e}");
        assert!(fs::remove_file("a\0b").await.is_err());
        // Append goes to the end.
        fs::write(&p, &b"one"[..]).await.unwrap();
        let f = OpenOptions::new().append(true).open(&p).await.unwrap();
        let (res, _) = f.write_at(&b"two"[..], 0).await;
        assert_eq!(res.unwrap(), 3);
        f.close().await.unwrap();
        assert_eq!(fs::read(&p).await.unwrap(), b"onetwo");
        // Writing to a read-only file: EBADF from the kernel.
        let f = File::open(&p).await.unwrap();
        let (res, _) = f.write_at(&b"x"[..], 0).await;
        assert_eq!(res.unwrap_err().raw_os_error(), Some(libc::EBADF));
        // A 0-byte buffer: an error that says what to do, not end of file.
        let (res, _) = f.read_at(Vec::new(), 0).await;
        match res {
            Err(Error::InvalidArgument(m)) => assert!(m.contains("Vec::with_capacity"), "{m}"),
            other => panic!("read_at into no room gave {other:?}"),
        }
        drop(f);
        // An invalid descriptor.
        // SAFETY: 1_000_000 is above the fd limit; we take it back out
        // before the File would close it.
        let bogus = unsafe { File::from_raw_fd(1_000_000) };
        let (res, _) = bogus.read_at(Vec::with_capacity(4), 0).await;
        assert_eq!(res.unwrap_err().raw_os_error(), Some(libc::EBADF));
        assert_eq!(
            bogus.metadata().await.unwrap_err().raw_os_error(),
            Some(libc::EBADF)
        );
        assert_eq!(
            bogus.sync_all().await.unwrap_err().raw_os_error(),
            Some(libc::EBADF)
        );
        let _ = bogus.into_raw_fd();
        // Out-of-range slice: error with the buffer back.
        let (e, v) = vec![1u8; 3].try_slice(4..).unwrap_err();
        assert!(matches!(e, Error::InvalidArgument(_)));
        assert_eq!(v, vec![1u8; 3]);
        // A bad alignment.
        assert!(AlignedBuf::new(4096, 3).is_err());
    });
}

#[test]
fn o_direct_with_aligned_buffers() {
    let _g = serial();
    let dir = TempDir::new("direct");
    let p = dir.path("direct.bin");
    ringio::run(async move {
        let data = pattern(3, 1 << 20);
        fs::write(&p, data.clone()).await.unwrap();
        let f = match OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECT)
            .open(&p)
            .await
        {
            Ok(f) => f,
            // A filesystem without O_DIRECT (tmpfs).
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => return,
            Err(e) => panic!("{e}"),
        };
        for off in [0u64, 4096, 65536, (1 << 20) - 8192] {
            let buf = AlignedBuf::new(8192, 4096).unwrap();
            let (res, buf) = f.read_at(buf, off).await;
            assert_eq!(res.unwrap(), 8192);
            assert_eq!(&buf[..], &data[off as usize..off as usize + 8192]);
        }
        // Misaligned buffer: EINVAL from the kernel, no panic.
        let buf = AlignedBuf::new(8192 + 1, 4096).unwrap().slice(1..);
        let (res, _) = f.read_at(buf, 0).await;
        assert_eq!(res.unwrap_err().raw_os_error(), Some(libc::EINVAL));
        f.close().await.unwrap();
    });
}

#[test]
fn cancel_pending_pipe_read_keeps_data_and_times_out() {
    let _g = serial();
    ringio::run(async {
        let (r, w) = pipe();
        let r = std::rc::Rc::new(r);
        let before = stats().ops_canceled_by_kernel;
        let t = {
            let r = r.clone();
            ringio::create_task(async move {
                let (res, buf) = ringio::io::read(&*r, Vec::with_capacity(32)).await;
                assert!(matches!(res, Err(Error::Cancelled { .. })), "{res:?}");
                assert_eq!(buf.capacity(), 32);
                res
            })
        };
        ringio::sleep(Duration::from_millis(20)).await.unwrap();
        t.cancel_with("stop reading");
        let e = t.clone().await.unwrap_err();
        assert!(
            matches!(&e, Error::Cancelled { msg: Some(m) } if m == "stop reading"),
            "{e:?}"
        );
        assert!(stats().ops_canceled_by_kernel > before);
        // Data written while no read is pending is read later.
        let (res, _) = ringio::io::write_all(&w, &b"later"[..]).await;
        res.unwrap();
        let (res, buf) = ringio::io::read(&*r, Vec::with_capacity(32)).await;
        assert_eq!(&buf[..res.unwrap()], b"later");
        // A deadline on an empty pipe.
        let (res, _) = ringio::io::read(&*r, Vec::with_capacity(32))
            .timeout(Duration::from_millis(30))
            .await;
        assert!(matches!(res, Err(Error::Timeout)), "{res:?}");
        // EOF when the writer goes away.
        drop(w);
        let (res, _) = ringio::io::read(&*r, Vec::with_capacity(32)).await;
        assert_eq!(res.unwrap(), 0);
        settle().await;
    });
}

#[test]
fn dropping_open_and_read_futures_leaks_nothing() {
    let _g = serial();
    let dir = TempDir::new("drops");
    let p = dir.path("f");
    std::fs::write(&p, pattern(9, 1 << 16)).unwrap();
    let fds_before = settled_open_fds();
    ringio::run(async move {
        let (r, _w) = pipe();
        let file = File::open(&p).await.unwrap();
        for i in 0..2000 {
            // Opens the kernel completes after the drop are closed.
            poll_once_and_drop(File::open(&p)).await;
            poll_once_and_drop(file.read_at(vec![0u8; 4096], 0)).await;
            poll_once_and_drop(ringio::io::read(&r, Vec::with_capacity(16))).await;
            if i % 50 == 0 {
                ringio::io::nop().await.unwrap();
            }
        }
        settle().await;
        let (res, buf) = file.read_at(Vec::with_capacity(16), 0).await;
        assert_eq!(&buf[..res.unwrap()], &pattern(9, 16)[..]);
        file.close().await.unwrap();
        assert_eq!(stats().ops_in_flight, 0);
    });
    assert_eq!(open_fds(), fds_before, "file descriptors leaked");
}

#[test]
fn compat_reader_over_a_file_and_close_errors() {
    let _g = serial();
    let dir = TempDir::new("compat");
    let p = dir.path("f");
    let data = pattern(11, 300_000);
    std::fs::write(&p, &data).unwrap();
    ringio::run(async move {
        let f = File::open(&p).await.unwrap();
        let mut r = Compat::with_capacity(4096, f);
        let mut got = Vec::new();
        r.read_to_end(&mut got).await.unwrap();
        assert!(got == data);
        // Closing a descriptor that is not open reports EBADF.
        // SAFETY: 1_000_000 is above the fd limit; `close` gives it up.
        let bogus = unsafe { File::from_raw_fd(1_000_000) };
        assert_eq!(
            bogus.close().await.unwrap_err().raw_os_error(),
            Some(libc::EBADF)
        );
    });
}

#[test]
fn read_to_end_of_a_pipe_and_a_proc_file() {
    let _g = serial();
    ringio::run(async {
        let (r, w) = pipe();
        let writer = std::thread::spawn(move || {
            let mut w = w;
            std::io::Write::write_all(&mut w, &pattern(4, 200_000)).unwrap();
        });
        let f = File::from_std(r);
        let (res, buf) = f.read_to_end(Vec::new()).await;
        assert_eq!(res.unwrap(), 200_000);
        assert!(buf == pattern(4, 200_000));
        writer.join().unwrap();
        // procfs reports size 0 but has content.
        let status = fs::read("/proc/self/status").await.unwrap();
        assert!(String::from_utf8_lossy(&status).contains("Pid:"));
    });
}

/// Reads the whole of `f` from its current position with `std`.
fn rest_of(f: &mut std::fs::File) -> Vec<u8> {
    use std::io::Read;
    let mut v = Vec::new();
    f.read_to_end(&mut v).unwrap();
    v
}

/// Makes descriptor number `target` refer to `src`'s file: what closing
/// `target` and opening another file that gets the same number does, in
/// one atomic step (so no other test thread can take the number between).
fn reuse_number(src: &std::fs::File, target: i32) {
    use std::os::fd::AsRawFd;
    // SAFETY: dup2 onto a descriptor this test owns; it closes the old file.
    let rc = unsafe { libc::dup2(src.as_raw_fd(), target) };
    assert_eq!(rc, target, "dup2: {}", std::io::Error::last_os_error());
}

#[test]
fn a_dropped_read_never_runs_on_a_reused_descriptor_number() {
    let _g = serial();
    let dir = TempDir::new("reused-read");
    let (pa, pb) = (dir.path("a"), dir.path("b"));
    std::fs::write(&pa, b"old file").unwrap();
    std::fs::write(&pb, b"new file").unwrap();
    ringio::run(async move {
        let a = std::fs::File::open(&pa).unwrap();
        let mut b = std::fs::File::open(&pb).unwrap();
        // The read is queued on `a`'s number, then its future is dropped
        // before the loop entered the kernel.
        poll_once_and_drop(ringio::io::read(&a, Vec::with_capacity(64))).await;
        let num = a.into_raw_fd();
        // `a` is closed and its number now names `b`'s open file.
        reuse_number(&b, num);
        settle().await;
        // Nothing read from `b`: its position is still at its start.
        assert_eq!(
            rest_of(&mut b),
            b"new file",
            "the dropped read ran on the new file"
        );
        // SAFETY: `num` is ours (the dup of `b`).
        unsafe { libc::close(num) };
    });
}

/// A stream whose "close" reuses its number for another file at once
/// (what a close followed by an open elsewhere in the process can do).
struct ReusedOnClose {
    fd: i32,
    next: std::fs::File,
}

impl std::os::fd::AsRawFd for ReusedOnClose {
    fn as_raw_fd(&self) -> i32 {
        self.fd
    }
}

impl Drop for ReusedOnClose {
    fn drop(&mut self) {
        reuse_number(&self.next, self.fd);
    }
}

#[test]
fn compat_write_behind_never_lands_in_a_reused_descriptor_number() {
    use futures_util::io::AsyncWriteExt;
    use std::io::Read;
    let _g = serial();
    let (mut old_r, old_w) = pipe();
    let (mut new_r, new_w) = pipe();
    for r in [&old_r, &new_r] {
        // SAFETY: F_SETFL on a pipe end we own.
        unsafe {
            libc::fcntl(
                std::os::fd::AsRawFd::as_raw_fd(r),
                libc::F_SETFL,
                libc::O_NONBLOCK,
            )
        };
    }
    ringio::run(async move {
        let num = old_w.into_raw_fd();
        let mut w = Compat::new(ReusedOnClose {
            fd: num,
            next: new_w,
        });
        // Write-behind: reported written, the WRITE only queued.
        assert_eq!(w.write(b"payload").await.unwrap(), 7);
        drop(w);
        settle().await;
        // SAFETY: `num` now names the dup of the new pipe, ours to close.
        unsafe { libc::close(num) };
    });
    let mut got = [0u8; 16];
    let stolen = new_r.read(&mut got);
    assert!(
        stolen.as_ref().is_ok_and(|&n| n == 0) || stolen.is_err(),
        "the write-behind went into the new pipe: {:?}",
        stolen.map(|n| String::from_utf8_lossy(&got[..n]).into_owned())
    );
    let n = old_r.read(&mut got).unwrap();
    assert_eq!(
        &got[..n],
        b"payload",
        "the write-behind reached its own pipe"
    );
}

/// The (device, inode) a descriptor number names now, if it is open.
fn identity(fd: i32) -> Option<(u64, u64)> {
    // SAFETY: all-zero is a valid `stat`; fstat fills it in on success.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat of any number is safe; a closed one gives EBADF.
    let rc = unsafe { libc::fstat(fd, &mut st) };
    (rc == 0).then_some((st.st_dev, st.st_ino))
}

#[test]
fn close_with_a_cancel_pending_still_closes_the_file() {
    use std::os::fd::AsRawFd;
    let _g = serial();
    let dir = TempDir::new("close-cancel");
    let p = dir.path("f");
    ringio::run(async move {
        let f = File::create(&p).await.unwrap();
        let num = f.as_raw_fd();
        let id = identity(num);
        assert!(id.is_some());
        let t = ringio::create_task(async move {
            ringio::current_task().unwrap().cancel_with("self");
            let closed = f.close().await;
            // The cancel is still delivered: here, or at the next await.
            let next = ringio::sleep(Duration::from_millis(1)).await;
            Ok::<_, Error>((closed, next))
        });
        let (closed, next) = t.await.unwrap();
        assert!(
            closed.as_ref().is_err_and(Error::is_cancelled)
                || next.is_err_and(|e| e.is_cancelled()),
            "the cancel was lost: close gave {closed:?}"
        );
        assert_ne!(identity(num), id, "the file is still open after close()");
    });
}

/// Descriptors of this process open on `path`.
fn fds_open_on(path: &std::path::Path) -> usize {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|l| l == path)
        .count()
}

#[test]
fn shutdown_closes_a_file_opened_but_never_read() {
    let _g = serial();
    let dir = TempDir::new("open-unread");
    let p = dir.path("f");
    std::fs::write(&p, b"x").unwrap();
    let p2 = p.clone();
    ringio::run(async move {
        let mut open = Box::pin(File::open(p2));
        assert!(futures_util::poll!(open.as_mut()).is_pending());
        // Let the loop reap the open's completion.
        for _ in 0..20 {
            ringio::sleep(Duration::from_millis(5)).await.unwrap();
        }
        // Never polled again nor dropped: the completed open is still in
        // the loop's op table when run() shuts down. (This leaks the loop,
        // its ring and descriptors included, so only the file is counted.)
        std::mem::forget(open);
    });
    assert_eq!(fds_open_on(&p), 0, "the opened file leaked at shutdown");
}

#[test]
fn a_dropped_write_never_lands_in_a_reused_descriptor_number() {
    use std::io::Read;
    let _g = serial();
    let (mut old_r, old_w) = pipe();
    let (mut new_r, new_w) = pipe();
    for r in [&old_r, &new_r] {
        // SAFETY: F_SETFL on a pipe end we own.
        unsafe {
            libc::fcntl(
                std::os::fd::AsRawFd::as_raw_fd(r),
                libc::F_SETFL,
                libc::O_NONBLOCK,
            )
        };
    }
    ringio::run(async move {
        poll_once_and_drop(ringio::io::write(&old_w, b"one".to_vec())).await;
        poll_once_and_drop(ringio::io::write_all(&old_w, b"two".to_vec())).await;
        let num = old_w.into_raw_fd();
        reuse_number(&new_w, num);
        settle().await;
        // SAFETY: `num` now names the dup of the new pipe, ours to close.
        unsafe { libc::close(num) };
    });
    let mut got = [0u8; 16];
    let stolen = new_r.read(&mut got);
    assert!(
        stolen.as_ref().is_ok_and(|&n| n == 0) || stolen.is_err(),
        "a dropped write went into the new pipe: {:?}",
        stolen.map(|n| String::from_utf8_lossy(&got[..n]).into_owned())
    );
    let n = old_r.read(&mut got).unwrap();
    assert_eq!(
        &got[..n],
        b"onetwo",
        "the dropped writes reached their own pipe"
    );
}
