//! A closed-loop HTTP/1.1 load generator on ringio, the second client of
//! `ci/http-bench.sh` (`HTTP_BENCH_CLIENT=ring`): `--conns` keep-alive
//! connections, each sending `GET /` and reading the whole response
//! before it sends the next, as `wrk` does.
//!
//! ```text
//! cargo run --release --example http_load -- [--addr 127.0.0.1:8080] [--conns 256] [--secs 10] [--warmup 1] [--pipeline 1]
//! ```
//!
//! With `--pipeline N` each connection sends N requests in one write and
//! then reads their N responses (HTTP/1.1 pipelining, as TechEmpower's
//! plaintext test loads servers, with N = 16); a response's latency then
//! counts from the write of its batch.
//!
//! Why a second client: on a two-CPU machine the server gets one core
//! and the client the other, and wrk spends 8–11 µs of CPU per request
//! (its kernel work, mostly), about as much as the server. Both then run
//! near 100 % and either can be the bound, so wrk's figure says as much
//! about wrk as about the server. This client sends and receives through
//! the ring and costs a fifth to a third less per request, which leaves
//! the server as the bound (benches/RESULTS.md has the figures). It
//! loads every server the same way, so the ratio of two servers' figures
//! is fair; wrk stays the default and its figures are recorded too.
//!
//! It prints one line: requests, req/s, the 50th and 99th percentile of
//! the latency (from writing a request to reading the last byte of its
//! response), and any errors. Only requests sent after the warm-up and
//! answered before the end count.

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::rc::Rc;
use std::time::{Duration, Instant};

use ringio::io::IoBuf;
use ringio::net::TcpStream;

const USAGE: &str = "usage: http_load [--addr IP:PORT] [--conns N] [--secs S] [--warmup S] \
                     [--pipeline N]   (defaults 127.0.0.1:8080, 256 connections, 10 s measured \
                     after 1 s, one request at a time)";

const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n";

struct Args {
    addr: SocketAddr,
    conns: usize,
    secs: Duration,
    warmup: Duration,
    /// Requests sent together on a connection.
    pipeline: usize,
}

fn parse_args() -> Result<Option<Args>, String> {
    let mut args = Args {
        addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
        conns: 256,
        secs: Duration::from_secs(10),
        warmup: Duration::from_secs(1),
        pipeline: 1,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "-h" || flag == "--help" {
            return Ok(None);
        }
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let bad = |e: &dyn std::fmt::Display| format!("{flag} {value}: {e}");
        match flag.as_str() {
            "--addr" => args.addr = value.parse().map_err(|e| bad(&e))?,
            "--conns" => args.conns = value.parse().map_err(|e| bad(&e))?,
            "--secs" => args.secs = seconds(&value).map_err(|e| bad(&e))?,
            "--warmup" => args.warmup = seconds(&value).map_err(|e| bad(&e))?,
            "--pipeline" => args.pipeline = value.parse().map_err(|e| bad(&e))?,
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    if args.conns == 0 || args.secs.is_zero() || args.pipeline == 0 {
        return Err("--conns, --secs and --pipeline must be more than zero".into());
    }
    Ok(Some(args))
}

/// A non-negative number of seconds.
fn seconds(value: &str) -> Result<Duration, String> {
    let secs: f64 = value.parse().map_err(|e| format!("{e}"))?;
    Duration::try_from_secs_f64(secs).map_err(|e| format!("{e}"))
}

/// What all connections count together.
#[derive(Default)]
struct Totals {
    /// Responses with a 2xx status in the measured window.
    ok: Cell<u64>,
    /// Responses with another status in the measured window.
    non_2xx: Cell<u64>,
    /// Connections that failed (connect, I/O, a response it cannot parse).
    errors: Cell<u64>,
    /// Latencies of the measured requests, in microseconds.
    latencies: RefCell<Vec<u32>>,
}

/// The length of the response at the start of `buf` (head and body) and
/// whether its status is 2xx, once its head has arrived. Needs a
/// `Content-Length` (the servers measured here always send one).
fn response_len(buf: &[u8]) -> Option<Result<(usize, bool), String>> {
    let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = match std::str::from_utf8(&buf[..head_end]) {
        Ok(h) => h,
        Err(_) => return Some(Err("response head is not UTF-8".into())),
    };
    let ok = head.starts_with("HTTP/1.1 2");
    let body = head.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        if name.eq_ignore_ascii_case("content-length") {
            value.trim().parse::<usize>().ok()
        } else {
            None
        }
    });
    Some(match body {
        Some(body) => Ok((head_end + body, ok)),
        None => Err("response without Content-Length".into()),
    })
}

/// One connection: a batch of `batch.len() / REQUEST.len()` requests,
/// their whole responses, again, until `end`.
async fn connection(
    addr: SocketAddr,
    batch: &'static [u8],
    counted_from: Instant,
    end: Instant,
    totals: Rc<Totals>,
) -> ringio::Result<()> {
    let requests = batch.len() / REQUEST.len();
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    // What has arrived of the next responses, from `start` on: reads land
    // in its spare capacity, and answered responses are skipped, not
    // moved, until the next read.
    let mut pending: Vec<u8> = Vec::with_capacity(4096);
    let mut start = 0;
    let mut latencies = Vec::new();
    loop {
        let sent = Instant::now();
        if sent >= end {
            break;
        }
        let (res, _) = stream.write_all(batch).await;
        res?;
        for _ in 0..requests {
            let ok = loop {
                if let Some(parsed) = response_len(&pending[start..]) {
                    let (len, ok) = parsed.map_err(ringio::Error::msg)?;
                    if pending.len() - start >= len {
                        start += len;
                        break ok;
                    }
                }
                pending.drain(..start);
                start = 0;
                if pending.capacity() - pending.len() < 1024 {
                    pending.reserve(4096);
                }
                let room = pending.len()..pending.capacity();
                let (res, buf) = stream.read(pending.slice(room)).await;
                pending = buf.into_inner();
                if res? == 0 {
                    return Err(ringio::Error::msg("the server closed the connection"));
                }
            };
            let answered = Instant::now();
            if sent >= counted_from && answered <= end {
                let counter = if ok { &totals.ok } else { &totals.non_2xx };
                counter.set(counter.get() + 1);
                latencies.push((answered - sent).as_micros().min(u32::MAX as u128) as u32);
            }
        }
    }
    totals.latencies.borrow_mut().extend(latencies);
    Ok(())
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(Some(args)) => args,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("http_load: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let totals = Rc::new(Totals::default());
    let start = Instant::now();
    let counted_from = start + args.warmup;
    let end = counted_from + args.secs;
    // Every write lends the ring the same bytes, alive for the whole run.
    let batch: &'static [u8] = Box::leak(REQUEST.repeat(args.pipeline).into_boxed_slice());
    let t = totals.clone();
    let ran = ringio::run(async move {
        let tasks: Vec<_> = (0..args.conns)
            .map(|_| {
                let conn = connection(args.addr, batch, counted_from, end, t.clone());
                ringio::create_task(conn)
            })
            .collect();
        for task in tasks {
            if let Err(e) = task.await {
                if t.errors.get() == 0 {
                    eprintln!("http_load: {e}");
                }
                t.errors.set(t.errors.get() + 1);
            }
        }
        Ok::<(), ringio::Error>(())
    });
    if let Err(e) = ran {
        eprintln!("http_load: {e}");
        return ExitCode::FAILURE;
    }
    let mut lat = totals.latencies.take();
    if lat.is_empty() {
        eprintln!("http_load: no request was answered");
        return ExitCode::FAILURE;
    }
    lat.sort_unstable();
    let ms = |q: f64| lat[((lat.len() as f64 * q) as usize).min(lat.len() - 1)] as f64 / 1000.0;
    let answered = totals.ok.get() + totals.non_2xx.get();
    println!(
        "http_load: {answered} requests in {:.1} s, {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms, \
         non-2xx {}, failed connections {}",
        args.secs.as_secs_f64(),
        answered as f64 / args.secs.as_secs_f64(),
        ms(0.50),
        ms(0.99),
        totals.non_2xx.get(),
        totals.errors.get()
    );
    ExitCode::SUCCESS
}
