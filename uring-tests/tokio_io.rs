//! Integration tests: `tokio::io` traits on `io::Compat` (feature
//! `tokio-io`), against a real ring, driven by `tokio-util` codecs.

mod common;
use common::*;

use futures_util::{SinkExt, StreamExt};
use ringio::io::Compat;
use ringio::net::{TcpListener, TcpStream, UnixStream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::bytes::Bytes;
use tokio_util::codec::{Framed, FramedRead, LengthDelimitedCodec, LinesCodec};

/// Length-delimited frames over a Unix socket pair, both ways, including
/// frames larger than the adapter's buffers.
#[test]
fn codec_frames_round_trip_over_a_socket_pair() {
    block_on(async {
        let (a, b) = UnixStream::pair()?;
        // Small buffers: big frames cross in many reads and writes.
        let mut client = Framed::new(Compat::with_capacity(4096, a), LengthDelimitedCodec::new());
        let mut server = Framed::new(Compat::with_capacity(4096, b), LengthDelimitedCodec::new());
        let frames: Vec<Vec<u8>> = (0..20).map(|i| pattern(i, (i as usize) * 7_001)).collect();
        let echo = ringio::create_task(async move {
            // Echo each frame back, reversed, until the client closes.
            let mut n = 0;
            while let Some(frame) = server.next().await {
                let mut f = frame?.to_vec();
                f.reverse();
                server.send(Bytes::from(f)).await?;
                n += 1;
            }
            Ok::<_, ringio::Error>(n)
        });
        for f in &frames {
            client.send(Bytes::from(f.clone())).await?;
            let back = client.next().await.expect("a frame back")?;
            let mut want = f.clone();
            want.reverse();
            assert_eq!(back.len(), want.len());
            assert!(back[..] == want[..], "frame of {} bytes differs", f.len());
        }
        // Shutting down the write half ends the echo task's stream.
        SinkExt::<Bytes>::close(&mut client).await?;
        assert_eq!(echo.await?, frames.len());
        Ok::<_, ringio::Error>(())
    })
    .unwrap();
}

/// Lines over loopback TCP: `poll_shutdown` flushes the write-behind
/// buffer and shuts the write half, so the reader sees every line, then
/// the end.
#[test]
fn lines_over_tcp_then_shutdown() {
    block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let reader = ringio::create_task(async move {
            let (s, _) = listener.accept().await?;
            let mut lines = FramedRead::new(Compat::new(s), LinesCodec::new());
            let mut got = Vec::new();
            while let Some(line) = lines.next().await {
                got.push(line.map_err(ringio::Error::other)?);
            }
            Ok::<_, ringio::Error>(got)
        });
        let mut w = Compat::new(TcpStream::connect(addr).await?);
        for i in 0..1000 {
            w.write_all(format!("line {i}\n").as_bytes()).await?;
        }
        w.shutdown().await?;
        let got = reader.await?;
        assert_eq!(got.len(), 1000);
        assert_eq!(got[0], "line 0");
        assert_eq!(got[999], "line 999");
        Ok::<_, ringio::Error>(())
    })
    .unwrap();
}

/// A file through tokio's traits: written, then read back.
#[test]
fn file_through_tokio_traits() {
    let path = std::env::temp_dir().join(format!("ringio-tokio-io-{}", std::process::id()));
    let data = pattern(7, 300_000);
    let p = path.clone();
    let expected = data.clone();
    block_on(async move {
        let f = ringio::fs::File::create(&p).await?;
        let mut w = Compat::with_capacity(8192, f);
        w.write_all(&data).await?;
        w.flush().await?;
        drop(w);
        let mut r = Compat::with_capacity(8192, ringio::fs::File::open(&p).await?);
        let mut got = Vec::new();
        r.read_to_end(&mut got).await?;
        assert!(got == expected, "file content differs");
        Ok::<_, ringio::Error>(())
    })
    .unwrap();
    let _ = std::fs::remove_file(&path);
}

/// Cancelling the task blocked in a read through tokio's traits ends it
/// cancelled (the error survives `?`), and the ring has nothing left in
/// flight.
#[test]
fn cancel_a_read_through_tokio_traits() {
    block_on(async {
        let (a, _b) = UnixStream::pair()?;
        let task = ringio::create_task(async move {
            let mut r = Compat::new(a);
            let mut buf = [0u8; 16];
            let n = r.read(&mut buf).await?;
            Ok::<_, ringio::Error>(n)
        });
        ringio::sleep(ms(20)).await?;
        task.cancel();
        let e = task.await.unwrap_err();
        assert!(e.is_cancelled(), "{e:?}");
        settle().await;
        Ok::<_, ringio::Error>(())
    })
    .unwrap();
}

/// Reads from `r` until `n` bytes came (std, blocking).
fn read_n(r: &mut impl std::io::Read, n: usize) -> Vec<u8> {
    let mut got = vec![0u8; n];
    r.read_exact(&mut got).unwrap();
    got
}

/// A vectored write gathers its slices, in order, into one ring send: it
/// reports every byte taken, the peer gets them in order, and the ring saw
/// one operation for the lot (not one per slice).
#[test]
fn vectored_write_is_one_send_with_every_byte_in_order() {
    use std::io::IoSlice;
    let (a, mut b) = std::os::unix::net::UnixStream::pair().unwrap();
    block_on(async move {
        use std::os::fd::{FromRawFd, IntoRawFd};
        // SAFETY: the std stream gives up its descriptor to ringio's.
        let a = unsafe { UnixStream::from_raw_fd(a.into_raw_fd()) };
        let mut w = Compat::with_capacity(4096, a);
        let parts: Vec<Vec<u8>> = (0..7).map(|i| pattern(i, 10 + 97 * i as usize)).collect();
        let slices: Vec<IoSlice<'_>> = parts.iter().map(|p| IoSlice::new(p)).collect();
        let total: usize = parts.iter().map(Vec::len).sum();
        assert!(total < 4096);
        assert!(tokio::io::AsyncWrite::is_write_vectored(&w));
        let before = stats().ops_submitted;
        let n = w.write_vectored(&slices).await?;
        w.flush().await?;
        assert_eq!(n, total, "all slices fit in the buffer: all taken");
        assert_eq!(
            stats().ops_submitted - before,
            1,
            "one send for seven slices"
        );
        let got = read_n(&mut b, total);
        assert!(
            got == parts.concat(),
            "the bytes arrived out of order or changed"
        );

        // More than the buffer holds: it takes a buffer's worth (the
        // slices' first bytes, in order), and writing the rest delivers
        // everything in order.
        let big: Vec<Vec<u8>> = (0..5).map(|i| pattern(100 + i, 1500)).collect();
        let all = big.concat();
        let mut done = 0;
        let reader = std::thread::spawn(move || read_n(&mut b, 7500));
        while done < all.len() {
            // The slices of what is left, as a caller of write_vectored
            // would advance them.
            let mut left = Vec::new();
            let mut skip = done;
            for p in &big {
                if skip >= p.len() {
                    skip -= p.len();
                    continue;
                }
                left.push(IoSlice::new(&p[skip..]));
                skip = 0;
            }
            let n = w.write_vectored(&left).await?;
            assert_eq!(
                n,
                (all.len() - done).min(4096),
                "a buffer's worth per write"
            );
            done += n;
        }
        w.flush().await?;
        let got = reader.join().unwrap();
        assert!(got == all, "the bytes arrived out of order or changed");
        Ok::<_, ringio::Error>(())
    })
    .unwrap();
}

/// A write larger than a socket takes in one send (a 4 MiB adapter
/// buffer, a small send buffer, a slow reader): the send goes out in
/// parts, one ring operation after another, and the peer gets every byte
/// in order before the flush returns.
#[test]
fn one_write_larger_than_the_socket_buffer_goes_out_in_parts() {
    let (a, mut b) = std::os::unix::net::UnixStream::pair().unwrap();
    let data = pattern(9, 4 << 20);
    let want = data.clone();
    let reader = std::thread::spawn(move || {
        let mut got = Vec::new();
        let mut chunk = vec![0u8; 8192];
        loop {
            let n = std::io::Read::read(&mut b, &mut chunk).unwrap();
            if n == 0 {
                return got;
            }
            got.extend_from_slice(&chunk[..n]);
            if got.len() % (256 << 10) < 8192 {
                std::thread::sleep(ms(1));
            }
        }
    });
    block_on(async move {
        use std::os::fd::{FromRawFd, IntoRawFd};
        // SAFETY: the std stream gives up its descriptor to ringio's.
        let a = unsafe { UnixStream::from_raw_fd(a.into_raw_fd()) };
        let mut w = Compat::with_capacity(4 << 20, a);
        let before = stats().ops_submitted;
        assert_eq!(w.write(&data).await?, data.len());
        w.flush().await?;
        assert!(
            stats().ops_submitted - before > 1,
            "4 MiB should not fit a Unix socket's buffer in one send"
        );
        w.shutdown().await?;
        Ok::<_, ringio::Error>(())
    })
    .unwrap();
    let got = reader.join().unwrap();
    assert_eq!(got.len(), want.len());
    assert!(got == want, "the bytes arrived out of order or changed");
}

/// A socket whose descriptor number is reused by another socket the moment
/// it closes.
struct ReusedOnClose {
    fd: i32,
    next: std::os::fd::OwnedFd,
}

impl std::os::fd::AsRawFd for ReusedOnClose {
    fn as_raw_fd(&self) -> i32 {
        self.fd
    }
}

impl Drop for ReusedOnClose {
    fn drop(&mut self) {
        use std::os::fd::AsRawFd;
        // Closes `fd` and makes its number name `next`'s socket at once.
        // SAFETY: both descriptors are open and ours.
        assert!(unsafe { libc::dup2(self.next.as_raw_fd(), self.fd) } >= 0);
    }
}

/// Dropping the adapter right after a vectored write (reported written,
/// its send only queued) closes the socket after the send went to the
/// kernel: the bytes reach the socket they were written to, never the one
/// that takes its descriptor number next.
#[test]
fn dropped_adapter_mid_write_never_sends_to_a_reused_descriptor() {
    use std::io::IoSlice;
    use std::os::fd::{IntoRawFd, OwnedFd};
    let (old_a, mut old_b) = std::os::unix::net::UnixStream::pair().unwrap();
    let (new_a, mut new_b) = std::os::unix::net::UnixStream::pair().unwrap();
    new_b.set_nonblocking(true).unwrap();
    block_on(async move {
        let fd = old_a.into_raw_fd();
        let mut w = Compat::new(ReusedOnClose {
            fd,
            next: OwnedFd::from(new_a),
        });
        let n = w
            .write_vectored(&[IoSlice::new(b"pay"), IoSlice::new(b"load")])
            .await?;
        assert_eq!(n, 7, "write-behind: reported written, the send queued");
        drop(w);
        settle().await;
        // SAFETY: `fd` now names the dup of the new socket, ours to close.
        unsafe { libc::close(fd) };
        Ok::<_, ringio::Error>(())
    })
    .unwrap();
    let mut got = [0u8; 16];
    let stolen = std::io::Read::read(&mut new_b, &mut got);
    assert!(
        // Nothing there (WouldBlock), or the end once both of its ends closed.
        matches!(&stolen, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
            || matches!(stolen, Ok(0)),
        "the send went to the socket that reused the number: {stolen:?}"
    );
    let n = std::io::Read::read(&mut old_b, &mut got).unwrap();
    assert_eq!(&got[..n], b"payload", "the send reached its own socket");
}

/// A write that cannot start reports why at once instead of taking the
/// bytes: outside a running loop it is the "no running event loop" error,
/// and in a task with a cancellation pending it delivers the cancellation,
/// with nothing sent.
#[test]
fn a_write_that_cannot_start_reports_it_at_once() {
    use futures_util::FutureExt;
    let (a, mut b) = std::os::unix::net::UnixStream::pair().unwrap();
    b.set_nonblocking(true).unwrap();
    let a = {
        use std::os::fd::{FromRawFd, IntoRawFd};
        // SAFETY: the std stream gives up its descriptor to ringio's.
        unsafe { UnixStream::from_raw_fd(a.into_raw_fd()) }
    };
    let mut w = Compat::new(a);
    let e = w
        .write(b"x")
        .now_or_never()
        .expect("ready at once")
        .unwrap_err();
    let e = ringio::Error::from(e);
    assert!(e.to_string().contains("no running event loop"), "{e}");

    block_on(async move {
        let task = ringio::create_task(async move {
            ringio::current_task().unwrap().cancel();
            let r = w.write(b"lost").await;
            Ok::<_, ringio::Error>(r.map_err(ringio::Error::from))
        });
        let r = task.await?;
        assert!(r.as_ref().is_err_and(ringio::Error::is_cancelled), "{r:?}");
        settle().await;
        Ok::<_, ringio::Error>(())
    })
    .unwrap();
    let mut got = [0u8; 8];
    let r = std::io::Read::read(&mut b, &mut got);
    assert!(
        matches!(&r, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock) || matches!(r, Ok(0)),
        "a cancelled write sent bytes: {r:?}"
    );
}

/// Writes under a deadline to a peer that reads nothing: once the socket's
/// buffer is full, a send waits, its linked timeout fires at the deadline,
/// and the write-behind reports `TimedOut` (`Error::Timeout` through `?`)
/// at the next write. Nothing is left in flight.
#[test]
fn writes_under_a_deadline_time_out_when_the_peer_reads_nothing() {
    block_on(async {
        let (a, _b) = UnixStream::pair()?;
        let mut w = Compat::with_capacity(64 * 1024, a);
        let chunk = vec![7u8; 64 * 1024];
        let t0 = std::time::Instant::now();
        let mut sent = 0usize;
        let r: std::io::Result<()> = ringio::io::with_timeout(ms(100), async {
            loop {
                w.write_all(&chunk).await?;
                sent += chunk.len();
            }
        })
        .await;
        let e = r.unwrap_err();
        let took = t0.elapsed();
        assert_eq!(e.kind(), std::io::ErrorKind::TimedOut, "{e:?}");
        assert!(matches!(ringio::Error::from(e), ringio::Error::Timeout));
        assert!(took >= ms(100), "timed out early: {took:?}");
        assert!(took < std::time::Duration::from_secs(5), "{took:?}");
        assert!(sent > 0, "the first writes fit in the socket's buffer");
        drop(w);
        settle().await;
        Ok::<_, ringio::Error>(())
    })
    .unwrap();
}
