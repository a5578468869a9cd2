//! Integration tests: multishot UDP receive into a provided-buffer ring
//! (`UdpSocket::recv_from_multishot`), with the pool registered with the
//! kernel (multishot IORING_OP_RECVMSG) and with the user-space fallback
//! (one plain IORING_OP_RECVMSG per datagram), against a real ring.
//!
//! Loopback UDP drops datagrams only when the receiver's socket buffer is
//! full: receivers here get a 4 MiB one (`SO_RCVBUF`, the default
//! `rmem_max`), and no test leaves more than ~300 small datagrams unread,
//! so every datagram must arrive.

mod common;
use common::*;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use futures_util::stream::Stream;
use io_uring::opcode;
use ringio::io::{BufRing, BufRingMode};
use ringio::net::{Datagram, RecvFromStream, UdpSocket};
use ringio::{Error, Runtime};

/// The payload of datagram `seq` from sender `who`: its own bytes, with a
/// length that varies (0 to 300 bytes).
fn payload(who: u64, seq: u64) -> Vec<u8> {
    let mut p = pattern(who * 10_000 + seq, ((who * 37 + seq * 11) % 301) as usize);
    if p.len() >= 4 {
        p[..2].copy_from_slice(&(who as u16).to_be_bytes());
        p[2..4].copy_from_slice(&(seq as u16).to_be_bytes());
    }
    p
}

fn bind() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    let size: libc::c_int = 4 << 20;
    // SAFETY: setsockopt on an open socket with a c_int option value.
    let rc = unsafe {
        libc::setsockopt(
            std::os::fd::AsRawFd::as_raw_fd(&s),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0);
    s
}

/// Whether the stream has an item ready now.
async fn has_item(s: &mut RecvFromStream<'_>) -> bool {
    std::future::poll_fn(|cx| std::task::Poll::Ready(Pin::new(&mut *s).poll_next(cx).is_ready()))
        .await
}

/// Four senders, `per` datagrams each in rounds of 10 per sender; every
/// datagram is received once, with its sender's address and its own bytes.
async fn many_senders(ring: &BufRing, per: u64) {
    let rx = bind();
    let to = rx.local_addr().unwrap();
    let senders: Vec<UdpSocket> = (0..4).map(|_| bind()).collect();
    let who_of: HashMap<SocketAddr, u64> = senders
        .iter()
        .enumerate()
        .map(|(i, s)| (s.local_addr().unwrap(), i as u64))
        .collect();
    let mut stream = rx.recv_from_multishot(ring);
    let mut next_seq = [0u64; 4];
    let mut received = 0u64;
    for round in 0..per / 10 {
        for k in 0..10 {
            for (i, s) in senders.iter().enumerate() {
                let (r, _) = s.send_to(payload(i as u64, round * 10 + k), to).await;
                r.unwrap();
            }
        }
        while received < (round + 1) * 40 {
            let d: Datagram = stream.next().await.unwrap().unwrap();
            let who = *who_of
                .get(&d.source())
                .unwrap_or_else(|| panic!("a datagram from a stranger: {:?}", d.source()));
            // Datagrams from one sender keep their order on loopback.
            let seq = next_seq[who as usize];
            next_seq[who as usize] += 1;
            assert!(!d.is_truncated());
            assert_eq!(d.len_on_wire(), d.len());
            assert!(
                d[..] == payload(who, seq)[..],
                "sender {who} datagram {seq}: {} bytes differ",
                d.len()
            );
            received += 1;
        }
    }
    assert_eq!(next_seq, [per; 4]);
    // Nothing more.
    ringio::sleep(Duration::from_millis(5)).await.unwrap();
    assert!(!has_item(&mut stream).await);
}

#[test]
fn datagrams_from_several_senders_arrive_whole_with_their_source() {
    let _g = serial();
    for mode in MODES {
        ringio::run(async move {
            let ring = pool(mode, 64, 512);
            many_senders(&ring, 250).await;
            settle().await;
            assert_eq!(ring.available(), 64, "{mode:?}: every buffer is back");
        });
    }
}

#[test]
fn a_dry_pool_ends_the_receive_with_enobufs_and_every_datagram_still_arrives() {
    let _g = serial();
    for mode in MODES {
        ringio::run(async move {
            let rx = bind();
            let tx = bind();
            let to = rx.local_addr().unwrap();
            let ring = pool(mode, 4, 512);
            let mut stream = rx.recv_from_multishot(&ring);
            let submitted = stats().ops_submitted;
            for seq in 0..40 {
                let (r, _) = tx.send_to(payload(1, seq), to).await;
                r.unwrap();
            }
            // Take all four buffers and keep them.
            let mut held = Vec::new();
            while held.len() < 4 {
                held.push(stream.next().await.unwrap().unwrap());
            }
            assert_eq!(ring.available(), 0);
            // No buffer: nothing more comes (the rest waits in the socket).
            for _ in 0..3 {
                ringio::sleep(Duration::from_millis(5)).await.unwrap();
                assert!(
                    !has_item(&mut stream).await,
                    "{mode:?}: an item without a buffer"
                );
            }
            let mut got: Vec<Datagram> = std::mem::take(&mut held);
            // Read the rest while dropping what arrives: 4 buffers serve 40.
            let mut rest = Vec::new();
            for d in got.drain(..) {
                rest.push(d.to_vec());
            }
            while rest.len() < 40 {
                let d = stream.next().await.unwrap().unwrap();
                assert_eq!(d.source(), tx.local_addr().unwrap());
                rest.push(d.to_vec());
            }
            for (seq, d) in rest.iter().enumerate() {
                assert!(
                    d[..] == payload(1, seq as u64)[..],
                    "{mode:?}: datagram {seq}"
                );
            }
            if mode == BufRingMode::Kernel {
                // The kernel ended the first multishot receive (ENOBUFS)
                // and the stream armed new ones.
                assert!(
                    stats().ops_submitted >= submitted + 2,
                    "the multishot receive was never re-armed"
                );
            }
            drop(stream);
            assert_eq!(ring.available(), 4);
        });
    }
}

#[test]
fn dropping_the_stream_mid_way_loses_no_datagram() {
    let _g = serial();
    for mode in MODES {
        ringio::run(async move {
            let rx = bind();
            let tx = bind();
            let to = rx.local_addr().unwrap();
            let ring = pool(mode, 16, 512);
            for seq in 0..30 {
                let (r, _) = tx.send_to(payload(2, seq), to).await;
                r.unwrap();
            }
            ringio::sleep(Duration::from_millis(5)).await.unwrap();
            // A stream dropped right after arming: its receive reaches the
            // kernel as it is dropped, and what it completes is kept.
            poll_once_and_drop(async {
                let mut s = rx.recv_from_multishot(&ring);
                s.next().await
            })
            .await;
            let mut got = Vec::new();
            // Each stream takes one and is dropped with (kernel mode) more
            // already completed into buffers: those stay with the socket.
            for _ in 0..3 {
                let mut s = rx.recv_from_multishot(&ring);
                got.push(s.next().await.unwrap().unwrap().to_vec());
            }
            settle().await;
            // Plain recv_from returns the kept ones first, then the rest.
            for _ in 0..10 {
                let (r, buf) = rx.recv_from(Vec::with_capacity(1024)).await;
                let (n, from) = r.unwrap();
                assert_eq!(from, tx.local_addr().unwrap());
                assert_eq!(n, buf.len());
                got.push(buf);
            }
            // And a new stream the remainder.
            let mut s = rx.recv_from_multishot(&ring);
            while got.len() < 30 {
                got.push(s.next().await.unwrap().unwrap().to_vec());
            }
            for (seq, d) in got.iter().enumerate() {
                assert!(
                    d[..] == payload(2, seq as u64)[..],
                    "{mode:?}: datagram {seq} lost or out of order"
                );
            }
            ringio::sleep(Duration::from_millis(5)).await.unwrap();
            assert!(!has_item(&mut s).await, "{mode:?}: a datagram twice");
            drop(s);
            settle().await;
            assert_eq!(ring.available(), 16, "{mode:?}: every buffer is back");
        });
    }
}

#[test]
fn cancelling_the_task_delivers_cancelled_and_the_socket_still_works() {
    let _g = serial();
    for mode in MODES {
        ringio::run(async move {
            let rx = std::rc::Rc::new(bind());
            let tx = bind();
            let to = rx.local_addr().unwrap();
            let ring = pool(mode, 8, 256);
            let t = {
                let (rx, ring) = (rx.clone(), ring.clone());
                ringio::create_task(async move {
                    let mut s = rx.recv_from_multishot(&ring);
                    match s.next().await {
                        Some(Err(e)) => Err(e),
                        other => panic!("expected a cancel, got {other:?}"),
                    }
                })
            };
            ringio::sleep(Duration::from_millis(10)).await.unwrap();
            assert!(t.cancel());
            let r: ringio::Result<()> = (&t).await;
            assert!(r.unwrap_err().is_cancelled());
            let (r, _) = tx.send_to(&b"after the cancel"[..], to).await;
            r.unwrap();
            let mut s = rx.recv_from_multishot(&ring);
            let d = s.next().await.unwrap().unwrap();
            assert_eq!(&d[..], b"after the cancel");
            drop(d);
            drop(s);
            settle().await;
            assert_eq!(ring.available(), 8);
        });
    }
}

#[test]
fn a_datagram_longer_than_the_buffer_is_flagged_truncated() {
    let _g = serial();
    for mode in MODES {
        ringio::run(async move {
            let rx = bind();
            let tx = bind();
            let to = rx.local_addr().unwrap();
            let ring = pool(mode, 4, 128);
            let room = if mode == BufRingMode::Kernel {
                128 - Datagram::OVERHEAD
            } else {
                128
            };
            let big = pattern(9, 1000);
            let (r, _) = tx.send_to(big.clone(), to).await;
            r.unwrap();
            let (r, _) = tx.send_to(big[..room].to_vec(), to).await;
            r.unwrap();
            let mut s = rx.recv_from_multishot(&ring);
            let d = s.next().await.unwrap().unwrap();
            assert!(d.is_truncated(), "{mode:?}");
            assert_eq!(d.len(), room, "{mode:?}");
            assert_eq!(d.len_on_wire(), 1000, "{mode:?}");
            assert!(d[..] == big[..room]);
            // One that fits exactly is whole.
            let d = s.next().await.unwrap().unwrap();
            assert!(!d.is_truncated(), "{mode:?}");
            assert_eq!(d.len(), room);
        });
    }
}

/// `payload`, but never empty: the kernel ends a multishot receive after
/// a zero-length datagram, and this test needs one that keeps going.
fn payload_nonempty(who: u64, seq: u64) -> Vec<u8> {
    let p = payload(who, seq);
    if p.is_empty() { vec![0xAB] } else { p }
}

#[test]
fn an_unread_stream_holds_a_bounded_number_of_buffers_of_a_shared_pool() {
    let _g = serial();
    ringio::run(async {
        let (a, b, tx) = (bind(), bind(), bind());
        let (to_a, to_b) = (a.local_addr().unwrap(), b.local_addr().unwrap());
        // 512 buffers, 532 datagrams to socket `a`, whose stream is armed
        // and not read: unbounded, it would take every buffer and starve
        // socket `b`.
        let ring = pool(BufRingMode::Kernel, 512, 512);
        let mut sa = a.recv_from_multishot(&ring);
        assert!(!has_item(&mut sa).await); // armed, then left unread
        let total = 532;
        let cancels = stats().cancel_requests;
        for seq in 0..total {
            let (r, _) = tx.send_to(payload_nonempty(3, seq), to_a).await;
            r.unwrap();
        }
        for _ in 0..10 {
            ringio::sleep(Duration::from_millis(5)).await.unwrap();
        }
        // The ring stopped `a`'s receive at DATAGRAM_QUEUE_MAX unread (an
        // ASYNC_CANCEL, the only one in this test).
        assert_eq!(stats().cancel_requests, cancels + 1);
        // `b` can still hold 40 buffers at once.
        let mut sb = b.recv_from_multishot(&ring);
        for seq in 0..40 {
            let (r, _) = tx.send_to(payload_nonempty(4, seq), to_b).await;
            r.unwrap();
        }
        let mut held = Vec::new();
        for seq in 0..40 {
            let next = std::pin::pin!(sb.next());
            let limit = std::pin::pin!(ringio::sleep(Duration::from_secs(2)));
            let d = match futures_util::future::select(next, limit).await {
                futures_util::future::Either::Left((d, _)) => d.unwrap().unwrap(),
                futures_util::future::Either::Right(_) => {
                    panic!("socket b starved at datagram {seq}")
                }
            };
            assert!(d[..] == payload_nonempty(4, seq)[..]);
            held.push(d);
        }
        drop(held);
        // And `a` loses nothing: the rest waited in its socket.
        for seq in 0..total {
            let d = sa.next().await.unwrap().unwrap();
            assert!(d[..] == payload_nonempty(3, seq)[..], "datagram {seq}");
        }
    });
}

#[test]
fn bad_input_is_a_clear_error() {
    let _g = serial();
    ringio::run(async {
        let rx = bind();
        // Kernel-mode buffers too small for the header and the address.
        let ring = pool(BufRingMode::Kernel, 4, Datagram::OVERHEAD);
        let mut s = rx.recv_from_multishot(&ring);
        let r = s.next().await.unwrap();
        assert!(
            matches!(&r, Err(Error::InvalidArgument(m)) if m.contains("at least")),
            "{r:?}"
        );
    });
}

#[test]
fn without_the_kernel_feature_the_fallback_serves_the_same_api() {
    let _g = serial();
    // SEND_ZC marks Linux 6.0, which brought multishot receives: hidden,
    // a default (Auto) pool is kept in user space.
    let mut rt = Runtime::builder()
        .without_opcodes([opcode::SendZc::CODE])
        .build()
        .unwrap();
    rt.run(async {
        let ring = BufRing::new(32, 512).unwrap();
        assert!(!ring.is_kernel());
        many_senders(&ring, 100).await;
        settle().await;
        assert_eq!(ring.available(), 32);
    })
    .unwrap();
}

#[test]
fn loop_shutdown_with_streams_in_flight_leaks_nothing() {
    let _g = serial();
    let fds = settled_open_fds();
    for mode in MODES {
        ringio::run(async move {
            let ring = pool(mode, 8, 256);
            for _ in 0..10 {
                let rx = bind();
                let ring = ring.clone();
                ringio::create_task(async move {
                    let mut s = rx.recv_from_multishot(&ring);
                    while let Some(d) = s.next().await {
                        d?;
                    }
                    Ok::<_, Error>(())
                });
            }
            ringio::sleep(Duration::from_millis(5)).await.unwrap();
            assert!(stats().ops_in_flight >= 8);
        });
    }
    assert_eq!(open_fds(), fds, "descriptors leaked");
}

#[test]
fn an_empty_datagram_does_not_hold_back_the_ones_behind_it() {
    let _g = serial();
    for mode in MODES {
        ringio::run(async move {
            let rx = bind();
            let to = rx.local_addr().unwrap();
            let ring = pool(mode, 16, 256);
            let mut s = rx.recv_from_multishot(&ring);
            assert!(!has_item(&mut s).await); // armed
            // All sent while the loop is blocked here, so that they wait
            // in the socket together when the kernel gets to them.
            let from = std::thread::spawn(move || {
                let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
                for p in [&b"first"[..], b"", b"after", b"", b"", b"last"] {
                    tx.send_to(p, to).unwrap();
                }
                tx.local_addr().unwrap()
            })
            .join()
            .unwrap();
            let mut got = Vec::new();
            for i in 0..6 {
                let next = std::pin::pin!(s.next());
                let limit = std::pin::pin!(ringio::sleep(Duration::from_secs(2)));
                match futures_util::future::select(next, limit).await {
                    futures_util::future::Either::Left((d, _)) => {
                        let d = d.unwrap().unwrap();
                        assert_eq!(d.source(), from);
                        got.push(d.to_vec());
                    }
                    futures_util::future::Either::Right(_) => {
                        panic!("{mode:?}: datagram {i} held back ({got:?} so far)")
                    }
                }
            }
            let want: Vec<Vec<u8>> = [&b"first"[..], b"", b"after", b"", b"", b"last"]
                .iter()
                .map(|p| p.to_vec())
                .collect();
            assert_eq!(got, want, "{mode:?}");
        });
    }
}
