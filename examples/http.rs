//! The TechEmpower "plaintext" server on hyper over ringio: every request
//! gets `200 OK`, `Content-Type: text/plain` and `Hello, World!`, on
//! keep-alive HTTP/1.1 connections.
//!
//! ```text
//! cargo run --release --example http --features hyper -- [--addr 127.0.0.1:8080] [--cores N] [--read ring|plain]
//! ```
//!
//! hyper runs on ringio through `ringio::compat::hyper`: the connection's
//! I/O is `io::Compat` over a ringio `TcpStream` (reads and writes on the
//! ring), and hyper's header-read timeout is a timer in the loop's heap.
//! By default each connection reads from one multishot receive into the
//! loop's provided-buffer ring (`Compat::with_buf_ring`), armed once for
//! the connection's life; `--read plain` gives each connection a receive
//! per read into its own buffer instead.
//! With `--cores N`, N threads each run their own loop and ring with their
//! own `SO_REUSEPORT` listener on the port (thread-per-core, as in the
//! `echo` example): the kernel spreads connections, and a connection stays
//! on the core that accepted it.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Mutex;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{CONTENT_TYPE, HeaderValue, SERVER};
use hyper::service::service_fn;
use hyper::{Request, Response};
use ringio::compat::hyper::{RingTimer, drive};
use ringio::io::{BufRing, Compat};
use ringio::net::{ListenOptions, TcpListener, TcpStream};

const DEFAULT_ADDR: &str = "127.0.0.1:8080";
const USAGE: &str = "usage: http [--addr IP:PORT] [--cores N] [--read ring|plain]

  --addr IP:PORT  where to listen (default 127.0.0.1:8080)
  --cores N       loops, one per core, each with its own SO_REUSEPORT
                  listener (default 1)
  --read MODE     ring: each connection keeps one multishot receive into
                  the loop's provided-buffer ring (default); plain: a
                  receive per read into the connection's own buffer";

struct Args {
    addr: SocketAddr,
    cores: usize,
    ring_reads: bool,
}

/// `Ok(None)` for `--help`.
fn parse_args() -> Result<Option<Args>, String> {
    let mut args = Args {
        addr: DEFAULT_ADDR.parse().map_err(|e| format!("{e}"))?,
        cores: 1,
        ring_reads: true,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        match flag.as_str() {
            "--addr" => {
                let v = value("--addr")?;
                args.addr = v.parse().map_err(|e| format!("--addr {v}: {e}"))?;
            }
            "--cores" => {
                let v = value("--cores")?;
                args.cores = v.parse().map_err(|e| format!("--cores {v}: {e}"))?;
                if args.cores == 0 {
                    return Err("--cores must be at least 1".into());
                }
            }
            "--read" => {
                args.ring_reads = match value("--read")?.as_str() {
                    "ring" => true,
                    "plain" => false,
                    v => return Err(format!("--read {v}: ring or plain")),
                }
            }
            "-h" | "--help" => return Ok(None),
            other => return Err(format!("unknown argument {other}; try --help")),
        }
    }
    Ok(Some(args))
}

/// The plaintext answer.
async fn plaintext(_req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let mut res = Response::new(Full::new(Bytes::from_static(b"Hello, World!")));
    let h = res.headers_mut();
    h.insert(SERVER, HeaderValue::from_static("ringio"));
    h.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    Ok(res)
}

/// Each connection's write buffer (and, with `--read plain`, read buffer).
const CONN_BUF: usize = 16 * 1024;

/// The loop's pool for `--read ring`: a connection holds a buffer only
/// while it has received bytes hyper has not read yet, so a few hundred
/// buffers serve thousands of keep-alive connections; a request larger
/// than one buffer arrives in several. 1 MiB in all: under wrk -c256,
/// 512 × 2 KiB used 8 % less server CPU per request than 1024 × 4 KiB
/// in two of four alternating runs and about the same (within 1 %) in
/// the other two.
const RING_ENTRIES: u32 = 512;
const RING_BUF: usize = 2048;

/// Serves one connection until the client closes it.
async fn connection(stream: TcpStream, ring: Option<BufRing>) -> ringio::Result<()> {
    stream.set_nodelay(true)?;
    let io = match &ring {
        Some(ring) => Compat::with_buf_ring(ring, CONN_BUF, stream),
        None => Compat::with_capacity(CONN_BUF, stream),
    };
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(RingTimer)
        // Pipelined requests already read get their responses in one
        // write (no effect on one request at a time).
        .pipeline_flush(true)
        .serve_connection(io, service_fn(plaintext));
    drive(conn).await
}

/// One core's server: accept forever, a task per connection.
async fn serve(listener: TcpListener, ring_reads: bool) -> ringio::Result<()> {
    let ring = if ring_reads {
        Some(BufRing::new(RING_ENTRIES, RING_BUF)?)
    } else {
        None
    };
    let mut incoming = listener.incoming();
    while let Some(conn) = incoming.next().await {
        match conn {
            Ok(stream) => {
                let ring = ring.clone();
                ringio::create_task(async move {
                    if let Err(e) = connection(stream, ring).await {
                        // Resets and half-sent requests are the clients' business.
                        if !matches!(e.raw_os_error(), Some(libc::ECONNRESET | libc::EPIPE)) {
                            eprintln!("http: connection: {e}");
                        }
                    }
                    Ok::<(), ringio::Error>(())
                });
            }
            Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) => {
                eprintln!("http: accept: {e}; pausing accepts for 100 ms");
                ringio::sleep(std::time::Duration::from_millis(100)).await?;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(Some(a)) => a,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(msg) => {
            eprintln!("{msg}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let opts = ListenOptions::new().reuse_port(args.cores > 1);
    let ring_reads = args.ring_reads;
    // Bind before starting the cores: a bad address fails fast, and every
    // core binds the same (possibly OS-chosen) port.
    let first = match TcpListener::bind_with(args.addr, opts) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("http: cannot listen on {}: {e}", args.addr);
            return ExitCode::FAILURE;
        }
    };
    let addr = first.local_addr().unwrap_or(args.addr);
    eprintln!(
        "http: listening on http://{addr} with {} core(s)",
        args.cores
    );
    let mut rt = match ringio::Runtime::builder().cores(args.cores).build_multi() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("http: cannot start {} core(s): {e}", args.cores);
            return ExitCode::FAILURE;
        }
    };
    let first = Mutex::new(Some(first));
    let results = rt.run_on_each(move |core| {
        let mine = if core.id() == 0 {
            first.lock().unwrap_or_else(|e| e.into_inner()).take()
        } else {
            None
        };
        async move {
            let listener = match mine {
                Some(l) => l,
                None => TcpListener::bind_with(addr, opts)?,
            };
            serve(listener, ring_reads).await
        }
    });
    let mut code = ExitCode::SUCCESS;
    match results {
        Ok(per_core) => {
            for (i, r) in per_core.into_iter().enumerate() {
                if let Err(e) = r {
                    eprintln!("http: core {i}: {e}");
                    code = ExitCode::FAILURE;
                }
            }
        }
        Err(e) => {
            eprintln!("http: {e}");
            code = ExitCode::FAILURE;
        }
    }
    code
}
