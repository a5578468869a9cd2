//! Integration tests: `io::Compat::with_buf_ring`, the adapter's reads
//! from one multishot receive into a provided-buffer ring (against a real
//! ring). Each test runs with the pool registered with the kernel and with
//! the user-space fallback (`BufRingMode::Local`, the path taken on a
//! kernel without provided-buffer rings or multishot receives).

mod common;
use common::*;

use std::net::Shutdown;
use std::time::Duration;

use futures_util::io::{AsyncReadExt, AsyncWriteExt};

use ringio::Error;
use ringio::io::{BufRing, BufRingMode, Compat};
use ringio::net::UnixStream;
#[cfg(feature = "hyper")]
use ringio::net::{TcpListener, TcpStream};

/// 200 KB through a pool of 4 buffers of 64 bytes (the kernel's multishot
/// receive runs dry and is re-armed over and over), read in slices of
/// every size from 1 to 300 bytes: every byte arrives once, in order, then
/// end of stream; every buffer is back in the pool.
#[test]
fn reads_every_byte_in_order_through_a_small_pool() {
    let _g = serial();
    for mode in MODES {
        ringio::run(async move {
            let (client, server) = tcp_pair().await;
            let ring = pool(mode, 4, 64);
            let data = pattern(1, 200_000);
            let expected = data.clone();
            let writer = send_then_close(client, data);
            let mut io = Compat::with_buf_ring(&ring, 1024, server);
            let mut got = Vec::with_capacity(expected.len());
            let mut buf = [0u8; 300];
            let mut size = 1;
            loop {
                let n = io.read(&mut buf[..size]).await.unwrap();
                if n == 0 {
                    break;
                }
                assert!(n <= size);
                got.extend_from_slice(&buf[..n]);
                size = size % 300 + 1;
            }
            assert_eq!(got.len(), expected.len(), "{mode:?}");
            assert!(got == expected, "{mode:?}: bytes differ");
            // End of stream stays end of stream.
            assert_eq!(io.read(&mut buf).await.unwrap(), 0);
            let _client = writer.await.unwrap();
            drop(io);
            settle().await;
            assert_eq!(ring.available(), 4, "{mode:?}: a buffer was not returned");
        });
    }
}

/// A request/response exchange of 100 rounds on one connection: with the
/// kernel's pool the server's reads are one armed multishot receive, so
/// the ring sees one op per round fewer than with plain `Compat` reads
/// (a receive each). Counted with the loop's `ops_submitted`, which also
/// counts the client's send and receive of each round.
#[test]
fn one_armed_receive_serves_a_keep_alive_connection() {
    let _g = serial();
    const ROUNDS: u64 = 100;
    let submitted = |ring_reads: bool| {
        ringio::run(async move {
            let (client, server) = tcp_pair().await;
            let ring = pool(BufRingMode::Kernel, 8, 256);
            let mut io = if ring_reads {
                Compat::with_buf_ring(&ring, 256, server)
            } else {
                Compat::with_capacity(256, server)
            };
            let before = stats().ops_submitted;
            let echo = ringio::create_task(async move {
                let mut buf = [0u8; 64];
                loop {
                    let n = io.read(&mut buf).await?;
                    if n == 0 {
                        return Ok::<_, Error>(());
                    }
                    io.write_all(&buf[..n]).await?;
                    io.flush().await?;
                }
            });
            for i in 0..ROUNDS {
                let msg = pattern(i, 40);
                let (r, _) = client.write_all(msg.clone()).await;
                r.unwrap();
                let (r, back) = client.read_exact(Vec::with_capacity(40)).await;
                r.unwrap();
                assert_eq!(back, msg);
            }
            let ops = stats().ops_submitted - before;
            client.shutdown(Shutdown::Write).await.unwrap();
            echo.await.unwrap();
            ops
        })
    };
    let plain = submitted(false);
    let multi = submitted(true);
    // Plain: per round the client's send and receive, the server's receive
    // and send (4). With the ring: 3, plus the one multishot arming.
    assert!(plain >= 4 * ROUNDS, "plain Compat submitted {plain} ops");
    assert!(
        multi <= 3 * ROUNDS + 5,
        "with the ring {multi} ops (plain {plain}): the receive was not kept armed"
    );
}

/// `into_inner` leaves the bytes received and not yet read with the
/// socket (ahead of bytes still in the kernel), and a read future dropped
/// while it waits loses nothing: the socket's own reads get everything,
/// in order. TCP and Unix streams.
#[test]
fn into_inner_and_dropped_reads_lose_no_bytes() {
    let _g = serial();
    for mode in MODES {
        ringio::run(async move {
            let ring = pool(mode, 8, 64);
            // TCP
            let (client, server) = tcp_pair().await;
            let mut io = Compat::with_buf_ring(&ring, 64, server);
            // Dropped while it waits (the receive is armed, nothing came).
            let mut buf = [0u8; 5];
            poll_once_and_drop(io.read(&mut buf)).await;
            let (r, _) = client.write_all(b"hello world".to_vec()).await;
            r.unwrap();
            io.read_exact(&mut buf).await.unwrap();
            assert_eq!(&buf, b"hello");
            let server = io.into_inner();
            let (r, _) = client.write_all(b", more".to_vec()).await;
            r.unwrap();
            client.shutdown(Shutdown::Write).await.unwrap();
            let mut rest = Vec::new();
            loop {
                let (r, b) = server.read(Vec::with_capacity(64)).await;
                if r.unwrap() == 0 {
                    break;
                }
                rest.extend_from_slice(&b);
            }
            assert_eq!(rest, b" world, more", "{mode:?}");

            // Unix
            let (a, b) = UnixStream::pair().unwrap();
            let mut io = Compat::with_buf_ring(&ring, 64, b);
            a.write_all(b"abcdefgh".to_vec()).await.0.unwrap();
            let mut two = [0u8; 2];
            io.read_exact(&mut two).await.unwrap();
            assert_eq!(&two, b"ab");
            let b = io.into_inner();
            let (r, got) = b.read(Vec::with_capacity(64)).await;
            assert_eq!(r.unwrap(), 6);
            assert_eq!(got, b"cdefgh", "{mode:?}");
            drop((a, b));
            settle().await;
            assert_eq!(ring.available(), 8, "{mode:?}: a buffer was not returned");
        });
    }
}

/// Cancelling the task that waits in a read ends it cancelled (the error
/// travels through `io::Error` and comes back as `Error::Cancelled`), and
/// the bytes sent afterwards are read by the next reader of the socket.
#[test]
fn a_cancelled_reader_ends_cancelled_and_loses_nothing() {
    let _g = serial();
    for mode in MODES {
        ringio::run(async move {
            let ring = pool(mode, 8, 64);
            let (client, server) = tcp_pair().await;
            let io = Compat::with_buf_ring(&ring, 64, server);
            let reader = ringio::create_task(async move {
                let mut io = io;
                let mut buf = [0u8; 16];
                let r = io.read(&mut buf).await;
                Ok::<_, Error>((r.map_err(Error::from), io.into_inner()))
            });
            ringio::sleep(ms(20)).await.unwrap();
            reader.cancel();
            let res = reader.await;
            let server = match res {
                Ok((Err(Error::Cancelled { .. }), server)) => server,
                other => panic!("{mode:?}: {:?}", other.map(|(r, _)| r)),
            };
            client.write_all(b"after".to_vec()).await.0.unwrap();
            let (r, got) = server.read(Vec::with_capacity(16)).await;
            assert_eq!(r.unwrap(), 5);
            assert_eq!(got, b"after", "{mode:?}");
        });
    }
}

/// A stream that is not a ringio socket (here a pipe's read end as an
/// `OwnedFd`) is wrapped as by `with_capacity`: plain reads, which work,
/// and the pool is never touched.
#[test]
fn a_non_socket_stream_reads_as_plain() {
    let _g = serial();
    ringio::run(async {
        let ring = BufRing::new(4, 64).unwrap();
        let entries = ring.available();
        let (r, w) = pipe();
        let mut io = Compat::with_buf_ring(&ring, 64, r);
        std::thread::spawn(move || {
            let mut f = std::fs::File::from(w);
            std::io::Write::write_all(&mut f, b"piped bytes").unwrap();
        });
        let mut got = Vec::new();
        io.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"piped bytes");
        assert_eq!(ring.available(), entries);
    });
}

/// hyper's HTTP/1.1 server and client, both on `with_buf_ring` adapters
/// sharing a pool of 8 buffers of 512 bytes: keep-alive requests with
/// bodies up to 200 KB (far more than the pool) all come back whole, and
/// every buffer is back in the pool at the end.
#[cfg(feature = "hyper")]
#[test]
fn hyper_round_trips_over_ring_reads() {
    use http_body_util::{BodyExt, Full};
    use hyper::body::{Bytes, Incoming};
    use hyper::service::service_fn;
    use hyper::{Request, Response};
    use ringio::compat::hyper::{RingTimer, into_error};

    async fn echo(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, hyper::Error> {
        let body = req.into_body().collect().await?.to_bytes();
        Ok(Response::new(Full::new(body)))
    }

    let _g = serial();
    for mode in MODES {
        ringio::run(async move {
            let ring = pool(mode, 8, 512);
            let listener = TcpListener::bind("127.0.0.1:0")?;
            let addr = listener.local_addr()?;
            let server_ring = ring.clone();
            let server = ringio::create_task(async move {
                let (stream, _) = listener.accept().await?;
                hyper::server::conn::http1::Builder::new()
                    .timer(RingTimer)
                    .serve_connection(
                        Compat::with_buf_ring(&server_ring, 4096, stream),
                        service_fn(echo),
                    )
                    .await
                    .map_err(into_error)
            });
            let stream = TcpStream::connect(addr).await?;
            let (mut send, conn) =
                hyper::client::conn::http1::handshake(Compat::with_buf_ring(&ring, 4096, stream))
                    .await
                    .map_err(into_error)?;
            let conn = ringio::create_task(async move { conn.await.map_err(into_error) });
            for (i, len) in [0usize, 13, 200_000, 1, 5000].into_iter().enumerate() {
                let body = pattern(i as u64, len);
                let req = Request::post("http://localhost/")
                    .header("host", "localhost")
                    .body(Full::new(Bytes::from(body.clone())))
                    .unwrap();
                let res = send.send_request(req).await.map_err(into_error)?;
                assert_eq!(res.status(), 200);
                let got = res.into_body().collect().await.map_err(into_error)?;
                assert!(got.to_bytes()[..] == body[..], "{mode:?}: body {i} differs");
            }
            drop(send);
            conn.await?;
            server.await?;
            settle().await;
            assert_eq!(ring.available(), 8, "{mode:?}: a buffer was not returned");
            Ok::<_, Error>(())
        })
        .unwrap();
    }
}

/// A peer that closes ends the adapter's reads with end of stream
/// (bounded at 2 s, so a hang fails the test).
#[test]
fn reads_do_not_hang_when_the_peer_goes_away() {
    let _g = serial();
    for mode in MODES {
        ringio::run(async move {
            let ring = pool(mode, 4, 64);
            let (client, server) = tcp_pair().await;
            let mut io = Compat::with_buf_ring(&ring, 64, server);
            drop(client);
            let n = ringio::wait_for(
                async move {
                    let mut buf = [0u8; 8];
                    io.read(&mut buf).await.map_err(Error::from)
                },
                Some(Duration::from_secs(2)),
            )
            .await
            .unwrap();
            assert_eq!(n, 0, "{mode:?}");
        });
    }
}

/// `RingSleep` arms the loop's timer heap with its deadline as given: it
/// fires at that deadline (not before, and not seconds late), a deadline
/// already past fires at once (after one pending poll), `reset` (also
/// through `Timer::reset`, in place) moves an armed sleep, and a dropped
/// armed sleep leaves the heap.
#[cfg(feature = "hyper")]
#[test]
fn ring_sleep_fires_at_its_deadline_and_leaves_the_heap() {
    use std::time::Instant;

    use hyper::rt::Timer;
    use ringio::compat::hyper::{RingSleep, RingTimer};

    fn timers() -> usize {
        ringio::get_running_loop().unwrap().stats().timers
    }

    ringio::run(async {
        let base = timers();
        // Fires at its deadline.
        let t0 = Instant::now();
        RingSleep::until(t0 + ms(50)).await;
        let took = t0.elapsed();
        assert!(took >= ms(50) && took < Duration::from_secs(2), "{took:?}");
        assert_eq!(timers(), base);

        // A deadline in the past: pending once, then done.
        let t0 = Instant::now();
        let mut past = std::pin::pin!(RingSleep::until(t0 - ms(10)));
        let first = std::future::poll_fn(|cx| std::task::Poll::Ready(past.as_mut().poll(cx))).await;
        assert!(first.is_pending());
        past.await;
        assert!(t0.elapsed() < Duration::from_secs(1));

        // Reset while armed (hyper's `Timer::reset`, in place): it fires
        // at the new deadline, not the old one.
        let t0 = Instant::now();
        let mut s = RingTimer.sleep_until(t0 + ms(10));
        let armed = std::future::poll_fn(|cx| std::task::Poll::Ready(s.as_mut().poll(cx))).await;
        assert!(armed.is_pending());
        assert_eq!(timers(), base + 1);
        RingTimer.reset(&mut s, t0 + ms(120));
        assert_eq!(timers(), base, "reset takes the old timer out of the heap");
        s.await;
        let took = t0.elapsed();
        assert!(took >= ms(120) && took < Duration::from_secs(2), "{took:?}");

        // Dropped while armed: out of the heap.
        let mut s = RingTimer.sleep(Duration::from_secs(30));
        let armed = std::future::poll_fn(|cx| std::task::Poll::Ready(s.as_mut().poll(cx))).await;
        assert!(armed.is_pending());
        assert_eq!(timers(), base + 1);
        drop(s);
        assert_eq!(timers(), base);
    });
}

/// With a kernel pool (Linux 6.0+) a flush returns once the send is with
/// the ring, not when it completes: here 32 MiB to a peer that reads
/// nothing yet, which the kernel cannot take in at once, so the send is
/// still running when the flush returns. Dropping the adapter (and its
/// socket) then does not cancel that send: the peer reads every byte, in
/// order, then the end of the stream. With the user-space pool a flush
/// waits for the send, as with `Compat::new`.
#[test]
fn an_early_flush_hands_the_send_over_and_a_drop_still_delivers_it() {
    use std::future::Future;
    use std::pin::Pin;
    use std::task::Poll;

    const LEN: usize = 32 << 20;
    let _g = serial();
    for mode in MODES {
        ringio::run(async move {
            let ring = pool(mode, 4, 64);
            let (client, server) = tcp_pair().await;
            let data = pattern(7, LEN);
            let mut io = Compat::with_buf_ring(&ring, LEN, server);
            // One poll_write takes all of it (the buffer's capacity).
            assert_eq!(io.write(&data).await.unwrap(), LEN);
            ringio::sleep(ms(20)).await.unwrap();
            let mut flush = io.flush();
            let first = std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut flush).poll(cx))).await;
            if mode == BufRingMode::Local {
                assert!(
                    first.is_pending(),
                    "a plain flush waits for the peer to read"
                );
                drop(flush);
                // The peer reads; the flush then completes.
                let reader = ringio::create_task(async move {
                    let (r, got) = client.read_exact(Vec::with_capacity(LEN)).await;
                    r?;
                    Ok::<_, Error>(got)
                });
                io.flush().await.unwrap();
                let got = reader.await.unwrap();
                assert!(got == data, "{mode:?}: bytes differ");
                return;
            }
            match first {
                Poll::Ready(r) => r.unwrap(),
                Poll::Pending => panic!("an early flush should not wait for the send"),
            }
            drop(io);
            let (r, got) = client.read_exact(Vec::with_capacity(LEN)).await;
            r.unwrap();
            assert!(got == data, "bytes differ");
            let (r, _) = client.read(Vec::with_capacity(16)).await;
            assert_eq!(r.unwrap(), 0, "the end of the stream follows the data");
            settle().await;
        });
    }
}

/// An early flush reports no error, so a send that fails (the peer reset
/// the connection) shows its error at the next write, as the write-behind
/// rule says.
#[test]
fn an_early_flushed_send_reports_its_error_at_the_next_write() {
    use std::os::fd::AsRawFd;

    let _g = serial();
    ringio::run(async {
        let ring = pool(BufRingMode::Kernel, 4, 64);
        let (client, server) = tcp_pair().await;
        // Close with a reset: SO_LINGER on, 0 s.
        let linger = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        // SAFETY: a valid socket and option of the right size.
        let rc = unsafe {
            libc::setsockopt(
                client.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                (&linger as *const libc::linger).cast(),
                std::mem::size_of::<libc::linger>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0);
        drop(client);
        ringio::sleep(ms(20)).await.unwrap();
        let mut io = Compat::with_buf_ring(&ring, 64, server);
        assert_eq!(io.write(b"lost").await.unwrap(), 4);
        io.flush().await.unwrap();
        ringio::sleep(ms(20)).await.unwrap();
        let e = io.write(b"more").await.unwrap_err();
        assert!(
            matches!(e.raw_os_error(), Some(libc::ECONNRESET | libc::EPIPE)),
            "{e:?}"
        );
    });
}
