//! Fetches a URL (plain `http://` only) with hyper's HTTP/1.1 client on
//! ringio and prints the status line and the body.
//!
//! ```text
//! cargo run --example http_client --features hyper -- http://127.0.0.1:8080/
//! ```
//!
//! The connection is a ringio `TcpStream` in `io::Compat`; hyper's
//! connection future runs as a ringio task beside the request.

use std::io::Write;
use std::process::ExitCode;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::header::HOST;
use hyper::{Request, Uri};
use ringio::compat::hyper::{drive, into_error};
use ringio::io::Compat;
use ringio::net::TcpStream;

const USAGE: &str = "usage: http_client http://HOST[:PORT]/PATH";

async fn fetch(uri: Uri) -> ringio::Result<()> {
    let host = uri
        .host()
        .ok_or_else(|| ringio::Error::InvalidArgument("the URL has no host".into()))?
        .to_string();
    let port = uri.port_u16().unwrap_or(80);
    let stream = TcpStream::connect((host.as_str(), port)).await?;
    stream.set_nodelay(true)?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(Compat::new(stream))
        .await
        .map_err(into_error)?;
    let conn = ringio::create_task(drive(conn));

    let authority = uri.authority().map_or(host.clone(), |a| a.to_string());
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let req = Request::get(path)
        .header(HOST, authority)
        .header("user-agent", "ringio-http-client")
        .body(Empty::<Bytes>::new())
        .map_err(ringio::Error::other)?;
    let mut res = send.send_request(req).await.map_err(into_error)?;
    println!("{:?} {}", res.version(), res.status());
    let mut out = std::io::stdout().lock();
    while let Some(frame) = res.body_mut().frame().await {
        if let Ok(chunk) = frame.map_err(into_error)?.into_data() {
            out.write_all(&chunk)?;
        }
    }
    out.flush()?;
    drop(send);
    conn.await
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let url = match (args.next(), args.next()) {
        (Some(a), None) if a == "-h" || a == "--help" => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        (Some(a), None) => a,
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let uri: Uri = match url.parse() {
        Ok(u) => u,
        Err(e) => {
            eprintln!("http_client: {url}: {e}");
            return ExitCode::from(2);
        }
    };
    if uri.scheme_str() != Some("http") {
        eprintln!("http_client: only http:// URLs (no TLS here)");
        return ExitCode::from(2);
    }
    match ringio::run(fetch(uri)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("http_client: {e}");
            ExitCode::FAILURE
        }
    }
}
