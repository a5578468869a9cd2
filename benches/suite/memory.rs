//! Memory: heap bytes per idle task and per idle connection, from a
//! counting global allocator (live-bytes delta; kernel memory — socket
//! buffers, ring — is not counted).
//!
//! Idle task: a task parked forever in a foreign future, polled once.
//! Idle connection: an accepted socket served by an echo handler parked in
//! its read with a 4 KiB buffer (ringio: a task with a RECV op in flight
//! owning the buffer; tokio: a task in `read` after `TcpStream::from_std`;
//! raw: the buffer and a RECV SQE).
//!
//! Idle connection after one request (issue 14): 10,000 connections (fewer
//! if RLIMIT_NOFILE cannot be raised that far), each served one 64 B
//! request, echoed, then parked waiting for the next. tokio: a task in
//! `read` with its 4 KiB buffer; ringio: a task in a multishot receive
//! (`recv_multishot`) drawing from one shared `BufRing` of 64 × 4 KiB,
//! whose memory (an mmap, not heap) is added to the figure, spread over
//! the connections. Both box the echo's write future, so that its state is
//! allocated only while it runs rather than in every parked task.

use std::io::Write;
use std::net::TcpStream;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use io_uring::{opcode, types};
use tokio::io::AsyncReadExt;

use crate::alloc;
use crate::util::{listener, push, raw_ring, tcp_pair, tokio_ct};
use crate::{Better, Row};

const TASKS: usize = 10_000;
const CONNS: usize = 1_000;
const BUF: usize = 4096;

/// Tasks polled at least once: the measure waits for all of them.
static POLLED: AtomicUsize = AtomicUsize::new(0);

async fn ringio_settle(n: usize) {
    while POLLED.load(Ordering::Relaxed) < n {
        ringio::sleep(Duration::ZERO).await.unwrap();
    }
}

async fn tokio_settle(n: usize) {
    while POLLED.load(Ordering::Relaxed) < n {
        tokio::task::yield_now().await;
    }
}

fn ringio_tasks(n: usize) -> f64 {
    ringio::run(async move {
        let mut v = Vec::with_capacity(n);
        ringio::sleep(Duration::ZERO).await.unwrap();
        POLLED.store(0, Ordering::Relaxed);
        alloc::start();
        for _ in 0..n {
            v.push(ringio::create_task(async {
                POLLED.fetch_add(1, Ordering::Relaxed);
                std::future::pending::<()>().await;
                Ok::<(), ringio::Error>(())
            }));
        }
        ringio_settle(n).await;
        // One more turn: the last tasks' SQEs reach the ring.
        ringio::sleep(Duration::ZERO).await.unwrap();
        let per = alloc::live() as f64 / n as f64;
        alloc::stop();
        for t in &v {
            t.cancel();
        }
        per
    })
}

fn tokio_tasks(n: usize) -> f64 {
    let rt = tokio_ct();
    rt.block_on(async move {
        let mut v = Vec::with_capacity(n);
        tokio::task::yield_now().await;
        POLLED.store(0, Ordering::Relaxed);
        alloc::start();
        for _ in 0..n {
            v.push(tokio::spawn(async {
                POLLED.fetch_add(1, Ordering::Relaxed);
                std::future::pending::<()>().await
            }));
        }
        tokio_settle(n).await;
        tokio::task::yield_now().await;
        let per = alloc::live() as f64 / n as f64;
        alloc::stop();
        for h in &v {
            h.abort();
        }
        per
    })
}

fn pairs(n: usize) -> (Vec<TcpStream>, Vec<TcpStream>) {
    let l = listener();
    (0..n).map(|_| tcp_pair(&l)).unzip()
}

fn ringio_conns(n: usize) -> f64 {
    let (clients, servers) = pairs(n);
    let per = ringio::run(async move {
        let mut tasks = Vec::with_capacity(n);
        ringio::sleep(Duration::ZERO).await.unwrap();
        POLLED.store(0, Ordering::Relaxed);
        alloc::start();
        for s in servers {
            tasks.push(ringio::create_task(async move {
                let fd = s.as_raw_fd();
                let mut buf = Vec::with_capacity(BUF);
                POLLED.fetch_add(1, Ordering::Relaxed);
                loop {
                    let sqe =
                        opcode::Recv::new(types::Fd(fd), buf.as_mut_ptr(), BUF as u32).build();
                    // SAFETY: the SQE points into `buf`'s heap memory, owned by the op.
                    let out = unsafe { ringio::Op::submit(sqe, buf) }?.await;
                    buf = out.data;
                    if out.result? == 0 {
                        return Ok::<(), ringio::Error>(());
                    }
                }
            }));
        }
        ringio_settle(n).await;
        // One more turn: the last tasks' SQEs reach the ring.
        ringio::sleep(Duration::ZERO).await.unwrap();
        let per = alloc::live() as f64 / n as f64;
        alloc::stop();
        for t in &tasks {
            t.cancel();
        }
        per
    });
    drop(clients);
    per
}

fn tokio_conns(n: usize) -> f64 {
    let (clients, servers) = pairs(n);
    let rt = tokio_ct();
    let per = rt.block_on(async move {
        let mut tasks = Vec::with_capacity(n);
        tokio::task::yield_now().await;
        POLLED.store(0, Ordering::Relaxed);
        alloc::start();
        for s in servers {
            s.set_nonblocking(true).unwrap();
            let mut s = tokio::net::TcpStream::from_std(s).unwrap();
            tasks.push(tokio::spawn(async move {
                let mut buf = vec![0u8; BUF];
                POLLED.fetch_add(1, Ordering::Relaxed);
                while s.read(&mut buf).await.unwrap_or(0) > 0 {}
            }));
        }
        tokio_settle(n).await;
        tokio::task::yield_now().await;
        let per = alloc::live() as f64 / n as f64;
        alloc::stop();
        for h in &tasks {
            h.abort();
        }
        per
    });
    drop(rt);
    drop(clients);
    per
}

fn raw_conns(n: usize) -> f64 {
    let (clients, servers) = pairs(n);
    let mut ring = raw_ring(1024);
    let mut bufs: Vec<Vec<u8>> = Vec::with_capacity(n);
    alloc::start();
    for (i, s) in servers.iter().enumerate() {
        bufs.push(Vec::with_capacity(BUF));
        let b = &mut bufs[i];
        let sqe = opcode::Recv::new(types::Fd(s.as_raw_fd()), b.as_mut_ptr(), BUF as u32)
            .build()
            .user_data(i as u64);
        push(&mut ring, &sqe);
    }
    ring.submit().unwrap();
    let per = alloc::live() as f64 / n as f64;
    alloc::stop();
    drop(clients);
    // Reap the EOFs before the buffers go.
    let mut got = 0;
    while got < n {
        ring.submit_and_wait(1).unwrap();
        got += ring.completion().count();
    }
    drop(bufs);
    per
}

/// Connections for the after-one-request rows: 10,000, or as many as the
/// descriptor limit allows (two descriptors each, both ends in-process),
/// after raising the soft limit to the hard one.
fn conns_after_request() -> usize {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write the struct we pass.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
    }
    let room = (lim.rlim_cur as usize).saturating_sub(256) / 2;
    room.clamp(100, 10_000)
}

/// Client ends that have each sent one 64 B request, and the server ends.
fn requested_pairs(n: usize) -> (Vec<TcpStream>, Vec<TcpStream>) {
    let (mut clients, servers) = pairs(n);
    for c in &mut clients {
        c.write_all(&[7u8; 64]).unwrap();
    }
    (clients, servers)
}

const POOL_ENTRIES: u32 = 64;

fn ringio_conns_multishot(n: usize) -> f64 {
    let (clients, servers) = requested_pairs(n);
    let per = ringio::run(async move {
        let ring = ringio::io::BufRing::new(POOL_ENTRIES, BUF).unwrap();
        assert!(ring.is_kernel(), "this kernel lacks provided-buffer rings");
        let mut tasks = Vec::with_capacity(n);
        ringio::sleep(Duration::ZERO).await.unwrap();
        POLLED.store(0, Ordering::Relaxed);
        alloc::start();
        for s in servers {
            // SAFETY: the std stream gives up its descriptor.
            let s = unsafe { ringio::net::TcpStream::from_raw_fd(s.into_raw_fd()) };
            let ring = ring.clone();
            tasks.push(ringio::create_task(async move {
                let mut rx = s.recv_multishot(&ring);
                let mut first = true;
                while let Some(buf) = rx.next().await {
                    // Boxed: the write's state is allocated only while it
                    // runs, instead of enlarging every parked task.
                    let (res, buf) = Box::pin(s.write_all(buf?)).await;
                    res?;
                    drop(buf);
                    if first {
                        first = false;
                        POLLED.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Ok::<(), ringio::Error>(())
            }));
        }
        ringio_settle(n).await;
        ringio::sleep(Duration::ZERO).await.unwrap();
        let pool = POOL_ENTRIES as f64 * BUF as f64 + 4096.0;
        let per = (alloc::live() as f64 + pool) / n as f64;
        alloc::stop();
        for t in &tasks {
            t.cancel();
        }
        per
    });
    drop(clients);
    per
}

fn tokio_conns_after_request(n: usize) -> f64 {
    let (clients, servers) = requested_pairs(n);
    let rt = tokio_ct();
    let per = rt.block_on(async move {
        use tokio::io::AsyncWriteExt;
        let mut tasks = Vec::with_capacity(n);
        tokio::task::yield_now().await;
        POLLED.store(0, Ordering::Relaxed);
        alloc::start();
        for s in servers {
            s.set_nonblocking(true).unwrap();
            let mut s = tokio::net::TcpStream::from_std(s).unwrap();
            tasks.push(tokio::spawn(async move {
                let mut buf = vec![0u8; BUF];
                let mut first = true;
                loop {
                    let n = s.read(&mut buf).await.unwrap_or(0);
                    if n == 0 {
                        break;
                    }
                    // Boxed as on the ringio side.
                    Box::pin(s.write_all(&buf[..n])).await.unwrap();
                    if first {
                        first = false;
                        POLLED.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }));
        }
        tokio_settle(n).await;
        tokio::task::yield_now().await;
        let per = alloc::live() as f64 / n as f64;
        alloc::stop();
        for h in &tasks {
            h.abort();
        }
        per
    });
    drop(rt);
    drop(clients);
    per
}

pub fn run(_cfg: &crate::util::Config) -> Vec<Row> {
    let mut task = Row::new("memory", "heap per idle task (10k)", "B", Better::Lower);
    let mut conn = Row::new(
        "memory",
        "heap per idle connection in read, 4 KiB buffer incl. (1k)",
        "B",
        Better::Lower,
    );
    // Deterministic: one run each.
    task.ringio.push(ringio_tasks(TASKS));
    task.tokio.push(tokio_tasks(TASKS));
    conn.ringio.push(ringio_conns(CONNS));
    conn.tokio.push(tokio_conns(CONNS));
    conn.raw.push(raw_conns(CONNS));
    let n = conns_after_request();
    let mut after = Row::new(
        "memory",
        format!(
            "heap per idle connection after one 64 B request ({n}; ringio: multishot recv, shared 64 × 4 KiB BufRing incl.)"
        ),
        "B",
        Better::Lower,
    );
    after.ringio.push(ringio_conns_multishot(n));
    after.tokio.push(tokio_conns_after_request(n));
    vec![task, conn, after]
}
