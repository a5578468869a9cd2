//! Integration tests: net (against a real ring).
//!
//! Every test takes `SERIAL`: the fd-leak checks count `/proc/self/fd`,
//! which all threads of the test process share.

mod common;
use common::*;

use std::net::{Shutdown, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, RawFd};
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_util::io::{AsyncReadExt, AsyncWriteExt};
use ringio::Error;
use ringio::io::{Compat, IoBuf};
use ringio::net::{ListenOptions, TcpListener, TcpStream, UdpSocket, UnixListener, UnixStream};

async fn echo_conn(stream: TcpStream) -> ringio::Result<u64> {
    let mut buf = Vec::with_capacity(16 * 1024);
    let mut total = 0;
    loop {
        let (res, b) = stream.read(buf).await;
        let n = res?;
        if n == 0 {
            return Ok(total);
        }
        total += n as u64;
        let (res, b) = stream.write_all(b).await;
        res?;
        buf = b;
    }
}

/// Sends `data` and reads it back concurrently; checks every byte.
async fn echo_client(addr: SocketAddr, data: Vec<u8>) -> ringio::Result<()> {
    let stream = Rc::new(TcpStream::connect(addr).await?);
    stream.set_nodelay(true)?;
    let len = data.len();
    let expected = data.clone();
    let writer = {
        let stream = stream.clone();
        ringio::create_task(async move {
            // Several writes of uneven size, sliced out of one buffer.
            let mut buf = data;
            let mut off = 0;
            while off < len {
                let end = (off + 100_003).min(len);
                let (res, slice) = stream.write_all(buf.slice(off..end)).await;
                res?;
                buf = slice.into_inner();
                off = end;
            }
            stream.shutdown(Shutdown::Write).await
        })
    };
    let mut got = Vec::with_capacity(len);
    let mut buf = Vec::with_capacity(7919);
    loop {
        let (res, b) = stream.read(buf).await;
        let n = res?;
        if n == 0 {
            break;
        }
        got.extend_from_slice(&b[..n]);
        assert_eq!(b.len(), n, "a read sets the Vec's length to the count");
        buf = b;
    }
    writer.await?;
    assert_eq!(got.len(), expected.len());
    assert!(got == expected, "echoed bytes differ");
    Ok(())
}

#[test]
fn echo_many_connections_large_payloads_multishot_accept() {
    let _g = serial();
    ringio::run(async {
        let listener = Rc::new(TcpListener::bind("127.0.0.1:0").unwrap());
        let addr = listener.local_addr().unwrap();
        let server = {
            let listener = listener.clone();
            ringio::create_task(async move {
                let mut incoming = listener.incoming();
                let mut conns = Vec::new();
                for _ in 0..64 {
                    let stream = incoming.next().await.unwrap()?;
                    conns.push(ringio::create_task(echo_conn(stream)));
                }
                let mut total = 0;
                for c in conns {
                    total += c.await?;
                }
                Ok::<u64, Error>(total)
            })
        };
        let mut clients = Vec::new();
        let mut sent = 0u64;
        for i in 0..64u64 {
            // 64 KiB .. ~1.3 MiB per connection.
            let len = 65_536 + (i as usize) * 20_011;
            sent += len as u64;
            clients.push(ringio::create_task(echo_client(addr, pattern(i, len))));
        }
        for c in clients {
            c.await.unwrap();
        }
        assert_eq!(server.await.unwrap(), sent);
        drop(listener);
        settle().await;
    });
}

#[test]
fn echo_with_single_accept_and_ipv6() {
    let _g = serial();
    ringio::run(async {
        for bind in ["127.0.0.1:0", "[::1]:0"] {
            let listener = match TcpListener::bind(bind) {
                Ok(l) => l,
                // A host without IPv6 loopback.
                Err(e)
                    if bind.starts_with('[') && e.raw_os_error() == Some(libc::EADDRNOTAVAIL) =>
                {
                    continue;
                }
                Err(e) => panic!("bind {bind}: {e}"),
            };
            let addr = listener.local_addr().unwrap();
            let client = ringio::create_task(echo_client(addr, pattern(99, 3 << 20)));
            let (stream, peer) = listener.accept().await.unwrap();
            assert_eq!(peer, stream.peer_addr().unwrap());
            assert_eq!(stream.local_addr().unwrap(), addr);
            assert_eq!(echo_conn(stream).await.unwrap(), 3 << 20);
            client.await.unwrap();
        }
    });
}

#[test]
fn udp_round_trips() {
    let _g = serial();
    ringio::run(async {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        let (aa, ba) = (a.local_addr().unwrap(), b.local_addr().unwrap());
        for i in 0..200u64 {
            let msg = pattern(i, 1 + (i as usize * 37) % 1400);
            let (res, _) = a.send_to(msg.clone(), ba).await;
            assert_eq!(res.unwrap(), msg.len());
            let (res, buf) = b.recv_from(Vec::with_capacity(2048)).await;
            let (n, from) = res.unwrap();
            assert_eq!(from, aa);
            assert_eq!(&buf[..n], &msg[..]);
            // And back, echoing the received buffer itself.
            let (res, _) = b.send_to(buf, from).await;
            assert_eq!(res.unwrap(), n);
            let (res, buf) = a.recv_from(vec![0u8; 2048].into_boxed_slice()).await;
            let (n2, from) = res.unwrap();
            assert_eq!((n2, from), (n, ba));
            assert_eq!(&buf[..n2], &msg[..]);
        }
        // Connected sockets: send/recv.
        a.connect(ba).unwrap();
        b.connect(aa).unwrap();
        assert_eq!(a.peer_addr().unwrap(), ba);
        let (res, _) = a.send(&b"ping"[..]).await;
        assert_eq!(res.unwrap(), 4);
        let (res, buf) = b.recv(Vec::with_capacity(16)).await;
        assert_eq!(&buf[..res.unwrap()], b"ping");
        // A datagram longer than the buffer is truncated to it.
        let (res, _) = b.send(vec![7u8; 100]).await;
        res.unwrap();
        let (res, buf) = a.recv(Vec::with_capacity(10)).await;
        assert_eq!(res.unwrap(), 10);
        assert_eq!(buf, vec![7u8; 10]);
    });
}

#[test]
fn unix_sockets() {
    let _g = serial();
    let dir = std::env::temp_dir().join(format!("ringio-net-unix-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("sock");
    let d = dir.clone();
    ringio::run(async move {
        let dir = d;
        let listener = UnixListener::bind(&path).unwrap();
        assert_eq!(
            listener.local_addr().unwrap().as_pathname(),
            Some(path.as_path())
        );
        let client = {
            let path = path.clone();
            ringio::create_task(async move {
                let s = UnixStream::connect(&path).await?;
                let data = pattern(5, 1 << 20);
                let (res, _) = s.write_all(data.clone()).await;
                res?;
                s.shutdown(Shutdown::Write).await?;
                let (res, buf) = s.read(Vec::with_capacity(64)).await;
                assert_eq!(&buf[..res?], b"got it");
                Ok::<_, Error>(())
            })
        };
        let (server, peer) = listener.accept().await.unwrap();
        assert!(peer.as_pathname().is_none(), "the client socket is unnamed");
        let mut got = Vec::new();
        loop {
            let (res, buf) = server.read(Vec::with_capacity(65536)).await;
            let n = res.unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf);
        }
        assert!(got == pattern(5, 1 << 20));
        let (res, _) = server.write_all(&b"got it"[..]).await;
        res.unwrap();
        client.await.unwrap();

        // A socketpair.
        let (x, y) = UnixStream::pair().unwrap();
        let (res, _) = x.write(&b"pair"[..]).await;
        assert_eq!(res.unwrap(), 4);
        let (res, buf) = y.read(Vec::with_capacity(8)).await;
        assert_eq!(&buf[..res.unwrap()], b"pair");

        // Connecting to a path nobody listens on.
        let err = UnixStream::connect(dir.join("nobody")).await.unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOENT), "{err}");
    });
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn cancel_pending_accept_then_listener_still_works() {
    let _g = serial();
    ringio::run(async {
        let listener = Rc::new(TcpListener::bind("127.0.0.1:0").unwrap());
        let addr = listener.local_addr().unwrap();
        let before = stats().ops_canceled_by_kernel;
        let t = {
            let listener = listener.clone();
            ringio::create_task(async move {
                let r = listener.accept().await;
                assert!(matches!(r, Err(Error::Cancelled { .. })), "{r:?}");
                r.map(|_| ())
            })
        };
        ringio::sleep(Duration::from_millis(20)).await.unwrap();
        assert!(t.cancel());
        let r = t.clone().await;
        assert!(r.unwrap_err().is_cancelled());
        assert!(t.cancelled());
        assert!(
            stats().ops_canceled_by_kernel > before,
            "the kernel's CQE said -ECANCELED"
        );
        // The listener still accepts, and the same for the multishot stream.
        let c = ringio::create_task(async move { TcpStream::connect(addr).await });
        let (s, _) = listener.accept().await.unwrap();
        let c = c.await.unwrap();
        assert_eq!(s.peer_addr().unwrap(), c.local_addr().unwrap());

        let before = stats().ops_canceled_by_kernel;
        let t = {
            let listener = listener.clone();
            ringio::create_task(async move {
                let mut incoming = listener.incoming();
                let r = incoming.next().await.unwrap();
                assert!(
                    matches!(r, Err(Error::Cancelled { .. })),
                    "{:?}",
                    r.as_ref().map(|_| ())
                );
                // The cancel was delivered once: further awaits work.
                ringio::io::nop().await?;
                Ok::<_, Error>(())
            })
        };
        ringio::sleep(Duration::from_millis(20)).await.unwrap();
        t.cancel();
        t.clone().await.unwrap();
        assert!(!t.cancelled(), "the task suppressed the cancel");
        assert!(stats().ops_canceled_by_kernel > before);
        let c = ringio::create_task(async move { TcpStream::connect(addr).await });
        let mut incoming = listener.incoming();
        let s = incoming.next().await.unwrap().unwrap();
        let c = c.await.unwrap();
        assert_eq!(s.peer_addr().unwrap(), c.local_addr().unwrap());
    });
}

#[test]
fn cancel_pending_recv_keeps_socket_and_later_data() {
    let _g = serial();
    ringio::run(async {
        let (client, server) = tcp_pair().await;
        let server = Rc::new(server);
        let before = stats().ops_canceled_by_kernel;
        let t = {
            let server = server.clone();
            ringio::create_task(async move {
                let (r, buf) = server.read(Vec::with_capacity(64)).await;
                assert!(matches!(r, Err(Error::Cancelled { .. })), "{r:?}");
                // The buffer came back with the error.
                assert_eq!(buf.capacity(), 64);
                r
            })
        };
        ringio::sleep(Duration::from_millis(20)).await.unwrap();
        t.cancel();
        assert!(t.clone().await.unwrap_err().is_cancelled());
        assert!(stats().ops_canceled_by_kernel > before);
        // Data that arrives while no read is pending is read later.
        let (res, _) = client.write_all(&b"arrived meanwhile"[..]).await;
        res.unwrap();
        ringio::sleep(Duration::from_millis(5)).await.unwrap();
        let (res, buf) = server.read(Vec::with_capacity(64)).await;
        assert_eq!(&buf[..res.unwrap()], b"arrived meanwhile");
        settle().await;
    });
}

#[test]
fn read_completed_before_cancel_returns_its_data() {
    let _g = serial();
    ringio::run(async {
        let (client, server) = tcp_pair().await;
        let (res, _) = client.write_all(&b"already here"[..]).await;
        res.unwrap();
        ringio::sleep(Duration::from_millis(5)).await.unwrap();
        let t = ringio::create_task(async move {
            let (r, buf) = server.read(Vec::with_capacity(64)).await;
            // The data was there: the read completes with it (nothing lost)...
            assert_eq!(&buf[..*r.as_ref().unwrap()], b"already here");
            // ...and the cancel comes at the next await point (a sleep: a
            // NOP would itself complete before its cancel and keep it pending).
            let next = ringio::sleep(Duration::from_secs(10)).await;
            assert!(matches!(next, Err(Error::Cancelled { .. })), "{next:?}");
            next
        });
        // Let the task start and submit its read, then cancel before the
        // loop reaps anything.
        ringio::sleep(Duration::ZERO).await.unwrap();
        t.cancel();
        assert!(t.clone().await.unwrap_err().is_cancelled());
        assert!(t.cancelled());
    });
}

#[test]
fn read_timeout_is_link_timeout_and_socket_stays_usable() {
    let _g = serial();
    ringio::run(async {
        let (client, server) = tcp_pair().await;
        let start = Instant::now();
        let (res, buf) = server
            .read(Vec::with_capacity(32))
            .timeout(Duration::from_millis(50))
            .await;
        let took = start.elapsed();
        assert!(matches!(res, Err(Error::Timeout)), "{res:?}");
        assert_eq!(buf.capacity(), 32);
        assert!(took >= Duration::from_millis(50), "{took:?}");
        assert!(took < Duration::from_secs(2), "{took:?}");
        // Completes well before its deadline: the result, not a timeout.
        let (res, _) = client.write_all(&b"data"[..]).await;
        res.unwrap();
        let (res, buf) = server
            .read(Vec::with_capacity(32))
            .timeout(Duration::from_secs(5))
            .await;
        assert_eq!(&buf[..res.unwrap()], b"data");
        // An expired deadline fails fast and submits nothing.
        let submitted = stats().ops_submitted;
        let (res, _) = server
            .read(Vec::with_capacity(8))
            .deadline(Instant::now() - Duration::from_millis(1))
            .await;
        assert!(matches!(res, Err(Error::Timeout)));
        assert_eq!(stats().ops_submitted, submitted);
        // One deadline over several ops.
        let r = ringio::io::with_timeout(Duration::from_millis(30), async {
            let (res, _) = server.read(Vec::with_capacity(8)).await;
            res
        })
        .await;
        assert!(matches!(r, Err(Error::Timeout)));

        // A task cancelled while in a timed read sees Cancelled, not Timeout.
        let server = Rc::new(server);
        let t = {
            let server = server.clone();
            ringio::create_task(async move {
                let (r, _) = server
                    .read(Vec::with_capacity(8))
                    .timeout(Duration::from_secs(30))
                    .await;
                r
            })
        };
        ringio::sleep(Duration::from_millis(10)).await.unwrap();
        let before = stats().ops_canceled_by_kernel;
        t.cancel();
        assert!(t.clone().await.unwrap_err().is_cancelled());
        assert!(stats().ops_canceled_by_kernel > before);
        settle().await;
    });
}

#[test]
fn dropping_op_futures_mid_flight_leaks_nothing() {
    let _g = serial();
    let fds_before = settled_open_fds();
    ringio::run(async {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (client, server) = tcp_pair().await;
        let submitted = stats().ops_submitted;
        for i in 0..3000 {
            poll_once_and_drop(server.read(vec![0u8; 4096])).await;
            poll_once_and_drop(listener.accept()).await;
            poll_once_and_drop(
                server
                    .read(Vec::with_capacity(64))
                    .timeout(Duration::from_secs(60)),
            )
            .await;
            if i % 100 == 0 {
                // Connections the kernel accepts for a dropped accept are
                // closed by the orphan cleanup.
                let c = TcpStream::connect(addr).await.unwrap();
                poll_once_and_drop(listener.accept()).await;
                poll_once_and_drop(listener.incoming().next()).await;
                drop(c);
                ringio::io::nop().await.unwrap();
            }
        }
        // Every accept submits; a read submits only once the read dropped
        // before it has completed (bytes it got would come first).
        assert!(stats().ops_submitted >= submitted + 3000 + 30);
        settle().await;
        // The streams still work after all that.
        let (res, _) = client.write_all(&b"still fine"[..]).await;
        res.unwrap();
        let (res, buf) = server.read(Vec::with_capacity(32)).await;
        assert_eq!(&buf[..res.unwrap()], b"still fine");
        assert_eq!(stats().ops_in_flight, 0);
    });
    assert_eq!(open_fds(), fds_before, "file descriptors leaked");
}

#[test]
fn peer_reset_and_eof() {
    let _g = serial();
    ringio::run(async {
        // EOF: the peer shuts down its write half; we can still answer.
        let (client, server) = tcp_pair().await;
        client.shutdown(Shutdown::Write).await.unwrap();
        let (res, _) = server.read(Vec::with_capacity(16)).await;
        assert_eq!(res.unwrap(), 0);
        let (res, _) = server.write_all(&b"bye"[..]).await;
        res.unwrap();
        let (res, buf) = client.read(Vec::with_capacity(16)).await;
        assert_eq!(&buf[..res.unwrap()], b"bye");
        drop(client);
        let (res, _) = server.read(Vec::with_capacity(16)).await;
        assert_eq!(res.unwrap(), 0);

        // Reset: linger 0 and close sends RST.
        let (client, server) = tcp_pair().await;
        client.set_linger(Some(Duration::ZERO)).unwrap();
        drop(client);
        ringio::sleep(Duration::from_millis(5)).await.unwrap();
        let (res, _) = server.read(Vec::with_capacity(16)).await;
        assert_eq!(res.unwrap_err().raw_os_error(), Some(libc::ECONNRESET));
        // Writing to a reset connection is an error, not SIGPIPE.
        let (res, _) = server.write_all(vec![1u8; 1 << 16]).await;
        let e = res.unwrap_err();
        assert!(
            matches!(e.raw_os_error(), Some(libc::EPIPE) | Some(libc::ECONNRESET)),
            "{e}"
        );
    });
}

#[test]
fn connect_to_closed_port_is_a_clear_error() {
    let _g = serial();
    ringio::run(async {
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        // Dropping the listener closed it at once: the port is free again.
        let err = TcpStream::connect(("127.0.0.1", port)).await.unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ECONNREFUSED));
        assert!(err.to_string().contains("refused"), "{err}");
        // And rebinding it works right away.
        let l = TcpListener::bind(("127.0.0.1", port)).unwrap();
        assert_eq!(l.local_addr().unwrap().port(), port);
        // Bad addresses.
        assert!(TcpStream::connect("not an address").await.is_err());
        assert!(TcpListener::bind("127.0.0.1:99999").is_err());
    });
}

#[test]
fn zero_byte_buffers_and_invalid_fds() {
    let _g = serial();
    ringio::run(async {
        let (client, server) = tcp_pair().await;
        // A read into no room is an error, not an end of stream.
        let (res, buf) = server.read(Vec::new()).await;
        assert_no_room(res);
        assert!(buf.is_empty());
        let (res, _) = client.write(Vec::new()).await;
        assert_eq!(res.unwrap(), 0);
        let (res, _) = client.write_all(Vec::new()).await;
        res.unwrap();
        // An empty slice of a non-empty buffer.
        let (res, s) = client.write(vec![1u8, 2, 3].slice(1..1)).await;
        assert_eq!(res.unwrap(), 0);
        assert_eq!(s.into_inner(), vec![1, 2, 3]);
        // Out-of-range slices are errors that give the buffer back.
        let (e, v) = vec![0u8; 4].try_slice(2..9).unwrap_err();
        assert!(matches!(e, Error::InvalidArgument(_)), "{e}");
        assert_eq!(v.len(), 4);

        // An invalid descriptor: EBADF, no panic.
        struct Bad;
        impl AsRawFd for Bad {
            fn as_raw_fd(&self) -> RawFd {
                -1
            }
        }
        let (res, buf) = ringio::io::read(&Bad, Vec::with_capacity(8)).await;
        assert_eq!(res.unwrap_err().raw_os_error(), Some(libc::EBADF));
        assert_eq!(buf.capacity(), 8);
        let (res, _) = ringio::io::write(&Bad, &b"x"[..]).await;
        assert_eq!(res.unwrap_err().raw_os_error(), Some(libc::EBADF));
        // A stream over a descriptor number that is not open.
        // SAFETY: 1_000_000 is above the fd limit, so no file has it; we
        // take it back out before the stream would close it.
        let bogus = unsafe { TcpStream::from_raw_fd(1_000_000) };
        let (res, _) = bogus.read(Vec::with_capacity(8)).await;
        assert_eq!(res.unwrap_err().raw_os_error(), Some(libc::EBADF));
        let (res, _) = bogus.write_all(&b"x"[..]).await;
        assert_eq!(res.unwrap_err().raw_os_error(), Some(libc::EBADF));
        assert!(bogus.peer_addr().is_err());
        let _ = bogus.into_raw_fd();
    });
    // Outside a loop: a clear error, and the buffer back.
    let (client, _server) = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        (TcpStream::from_std(c), l.accept().unwrap())
    };
    let fut = client.read(Vec::with_capacity(8));
    let (res, buf) = futures_util::FutureExt::now_or_never(fut).unwrap();
    assert!(
        res.unwrap_err()
            .to_string()
            .contains("no running event loop")
    );
    assert_eq!(buf.capacity(), 8);
}

#[test]
fn reuse_port_listeners_share_a_port() {
    let _g = serial();
    ringio::run(async {
        let opts = ListenOptions::new().reuse_port(true);
        let a = TcpListener::bind_with("127.0.0.1:0", opts).unwrap();
        let addr = a.local_addr().unwrap();
        let b = TcpListener::bind_with(addr, opts).unwrap();
        assert_eq!(b.local_addr().unwrap(), addr);
        // Without SO_REUSEPORT the port is taken.
        let e = TcpListener::bind(addr).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EADDRINUSE));
    });
}

#[test]
fn compat_adapters_async_read_write() {
    let _g = serial();
    ringio::run(async {
        let (client, server) = tcp_pair().await;
        let data = pattern(42, 1 << 20);
        let writer = {
            let data = data.clone();
            ringio::create_task(async move {
                let mut w = Compat::with_capacity(10_000, client);
                w.write_all(&data).await?;
                w.close().await?;
                Ok::<_, std::io::Error>(())
            })
        };
        let mut r = Compat::new(server);
        let mut got = Vec::new();
        r.read_to_end(&mut got).await.unwrap();
        writer.await.unwrap();
        assert!(got == data);
    });
}

#[test]
fn closing_a_stream_never_lets_a_queued_op_reach_a_reused_fd() {
    let _g = serial();
    ringio::run(async {
        for _ in 0..50 {
            let (a, _b) = UnixStream::pair().unwrap();
            let n = a.as_raw_fd();
            // A read queued in the SQ (not yet seen by the kernel), dropped...
            poll_once_and_drop(a.read(Vec::with_capacity(64))).await;
            // ...then its socket closed, and the number reused at once by a
            // new socket that already holds data.
            drop(a);
            let (c, mut d) = std::os::unix::net::UnixStream::pair().unwrap();
            let (cn, dn) = (c.as_raw_fd(), d.as_raw_fd());
            assert!(cn == n || dn == n, "fd {n} was not reused ({cn}, {dn})");
            std::io::Write::write_all(&mut d, b"not yours").unwrap();
            let (mut c, d) = if cn == n { (c, d) } else { (d, c) };
            std::io::Write::write_all(&mut c, b"not yours").unwrap();
            // SAFETY: the std streams give up their descriptors.
            let (c, d) = unsafe {
                (
                    UnixStream::from_raw_fd(c.into_raw_fd()),
                    UnixStream::from_raw_fd(d.into_raw_fd()),
                )
            };
            // The dropped read must not have consumed the new socket's data.
            for s in [&c, &d] {
                let (res, buf) = s
                    .read(Vec::with_capacity(64))
                    .timeout(Duration::from_secs(2))
                    .await;
                assert_eq!(&buf[..res.unwrap()], b"not yours");
            }
        }
        settle().await;
    });
}

#[test]
fn loop_shutdown_with_ops_in_flight_leaks_nothing() {
    let _g = serial();
    let fds_before = settled_open_fds();
    let (client, server) = std::os::unix::net::UnixStream::pair().unwrap();
    ringio::run(async move {
        // SAFETY: the std streams give up their descriptors.
        let (client, server) = unsafe {
            (
                Rc::new(UnixStream::from_raw_fd(client.into_raw_fd())),
                UnixStream::from_raw_fd(server.into_raw_fd()),
            )
        };
        let listener = Rc::new(TcpListener::bind("127.0.0.1:0").unwrap());
        for _ in 0..100 {
            let (c, l) = (client.clone(), listener.clone());
            ringio::create_task(async move {
                let (r, _) = c.read(vec![0u8; 1024]).await;
                r?;
                l.accept().await?;
                Ok::<_, Error>(())
            });
        }
        ringio::sleep(Duration::from_millis(10)).await.unwrap();
        assert!(stats().ops_in_flight >= 100);
        drop(server);
        // `run` returns with the reads in flight: shutdown cancels the tasks
        // and reaps every completion before the ring closes.
    });
    assert_eq!(open_fds(), fds_before, "file descriptors leaked");
}

#[test]
fn connect_deadline_when_the_backlog_is_full() {
    let _g = serial();
    ringio::run(async {
        // Backlog 0 and nobody accepting: once the accept queue is full the
        // kernel drops further SYNs, so those connects hang until a deadline.
        let listener =
            TcpListener::bind_with("127.0.0.1:0", ListenOptions::new().backlog(0)).unwrap();
        let addr = listener.local_addr().unwrap();
        let mut ok = Vec::new();
        let mut timed_out = 0;
        for _ in 0..8 {
            let start = Instant::now();
            match TcpStream::connect(addr)
                .timeout(Duration::from_millis(150))
                .await
            {
                Ok(s) => ok.push(s),
                Err(Error::Timeout) => {
                    timed_out += 1;
                    assert!(start.elapsed() >= Duration::from_millis(150));
                }
                Err(e) => panic!("unexpected connect error: {e}"),
            }
        }
        assert!(!ok.is_empty(), "the first connects fit in the queue");
        assert!(timed_out > 0, "a connect hung and timed out");
        settle().await;
    });
}

#[test]
fn compat_read_cancelled_ends_the_task_cancelled() {
    let _g = serial();
    ringio::run(async {
        let (client, server) = tcp_pair().await;
        let before = stats().ops_canceled_by_kernel;
        let t = ringio::create_task(async move {
            let mut r = Compat::new(server);
            let mut buf = [0u8; 16];
            // `?` turns the adapter's io::Error back into the cancellation.
            let n = r.read(&mut buf).await?;
            Ok::<_, Error>(n)
        });
        ringio::sleep(Duration::from_millis(10)).await.unwrap();
        t.cancel();
        assert!(t.clone().await.unwrap_err().is_cancelled());
        assert!(t.cancelled());
        assert!(stats().ops_canceled_by_kernel > before);
        drop(client);
        settle().await;
    });
}

#[test]
fn get_stack_shows_the_io_call_site() {
    let _g = serial();
    ringio::run(async {
        let (client, server) = tcp_pair().await;
        let server = Rc::new(server);
        let line = Rc::new(std::cell::Cell::new(0));
        let t = {
            let (server, line) = (server.clone(), line.clone());
            ringio::create_task(async move {
                let buf = Vec::with_capacity(8);
                line.set(line!() + 1);
                let io = server.read(buf);
                let (r, _) = io.timeout(Duration::from_secs(30)).await;
                r
            })
        };
        ringio::sleep(Duration::from_millis(10)).await.unwrap();
        let stack = t.get_stack(None);
        match stack.as_slice() {
            [ringio::Frame::Location { file, line: l, .. }] => {
                assert!(file.ends_with("net.rs"), "{file}");
                assert_eq!(*l, line.get(), "{stack:?}");
            }
            other => panic!("unexpected stack {other:?}"),
        }
        let (res, _) = client.write_all(&b"x"[..]).await;
        res.unwrap();
        assert_eq!(t.await.unwrap(), 1);
    });
}

#[test]
fn compat_read_deadline_and_udp_recv_cancel() {
    let _g = serial();
    ringio::run(async {
        // A deadline around adapter reads: TimedOut, and `?` gives Timeout.
        let (client, server) = tcp_pair().await;
        let mut r = Compat::new(server);
        let mut buf = [0u8; 8];
        let e = ringio::io::with_timeout(Duration::from_millis(30), r.read(&mut buf))
            .await
            .unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::TimedOut);
        assert!(matches!(Error::from(e), Error::Timeout));
        // The adapter still works afterwards.
        let (res, _) = client.write_all(&b"late"[..]).await;
        res.unwrap();
        let n = r.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"late");

        // A pending UDP receive, cancelled; a datagram sent afterwards is
        // received by the next call.
        let a = Rc::new(UdpSocket::bind("127.0.0.1:0").unwrap());
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        let before = stats().ops_canceled_by_kernel;
        let t = {
            let a = a.clone();
            ringio::create_task(async move {
                let (r, _) = a.recv_from(Vec::with_capacity(64)).await;
                r.map(|_| ())
            })
        };
        ringio::sleep(Duration::from_millis(10)).await.unwrap();
        t.cancel();
        assert!(t.clone().await.unwrap_err().is_cancelled());
        assert!(stats().ops_canceled_by_kernel > before);
        let (res, _) = b.send_to(&b"dgram"[..], a.local_addr().unwrap()).await;
        res.unwrap();
        let (res, buf) = a
            .recv_from(Vec::with_capacity(64))
            .timeout(Duration::from_secs(2))
            .await;
        let (n, from) = res.unwrap();
        assert_eq!(&buf[..n], b"dgram");
        assert_eq!(from, b.local_addr().unwrap());
        settle().await;
    });
}

#[test]
fn shutdown_closes_a_connection_accepted_but_never_read() {
    use std::io::Read;
    let _g = serial();
    let client = ringio::run(async {
        // Leaked so that the accept future can outlive this block.
        let l: &'static TcpListener =
            Box::leak(Box::new(TcpListener::bind("127.0.0.1:0").unwrap()));
        let mut accept = Box::pin(l.accept());
        assert!(futures_util::poll!(accept.as_mut()).is_pending());
        let client = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        // Let the loop reap the accept's completion.
        for _ in 0..20 {
            ringio::sleep(ms(5)).await.unwrap();
        }
        // The future is never polled again nor dropped: the completed
        // accept is still in the loop's op table when run() shuts down.
        // (This leaks the loop, so the peer's end of file is the check.)
        std::mem::forget(accept);
        client
    });
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut byte = [0u8; 1];
    let res = (&client).read(&mut byte);
    assert!(
        matches!(res, Ok(0)),
        "the accepted end was not closed at shutdown: read gave {res:?}"
    );
}

/// A read into a buffer with no room: `InvalidArgument` that says what to
/// do, never `Ok(0)` (which means end of stream).
fn assert_no_room<T: std::fmt::Debug>(res: ringio::Result<T>) {
    match res {
        Err(Error::InvalidArgument(m)) => assert!(m.contains("Vec::with_capacity"), "{m}"),
        other => panic!("a read into a 0-capacity buffer gave {other:?}"),
    }
}

#[test]
fn every_read_into_a_zero_capacity_buffer_is_an_error() {
    let _g = serial();
    ringio::run(async {
        let (client, server) = tcp_pair().await;
        let (res, _) = client.write_all(b"data".to_vec()).await;
        res.unwrap();
        let (res, _) = server.read(Vec::new()).await;
        assert_no_room(res);
        // An empty slice has no room either.
        let (res, _) = server.read(Vec::<u8>::new().slice(0..0)).await;
        assert_no_room(res);
        // The data is still there for a read with room.
        let (res, buf) = server.read(Vec::with_capacity(8)).await;
        assert_eq!(res.unwrap(), 4);
        assert_eq!(buf, b"data");

        let (a, b) = UnixStream::pair().unwrap();
        let (res, _) = a.read(Vec::new()).await;
        assert_no_room(res);
        drop(b);

        let u = UdpSocket::bind("127.0.0.1:0").unwrap();
        let (res, _) = u.recv_from(Vec::new()).await;
        assert_no_room(res);
        u.connect(u.local_addr().unwrap()).unwrap();
        let (res, _) = u.recv(Vec::new()).await;
        assert_no_room(res);

        let (r, _w) = pipe();
        let (res, _) = ringio::io::read(&r, Vec::new()).await;
        assert_no_room(res);
    });
}

/// Set by `a_socket_dropped_in_a_thread_local_destructor_is_closed` for the
/// copy of this binary it runs: the body that may abort the process.
const TLS_CHILD: &str = "RINGIO_TEST_TLS_DROP_CHILD";

#[test]
#[ignore = "run by a_socket_dropped_in_a_thread_local_destructor_is_closed"]
fn tls_drop_child() {
    use std::cell::RefCell;
    use std::io::Read;
    if std::env::var_os(TLS_CHILD).is_none() {
        return;
    }
    thread_local! {
        static HELD: RefCell<Option<(TcpStream, ringio::fs::File)>> = const { RefCell::new(None) };
    }
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut peer = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (ours, _) = l.accept().unwrap();
    std::thread::spawn(move || {
        // Registered before the loop's thread-locals, so destroyed after
        // them: the stream and the file are dropped when no loop state is
        // reachable any more.
        HELD.with(|_| {});
        ringio::run(async {});
        let file = ringio::fs::File::from_std(std::fs::File::open("/proc/self/stat").unwrap());
        HELD.with(|h| *h.borrow_mut() = Some((TcpStream::from_std(ours), file)));
    })
    .join()
    .unwrap();
    peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut b = [0u8; 1];
    assert_eq!(peer.read(&mut b).unwrap(), 0, "the socket was not closed");
}

#[test]
fn a_socket_dropped_in_a_thread_local_destructor_is_closed() {
    // In a child process: a panic in a thread-local destructor aborts.
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "tls_drop_child", "--ignored", "--nocapture"])
        .env(TLS_CHILD, "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the child failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 passed"));
}

#[test]
fn an_unread_multishot_accept_stops_at_its_bound_and_loses_no_connection() {
    const CLIENTS: usize = 600;
    let _g = serial();
    let fds_before = settled_open_fds();
    ringio::run(async {
        let listener =
            TcpListener::bind_with("127.0.0.1:0", ListenOptions::new().backlog(4096)).unwrap();
        let addr = listener.local_addr().unwrap();
        let mut incoming = listener.incoming();
        // One poll arms the multishot accept; then nobody reads it.
        let first = std::future::poll_fn(|cx| {
            std::task::Poll::Ready(futures_util::Stream::poll_next(
                std::pin::Pin::new(&mut incoming),
                cx,
            ))
        })
        .await;
        assert!(first.is_pending());
        let base = open_fds();
        // Clients arrive in small batches while the loop keeps turning (the
        // kernel accepts a whole batch in one go, so the bound holds to
        // within one batch).
        const BATCH: usize = 20;
        let clients = std::thread::spawn(move || {
            let mut v = Vec::new();
            for _ in 0..CLIENTS / BATCH {
                v.extend((0..BATCH).map(|_| std::net::TcpStream::connect(addr).unwrap()));
                std::thread::sleep(Duration::from_millis(2));
            }
            v
        });
        while !clients.is_finished() {
            ringio::sleep(Duration::from_millis(1)).await.unwrap();
        }
        let clients = clients.join().unwrap();
        for _ in 0..20 {
            ringio::sleep(Duration::from_millis(2)).await.unwrap();
        }
        let held = open_fds() - base - CLIENTS;
        assert!(
            held <= ringio::net::INCOMING_QUEUE_MAX as usize + 5 * BATCH,
            "{held} accepted connections pile up unread (bound {})",
            ringio::net::INCOMING_QUEUE_MAX
        );
        // Read again: every connection arrives, the held ones first, the
        // rest from the listen backlog.
        let mut peers = std::collections::HashSet::new();
        while peers.len() < CLIENTS {
            let s = incoming.next().await.unwrap().unwrap();
            assert!(
                peers.insert(s.peer_addr().unwrap()),
                "a connection came twice"
            );
        }
        for c in &clients {
            assert!(peers.contains(&c.local_addr().unwrap()));
        }
        drop(clients);
    });
    // Other tests of this file may hold a few descriptors for a moment
    // (only the fd-counting ones take `serial()`): wait for them to go.
    let deadline = Instant::now() + Duration::from_secs(10);
    while open_fds() > fds_before && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(open_fds() <= fds_before, "file descriptors leaked");
}
