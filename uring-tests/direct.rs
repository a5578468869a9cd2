//! Integration tests: direct descriptors (connections accepted into the
//! ring's registered file table, used with IOSQE_FIXED_FILE).

mod common;
use common::*;

use std::net::Shutdown;
use std::time::Duration;

use io_uring::opcode;
use ringio::net::{DirectStream, TcpListener, TcpStream};
use ringio::{Error, Runtime};

#[test]
fn a_direct_connection_echoes_without_a_file_descriptor() {
    let _g = serial();
    ringio::run(async {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let c = ringio::create_task(async move { TcpStream::connect(addr).await });
        // Register the table before counting descriptors.
        DirectStream::reserve_table(64).unwrap();
        let client = c.await.unwrap();
        let fds = open_fds();
        let server = listener.accept_direct().await.unwrap();
        assert_eq!(open_fds(), fds, "a direct accept creates no descriptor");
        let data = pattern(40, 200_000);
        let (r, _) = client.write_all(data.clone()).await;
        r.unwrap();
        client.shutdown(Shutdown::Write).await.unwrap();
        let mut got = Vec::new();
        loop {
            let (r, buf) = server.read(Vec::with_capacity(16 * 1024)).await;
            if r.unwrap() == 0 {
                break;
            }
            got.extend_from_slice(&buf);
            let (r, _) = server.write_all(buf).await;
            r.unwrap();
        }
        assert!(got == data);
        server.shutdown_write().await.unwrap();
        let (r, buf) = client.read_exact(Vec::with_capacity(data.len())).await;
        r.unwrap();
        assert!(buf == data);
        let (r, _) = server.read(Vec::new()).await;
        assert!(matches!(r, Err(Error::InvalidArgument(_))), "{r:?}");
    });
}

#[test]
fn a_full_table_is_a_clear_error_and_a_dropped_stream_frees_its_slot() {
    let _g = serial();
    ringio::run(async {
        assert_eq!(DirectStream::reserve_table(2).unwrap(), 2);
        // Registered once: a later reserve keeps the size.
        assert_eq!(DirectStream::reserve_table(100).unwrap(), 2);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let mut clients = Vec::new();
        for _ in 0..3 {
            clients.push(TcpStream::connect(addr).await.unwrap());
        }
        let a = listener.accept_direct().await.unwrap();
        let b = listener.accept_direct().await.unwrap();
        assert_ne!(a.slot(), b.slot());
        let r = listener.accept_direct().await;
        let e = r.unwrap_err();
        assert!(e.to_string().contains("full (all 2 slots"), "{e}");
        drop(a);
        // The kernel closed the connection it could not place: a new one.
        clients.push(TcpStream::connect(addr).await.unwrap());
        // The close goes through the ring; the next accept finds the slot.
        let mut c = None;
        for _ in 0..100 {
            match listener.accept_direct().await {
                Ok(s) => {
                    c = Some(s);
                    break;
                }
                Err(_) => ringio::sleep(Duration::from_millis(1)).await.unwrap(),
            }
        }
        assert!(c.is_some(), "the dropped stream's slot never came back");
        let r = DirectStream::reserve_table(0);
        assert!(matches!(r, Err(Error::InvalidArgument(_))), "{r:?}");
    });
}

#[test]
fn a_dropped_direct_accept_leaks_no_slot() {
    let _g = serial();
    ringio::run(async {
        DirectStream::reserve_table(1).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        poll_once_and_drop(listener.accept_direct()).await;
        let _client = TcpStream::connect(addr).await.unwrap();
        ringio::sleep(Duration::from_millis(5)).await.unwrap();
        // One slot in all: it is free.
        let s = listener.accept_direct().await.unwrap();
        assert_eq!(s.slot(), 0);
    });
}

#[test]
fn without_the_kernel_feature_it_is_unsupported_naming_the_kernel() {
    let _g = serial();
    let mut rt = Runtime::builder()
        .without_opcodes([opcode::Socket::CODE])
        .build()
        .unwrap();
    rt.run(async {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let r = listener.accept_direct().await;
        assert!(
            matches!(&r, Err(Error::Unsupported(m)) if m.contains("5.19")),
            "{r:?}"
        );
    })
    .unwrap();
}

#[test]
fn loop_shutdown_with_direct_reads_in_flight() {
    let _g = serial();
    let fds = settled_open_fds();
    ringio::run(async {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let mut keep = Vec::new();
        for _ in 0..20 {
            keep.push(TcpStream::connect(addr).await.unwrap());
            let s = listener.accept_direct().await.unwrap();
            ringio::create_task(async move {
                let (r, _) = s.read(Vec::with_capacity(64)).await;
                r
            });
        }
        ringio::sleep(Duration::from_millis(5)).await.unwrap();
        assert!(stats().ops_in_flight >= 20);
    });
    assert_eq!(open_fds(), fds, "descriptors leaked");
}
