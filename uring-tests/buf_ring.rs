//! Integration tests: provided-buffer rings and multishot receive (against
//! a real ring). Each test runs with the pool registered with the kernel
//! and with the user-space fallback (`BufRingMode::Local`, the path taken
//! on a kernel without provided-buffer rings).

mod common;
use common::*;

use std::net::Shutdown;
use std::pin::Pin;
use std::rc::Rc;

use futures_util::stream::Stream;
use std::time::Duration;

use ringio::Error;
use ringio::io::{BufRing, RingBuf};
use ringio::net::UnixStream;

#[test]
fn multishot_receive_delivers_every_byte_in_order_through_a_small_pool() {
    let _g = serial();
    for mode in MODES {
        ringio::run(async move {
            let (client, server) = tcp_pair().await;
            // 4 buffers of 64 bytes for 200 KB: the pool runs dry over and
            // over (ENOBUFS ends the kernel's multishot, the stream re-arms).
            let ring = pool(mode, 4, 64);
            let data = pattern(1, 200_000);
            let expected = data.clone();
            let writer = send_then_close(client, data);
            let mut got = Vec::with_capacity(expected.len());
            let mut stream = server.recv_multishot(&ring);
            let mut items = 0;
            while let Some(buf) = stream.next().await {
                let buf = buf.unwrap();
                assert!(!buf.is_empty() && buf.len() <= 64);
                got.extend_from_slice(&buf);
                items += 1;
            }
            assert_eq!(got.len(), expected.len(), "{mode:?}");
            assert!(got == expected, "{mode:?}: bytes differ");
            assert!(items >= 200_000 / 64);
            // After the end, the stream stays ended.
            assert!(stream.next().await.is_none());
            drop(stream);
            assert_eq!(ring.available(), 4, "every buffer is back");
            writer.await.unwrap();
            settle().await;
            assert_eq!(stats().ops_in_flight, 0);
        });
    }
}

#[test]
fn a_dry_pool_waits_for_a_buffer_and_loses_nothing() {
    let _g = serial();
    for mode in MODES {
        ringio::run(async move {
            let (client, server) = tcp_pair().await;
            let ring = pool(mode, 2, 16);
            let mut stream = server.recv_multishot(&ring);
            let mut held: Vec<RingBuf> = Vec::new();
            let mut got = Vec::new();
            // Fill both buffers and keep them.
            let (r, _) = client.write_all(pattern(2, 100)).await;
            r.unwrap();
            while held.len() < 2 {
                let b = stream.next().await.unwrap().unwrap();
                got.extend_from_slice(&b);
                held.push(b);
            }
            assert_eq!(ring.available(), 0);
            // No buffer: the next item waits (the data waits in the socket).
            for _ in 0..3 {
                ringio::sleep(Duration::from_millis(10)).await.unwrap();
                let p = std::future::poll_fn(|cx| {
                    std::task::Poll::Ready(Pin::new(&mut stream).poll_next(cx).is_pending())
                })
                .await;
                assert!(p, "{mode:?}: an item without a free buffer");
            }
            // One buffer back: the stream goes on.
            held.clear();
            client.shutdown(Shutdown::Write).await.unwrap();
            while let Some(b) = stream.next().await {
                got.extend_from_slice(&b.unwrap());
            }
            assert!(got == pattern(2, 100), "{mode:?}: {} bytes", got.len());
        });
    }
}

#[test]
fn dropping_the_stream_keeps_received_bytes_for_the_next_read() {
    let _g = serial();
    for mode in MODES {
        ringio::run(async move {
            let (client, server) = tcp_pair().await;
            let ring = pool(mode, 8, 32);
            let data = pattern(3, 5000);
            let (r, _) = client.write_all(data.clone()).await;
            r.unwrap();
            client.shutdown(Shutdown::Write).await.unwrap();
            ringio::sleep(Duration::from_millis(10)).await.unwrap();
            let mut got = Vec::new();
            {
                let mut stream = server.recv_multishot(&ring);
                let b = stream.next().await.unwrap().unwrap();
                got.extend_from_slice(&b);
                // Dropped with completions (kernel mode: more buffers
                // already filled) unread.
            }
            settle().await;
            // A plain read returns what the stream had taken, then the rest.
            loop {
                let (r, buf) = server.read(Vec::with_capacity(100)).await;
                let n = r.unwrap();
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf);
            }
            assert!(
                got == data,
                "{mode:?}: {} of {} bytes",
                got.len(),
                data.len()
            );
            assert_eq!(ring.available(), 8, "{mode:?}: every buffer is back");
        });
    }
}

#[test]
fn a_new_stream_returns_what_a_dropped_one_left() {
    let _g = serial();
    for mode in MODES {
        ringio::run(async move {
            let (client, server) = tcp_pair().await;
            let ring = pool(mode, 8, 32);
            let data = pattern(4, 3000);
            let (r, _) = client.write_all(data.clone()).await;
            r.unwrap();
            client.shutdown(Shutdown::Write).await.unwrap();
            ringio::sleep(Duration::from_millis(10)).await.unwrap();
            let mut got = Vec::new();
            for _ in 0..3 {
                let mut stream = server.recv_multishot(&ring);
                if let Some(b) = stream.next().await {
                    got.extend_from_slice(&b.unwrap());
                }
            }
            let mut stream = server.recv_multishot(&ring);
            while let Some(b) = stream.next().await {
                got.extend_from_slice(&b.unwrap());
            }
            assert!(
                got == data,
                "{mode:?}: {} of {} bytes",
                got.len(),
                data.len()
            );
        });
    }
}

#[test]
fn cancelling_the_task_delivers_cancelled_and_the_socket_still_works() {
    let _g = serial();
    for mode in MODES {
        ringio::run(async move {
            let (client, server) = tcp_pair().await;
            let server = Rc::new(server);
            let ring = pool(mode, 4, 64);
            let before = stats().ops_canceled_by_kernel;
            let t = {
                let (server, ring) = (server.clone(), ring.clone());
                ringio::create_task(async move {
                    let mut stream = server.recv_multishot(&ring);
                    match stream.next().await {
                        Some(Err(e)) => Err(e),
                        other => panic!("expected a cancel, got {other:?}"),
                    }
                })
            };
            ringio::sleep(Duration::from_millis(20)).await.unwrap();
            assert!(t.cancel());
            let r: ringio::Result<()> = (&t).await;
            assert!(r.unwrap_err().is_cancelled());
            assert!(stats().ops_canceled_by_kernel > before);
            let (r, _) = client.write_all(&b"after the cancel"[..]).await;
            r.unwrap();
            let mut stream = server.recv_multishot(&ring);
            let b = stream.next().await.unwrap().unwrap();
            assert_eq!(&b[..], b"after the cancel");
        });
    }
}

#[test]
fn unix_streams_and_many_sockets_share_one_pool() {
    let _g = serial();
    for mode in MODES {
        ringio::run(async move {
            let ring = pool(mode, 16, 128);
            let mut tasks = Vec::new();
            for i in 0..20u64 {
                let (a, b) = UnixStream::pair().unwrap();
                let ring = ring.clone();
                tasks.push(ringio::create_task(async move {
                    let data = pattern(10 + i, 4000);
                    let w = ringio::create_task({
                        let data = data.clone();
                        async move {
                            let (r, _) = a.write_all(data).await;
                            r?;
                            a.shutdown(Shutdown::Write).await
                        }
                    });
                    let mut got = Vec::new();
                    let mut s = b.recv_multishot(&ring);
                    while let Some(buf) = s.next().await {
                        got.extend_from_slice(&buf?);
                    }
                    w.await?;
                    assert!(got == data);
                    Ok::<_, Error>(())
                }));
            }
            for t in tasks {
                t.await.unwrap();
            }
            assert_eq!(ring.available(), 16);
        });
    }
}

#[test]
fn bad_input_and_the_wrong_loop_are_clear_errors() {
    let _g = serial();
    // No running loop.
    assert!(BufRing::new(8, 64).is_err());
    let ring = ringio::run(async {
        for (n, size) in [(0, 64), (3, 64), (65536, 64), (8, 0)] {
            let r = BufRing::new(n, size);
            assert!(
                matches!(r, Err(Error::InvalidArgument(_))),
                "{n} {size}: {r:?}"
            );
        }
        // Auto picks the kernel's ring here (this kernel has it).
        assert!(BufRing::new(8, 64).unwrap().is_kernel());
        BufRing::new(8, 64).unwrap()
    });
    ringio::run(async move {
        let (_client, server) = tcp_pair().await;
        let mut s = server.recv_multishot(&ring);
        let r = s.next().await.unwrap();
        assert!(matches!(r, Err(Error::InvalidArgument(_))), "{r:?}");
    });
}

#[test]
fn loop_shutdown_with_streams_in_flight_leaks_nothing() {
    let _g = serial();
    let fds_before = settled_open_fds();
    for mode in MODES {
        ringio::run(async move {
            let ring = pool(mode, 8, 64);
            let mut keep = Vec::new();
            for _ in 0..50 {
                let (a, b) = UnixStream::pair().unwrap();
                let ring = ring.clone();
                ringio::create_task(async move {
                    let mut s = b.recv_multishot(&ring);
                    while let Some(buf) = s.next().await {
                        buf?;
                    }
                    Ok::<_, Error>(())
                });
                keep.push(a);
            }
            ringio::sleep(Duration::from_millis(10)).await.unwrap();
            // The local pool has a receive in flight per free buffer only.
            assert!(stats().ops_in_flight >= 8);
            // A stream dropped mid-flight as well, with its pool.
            let (a, b) = UnixStream::pair().unwrap();
            let (r, _) = a.write_all(&b"x"[..]).await;
            r.unwrap();
            poll_once_and_drop(async {
                let mut s = b.recv_multishot(&ring);
                s.next().await
            })
            .await;
            drop(ring);
            // `run` returns with the receives in flight: shutdown cancels
            // them and reaps every completion before the pool is unmapped.
        });
    }
    assert_eq!(open_fds(), fds_before, "file descriptors leaked");
}

#[test]
fn read_exact_gathers_short_reads_and_reports_eof_with_the_bytes_so_far() {
    let _g = serial();
    ringio::run(async {
        let (client, server) = tcp_pair().await;
        let client = Rc::new(client);
        let data = pattern(20, 10_000);
        // Written in small pieces with pauses: the reads come back short.
        let w = {
            let (client, data) = (client.clone(), data.clone());
            ringio::create_task(async move {
                for chunk in data.chunks(777) {
                    let (r, _) = client.write_all(chunk.to_vec()).await;
                    r?;
                    ringio::sleep(Duration::from_millis(1)).await?;
                }
                Ok::<_, Error>(())
            })
        };
        let (r, buf) = server.read_exact(Vec::with_capacity(6000)).await;
        r.unwrap();
        assert!(buf[..] == data[..6000]);
        w.await.unwrap();
        // 4000 bytes left, then EOF: asking for 5000 is an error that says
        // so, and the 4000 bytes come back.
        client.shutdown(Shutdown::Write).await.unwrap();
        let (r, buf) = server.read_exact(Vec::with_capacity(5000)).await;
        let e = r.unwrap_err();
        assert!(
            matches!(&e, Error::Io(io) if io.kind() == std::io::ErrorKind::UnexpectedEof),
            "{e:?}"
        );
        assert!(e.to_string().contains("4000 of 5000"), "{e}");
        assert!(buf[..] == data[6000..]);
        // A buffer with no room is a clear error, not Ok.
        let (r, _) = server.read_exact(Vec::new()).await;
        assert!(matches!(r, Err(Error::InvalidArgument(_))), "{r:?}");
    });
}

#[test]
fn read_exact_takes_bytes_a_dropped_stream_left() {
    let _g = serial();
    for mode in MODES {
        ringio::run(async move {
            let (client, server) = tcp_pair().await;
            let ring = pool(mode, 8, 16);
            let data = pattern(21, 100);
            let (r, _) = client.write_all(data.clone()).await;
            r.unwrap();
            ringio::sleep(Duration::from_millis(10)).await.unwrap();
            let mut got = Vec::new();
            {
                let mut s = server.recv_multishot(&ring);
                got.extend_from_slice(&s.next().await.unwrap().unwrap());
            }
            let (r, buf) = server.read_exact(Vec::with_capacity(100 - got.len())).await;
            r.unwrap();
            got.extend_from_slice(&buf);
            assert!(got == data, "{mode:?}");
        });
    }
}
