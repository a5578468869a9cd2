//! Integration tests: the runtime builder's ring options (SQPOLL,
//! COOP_TASKRUN, the CQ size) bring up a working ring, or a clear error.

mod common;
use common::*;

use std::net::Shutdown;
use std::time::Duration;

use ringio::io::BufRing;
use ringio::net::{TcpListener, TcpStream};
use ringio::{Error, Runtime};

/// Ops, timers, a cancelled op, and a TCP exchange with multishot receive:
/// the ring works.
async fn exercise() -> ringio::Result<()> {
    for _ in 0..100 {
        ringio::io::nop().await?;
    }
    ringio::sleep(Duration::from_millis(2)).await?;
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let c = ringio::create_task(async move { TcpStream::connect(addr).await });
    let (server, _) = listener.accept().await?;
    let client = c.await?;
    // A read dropped mid-flight (cancelled in the kernel).
    poll_once_and_drop(server.read(Vec::with_capacity(8))).await;
    let data = pattern(7, 50_000);
    let (r, _) = client.write_all(data.clone()).await;
    r?;
    client.shutdown(Shutdown::Write).await?;
    let pool = BufRing::new(16, 1024)?;
    let mut rx = server.recv_multishot(&pool);
    let mut got = Vec::new();
    while let Some(b) = rx.next().await {
        got.extend_from_slice(&b?);
    }
    assert!(got == data);
    Ok(())
}

#[test]
fn sqpoll_ring_comes_up_and_works() {
    let _g = serial();
    let mut rt = match Runtime::builder().sqpoll(Duration::from_millis(10)).build() {
        Ok(rt) => rt,
        // A sandbox may forbid it: then the error must say so.
        Err(Error::Unsupported(msg)) => {
            assert!(msg.contains("SQPOLL"), "{msg}");
            eprintln!("SQPOLL not available here: {msg}");
            return;
        }
        Err(e) => panic!("{e:?}"),
    };
    rt.run(async {
        let s = stats();
        assert!(s.sqpoll && !s.defer_taskrun && !s.coop_taskrun);
        exercise().await.unwrap();
        // Idle past the thread's idle time: the next submission wakes it.
        ringio::sleep(Duration::from_millis(50)).await.unwrap();
        exercise().await.unwrap();
    })
    .unwrap();
}

#[test]
fn sqpoll_pinned_to_a_cpu() {
    let _g = serial();
    match Runtime::builder()
        .sqpoll(Duration::from_millis(5))
        .sqpoll_cpu(0)
        .build()
    {
        Ok(mut rt) => rt.run(async { exercise().await.unwrap() }).unwrap(),
        Err(Error::Unsupported(msg)) => {
            assert!(msg.contains("SQPOLL"), "{msg}");
            eprintln!("SQPOLL not available here: {msg}");
        }
        Err(e) => panic!("{e:?}"),
    }
    // A CPU that does not exist: a clear error, not a hang or a panic.
    let r = Runtime::builder()
        .sqpoll(Duration::from_millis(5))
        .sqpoll_cpu(4095)
        .build();
    eprintln!("sqpoll_cpu(4095): {r:?}");
    assert!(
        matches!(r, Err(Error::Unsupported(_) | Error::Io(_))),
        "{r:?}"
    );
}

#[test]
fn coop_taskrun_ring_comes_up_and_works() {
    let _g = serial();
    let mut rt = Runtime::builder().coop_taskrun(true).build().unwrap();
    rt.run(async {
        let s = stats();
        assert!(s.coop_taskrun && !s.defer_taskrun && !s.sqpoll);
        exercise().await.unwrap();
    })
    .unwrap();
}

#[test]
fn cq_size_is_set_and_checked() {
    let _g = serial();
    let mut rt = Runtime::builder()
        .ring_entries(64)
        .cq_entries(4096)
        .build()
        .unwrap();
    rt.run(async {
        assert_eq!(stats().cq_entries, 4096);
        exercise().await.unwrap();
    })
    .unwrap();
    // The default: four times the SQ.
    let mut rt = Runtime::builder().ring_entries(64).build().unwrap();
    assert_eq!(rt.run(async { stats().cq_entries }).unwrap(), 256);
    for n in [1, 63, 65537, u32::MAX] {
        let r = Runtime::builder().ring_entries(64).cq_entries(n).build();
        assert!(matches!(r, Err(Error::InvalidArgument(_))), "{n}: {r:?}");
    }
}

#[test]
fn combinations_the_kernel_refuses_are_clear_errors() {
    let _g = serial();
    let r = Runtime::builder()
        .sqpoll(Duration::from_millis(5))
        .coop_taskrun(true)
        .build();
    assert!(
        matches!(&r, Err(Error::InvalidArgument(m)) if m.contains("sqpoll")),
        "{r:?}"
    );
    let r = Runtime::builder().sqpoll_cpu(0).build();
    assert!(
        matches!(&r, Err(Error::InvalidArgument(m)) if m.contains("sqpoll")),
        "{r:?}"
    );
    let r = Runtime::builder().cores(1).cq_entries(1024).build_multi();
    assert!(matches!(r, Err(Error::InvalidArgument(_))), "{r:?}");
}
