//! Integration tests: serving a file to a socket with IORING_OP_SPLICE.

mod common;
use common::*;

use std::net::Shutdown;

use io_uring::opcode;
use ringio::fs::File;
use ringio::{Error, Runtime};

fn temp(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("ringio-splice-{name}-{}", std::process::id()))
}

#[test]
fn a_file_range_reaches_the_socket_and_a_short_file_stops_early() {
    let _g = serial();
    ringio::run(async {
        let path = temp("range");
        let data = pattern(60, (1 << 20) + 123);
        ringio::fs::write(&path, data.clone()).await.unwrap();
        let f = File::open(&path).await.unwrap();
        let (client, server) = tcp_pair().await;
        let reader = ringio::create_task(async move {
            let mut got = Vec::new();
            loop {
                let (r, b) = client.read(Vec::with_capacity(64 * 1024)).await;
                if r? == 0 {
                    return Ok::<_, Error>(got);
                }
                got.extend_from_slice(&b);
            }
        });
        // A range from an odd offset, then past the end of the file.
        let (r, n) = f.send_to(&server, 1000, 500_000).await;
        r.unwrap();
        assert_eq!(n, 500_000);
        let (r, n) = f.send_to(&server, 500_000, 10 << 20).await;
        r.unwrap();
        assert_eq!(
            n,
            data.len() as u64 - 500_000,
            "stops at the end of the file"
        );
        server.shutdown(Shutdown::Write).await.unwrap();
        let got = reader.await.unwrap();
        let mut expected = data[1000..501_000].to_vec();
        expected.extend_from_slice(&data[500_000..]);
        assert!(got == expected);
        f.close().await.unwrap();
        ringio::fs::remove_file(&path).await.unwrap();
    });
}

#[test]
fn without_splice_it_is_unsupported_naming_the_kernel() {
    let _g = serial();
    let mut rt = Runtime::builder()
        .without_opcodes([opcode::Splice::CODE])
        .build()
        .unwrap();
    rt.run(async {
        let path = temp("unsupported");
        ringio::fs::write(&path, b"x".to_vec()).await.unwrap();
        let f = File::open(&path).await.unwrap();
        let (_client, server) = tcp_pair().await;
        let (r, n) = f.send_to(&server, 0, 1).await;
        assert_eq!(n, 0);
        assert!(
            matches!(&r, Err(Error::Unsupported(m)) if m.contains("IORING_OP_SPLICE") && m.contains("5.7")),
            "{r:?}"
        );
        f.close().await.unwrap();
        ringio::fs::remove_file(&path).await.unwrap();
    })
    .unwrap();
}
