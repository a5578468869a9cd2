//! Registered buffers and O_DIRECT (issue 14): 4 KiB random reads at QD 32
//! with O_DIRECT from the file_read bench's file, against `fio` in the same
//! run (`--ioengine=io_uring --rw=randread --bs=4k --iodepth=32 --direct=1
//! --fixedbufs`, as long as each case). This VM's disk drifts by 2x
//! within seconds, so every case runs between two fio runs and its raw
//! column holds the mean of those two (ringio/raw reads as "this case over
//! fio next to it"); the cases' order rotates from one repetition to the
//! next. Each case has a second row: CPU time per read, the case's process
//! time against fio's `usr_cpu + sys_cpu`.
//!
//! Cases: ringio's `File::read_fixed_at` (32 tasks, each with one buffer
//! of a `FixedBufs` set) on the default ring and on the builder's other
//! ring setups (`coop_taskrun`, `defer_taskrun(false)`, `submit_batch(8)`, `sqpoll` with its
//! thread pinned to the CPU the loop is not on, and a small submission
//! queue: `ring_entries(2)` or `(8)` with `cq_entries(64)`), ringio's plain
//! `read_at` into an aligned buffer, and — with `RINGIO_BENCH_ODIRECT=1` —
//! raw `io-uring` loops with no runtime that separate the ring setup from
//! the way reads are issued: "batched" submits what a round of
//! completions freed with one `io_uring_enter` that also waits (ringio's
//! turn, and the file_read bench's raw loop); "one enter per read" is
//! fio's pattern (each read submitted by its own enter as its slot frees,
//! a wait only when all 32 are in flight).
//!
//! Without `fio` on the PATH, or when a fio run fails, the fio column is
//! empty and the reason is printed on stderr.

use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::time::{Duration, Instant};

use io_uring::{opcode, types};

use crate::file_read::bench_file;
use crate::util::{Rng, process_cpu};
use crate::{Better, Row};

const BS: usize = 4096;
const QD: usize = 32;
/// `IORING_ENTER_GETEVENTS` (io-uring keeps its `sys` module private).
const IORING_ENTER_GETEVENTS: u32 = 1;

/// The ring setups ringio's rows run on.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Setup {
    Default,
    Coop,
    NoDefer,
    Sqpoll,
    /// A submission queue of this many entries (CQ 64): a full SQ is
    /// handed to the kernel at once, so reads go in every few polls of a
    /// turn rather than all at its end.
    SmallSq(u32),
    /// `Builder::submit_batch(n)`: the full-size queue, handed to the
    /// kernel every `n` queued reads.
    Batch(u32),
}

impl Setup {
    fn builder(self) -> ringio::Builder {
        let b = ringio::Runtime::builder();
        match self {
            Setup::Default => b,
            Setup::Coop => b.coop_taskrun(true),
            Setup::NoDefer => b.defer_taskrun(false),
            // The loop runs on CPU 0 (pinned below), the SQPOLL thread on
            // the other one; a 10 ms idle keeps it awake between reads.
            Setup::Sqpoll => b
                .sqpoll(Duration::from_millis(10))
                .sqpoll_cpu(online_cpus().min(2) as u32 - 1),
            Setup::SmallSq(n) => b.ring_entries(n).cq_entries(64),
            Setup::Batch(n) => b.submit_batch(n),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Setup::Default => "default ring",
            Setup::Coop => "coop_taskrun(true)",
            Setup::NoDefer => "defer_taskrun(false)",
            Setup::Sqpoll => "sqpoll(10 ms) + sqpoll_cpu(1)",
            Setup::SmallSq(2) => "ring_entries(2) + cq_entries(64)",
            Setup::SmallSq(8) => "ring_entries(8) + cq_entries(64)",
            Setup::SmallSq(_) => "a small ring_entries + cq_entries(64)",
            Setup::Batch(8) => "submit_batch(8)",
            Setup::Batch(_) => "submit_batch(n)",
        }
    }
}

fn ringio_reader(path: &std::path::Path, size: u64, secs: f64, fixed: bool, setup: Setup) -> f64 {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .unwrap();
    let file = std::rc::Rc::new(ringio::fs::File::from_std(file));
    let blocks = size / BS as u64;
    let mut rt = match setup.builder().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("   fixed_read: {} not available: {e}", setup.name());
            return f64::NAN;
        }
    };
    rt.run(async move {
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
    .unwrap()
}

/// CPUs online (not only those this thread may run on now).
fn online_cpus() -> usize {
    // SAFETY: sysconf has no memory effects.
    unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }.max(1) as usize
}

/// How a raw loop's ring is set up.
#[derive(Clone, Copy, PartialEq, Eq)]
enum RawRing {
    /// `SINGLE_ISSUER | DEFER_TASKRUN`, CQ 4× (ringio's default).
    Defer,
    /// fio 3.33's ring: `SINGLE_ISSUER | DEFER_TASKRUN | COOP_TASKRUN`,
    /// SQ and CQ of 32 (seen with strace).
    Fio,
    /// No setup flags.
    Plain,
}

/// How a raw loop issues its reads.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Issue {
    /// One enter per round: submit what the last round freed and wait for
    /// at least one completion.
    Batched,
    /// fio's: each read submitted by its own enter (`to_submit` 1,
    /// `GETEVENTS`, no wait) as its slot frees; a waiting enter only when
    /// all 32 are in flight and none has completed.
    PerRead,
}

fn raw_ring(kind: RawRing) -> io_uring::IoUring {
    let mut b = io_uring::IoUring::builder();
    match kind {
        RawRing::Defer => {
            b.setup_single_issuer()
                .setup_defer_taskrun()
                .setup_cqsize(4 * QD as u32);
        }
        RawRing::Fio => {
            b.setup_single_issuer()
                .setup_defer_taskrun()
                .setup_coop_taskrun()
                .setup_cqsize(QD as u32);
        }
        RawRing::Plain => {}
    }
    b.build(QD as u32).expect("io_uring setup")
}

/// A raw io-uring loop with no runtime: `READ_FIXED` into 32 registered
/// buffers, 32 reads in flight. Returns IOPS.
fn raw_reader(path: &std::path::Path, size: u64, secs: f64, kind: RawRing, issue: Issue) -> f64 {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .unwrap();
    let fd = types::Fd(file.as_raw_fd());
    let blocks = size / BS as u64;
    let mut ring = raw_ring(kind);
    let mut mem = ringio::io::AlignedBuf::new(BS * QD, 4096).unwrap();
    let base = mem.as_mut_ptr();
    let iovecs: Vec<libc::iovec> = (0..QD)
        .map(|i| libc::iovec {
            // SAFETY: within the QD * BS bytes of `mem`.
            iov_base: unsafe { base.add(i * BS) }.cast(),
            iov_len: BS,
        })
        .collect();
    // SAFETY: the buffers outlive the ring (dropped after it, below).
    unsafe { ring.submitter().register_buffers(&iovecs) }.expect("register buffers");
    let mut rng = Rng::new(99);
    let mut sqe = |i: usize| {
        let off = (rng.next_u64() % blocks) * BS as u64;
        opcode::ReadFixed::new(fd, iovecs[i].iov_base.cast(), BS as u32, i as u16)
            .offset(off)
            .build()
            .user_data(i as u64)
    };
    let enter = |ring: &io_uring::IoUring, submit: u32, wait: u32| {
        // SAFETY: plain enter, no argument.
        unsafe {
            ring.submitter()
                .enter::<libc::sigset_t>(submit, wait, IORING_ENTER_GETEVENTS, None)
        }
        .expect("io_uring_enter");
    };
    let t = Instant::now();
    let deadline = t + Duration::from_secs_f64(secs);
    let mut n = 0u64;
    let mut done: Vec<usize> = Vec::with_capacity(QD);
    let mut inflight = 0;
    for i in 0..QD {
        let e = sqe(i);
        // SAFETY: the buffer is registered and outlives the read.
        unsafe { ring.submission().push(&e) }.unwrap();
        if issue == Issue::PerRead {
            enter(&ring, 1, 0);
        }
        inflight += 1;
    }
    if issue == Issue::Batched {
        enter(&ring, QD as u32, 0);
    }
    while inflight > 0 {
        done.clear();
        done.extend(ring.completion().map(|c| {
            assert_eq!(c.result(), BS as i32);
            c.user_data() as usize
        }));
        if done.is_empty() {
            enter(&ring, 0, 1);
            continue;
        }
        n += done.len() as u64;
        inflight -= done.len();
        if Instant::now() >= deadline {
            continue;
        }
        for &i in &done {
            let e = sqe(i);
            // SAFETY: as above.
            unsafe { ring.submission().push(&e) }.unwrap();
            inflight += 1;
            if issue == Issue::PerRead {
                enter(&ring, 1, 0);
            }
        }
        if issue == Issue::Batched {
            // ringio's turn: submit, then wait for the next completion.
            enter(&ring, done.len() as u32, 1);
        }
    }
    let iops = n as f64 / t.elapsed().as_secs_f64();
    drop(ring);
    drop(mem);
    iops
}

/// fio's (IOPS, CPU µs per read) for the same job, or `None` (with the
/// reason on stderr) without fio or when its run fails.
fn fio(path: &std::path::Path, secs: f64) -> Option<(f64, f64)> {
    let runtime_ms = (secs * 1000.0).round().max(100.0) as u64;
    let child = std::process::Command::new("fio")
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
            &format!("--runtime={runtime_ms}ms"),
            "--output-format=json",
        ])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            eprintln!("   fio not run: {e}");
            return None;
        }
    };
    // fio stops itself after `runtime`; a stuck device or fio gets 30 s
    // more, then is killed, so one bad run cannot hang the suite.
    let limit = Instant::now() + Duration::from_millis(runtime_ms) + Duration::from_secs(30);
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < limit => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                eprintln!("   fio killed: no result {runtime_ms} ms + 30 s after its start");
                return None;
            }
        }
    }
    let out = child.wait_with_output().ok()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        eprintln!("   fio failed ({}): {stderr}{stdout}", out.status);
        return None;
    }
    let figures = fio_figures(&stdout);
    if figures.is_none() {
        eprintln!("   fio's output has no read IOPS: {stderr}{stdout}");
    }
    figures
}

/// fio's figures from its JSON output: `(read IOPS, CPU µs per read)`
/// (`jobs[0].read.iops`; `usr_cpu + sys_cpu`, percentages of
/// `read.runtime` ms, over `read.total_ios`). Text before the JSON (fio
/// prints warnings to stdout too) is skipped.
fn fio_figures(text: &str) -> Option<(f64, f64)> {
    let job = &text[text.find("\"jobs\"")?..];
    // The `"read" : {` object, not a `"read"` string value.
    let mut read = job;
    loop {
        let i = read.find("\"read\"")?;
        read = read[i + 6..].trim_start();
        if read.starts_with(':') {
            break;
        }
    }
    let iops = json_num(read, "iops")?;
    let ios = json_num(read, "total_ios")?;
    let runtime_ms = json_num(read, "runtime")?;
    let cpu_pct = json_num(job, "usr_cpu")? + json_num(job, "sys_cpu")?;
    let cpu_us = cpu_pct / 100.0 * runtime_ms * 1000.0 / ios.max(1.0);
    Some((iops, cpu_us))
}

/// The number after the first `"key" :` in `text`.
fn json_num(text: &str, key: &str) -> Option<f64> {
    let pat = format!("\"{key}\"");
    let mut rest = text;
    loop {
        let i = rest.find(&pat)?;
        rest = rest[i + pat.len()..].trim_start();
        if let Some(r) = rest.strip_prefix(':') {
            let r = r.trim_start();
            let end = r.find([',', '\n', '}'])?;
            if let Ok(v) = r[..end].trim().parse::<f64>() {
                return v.is_finite().then_some(v);
            }
        }
    }
}

pub fn run(cfg: &crate::util::Config) -> Vec<Row> {
    let (path, size) = bench_file();
    let secs = cfg.secs;
    let mut cases: Vec<(Case, &str)> = vec![
        (
            Case::Ringio(Setup::Default, true),
            "ringio read_fixed_at, default ring",
        ),
        (
            Case::Ringio(Setup::Coop, true),
            "ringio read_fixed_at, coop_taskrun(true)",
        ),
        (
            Case::Ringio(Setup::NoDefer, true),
            "ringio read_fixed_at, defer_taskrun(false)",
        ),
        (
            Case::Ringio(Setup::Sqpoll, true),
            "ringio read_fixed_at, sqpoll(10 ms) + sqpoll_cpu(1)",
        ),
        (
            Case::Ringio(Setup::Default, false),
            "ringio read_at, default ring",
        ),
        (
            Case::Ringio(Setup::SmallSq(2), true),
            "ringio read_fixed_at, ring_entries(2) + cq_entries(64)",
        ),
        (
            Case::Ringio(Setup::SmallSq(8), true),
            "ringio read_fixed_at, ring_entries(8) + cq_entries(64)",
        ),
        (
            Case::Ringio(Setup::Batch(8), true),
            "ringio read_fixed_at, submit_batch(8)",
        ),
        (
            Case::Ringio(Setup::Batch(8), false),
            "ringio read_at, submit_batch(8)",
        ),
    ];
    if std::env::var("RINGIO_BENCH_ODIRECT").as_deref() == Ok("1") {
        cases.extend([
            (
                Case::Raw(RawRing::Defer, Issue::Batched),
                "raw io-uring loop, READ_FIXED, ringio's ring, batched",
            ),
            (
                Case::Raw(RawRing::Defer, Issue::PerRead),
                "raw io-uring loop, READ_FIXED, ringio's ring, one enter per read",
            ),
            (
                Case::Raw(RawRing::Fio, Issue::PerRead),
                "raw io-uring loop, READ_FIXED, fio's ring, one enter per read",
            ),
            (
                Case::Raw(RawRing::Plain, Issue::Batched),
                "raw io-uring loop, READ_FIXED, no setup flags, batched",
            ),
        ]);
    }
    let mut rows: Vec<(Row, Row)> = cases
        .iter()
        .map(|(_, name)| {
            (
                Row::new(
                    "fixed_read",
                    format!("4 KiB random reads, QD 32, O_DIRECT: {name} (ringio col.) vs fio io_uring --fixedbufs (raw col.)"),
                    "IOPS",
                    Better::Higher,
                ),
                Row::new(
                    "fixed_read",
                    format!("  same, CPU per read: {name} vs fio"),
                    "µs",
                    Better::Lower,
                ),
            )
        })
        .collect();
    let affinity = Affinity::get();
    let reps = cfg.long_reps();
    for rep in 0..reps {
        // Every case runs between two fio runs and is measured against
        // their mean: this VM's disk drifts by 2x within seconds, so fio
        // must run next to each case, not once per repetition. The order
        // of the cases rotates from one repetition to the next.
        let mut before = fio(&path, secs);
        let n = cases.len();
        for k in 0..n {
            let i = (k + rep) % n;
            let cpu0 = process_cpu();
            let iops = match cases[i].0 {
                Case::Ringio(s, fixed) => {
                    if s == Setup::Sqpoll {
                        // The loop on CPU 0, its SQPOLL thread on CPU 1.
                        crate::util::pin_to_cpu(0);
                    }
                    let v = ringio_reader(&path, size, secs, fixed, s);
                    affinity.set();
                    v
                }
                Case::Raw(kind, issue) => raw_reader(&path, size, secs, kind, issue),
            };
            // The readers stop issuing at `secs`, so about iops * secs reads.
            let cpu_us = (process_cpu() - cpu0).as_secs_f64() * 1e6 / (iops * secs);
            let after = fio(&path, secs);
            if let (Some(a), Some(b), true) = (before, after, iops.is_finite()) {
                let (f, f_cpu) = ((a.0 + b.0) / 2.0, (a.1 + b.1) / 2.0);
                let (r, c) = &mut rows[i];
                r.ringio.push(iops);
                r.raw.push(f);
                c.ringio.push(cpu_us);
                c.raw.push(f_cpu);
                eprintln!(
                    "   rep {}: {:.2}x fio ({iops:.0} vs {:.0}, {:.0}; CPU/read {cpu_us:.1} vs {f_cpu:.1} µs)  {}",
                    rep + 1,
                    iops / f,
                    a.0,
                    b.0,
                    cases[i].1
                );
            }
            before = after;
        }
    }
    rows.into_iter().flat_map(|(r, c)| [r, c]).collect()
}

/// One row's reader.
#[derive(Clone, Copy)]
enum Case {
    /// ringio on this setup; `read_fixed_at` if true, else `read_at`.
    Ringio(Setup, bool),
    Raw(RawRing, Issue),
}

/// The process's CPU affinity at the start, restored after a pinned run
/// (fio, started from this thread, inherits it).
struct Affinity(libc::cpu_set_t);

impl Affinity {
    fn get() -> Affinity {
        // SAFETY: a zeroed cpu_set_t is valid; the kernel fills it in.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set);
            Affinity(set)
        }
    }

    fn set(&self) {
        // SAFETY: a valid set, read from the kernel.
        unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &self.0) };
    }
}
