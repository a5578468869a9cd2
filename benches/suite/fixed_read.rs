//! Registered buffers (issue 14): 4 KiB random reads at QD 32 with
//! O_DIRECT from the file_read bench's file, ringio's
//! `File::read_fixed_at` (32 tasks, each with one registered buffer of a
//! `FixedBufs` set) against `fio` in the same run (`--ioengine=io_uring
//! --rw=randread --bs=4k --iodepth=32 --direct=1 --fixedbufs`), and
//! ringio's plain `read_at` into an aligned buffer. The raw column holds
//! fio's figure, so ringio/raw reads as "ringio over fio". Without `fio`
//! on the PATH the fio column is empty.

use std::os::unix::fs::OpenOptionsExt;
use std::time::{Duration, Instant};

use crate::file_read::bench_file;
use crate::util::Rng;
use crate::{Better, Row};

const BS: usize = 4096;
const QD: usize = 32;

fn ringio_reader(path: &std::path::Path, size: u64, secs: f64, fixed: bool) -> f64 {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .unwrap();
    let file = std::rc::Rc::new(ringio::fs::File::from_std(file));
    let blocks = size / BS as u64;
    ringio::run(async move {
        let bufs = ringio::io::FixedBufs::register(QD as u16, BS).unwrap();
        let t = Instant::now();
        let deadline = t + Duration::from_secs_f64(secs);
        let tasks: Vec<_> = (0..QD)
            .map(|q| {
                let file = file.clone();
                let mut fbuf = bufs.get().unwrap();
                ringio::create_task(async move {
                    let mut rng = Rng::new(q as u64 * 7 + 1);
                    let mut abuf = ringio::io::AlignedBuf::new(BS, 4096)?;
                    let mut n = 0u64;
                    while Instant::now() < deadline {
                        let off = (rng.next_u64() % blocks) * BS as u64;
                        if fixed {
                            let (res, b) = file.read_fixed_at(fbuf, off).await;
                            fbuf = b;
                            assert_eq!(res?, BS);
                        } else {
                            let (res, b) = file.read_at(abuf, off).await;
                            abuf = b;
                            assert_eq!(res?, BS);
                        }
                        n += 1;
                    }
                    Ok::<u64, ringio::Error>(n)
                })
            })
            .collect();
        let mut n = 0;
        for t in tasks {
            n += t.await.unwrap();
        }
        n as f64 / t.elapsed().as_secs_f64()
    })
}

/// fio's IOPS for the same job, or `None` without fio.
fn fio(path: &std::path::Path, secs: f64) -> Option<f64> {
    let out = std::process::Command::new("fio")
        .args([
            "--name=randread",
            &format!("--filename={}", path.display()),
            "--ioengine=io_uring",
            "--rw=randread",
            "--bs=4k",
            "--iodepth=32",
            "--direct=1",
            "--fixedbufs",
            "--time_based",
            &format!("--runtime={}", secs.ceil() as u64),
            "--output-format=json",
        ])
        .output()
        .ok()?;
    if !out.status.success() {
        eprintln!("   fio failed: {}", String::from_utf8_lossy(&out.stderr));
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    // jobs[0].read.iops: the first "iops" after "read".
    let read = text.find("\"read\"")?;
    let rest = &text[read..];
    let i = rest.find("\"iops\"")?;
    let rest = rest[i + 6..]
        .trim_start()
        .trim_start_matches(':')
        .trim_start();
    let end = rest.find([',', '\n'])?;
    rest[..end].trim().parse().ok()
}

pub fn run(cfg: &crate::util::Config) -> Vec<Row> {
    let (path, size) = bench_file();
    let mut fixed = Row::new(
        "fixed_read",
        "4 KiB random reads, QD 32, O_DIRECT: read_fixed_at (ringio col.) vs fio io_uring --fixedbufs (raw col.)",
        "IOPS",
        Better::Higher,
    );
    let mut plain = Row::new(
        "fixed_read",
        "4 KiB random reads, QD 32, O_DIRECT: read_at (ringio col.) vs fio io_uring --fixedbufs (raw col.)",
        "IOPS",
        Better::Higher,
    );
    for _ in 0..cfg.long_reps() {
        fixed
            .ringio
            .push(ringio_reader(&path, size, cfg.secs, true));
        plain
            .ringio
            .push(ringio_reader(&path, size, cfg.secs, false));
        if let Some(iops) = fio(&path, cfg.secs) {
            fixed.raw.push(iops);
            plain.raw.push(iops);
        }
    }
    vec![fixed, plain]
}
