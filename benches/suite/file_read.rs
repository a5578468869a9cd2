//! 4 KiB random reads at queue depth 32 from one file (256 MiB by default,
//! written once and kept in the page cache: buffered reads). ringio: 32
//! tasks each awaiting one `IORING_OP_READ` at a time; tokio: 32 tasks each
//! with its own `tokio::fs::File` (seek + read_exact, i.e. the blocking
//! pool); raw: one ring keeping 32 reads in flight. With
//! `RINGIO_BENCH_ODIRECT=1`, also O_DIRECT rows (ringio and raw only:
//! tokio::fs's internal buffer is not aligned for O_DIRECT).

use std::fs::{File, OpenOptions};
use std::io::{SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use io_uring::{opcode, types};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use crate::util::{Rng, push, raw_ring, tokio_ct};
use crate::{Better, Row};

const BS: usize = 4096;
const QD: usize = 32;

/// One 4 KiB block, aligned for O_DIRECT.
#[repr(C, align(4096))]
struct Block([u8; BS]);

fn new_block() -> Box<Block> {
    Box::new(Block([0; BS]))
}

pub fn bench_file() -> (PathBuf, u64) {
    let mb: u64 = std::env::var("RINGIO_BENCH_FILE_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    let dir = std::env::var_os("RINGIO_BENCH_DIR")
        .or_else(|| std::env::var_os("CARGO_TARGET_DIR"))
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/target")));
    std::fs::create_dir_all(&dir).expect("bench file directory");
    let path = dir.join(format!("ringio-bench-{mb}MiB.dat"));
    let size = mb << 20;
    if std::fs::metadata(&path).map(|m| m.len()).ok() != Some(size) {
        let mut f = File::create(&path).expect("create bench file");
        let mut rng = Rng::new(42);
        let chunk: Vec<u8> = (0..1 << 20).map(|_| rng.next_u64() as u8).collect();
        for _ in 0..mb {
            f.write_all(&chunk).unwrap();
        }
        f.sync_all().unwrap();
    }
    (path, size)
}

/// ringio's file reader, built on `Op` + `create_task` directly (swap in
/// `ringio::fs::File::read_at` once it lands): `qd` tasks, each awaiting
/// one READ at a time until `secs` have passed. Returns IOPS.
pub fn ringio_file_reader(file: &File, size: u64, secs: f64) -> f64 {
    let file = std::rc::Rc::new(ringio::fs::File::from_std(file.try_clone().unwrap()));
    let blocks = size / BS as u64;
    ringio::run(async move {
        let t = Instant::now();
        let deadline = t + Duration::from_secs_f64(secs);
        let tasks: Vec<_> = (0..QD)
            .map(|q| {
                let file = file.clone();
                ringio::create_task(async move {
                    let mut rng = Rng::new(q as u64 * 7 + 1);
                    // 4 KiB-aligned, so the same reader serves O_DIRECT.
                    let mut buf = ringio::io::AlignedBuf::new(BS, 4096)?;
                    let mut n = 0u64;
                    // The clock every 8 reads, as the raw loop reads it
                    // once per batch of completions (a clock read costs
                    // ~40 ns in this VM, 2 % of a cached read).
                    while n % 8 != 0 || Instant::now() < deadline {
                        let off = (rng.next_u64() % blocks) * BS as u64;
                        let (res, b) = file.read_at(buf, off).await;
                        buf = b;
                        assert_eq!(res?, BS);
                        n += 1;
                    }
                    Ok::<u64, ringio::Error>(n)
                })
            })
            .collect();
        let mut total = 0;
        for t in tasks {
            total += t.await.unwrap();
        }
        total as f64 / t.elapsed().as_secs_f64()
    })
}

fn tokio_reader(rt: &tokio::runtime::Runtime, path: &PathBuf, size: u64, secs: f64) -> f64 {
    let blocks = size / BS as u64;
    rt.block_on(async move {
        let t = Instant::now();
        let deadline = t + Duration::from_secs_f64(secs);
        let mut tasks = Vec::new();
        for q in 0..QD {
            let mut f = tokio::fs::File::open(path).await.unwrap();
            tasks.push(tokio::spawn(async move {
                let mut rng = Rng::new(q as u64 * 7 + 1);
                let mut buf = vec![0u8; BS];
                let mut n = 0u64;
                while n % 8 != 0 || Instant::now() < deadline {
                    let off = (rng.next_u64() % blocks) * BS as u64;
                    f.seek(SeekFrom::Start(off)).await.unwrap();
                    f.read_exact(&mut buf).await.unwrap();
                    n += 1;
                }
                n
            }));
        }
        let mut total = 0;
        for h in tasks {
            total += h.await.unwrap();
        }
        total as f64 / t.elapsed().as_secs_f64()
    })
}

fn raw_reader(file: &File, size: u64, secs: f64) -> f64 {
    let fd = file.as_raw_fd();
    let blocks = size / BS as u64;
    let mut ring = raw_ring(64);
    let mut bufs: Vec<Box<Block>> = (0..QD).map(|_| new_block()).collect();
    let mut rng = Rng::new(99);
    let t = Instant::now();
    let deadline = t + Duration::from_secs_f64(secs);
    for (i, b) in bufs.iter_mut().enumerate() {
        let off = (rng.next_u64() % blocks) * BS as u64;
        let sqe = opcode::Read::new(types::Fd(fd), b.0.as_mut_ptr(), BS as u32)
            .offset(off)
            .build()
            .user_data(i as u64);
        push(&mut ring, &sqe);
    }
    let mut inflight = QD;
    let mut n = 0u64;
    let mut done = Vec::with_capacity(QD);
    while inflight > 0 {
        ring.submit_and_wait(1).unwrap();
        done.clear();
        done.extend(
            ring.completion()
                .map(|c| (c.user_data() as usize, c.result())),
        );
        let now = Instant::now();
        for &(i, res) in &done {
            assert_eq!(res, BS as i32);
            n += 1;
            inflight -= 1;
            if now < deadline {
                let off = (rng.next_u64() % blocks) * BS as u64;
                let sqe = opcode::Read::new(types::Fd(fd), bufs[i].0.as_mut_ptr(), BS as u32)
                    .offset(off)
                    .build()
                    .user_data(i as u64);
                push(&mut ring, &sqe);
                inflight += 1;
            }
        }
    }
    n as f64 / t.elapsed().as_secs_f64()
}

pub fn run(cfg: &crate::util::Config) -> Vec<Row> {
    let (path, size) = bench_file();
    let file = File::open(&path).unwrap();
    let ct = tokio_ct();
    let secs = cfg.secs;
    let mut row = Row::new(
        "file_read",
        format!("4 KiB random reads, QD 32, {} MiB buffered", size >> 20),
        "IOPS",
        Better::Higher,
    );
    // Warm the page cache (and each path) briefly.
    raw_reader(&file, size, 0.3);
    for rep in 0..cfg.long_reps() {
        for k in 0..3 {
            match (k + rep) % 3 {
                0 => row.ringio.push(ringio_file_reader(&file, size, secs)),
                1 => row.tokio.push(tokio_reader(&ct, &path, size, secs)),
                _ => row.raw.push(raw_reader(&file, size, secs)),
            }
        }
    }
    let mut rows = vec![row];
    if std::env::var("RINGIO_BENCH_ODIRECT").as_deref() == Ok("1") {
        let direct = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECT)
            .open(&path)
            .unwrap();
        let mut row = Row::new(
            "file_read",
            "4 KiB random reads, QD 32, O_DIRECT",
            "IOPS",
            Better::Higher,
        );
        for _ in 0..cfg.long_reps() {
            row.ringio.push(ringio_file_reader(&direct, size, secs));
            row.raw.push(raw_reader(&direct, size, secs));
        }
        rows.push(row);
    }
    rows
}
