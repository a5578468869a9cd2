//! Integration tests: hyper 1.x on ringio (feature `hyper`), server and
//! client on loopback, HTTP/1.1 and HTTP/2, against a real ring.

mod common;
use common::*;

use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response};
use ringio::compat::hyper::{LocalExecutor, RingTimer, drive, into_error};
use ringio::io::Compat;
use ringio::net::{TcpListener, TcpStream};

/// Answers with the method, the path and the request body reversed.
async fn reverse(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let (parts, body) = req.into_parts();
    let mut body = body.collect().await?.to_bytes().to_vec();
    body.reverse();
    let res = Response::builder()
        .header("x-method", parts.method.as_str())
        .header("x-path", parts.uri.path())
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    Ok(res)
}

fn request(path: &str, body: Vec<u8>) -> Request<Full<Bytes>> {
    Request::post(format!("http://localhost{path}"))
        .header("host", "localhost")
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}

async fn check(res: Response<Incoming>, path: &str, sent: &[u8]) -> ringio::Result<()> {
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["x-method"], "POST");
    assert_eq!(res.headers()["x-path"], path);
    let got = res
        .into_body()
        .collect()
        .await
        .map_err(into_error)?
        .to_bytes();
    let mut want = sent.to_vec();
    want.reverse();
    assert_eq!(got.len(), want.len());
    assert!(got[..] == want[..], "body of {} bytes differs", sent.len());
    Ok(())
}

/// HTTP/1.1: one keep-alive connection carries several requests with
/// bodies (one larger than the adapter's buffers); the server's connection
/// ends cleanly when the client drops its side.
#[test]
fn http1_server_and_client_round_trip() {
    block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let server = ringio::create_task(async move {
            let (stream, _) = listener.accept().await?;
            stream.set_nodelay(true)?;
            hyper::server::conn::http1::Builder::new()
                .timer(RingTimer)
                .serve_connection(Compat::new(stream), service_fn(reverse))
                .await
                .map_err(into_error)
        });

        let stream = TcpStream::connect(addr).await?;
        let (mut send, conn) = hyper::client::conn::http1::handshake(Compat::new(stream))
            .await
            .map_err(into_error)?;
        let conn = ringio::create_task(async move { conn.await.map_err(into_error) });
        for (i, len) in [0usize, 13, 200_000, 1].into_iter().enumerate() {
            let body = pattern(i as u64, len);
            let path = format!("/r/{i}");
            let res = send
                .send_request(request(&path, body.clone()))
                .await
                .map_err(into_error)?;
            check(res, &path, &body).await?;
        }
        drop(send);
        conn.await?;
        server.await?;
        settle().await;
        Ok::<_, ringio::Error>(())
    })
    .unwrap();
}

/// HTTP/2 (prior knowledge): concurrent streams on one connection, each
/// served by a ringio task that the executor made.
#[test]
fn http2_server_and_client_round_trip() {
    block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let server = ringio::create_task(async move {
            let (stream, _) = listener.accept().await?;
            hyper::server::conn::http2::Builder::new(LocalExecutor)
                .timer(RingTimer)
                .serve_connection(Compat::new(stream), service_fn(reverse))
                .await
                .map_err(into_error)
        });

        let stream = TcpStream::connect(addr).await?;
        let (send, conn) = hyper::client::conn::http2::Builder::new(LocalExecutor)
            .timer(RingTimer)
            .handshake(Compat::new(stream))
            .await
            .map_err(into_error)?;
        let conn = ringio::create_task(async move { conn.await.map_err(into_error) });
        let mut tasks = Vec::new();
        for i in 0..8u64 {
            let mut send = send.clone();
            tasks.push(ringio::create_task(async move {
                let body = pattern(i, (i as usize) * 30_011);
                let path = format!("/s/{i}");
                let res = send
                    .send_request(request(&path, body.clone()))
                    .await
                    .map_err(into_error)?;
                assert_eq!(res.version(), hyper::Version::HTTP_2);
                check(res, &path, &body).await
            }));
        }
        for t in tasks {
            t.await?;
        }
        drop(send);
        conn.await?;
        server.await?;
        settle().await;
        Ok::<_, ringio::Error>(())
    })
    .unwrap();
}

/// Cancelling the task that serves a connection cancels its pending read:
/// the task ends cancelled (hyper closes an idle HTTP/1 connection cleanly
/// on the failed read; `drive` reports the cancellation), the socket is
/// closed, and the client sees the connection end.
#[test]
fn cancelling_a_server_connection() {
    block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let server = ringio::create_task(async move {
            let (stream, _) = listener.accept().await?;
            drive(
                hyper::server::conn::http1::Builder::new()
                    .timer(RingTimer)
                    .serve_connection(Compat::new(stream), service_fn(reverse)),
            )
            .await
        });
        let stream = TcpStream::connect(addr).await?;
        let (mut send, conn) = hyper::client::conn::http1::handshake(Compat::new(stream))
            .await
            .map_err(into_error)?;
        let conn = ringio::create_task(async move { conn.await.map_err(into_error) });
        let res = send
            .send_request(request("/a", b"abc".to_vec()))
            .await
            .map_err(into_error)?;
        check(res, "/a", b"abc").await?;

        // The server now waits in a read for the next request.
        ringio::sleep(ms(20)).await?;
        server.cancel();
        let e = server.await.unwrap_err();
        assert!(e.is_cancelled(), "{e:?}");
        // The client's connection ends (EOF from the closed socket).
        let t0 = Instant::now();
        let _ = conn.await;
        assert!(t0.elapsed() < Duration::from_secs(5));
        let r = send.send_request(request("/b", Vec::new())).await;
        assert!(r.is_err());
        settle().await;
        Ok::<_, ringio::Error>(())
    })
    .unwrap();
}

/// A client sends half a request head to a server whose adapter `adapt`
/// makes from the accepted stream, with a 100 ms header-read timeout on
/// the ring timer: the connection ends with an error (checked), no sooner
/// than the timeout (checked), and the client reads the end of stream
/// (checked). Returns how long the server took.
async fn half_head_times_out(
    adapt: impl FnOnce(TcpStream) -> Compat<TcpStream> + 'static,
) -> ringio::Result<Duration> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let server = ringio::create_task(async move {
        let (stream, _) = listener.accept().await?;
        let t0 = Instant::now();
        let r = hyper::server::conn::http1::Builder::new()
            .timer(RingTimer)
            .header_read_timeout(ms(100))
            .serve_connection(adapt(stream), service_fn(reverse))
            .await;
        Ok::<_, ringio::Error>((r.is_err(), t0.elapsed()))
    });
    let stream = TcpStream::connect(addr).await?;
    let (r, _) = stream
        .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n".to_vec())
        .await;
    r?;
    let (failed, took) = server.await?;
    assert!(failed, "the connection should end with a timeout error");
    assert!(took >= ms(100), "{took:?}");
    // The server closed the socket: the client reads the end.
    let (n, _) = stream.read(Vec::with_capacity(64)).await;
    assert_eq!(n?, 0);
    Ok(took)
}

/// The timer drives hyper's HTTP/1 header-read timeout: a client that
/// sends half a request head is dropped when it expires.
#[test]
fn header_read_timeout_fires_on_the_ring_timer() {
    let took = block_on(half_head_times_out(Compat::new)).unwrap();
    assert!(took < Duration::from_secs(5), "{took:?}");
}

/// The same through ring reads (`Compat::with_buf_ring`, whose reads carry
/// no linked timeout), with either kind of pool: the timeout still ends
/// the connection, and the armed receive is cancelled with the adapter
/// (every buffer back, no op left in flight).
#[test]
fn header_read_timeout_ends_a_connection_on_ring_reads() {
    let _g = serial();
    for mode in MODES {
        ringio::run(async move {
            let ring = pool(mode, 4, 64);
            let server_ring = ring.clone();
            let took =
                half_head_times_out(move |s| Compat::with_buf_ring(&server_ring, 256, s)).await?;
            assert!(took < Duration::from_secs(2), "{mode:?}: {took:?}");
            settle().await;
            assert_eq!(ring.available(), 4, "{mode:?}");
            Ok::<_, ringio::Error>(())
        })
        .unwrap();
    }
}

/// Pipelined HTTP/1.1 requests through an adapter whose buffers are
/// smaller than a response: hyper hands its head and body as separate
/// slices (`poll_write_vectored`, which the adapter gathers into one send
/// up to its capacity), and the client reads every response whole and in
/// order.
#[test]
fn pipelined_requests_through_small_adapter_buffers() {
    block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let server = ringio::create_task(async move {
            let (stream, _) = listener.accept().await?;
            drive(
                hyper::server::conn::http1::Builder::new()
                    .timer(RingTimer)
                    .serve_connection(Compat::with_capacity(1000, stream), service_fn(reverse)),
            )
            .await
        });
        let stream = TcpStream::connect(addr).await?;
        let bodies: Vec<Vec<u8>> = [5usize, 2500, 0, 999, 40_000]
            .iter()
            .enumerate()
            .map(|(i, &len)| pattern(50 + i as u64, len))
            .collect();
        // All requests in one write, before any response is read.
        let mut reqs = Vec::new();
        for (i, b) in bodies.iter().enumerate() {
            reqs.extend_from_slice(
                format!(
                    "POST /p/{i} HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\n\r\n",
                    b.len()
                )
                .as_bytes(),
            );
            reqs.extend_from_slice(b);
        }
        let (r, _) = stream.write_all(reqs).await;
        r?;
        // Read the responses until the last body is complete.
        let mut got = Vec::new();
        let mut buf = Vec::with_capacity(64 * 1024);
        let mut responses = Vec::new();
        while responses.len() < bodies.len() {
            buf.clear();
            let (n, b) = stream.read(buf).await;
            buf = b;
            assert!(n? > 0, "the server closed early");
            got.extend_from_slice(&buf);
            // Split off complete responses (Content-Length framed).
            while let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&got[..end]).to_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length: "))
                    .expect("content-length")
                    .trim()
                    .parse()
                    .unwrap();
                if got.len() < end + 4 + len {
                    break;
                }
                let body = got[end + 4..end + 4 + len].to_vec();
                responses.push((head, body));
                got.drain(..end + 4 + len);
            }
        }
        for (i, ((head, body), sent)) in responses.iter().zip(&bodies).enumerate() {
            assert!(head.starts_with("http/1.1 200"), "{head}");
            assert!(
                head.contains(&format!("x-path: /p/{i}")),
                "out of order: {head}"
            );
            let mut want = sent.clone();
            want.reverse();
            assert!(*body == want, "body {i} of {} bytes differs", sent.len());
        }
        assert!(got.is_empty(), "bytes after the last response");
        stream.shutdown(std::net::Shutdown::Write).await?;
        server.await?;
        settle().await;
        Ok::<_, ringio::Error>(())
    })
    .unwrap();
}
