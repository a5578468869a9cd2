//! Integration tests: zero-copy send (`IORING_OP_SEND_ZC`, two completions)
//! and the fallbacks taken when the probe lacks an opcode (forced with
//! `Builder::without_opcodes`).

mod common;
use common::*;

use std::net::Shutdown;
use std::rc::Rc;
use std::time::Duration;

use io_uring::opcode;
use ringio::io::{BufRing, BufRingMode, BufRingOptions, IoBuf};
use ringio::{Error, Runtime};

/// Sends 3 MiB with `send_zc` (resending the rest after a short send) and
/// checks the peer got every byte and the buffer came back whole.
async fn send_and_check() {
    let (client, server) = tcp_pair().await;
    let data = pattern(30, 3 << 20);
    let expected = data.clone();
    let reader = ringio::create_task(async move {
        let (r, buf) = server.read_exact(Vec::with_capacity(3 << 20)).await;
        r?;
        Ok::<_, Error>(buf)
    });
    let mut buf = data;
    let mut off = 0;
    while off < buf.len() {
        let (r, slice) = client.send_zc(buf.slice(off..)).await;
        off += r.unwrap();
        buf = slice.into_inner();
    }
    assert!(buf == expected, "the buffer came back changed");
    client.shutdown(Shutdown::Write).await.unwrap();
    assert!(reader.await.unwrap() == expected);
    settle().await;
    assert_eq!(stats().ops_in_flight, 0);
}

#[test]
fn send_zc_sends_everything_and_gives_the_buffer_back_after_the_notification() {
    let _g = serial();
    ringio::run(send_and_check());
}

#[test]
fn without_send_zc_it_is_a_plain_send_and_buf_ring_is_local() {
    let _g = serial();
    let mut rt = Runtime::builder()
        .without_opcodes([opcode::SendZc::CODE])
        .build()
        .unwrap();
    rt.run(async {
        send_and_check().await;
        // The same probe bit marks Linux 6.0 for provided-buffer rings.
        assert!(!BufRing::new(8, 64).unwrap().is_kernel());
        let r = BufRing::with_options(BufRingOptions::new(8, 64).mode(BufRingMode::Kernel));
        match r {
            Err(Error::Unsupported(msg)) => {
                assert!(msg.contains("PBUF_RING") && msg.contains("6.0"), "{msg}")
            }
            other => panic!("{other:?}"),
        }
        // A required opcode that is missing names itself and its kernel.
        let r = ringio::Op::<()>::require(opcode::SendZc::CODE);
        assert!(
            matches!(&r, Err(Error::Unsupported(m)) if m.contains("IORING_OP_SEND_ZC") && m.contains("6.0")),
            "{r:?}"
        );
    })
    .unwrap();
}

#[test]
fn a_send_zc_cancelled_or_dropped_mid_flight_keeps_its_buffer_until_the_kernel_is_done() {
    let _g = serial();
    ringio::run(async {
        let (client, server) = tcp_pair().await;
        let client = Rc::new(client);
        // The peer does not read yet: a 16 MiB send blocks in the kernel.
        let t = {
            let client = client.clone();
            ringio::create_task(async move {
                let (r, buf) = client.send_zc(vec![5u8; 16 << 20]).await;
                assert_eq!(buf.len(), 16 << 20);
                r
            })
        };
        ringio::sleep(Duration::from_millis(20)).await.unwrap();
        assert!(t.cancel());
        // Dropped mid-flight: parked with the runtime until the last
        // completion.
        poll_once_and_drop(client.send_zc(vec![6u8; 16 << 20])).await;
        // The kernel frees the buffers (the notifications come) only once
        // the peer has taken the bytes queued from them: read to the end.
        let reader = ringio::create_task(async move {
            let mut total = 0usize;
            loop {
                let (r, _) = server.read(Vec::with_capacity(1 << 20)).await;
                match r? {
                    0 => return Ok::<_, Error>(total),
                    n => total += n,
                }
            }
        });
        match (&t).await {
            // Cancelled in the kernel, or a partial send that completed first.
            Err(e) => assert!(e.is_cancelled(), "{e:?}"),
            Ok(n) => assert!(n <= 16 << 20),
        }
        client.shutdown(Shutdown::Write).await.unwrap();
        reader.await.unwrap();
        settle().await;
        assert_eq!(stats().ops_in_flight, 0);
    });
}
