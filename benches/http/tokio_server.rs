//! The baseline of `ci/http-bench.sh`: the same TechEmpower "plaintext"
//! server as `examples/http.rs`, on hyper over tokio's `current_thread`
//! runtime (one thread, epoll) with hyper-util's tokio glue. Same hyper
//! settings as the ringio one (HTTP/1.1, keep-alive, a timer for the
//! header-read timeout, `TCP_NODELAY`).
//!
//! ```text
//! cargo run --release --example http_tokio -- [--addr 127.0.0.1:8081]
//! ```

use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::ExitCode;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{CONTENT_TYPE, HeaderValue, SERVER};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};

const USAGE: &str = "usage: http_tokio [--addr IP:PORT]   (default 127.0.0.1:8081)";

async fn plaintext(_req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let mut res = Response::new(Full::new(Bytes::from_static(b"Hello, World!")));
    let h = res.headers_mut();
    h.insert(SERVER, HeaderValue::from_static("tokio"));
    h.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    Ok(res)
}

async fn serve(addr: SocketAddr) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    eprintln!("http_tokio: listening on http://{}", listener.local_addr()?);
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                eprintln!("http_tokio: accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        stream.set_nodelay(true)?;
        tokio::spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                // Pipelined requests already read get their responses in one
                // write (no effect on one request at a time).
                .pipeline_flush(true)
                .serve_connection(TokioIo::new(stream), service_fn(plaintext))
                .await;
        });
    }
}

fn main() -> ExitCode {
    let mut addr: SocketAddr = "127.0.0.1:8081".parse().unwrap();
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--addr" => match it.next().map(|v| v.parse()) {
                Some(Ok(a)) => addr = a,
                _ => {
                    eprintln!("{USAGE}");
                    return ExitCode::from(2);
                }
            },
            "-h" | "--help" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            _ => {
                eprintln!("{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match rt.block_on(serve(addr)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("http_tokio: {e}");
            ExitCode::FAILURE
        }
    }
}
