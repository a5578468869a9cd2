//! Serving a file to a socket (issue 14): ringio's `File::send_to`
//! (`IORING_OP_SPLICE` file → pipe → socket, the bytes never enter user
//! space) against a read into a buffer and a `write_all` of it, on ringio
//! (`read_at` + `write_all`, both on the ring) and on tokio
//! (`tokio::fs::File::read`, i.e. the blocking pool, + `write_all`), at 64
//! KiB and 1 MiB per call. A 64 MiB file (written once, in the page cache)
//! is served 4 times to a reader thread on 127.0.0.1 that discards it.
//!
//! Columns: ringio = `send_to` (splice), raw = ringio read + write, tokio
//! ct = tokio read + write; so ringio/raw reads "splice over copy" and
//! ringio/tokio "splice over tokio's copy". CPU is the whole process's
//! (user + system, also io_uring's and tokio's worker threads) less the
//! reader thread's, per GB served.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::util::{Rng, listener, pin_to_cpu, process_cpu, tcp_pair, thread_cpu, tokio_ct};
use crate::{Better, Row};

const FILE: u64 = 64 << 20;
const PASSES: u64 = 4;
const TOTAL: u64 = FILE * PASSES;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Way {
    Splice,
    RingioCopy,
    TokioCopy,
}

fn bench_file() -> PathBuf {
    let dir = std::env::var_os("RINGIO_BENCH_DIR")
        .or_else(|| std::env::var_os("CARGO_TARGET_DIR"))
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/target")));
    std::fs::create_dir_all(&dir).expect("bench file directory");
    let path = dir.join("ringio-bench-splice-64MiB.dat");
    if std::fs::metadata(&path).map(|m| m.len()).ok() != Some(FILE) {
        let mut f = std::fs::File::create(&path).expect("create bench file");
        let mut rng = Rng::new(7);
        let chunk: Vec<u8> = (0..1 << 20).map(|_| rng.next_u64() as u8).collect();
        for _ in 0..FILE >> 20 {
            f.write_all(&chunk).unwrap();
        }
        f.sync_all().unwrap();
    }
    // Into the page cache.
    std::fs::read(&path).unwrap();
    path
}

/// Serves the file `PASSES` times the given way, `chunk` bytes per call:
/// (MB/s, server CPU ms per GB).
fn one(path: &Path, way: Way, chunk: usize) -> (f64, f64) {
    let l = listener();
    let (c, mut s) = tcp_pair(&l);
    let reader = std::thread::spawn(move || {
        pin_to_cpu(1);
        let cpu0 = thread_cpu();
        let mut buf = vec![0u8; 1 << 20];
        let mut got = 0u64;
        while got < TOTAL {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => got += n as u64,
            }
        }
        (got, thread_cpu() - cpu0)
    });
    let path = path.to_path_buf();
    let cpu0 = process_cpu();
    let t = Instant::now();
    let server = std::thread::spawn(move || {
        pin_to_cpu(0);
        match way {
            Way::Splice | Way::RingioCopy => ringio::run(async move {
                use std::os::fd::{FromRawFd, IntoRawFd};
                // SAFETY: the std stream gives up its descriptor.
                let c = unsafe { ringio::net::TcpStream::from_raw_fd(c.into_raw_fd()) };
                let f = ringio::fs::File::open(&path).await.unwrap();
                let mut buf = Vec::with_capacity(chunk);
                for _ in 0..PASSES {
                    let mut off = 0;
                    while off < FILE {
                        if way == Way::Splice {
                            let (r, n) = f.send_to(&c, off, chunk as u64).await;
                            r.unwrap();
                            off += n;
                        } else {
                            buf.clear();
                            let (r, b) = f.read_at(buf, off).await;
                            off += r.unwrap() as u64;
                            let (r, b) = c.write_all(b).await;
                            r.unwrap();
                            buf = b;
                        }
                    }
                }
            }),
            Way::TokioCopy => tokio_ct().block_on(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                c.set_nonblocking(true).unwrap();
                let mut c = tokio::net::TcpStream::from_std(c).unwrap();
                let mut buf = vec![0u8; chunk];
                for _ in 0..PASSES {
                    let mut f = tokio::fs::File::open(&path).await.unwrap();
                    loop {
                        let n = f.read(&mut buf).await.unwrap();
                        if n == 0 {
                            break;
                        }
                        c.write_all(&buf[..n]).await.unwrap();
                    }
                }
            }),
        }
    });
    server.join().unwrap();
    let (got, reader_cpu) = reader.join().unwrap();
    let secs = t.elapsed().as_secs_f64();
    let cpu = (process_cpu() - cpu0).saturating_sub(reader_cpu);
    assert_eq!(got, TOTAL);
    (
        TOTAL as f64 / secs / 1e6,
        cpu.as_secs_f64() * 1e3 / (TOTAL as f64 / 1e9),
    )
}

pub fn run(cfg: &crate::util::Config) -> Vec<Row> {
    let path = bench_file();
    let mut rows = Vec::new();
    for chunk in [64 << 10, 1 << 20] {
        let label = if chunk >= 1 << 20 { "1 MiB" } else { "64 KiB" };
        let what = "send_to/splice (ringio col.), ringio read+write (raw col.), tokio read+write";
        let mut mbs = Row::new(
            "splice",
            format!("file to socket, {label} calls, 256 MiB: {what}"),
            "MB/s",
            Better::Higher,
        );
        let mut cpu = Row::new(
            "splice",
            format!("file to socket, {label} calls: server CPU (all threads but the reader)"),
            "ms/GB",
            Better::Lower,
        );
        for _ in 0..cfg.reps {
            let (m, c) = one(&path, Way::Splice, chunk);
            mbs.ringio.push(m);
            cpu.ringio.push(c);
            let (m, c) = one(&path, Way::RingioCopy, chunk);
            mbs.raw.push(m);
            cpu.raw.push(c);
            let (m, c) = one(&path, Way::TokioCopy, chunk);
            mbs.tokio.push(m);
            cpu.tokio.push(c);
        }
        rows.push(mbs);
        rows.push(cpu);
    }
    rows
}
