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
