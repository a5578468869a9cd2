//! The I/O soak: operations of every kind — socket reads and writes with
//! data in flight (plain receives, `read_exact`, multishot receives into a
//! provided-buffer ring), file reads, accepts, sleeps — in tasks cancelled
//! (`Task::cancel`) or dropped (futures dropped mid-flight, `wait_for`
//! timeouts, multishot streams dropped) at seeded random moments.
//!
//! At the end every byte sent is accounted for: each stream carries a
//! pattern fixed by the byte's position, so the receiver checks order and
//! that nothing is lost or duplicated, and the bytes received before each
//! cancel plus those read after it (to end of stream) equal the bytes the
//! writer's completed sends reported. No fd, op-table slot, provided buffer,
//! timer or task is left, and RSS is flat between the first and the second
//! half.
//!
//! `RINGIO_SOAK_OPS` (default 50,000: the short run of the test command)
//! and `RINGIO_SOAK_SEED` set the size and the moves; `ci/soak.sh` runs
//! 1,000,000.

mod common;

use std::cell::Cell;
use std::future::Future;
use std::pin::{Pin, pin};
use std::rc::Rc;
use std::task::Poll;
use std::time::{Duration, Instant};

use futures_util::future::{Either, select};

use common::{open_fds, poll_once_and_drop, serial, settle, settled_open_fds, stats};
use ringio::io::BufRing;
use ringio::net::{TcpListener, TcpStream};
use ringio::{Error, Runtime, Task};

/// xorshift64*: the same moves for the same seed.
#[derive(Clone)]
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The stream's byte at position `p`: a hash of the position, so a byte
/// lost, repeated or out of order shows within a few bytes.
fn pat(p: u64) -> u8 {
    (p.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as u8
}

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// Resident set size, from /proc/self/statm.
fn rss_bytes() -> u64 {
    let s = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = s.split_whitespace().nth(1).unwrap().parse().unwrap();
    // SAFETY: sysconf has no preconditions.
    pages * unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64
}

/// Counters shared by the workers.
#[derive(Default)]
struct Totals {
    ops: Cell<u64>,
    sent: Cell<u64>,
    received: Cell<u64>,
    cancels: Cell<u64>,
    drops: Cell<u64>,
    /// RSS when the first half of the operations was done.
    rss_half: Cell<Option<u64>>,
}

impl Totals {
    fn op(&self, target: u64) {
        self.ops.set(self.ops.get() + 1);
        if self.rss_half.get().is_none() && self.ops.get() >= target / 2 {
            self.rss_half.set(Some(rss_bytes()));
        }
    }
}

/// One direction of a TCP connection and what went through it.
struct Channel {
    tx: Rc<TcpStream>,
    rx: Rc<TcpStream>,
    /// Bytes the writer's completed sends reported.
    sent: Rc<Cell<u64>>,
    /// Bytes received and checked.
    received: Rc<Cell<u64>>,
}

/// Checks received bytes against the pattern and counts them.
fn check(received: &Cell<u64>, bytes: &[u8]) {
    let at = received.get();
    for (i, &b) in bytes.iter().enumerate() {
        let p = at + i as u64;
        assert_eq!(
            b,
            pat(p),
            "byte {p} of the stream is wrong: lost, repeated or reordered"
        );
    }
    received.set(at + bytes.len() as u64);
}

/// Sends `chunks` chunks of the pattern, one plain send each (whose count
/// is exact even when the task is cancelled: the send completed, or the
/// kernel cancelled it before it moved a byte).
async fn writer(
    tx: Rc<TcpStream>,
    sent: Rc<Cell<u64>>,
    chunks: u32,
    mut rng: Rng,
    t: Rc<Totals>,
    target: u64,
) -> ringio::Result<()> {
    for _ in 0..chunks {
        let len = 1 + rng.below(48 * 1024);
        let at = sent.get();
        let buf: Vec<u8> = (at..at + len).map(pat).collect();
        let (res, _) = tx.write(buf).await;
        t.op(target);
        match res {
            Ok(n) => sent.set(at + n as u64),
            Err(e) if interrupted(&e) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Receives until cancelled, in one of six ways (plain reads and
/// `read_exact`s awaited, or raced with a timer in `select` and dropped
/// when the timer wins, or dropped inside a `Box::pin` after a few turns;
/// multishot streams dropped); every completed receive is checked and
/// counted before the next await. What a dropped read had received goes
/// to the socket's stash, and the next receive returns it first.
async fn reader(
    rx: Rc<TcpStream>,
    received: Rc<Cell<u64>>,
    ring: BufRing,
    mut rng: Rng,
    t: Rc<Totals>,
    target: u64,
) -> ringio::Result<()> {
    loop {
        match rng.below(6) {
            0 => {
                let (res, buf) = rx
                    .read(Vec::with_capacity(1 + rng.below(64 * 1024) as usize))
                    .await;
                if let Some(end) = completed_read(&t, target, &received, res, &buf) {
                    return end;
                }
            }
            1 => {
                // On an error or a cancel the buffer holds what came.
                let (res, buf) = rx
                    .read_exact(Vec::with_capacity(1 + rng.below(8 * 1024) as usize))
                    .await;
                t.op(target);
                check(&received, &buf);
                res?;
            }
            3 | 4 => {
                // A plain read or a read_exact raced with a timer (either
                // polled first): if the timer wins, the read is dropped,
                // often with its receive completed or completing.
                let timer = ringio::sleep(Duration::from_micros(rng.below(300)));
                let cap = 1 + rng.below(16 * 1024) as usize;
                let exact = rng.below(2) == 0;
                let read = async {
                    if exact {
                        let (res, buf) = rx.read_exact(Vec::with_capacity(cap)).await;
                        (res.map(|()| buf.len()), buf)
                    } else {
                        rx.read(Vec::with_capacity(cap)).await
                    }
                };
                let got = if rng.below(2) == 0 {
                    match select(pin!(read), pin!(timer)).await {
                        Either::Left((r, _)) => Ok(r),
                        Either::Right((r, _)) => Err(r),
                    }
                } else {
                    match select(pin!(timer), pin!(read)).await {
                        Either::Right((r, _)) => Ok(r),
                        Either::Left((r, _)) => Err(r),
                    }
                };
                match got {
                    Ok((res, buf)) => {
                        if let Some(end) = completed_read(&t, target, &received, res, &buf) {
                            return end;
                        }
                    }
                    // The timer won (or delivered the task's cancel): the
                    // read was dropped.
                    Err(timer) => {
                        t.drops.set(t.drops.get() + 1);
                        timer?;
                    }
                }
            }
            5 => {
                // A read (or read_exact) in a box, polled, left for a few
                // turns of the loop (its receive may complete meanwhile),
                // then dropped.
                type Read<'a> =
                    Pin<Box<dyn Future<Output = (ringio::Result<usize>, Vec<u8>)> + 'a>>;
                let cap = 1 + rng.below(16 * 1024) as usize;
                let mut read: Read<'_> = if rng.below(2) == 0 {
                    Box::pin(rx.read(Vec::with_capacity(cap)))
                } else {
                    Box::pin(async {
                        let (res, buf) = rx.read_exact(Vec::with_capacity(cap)).await;
                        (res.map(|()| buf.len()), buf)
                    })
                };
                let mut done = None;
                let mut cancelled = None;
                for _ in 0..2 {
                    if let Poll::Ready(r) =
                        std::future::poll_fn(|cx| Poll::Ready(read.as_mut().poll(cx))).await
                    {
                        done = Some(r);
                        break;
                    }
                    // The task's cancel may land here: drop the read, then
                    // end as cancelled.
                    let d = Duration::from_micros(rng.below(4) * rng.below(100));
                    if let Err(e) = ringio::sleep(d).await {
                        cancelled = Some(e);
                        break;
                    }
                }
                drop(read);
                match done {
                    None => {
                        t.drops.set(t.drops.get() + 1);
                        if let Some(e) = cancelled {
                            return Err(e);
                        }
                    }
                    Some((res, buf)) => {
                        if let Some(end) = completed_read(&t, target, &received, res, &buf) {
                            return end;
                        }
                    }
                }
            }
            _ => {
                // A multishot receive for a few buffers, then the stream is
                // dropped (what it had received goes back to the socket's
                // stash, read first next time).
                let mut stream = rx.recv_multishot(&ring);
                for _ in 0..1 + rng.below(6) {
                    match stream.next().await {
                        None => return Ok(()),
                        Some(Err(e)) if interrupted(&e) => break,
                        Some(res) => {
                            t.op(target);
                            let buf = res?;
                            check(&received, &buf);
                        }
                    }
                }
                t.drops.set(t.drops.get() + 1);
            }
        }
    }
}

/// A plain read that completed: counted and its bytes checked. `Some`
/// ends the reader: end of stream, or an error other than an injected
/// EINTR (which the reader retries).
fn completed_read(
    t: &Totals,
    target: u64,
    received: &Cell<u64>,
    res: ringio::Result<usize>,
    buf: &[u8],
) -> Option<ringio::Result<()>> {
    t.op(target);
    check(received, buf);
    match res {
        Ok(0) => Some(Ok(())),
        Ok(_) => None,
        Err(e) if interrupted(&e) => None,
        Err(e) => Some(Err(e)),
    }
}

/// An injected EINTR (with `fault-injection`): the caller retries.
fn interrupted(e: &Error) -> bool {
    matches!(e, Error::Io(io) if io.raw_os_error() == Some(libc::EINTR))
}

/// Lets the loop turn a random number of times (the random moment).
async fn turns(rng: &mut Rng) {
    for _ in 0..rng.below(4) {
        ringio::sleep(Duration::ZERO).await.unwrap();
    }
    if rng.below(4) == 0 {
        ringio::sleep(Duration::from_micros(rng.below(300)))
            .await
            .unwrap();
    }
}

fn cancel<T: 'static>(task: &Task<T>, t: &Totals) {
    if task.cancel() {
        t.cancels.set(t.cancels.get() + 1);
    }
}

/// The file every worker reads, with the pattern from offset 0.
struct PatternFile {
    file: Rc<ringio::fs::File>,
    len: u64,
    /// Reads may come back short (faults are injected).
    short_ok: bool,
}

/// One worker: its own connection (one direction), listener and moves,
/// until the ops target is reached; then it drains its stream to the end.
async fn worker(id: u64, seed: u64, target: u64, t: Rc<Totals>, ring: BufRing, pf: PatternFile) {
    let PatternFile {
        file,
        len: file_len,
        short_ok,
    } = pf;
    let mut rng = Rng(seed ^ (id + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let listener = Rc::new(TcpListener::bind("127.0.0.1:0").unwrap());
    let addr = listener.local_addr().unwrap();
    let connect = ringio::create_task(async move { TcpStream::connect(addr).await });
    let (server, _) = listener.accept().await.unwrap();
    let ch = Channel {
        tx: Rc::new(connect.await.unwrap()),
        rx: Rc::new(server),
        sent: Rc::new(Cell::new(0)),
        received: Rc::new(Cell::new(0)),
    };
    while t.ops.get() < target {
        match rng.below(10) {
            // Socket I/O with data in flight, cancelled at random moments.
            0..=5 => {
                let w = ringio::create_task(writer(
                    ch.tx.clone(),
                    ch.sent.clone(),
                    1 + rng.below(6) as u32,
                    Rng(rng.next() | 1),
                    t.clone(),
                    target,
                ));
                let r = ringio::create_task(reader(
                    ch.rx.clone(),
                    ch.received.clone(),
                    ring.clone(),
                    Rng(rng.next() | 1),
                    t.clone(),
                    target,
                ));
                turns(&mut rng).await;
                if rng.below(3) == 0 {
                    cancel(&w, &t);
                }
                // A writer blocked on a full socket needs the reader.
                let _ = w.await;
                turns(&mut rng).await;
                cancel(&r, &t);
                match r.await {
                    Ok(()) => panic!("the stream ended early"),
                    Err(e) => assert!(e.is_cancelled(), "{e:?}"),
                }
            }
            // File reads: awaited, cancelled, or dropped mid-flight.
            6 => {
                let off = rng.below(file_len);
                let len = 1 + rng.below(32 * 1024);
                match rng.below(3) {
                    0 => {
                        poll_once_and_drop(file.read_at(Vec::with_capacity(len as usize), off))
                            .await;
                        t.drops.set(t.drops.get() + 1);
                    }
                    k => {
                        let f = file.clone();
                        let task = ringio::create_task(async move {
                            let (res, buf) = f.read_at(Vec::with_capacity(len as usize), off).await;
                            res.map(|n| (n, buf))
                        });
                        if k == 1 {
                            cancel(&task, &t);
                        }
                        match task.await {
                            Ok((n, buf)) => {
                                let whole = len.min(file_len - off);
                                assert!(n as u64 == whole || (short_ok && n as u64 <= whole));
                                assert!(
                                    buf.iter()
                                        .enumerate()
                                        .all(|(i, &b)| b == pat(off + i as u64)),
                                    "file bytes"
                                );
                            }
                            Err(e) => assert!(e.is_cancelled(), "{e:?}"),
                        }
                    }
                }
                t.op(target);
            }
            // Accepts: dropped or cancelled with no connection pending, or
            // racing a connection (a cancelled accept that lost leaves the
            // connection for the next one; none is lost or leaked).
            7 => {
                match rng.below(3) {
                    0 => {
                        poll_once_and_drop(listener.accept()).await;
                        t.drops.set(t.drops.get() + 1);
                    }
                    1 => {
                        let l2 = listener.clone();
                        let task =
                            ringio::create_task(async move { l2.accept().await.map(|(s, _)| s) });
                        turns(&mut rng).await;
                        cancel(&task, &t);
                        assert!(task.await.unwrap_err().is_cancelled());
                    }
                    _ => {
                        let l2 = listener.clone();
                        let task =
                            ringio::create_task(async move { l2.accept().await.map(|(s, _)| s) });
                        let client = TcpStream::connect(addr).await.unwrap();
                        // Closed with a reset, not into TIME_WAIT: the 1M
                        // run makes ~30,000 of these, about every
                        // ephemeral port, and connect slows down as they
                        // run out.
                        client.set_linger(Some(Duration::ZERO)).unwrap();
                        t.op(target);
                        turns(&mut rng).await;
                        cancel(&task, &t);
                        let server = match task.await {
                            Ok(s) => s,
                            Err(e) => {
                                assert!(e.is_cancelled(), "{e:?}");
                                let (s, _) = listener
                                    .accept()
                                    .timeout(Duration::from_secs(10))
                                    .await
                                    .expect("the connection waits in the backlog");
                                t.op(target);
                                s
                            }
                        };
                        let (res, _) = client.write_all(b"hi".to_vec()).await;
                        res.unwrap();
                        let (res, buf) = server.read_exact(Vec::with_capacity(2)).await;
                        res.unwrap();
                        assert_eq!(buf, b"hi");
                        drop(client);
                        t.op(target);
                    }
                }
                t.op(target);
            }
            // Sleeps: to the end, cancelled, or cut by a wait_for timeout
            // (which cancels the task that runs them).
            _ => {
                let d = Duration::from_micros(rng.below(400));
                match rng.below(3) {
                    0 => ringio::sleep(d).await.unwrap(),
                    1 => {
                        let task = ringio::create_task(ringio::sleep(d));
                        turns(&mut rng).await;
                        cancel(&task, &t);
                        let _ = task.await;
                    }
                    _ => {
                        let r = ringio::wait_for(
                            ringio::sleep(d),
                            Some(Duration::from_micros(rng.below(200))),
                        )
                        .await;
                        if let Err(e) = r {
                            assert!(matches!(e, Error::Timeout), "{e:?}");
                            t.drops.set(t.drops.get() + 1);
                        }
                    }
                }
                t.op(target);
            }
        }
    }
    // The end: close the writing side, read the rest to end of stream.
    let Channel {
        tx,
        rx,
        sent,
        received,
    } = ch;
    drop(Rc::try_unwrap(tx).expect("no writer left"));
    loop {
        let (res, buf) = rx.read(Vec::with_capacity(64 * 1024)).await;
        check(&received, &buf);
        match res {
            Ok(0) => break,
            Ok(_) => {}
            // Other workers still run, and their faults hit this read too.
            Err(e) if interrupted(&e) => {}
            Err(e) => panic!("{e:?}"),
        }
    }
    assert_eq!(
        received.get(),
        sent.get(),
        "worker {id}: bytes received == bytes sent"
    );
    t.sent.set(t.sent.get() + sent.get());
    t.received.set(t.received.get() + received.get());
}

#[test]
fn soak_io_with_cancels_and_drops_loses_nothing() {
    soak(false);
}

/// The same soak with seeded random faults injected into the ring (short
/// sends, receives and file reads, EINTR completions, EAGAIN/EBUSY from
/// `io_uring_enter`): still every byte accounted, nothing left.
#[cfg(feature = "fault-injection")]
#[test]
fn soak_under_injected_faults_loses_nothing() {
    soak(true);
}

fn soak(faults: bool) {
    let _g = serial();
    let target = env("RINGIO_SOAK_OPS", 50_000);
    let seed = env("RINGIO_SOAK_SEED", 0x50a4_2026);
    let workers = 8u64;
    let fds = settled_open_fds();
    let path = std::env::temp_dir().join(format!("ringio-soak-{}", std::process::id()));
    let file_len = 256 * 1024u64;
    std::fs::write(&path, (0..file_len).map(pat).collect::<Vec<u8>>()).unwrap();
    let begin = Instant::now();
    let mut rt = Runtime::new().unwrap();
    let t = Rc::new(Totals::default());
    let t2 = t.clone();
    let p2 = path.clone();
    let (ring_entries, available, rss_start) = rt
        .run(async move {
            let rss_start = rss_bytes();
            #[cfg(feature = "fault-injection")]
            if faults {
                use io_uring::opcode;
                use ringio::fault::{Fault, inject_randomly};
                for (i, (f, one_in)) in [
                    (Fault::Enter(libc::EAGAIN), 64),
                    (Fault::Enter(libc::EBUSY), 64),
                    (
                        Fault::Short {
                            opcode: opcode::Send::CODE,
                            max: 1000,
                        },
                        4,
                    ),
                    (
                        Fault::Short {
                            opcode: opcode::Recv::CODE,
                            max: 700,
                        },
                        4,
                    ),
                    (
                        Fault::Short {
                            opcode: opcode::Read::CODE,
                            max: 333,
                        },
                        4,
                    ),
                    (
                        Fault::Complete {
                            opcode: opcode::Send::CODE,
                            errno: libc::EINTR,
                        },
                        16,
                    ),
                    (
                        Fault::Complete {
                            opcode: opcode::Recv::CODE,
                            errno: libc::EINTR,
                        },
                        16,
                    ),
                ]
                .into_iter()
                .enumerate()
                {
                    inject_randomly(f, one_in, seed + i as u64).unwrap();
                }
            }
            let ring = BufRing::new(64, 4096).unwrap();
            let file = Rc::new(ringio::fs::File::open(&p2).await.unwrap());
            let tasks: Vec<_> = (0..workers)
                .map(|id| {
                    ringio::create_task({
                        let (t, ring, file) = (t2.clone(), ring.clone(), file.clone());
                        async move {
                            let pf = PatternFile {
                                file,
                                len: file_len,
                                short_ok: faults,
                            };
                            worker(id, seed, target, t, ring, pf).await;
                            Ok::<_, Error>(())
                        }
                    })
                })
                .collect();
            for task in tasks {
                task.await.unwrap();
            }
            #[cfg(feature = "fault-injection")]
            if faults {
                ringio::fault::clear();
                let n = ringio::fault::injected();
                println!("injected: {n:?}");
                assert!(
                    n.enters > 0 && n.completions > 0 && n.shortened > 0,
                    "{n:?}"
                );
            }
            Rc::try_unwrap(file).ok().unwrap().close().await.unwrap();
            settle().await;
            let s = stats();
            assert_eq!(s.ops_in_flight, 0, "{s:?}");
            assert_eq!(s.msg_ring_sends_in_flight, 0, "{s:?}");
            let lp = ringio::get_running_loop().unwrap().stats();
            assert_eq!(lp.timers, 0, "{lp:?}");
            assert_eq!(lp.tasks, 1, "only the main task is left: {lp:?}");
            (ring.entries(), ring.available(), rss_start)
        })
        .unwrap();
    let took = begin.elapsed();
    drop(rt);
    std::fs::remove_file(&path).unwrap();
    let rss_end = rss_bytes();
    let rss_half = t.rss_half.get().unwrap();
    println!(
        "soak: {} ops (target {target}, seed {seed:#x}) in {took:.2?}; {} bytes sent, {} received; \
         {} cancels, {} drops; RSS start {} KiB, half {} KiB, end {} KiB",
        t.ops.get(),
        t.sent.get(),
        t.received.get(),
        t.cancels.get(),
        t.drops.get(),
        rss_start / 1024,
        rss_half / 1024,
        rss_end / 1024,
    );
    assert_eq!(t.sent.get(), t.received.get());
    assert!(t.sent.get() > 0 && t.cancels.get() > 0 && t.drops.get() > 0);
    assert_eq!(
        available, ring_entries,
        "every provided buffer back in the ring"
    );
    assert_eq!(open_fds(), fds, "every fd back");
    // Flat: the second half may not grow the heap by more than 10% of
    // what the first half left, plus 8 MiB for the allocator's own
    // bookkeeping (arenas, freed memory it keeps). A leak of one buffer
    // (up to 48 KiB) per 100 operations would grow it by far more at the
    // 1M run.
    let bound = rss_half + rss_half / 10 + 8 * 1024 * 1024;
    assert!(
        rss_end <= bound,
        "RSS grew in the second half: {} KiB -> {} KiB",
        rss_half / 1024,
        rss_end / 1024
    );
}
