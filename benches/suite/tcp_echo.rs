//! TCP echo on 127.0.0.1: the server under test on a thread pinned to CPU 0,
//! one client — the same raw io_uring client for every server — on a thread
//! pinned to CPU 1. Each connection sends a message, waits for all of it to
//! come back (first and last byte checked), and repeats. Requests/s and
//! latency percentiles are taken after a warm-up; server CPU per request is
//! the server thread's CPU time over every request it served.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use io_uring::{opcode, types};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::util::{pin_to_cpu, push, raw_ring, set_nodelay, thread_cpu};
use crate::{Better, Row, median};

/// Server read buffer size (the largest message).
const BUF: usize = 4096;

// ---------------------------------------------------------------- ringio --

/// ringio's echo server on `ringio::net`: accepts `conns` connections, one
/// task each echoing until EOF, with owned buffers.
pub fn ringio_echo_server(l: TcpListener, conns: usize) {
    ringio_echo_server_with(l, conns, ringio::Runtime::builder());
}

/// [`ringio_echo_server`] on a ring built by `builder` (1024 entries).
pub fn ringio_echo_server_with(l: TcpListener, conns: usize, builder: ringio::Builder) {
    builder
        .ring_entries(1024)
        .build()
        .unwrap()
        .run(async move {
            let l = ringio::net::TcpListener::from_std(l);
            let mut tasks = Vec::with_capacity(conns);
            for _ in 0..conns {
                let (s, _) = l.accept().await.unwrap();
                s.set_nodelay(true).unwrap();
                tasks.push(ringio::create_task(ringio_echo_conn(s)));
            }
            for t in tasks {
                t.await.unwrap();
            }
        })
        .unwrap();
}

async fn ringio_echo_conn(s: ringio::net::TcpStream) -> ringio::Result<()> {
    let mut buf: Vec<u8> = Vec::with_capacity(BUF);
    loop {
        let (n, b) = s.read(buf).await;
        match n {
            Ok(0) | Err(_) => return Ok(()),
            Ok(_) => {}
        }
        // `read` set the length to what came in: echo exactly that.
        let (r, b) = s.write_all(b).await;
        if r.is_err() {
            return Ok(());
        }
        buf = b;
    }
}

/// ringio's echo server with multishot receive (issue 14): each connection
/// receives into a shared provided-buffer ring (`BufRing`, one multishot
/// `IORING_OP_RECV` per connection) and writes each received buffer back
/// as it is (no copy), which returns it to the pool.
pub fn ringio_multishot_echo_server(l: TcpListener, conns: usize) {
    ringio::Runtime::builder()
        .ring_entries(1024)
        .build()
        .unwrap()
        .run(async move {
            let ring = ringio::io::BufRing::new(pool_entries(conns), BUF).unwrap();
            let l = ringio::net::TcpListener::from_std(l);
            let mut tasks = Vec::with_capacity(conns);
            for _ in 0..conns {
                let (s, _) = l.accept().await.unwrap();
                s.set_nodelay(true).unwrap();
                let ring = ring.clone();
                tasks.push(ringio::create_task(async move {
                    let mut rx = s.recv_multishot(&ring);
                    while let Some(Ok(buf)) = rx.next().await {
                        let (r, _) = s.write_all(buf).await;
                        if r.is_err() {
                            break;
                        }
                    }
                    Ok::<(), ringio::Error>(())
                }));
            }
            for t in tasks {
                t.await.unwrap();
            }
        })
        .unwrap();
}

/// Buffers in a multishot echo server's pool: a few per connection, as a
/// power of two.
pub fn pool_entries(conns: usize) -> u32 {
    ((conns * 4).next_power_of_two() as u32).clamp(64, 4096)
}

// ----------------------------------------------------------------- tokio --

fn tokio_echo_server(l: TcpListener, conns: usize) {
    let rt = crate::util::tokio_ct();
    rt.block_on(async move {
        l.set_nonblocking(true).unwrap();
        let l = tokio::net::TcpListener::from_std(l).unwrap();
        let mut tasks = Vec::with_capacity(conns);
        for _ in 0..conns {
            let (mut s, _) = l.accept().await.unwrap();
            s.set_nodelay(true).unwrap();
            tasks.push(tokio::spawn(async move {
                let mut buf = vec![0u8; BUF];
                loop {
                    let n = match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    if s.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
}

// ------------------------------------------------------------------- raw --

const K_ACCEPT: u64 = 0;
const K_RECV: u64 = 1;
const K_SEND: u64 = 2;

/// The floor: one ring, no runtime; RECV → SEND → RECV per connection.
fn raw_echo_server(l: TcpListener, conns: usize) {
    struct Conn {
        fd: OwnedFd,
        buf: Vec<u8>,
        len: usize,
        sent: usize,
    }
    let mut ring = raw_ring(1024);
    let lfd = l.as_raw_fd();
    let accept = || {
        opcode::Accept::new(types::Fd(lfd), std::ptr::null_mut(), std::ptr::null_mut())
            .flags(libc::SOCK_CLOEXEC)
            .build()
            .user_data(K_ACCEPT)
    };
    let recv = |i: usize, c: &mut Conn| {
        opcode::Recv::new(types::Fd(c.fd.as_raw_fd()), c.buf.as_mut_ptr(), BUF as u32)
            .build()
            .user_data(((i as u64) << 2) | K_RECV)
    };
    let send = |i: usize, c: &Conn| {
        // SAFETY: `sent < len <= capacity`.
        let p = unsafe { c.buf.as_ptr().add(c.sent) };
        opcode::Send::new(types::Fd(c.fd.as_raw_fd()), p, (c.len - c.sent) as u32)
            .build()
            .user_data(((i as u64) << 2) | K_SEND)
    };
    let mut cs: Vec<Conn> = Vec::with_capacity(conns);
    let mut open = 0usize;
    push(&mut ring, &accept());
    let mut cqes: Vec<(u64, i32)> = Vec::with_capacity(1024);
    while cs.len() < conns || open > 0 {
        ring.submit_and_wait(1).unwrap();
        cqes.clear();
        cqes.extend(ring.completion().map(|c| (c.user_data(), c.result())));
        for &(ud, res) in &cqes {
            let i = (ud >> 2) as usize;
            match ud & 3 {
                K_ACCEPT => {
                    assert!(res >= 0, "accept: {res}");
                    set_nodelay(res);
                    // SAFETY: a fresh descriptor from accept.
                    let fd = unsafe { OwnedFd::from_raw_fd(res) };
                    cs.push(Conn {
                        fd,
                        buf: Vec::with_capacity(BUF),
                        len: 0,
                        sent: 0,
                    });
                    open += 1;
                    let n = cs.len() - 1;
                    let sqe = recv(n, &mut cs[n]);
                    push(&mut ring, &sqe);
                    if cs.len() < conns {
                        push(&mut ring, &accept());
                    }
                }
                K_RECV => {
                    if res <= 0 {
                        open -= 1;
                        continue;
                    }
                    let c = &mut cs[i];
                    c.len = res as usize;
                    c.sent = 0;
                    let sqe = send(i, c);
                    push(&mut ring, &sqe);
                }
                _ => {
                    let c = &mut cs[i];
                    if res < 0 {
                        open -= 1;
                        continue;
                    }
                    c.sent += res as usize;
                    let sqe = if c.sent < c.len {
                        send(i, c)
                    } else {
                        recv(i, c)
                    };
                    push(&mut ring, &sqe);
                }
            }
        }
    }
}

// ---------------------------------------------------------------- client --

struct ClientResult {
    /// Requests completed in the measuring window, per second.
    rps: f64,
    /// All requests completed (warm-up included): for server CPU/request.
    total: u64,
    lat_ns: Vec<u32>,
}

/// The client every server faces: `conns` connections on one raw ring,
/// each keeping one `size`-byte request outstanding.
fn client(addr: SocketAddr, conns: usize, size: usize, secs: f64) -> ClientResult {
    struct C {
        s: TcpStream,
        out: Vec<u8>,
        inb: Vec<u8>,
        sent: usize,
        got: usize,
        seq: u8,
        t: Instant,
    }
    let mut cs: Vec<C> = (0..conns)
        .map(|_| {
            let s = TcpStream::connect(addr).unwrap();
            s.set_nodelay(true).unwrap();
            C {
                s,
                out: vec![0x5a; size],
                inb: vec![0; size],
                sent: 0,
                got: 0,
                seq: 0,
                t: Instant::now(),
            }
        })
        .collect();
    let mut ring = raw_ring(1024);
    let send = |i: usize, c: &C| {
        // SAFETY: sent < size.
        let p = unsafe { c.out.as_ptr().add(c.sent) };
        opcode::Send::new(types::Fd(c.s.as_raw_fd()), p, (size - c.sent) as u32)
            .build()
            .user_data(((i as u64) << 2) | K_SEND)
    };
    let recv = |i: usize, c: &mut C| {
        // SAFETY: got < size.
        let p = unsafe { c.inb.as_mut_ptr().add(c.got) };
        opcode::Recv::new(types::Fd(c.s.as_raw_fd()), p, (size - c.got) as u32)
            .build()
            .user_data(((i as u64) << 2) | K_RECV)
    };
    let start = |i: usize, c: &mut C, ring: &mut io_uring::IoUring| {
        c.seq = c.seq.wrapping_add(1);
        c.out[0] = c.seq;
        c.out[size - 1] = c.seq;
        c.sent = 0;
        c.got = 0;
        c.t = Instant::now();
        push(ring, &send(i, c));
        push(ring, &recv(i, c));
    };
    let t0 = Instant::now();
    let warm = t0 + Duration::from_secs_f64((secs * 0.15).max(0.2));
    let end = warm + Duration::from_secs_f64(secs);
    for (i, c) in cs.iter_mut().enumerate() {
        start(i, c, &mut ring);
    }
    let mut active = conns;
    let mut total = 0u64;
    let mut measured = 0u64;
    let mut lat = Vec::with_capacity(1 << 20);
    let mut cqes: Vec<(u64, i32)> = Vec::with_capacity(2048);
    while active > 0 {
        ring.submit_and_wait(1).unwrap();
        cqes.clear();
        cqes.extend(ring.completion().map(|c| (c.user_data(), c.result())));
        for &(ud, res) in &cqes {
            let i = (ud >> 2) as usize;
            let c = &mut cs[i];
            assert!(res > 0, "echo client: op {} on conn {i} gave {res}", ud & 3);
            if ud & 3 == K_SEND {
                c.sent += res as usize;
                if c.sent < size {
                    push(&mut ring, &send(i, c));
                }
                continue;
            }
            c.got += res as usize;
            if c.got < size {
                push(&mut ring, &recv(i, c));
                continue;
            }
            assert!(
                c.inb[0] == c.seq && c.inb[size - 1] == c.seq,
                "echo mismatch"
            );
            let now = Instant::now();
            total += 1;
            if now >= warm && now < end {
                measured += 1;
                lat.push((now - c.t).as_nanos().min(u32::MAX as u128) as u32);
            }
            if now < end {
                start(i, c, &mut ring);
            } else {
                active -= 1;
            }
        }
    }
    ClientResult {
        rps: measured as f64 / secs,
        total,
        lat_ns: lat,
    }
}

// ------------------------------------------------------------------ cell --

#[derive(Clone, Copy)]
pub enum Server {
    Ringio,
    RingioMultishot,
    /// The plain ringio server on a ring set up another way: the
    /// function makes its runtime's builder.
    RingioWith(fn() -> ringio::Builder),
    Tokio,
    Raw,
}

pub struct CellResult {
    pub rps: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub server_us_per_req: f64,
}

pub fn one(server: Server, conns: usize, size: usize, secs: f64) -> CellResult {
    let l = crate::util::listener();
    let addr = l.local_addr().unwrap();
    let srv = std::thread::spawn(move || {
        pin_to_cpu(0);
        let cpu0 = thread_cpu();
        match server {
            Server::Ringio => ringio_echo_server(l, conns),
            Server::RingioMultishot => ringio_multishot_echo_server(l, conns),
            Server::RingioWith(builder) => ringio_echo_server_with(l, conns, builder()),
            Server::Tokio => tokio_echo_server(l, conns),
            Server::Raw => raw_echo_server(l, conns),
        }
        thread_cpu() - cpu0
    });
    let cli = std::thread::spawn(move || {
        pin_to_cpu(1);
        client(addr, conns, size, secs)
    });
    let mut r = cli.join().expect("client thread");
    let cpu = srv.join().expect("server thread");
    r.lat_ns.sort_unstable();
    let pct = |p: f64| {
        let v = &r.lat_ns;
        if v.is_empty() {
            0.0
        } else {
            v[((v.len() - 1) as f64 * p) as usize] as f64 / 1e3
        }
    };
    CellResult {
        rps: r.rps,
        p50_us: pct(0.50),
        p99_us: pct(0.99),
        server_us_per_req: cpu.as_secs_f64() * 1e6 / r.total.max(1) as f64,
    }
}

pub fn run(cfg: &crate::util::Config) -> Vec<Row> {
    let mut rows = Vec::new();
    for (conns, size) in [(16usize, 64usize), (256, 64), (16, 4096), (256, 4096)] {
        let sz = if size >= 1024 {
            format!("{} KiB", size / 1024)
        } else {
            format!("{size} B")
        };
        let cell = format!("{conns} conns × {sz}");
        let mut rps = Row::new(
            "tcp_echo",
            format!("{cell}: requests/s"),
            "req/s",
            Better::Higher,
        );
        let mut p50 = Row::new(
            "tcp_echo",
            format!("{cell}: p50 latency"),
            "µs",
            Better::Lower,
        );
        let mut p99 = Row::new(
            "tcp_echo",
            format!("{cell}: p99 latency"),
            "µs",
            Better::Lower,
        );
        let mut cpu = Row::new(
            "tcp_echo",
            format!("{cell}: server CPU per request"),
            "µs",
            Better::Lower,
        );
        // The multishot server's figures, beside the same run's raw ring.
        let multi = |r: &Row| {
            let mut m = Row::new(
                "tcp_echo",
                format!("{} (ringio: multishot recv)", r.metric),
                r.unit,
                r.better,
            );
            m.raw = r.raw.clone();
            m
        };
        let (mut m_rps, mut m_p50, mut m_p99, mut m_cpu) =
            (multi(&rps), multi(&p50), multi(&p99), multi(&cpu));
        for rep in 0..cfg.long_reps() {
            for k in 0..4 {
                let c;
                match (k + rep) % 4 {
                    3 => {
                        c = one(Server::RingioMultishot, conns, size, cfg.secs);
                        m_rps.ringio.push(c.rps);
                        m_p50.ringio.push(c.p50_us);
                        m_p99.ringio.push(c.p99_us);
                        m_cpu.ringio.push(c.server_us_per_req);
                        continue;
                    }
                    i => {
                        let (server, pick): (Server, fn(&mut Row) -> &mut Vec<f64>) = match i {
                            0 => (Server::Ringio, |r| &mut r.ringio),
                            1 => (Server::Tokio, |r| &mut r.tokio),
                            _ => (Server::Raw, |r| &mut r.raw),
                        };
                        c = one(server, conns, size, cfg.secs);
                        pick(&mut rps).push(c.rps);
                        pick(&mut p50).push(c.p50_us);
                        pick(&mut p99).push(c.p99_us);
                        pick(&mut cpu).push(c.server_us_per_req);
                    }
                }
            }
        }
        m_rps.raw = rps.raw.clone();
        m_p50.raw = p50.raw.clone();
        m_p99.raw = p99.raw.clone();
        m_cpu.raw = cpu.raw.clone();
        eprintln!(
            "   {cell}: ringio {:.0} multishot {:.0} tokio {:.0} raw {:.0} req/s",
            median(&rps.ringio).unwrap_or(0.0),
            median(&m_rps.ringio).unwrap_or(0.0),
            median(&rps.tokio).unwrap_or(0.0),
            median(&rps.raw).unwrap_or(0.0)
        );
        rows.extend([rps, p50, p99, cpu, m_rps, m_p50, m_p99, m_cpu]);
    }
    rows
}
