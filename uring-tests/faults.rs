//! Fault injection (feature `fault-injection`): the real ring runs, and the
//! driver is made to see what a loaded or misbehaving kernel sends back.
//! For each fault, what the user sees is right, and nothing is lost: every
//! fd back, the op table empty, no MSG_RING send left, no hang (each test
//! runs under a watchdog).
//!
//! What each fault does to a caller (the runtime's choice, documented in
//! `ringio::fault`):
//! - `io_uring_enter` failing with EBUSY, EAGAIN, ENOMEM or EINTR is
//!   transient: the SQEs stay queued and go in at the next enter; the op
//!   completes as if nothing happened.
//! - EINTR on a single read or write surfaces as an `Error::Io` of kind
//!   `Interrupted`, nothing consumed: the caller retries (as with
//!   `read(2)`). The looping calls (`read_exact`, `write_all`) retry it
//!   themselves, as std's do.
//! - ECANCELED that the task did not ask for surfaces as `Error::Io`
//!   (ECANCELED), not as `Error::Cancelled` and not as a hang; the task is
//!   not cancelled.
//! - A short read or write returns the short count; `read_exact` and
//!   `write_all` loop until done.
//! - A failed MSG_RING wake-up falls back to the target's eventfd; a lost
//!   one (reported sent, never posted) delays the work it announced by the
//!   loop's bounded wait at most, and does not slow later wake-ups.

mod common;

use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{block_on, open_fds, pipe, serial, settle, settled_open_fds, stats, tcp_pair};
use io_uring::opcode;
use ringio::fault::{self, Fault};
use ringio::net::{TcpListener, TcpStream};
use ringio::{Error, Runtime};

/// Runs `f` on a thread of its own and fails the test if it takes longer
/// than `limit` (a hang), instead of hanging the test binary.
fn watchdog<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    let t = std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(limit) {
        Ok(v) => {
            t.join().unwrap();
            v
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => match t.join() {
            Err(p) => std::panic::resume_unwind(p),
            Ok(()) => unreachable!(),
        },
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("hung: not done after {limit:?}"),
    }
}

fn errno(e: &Error) -> Option<i32> {
    match e {
        Error::Io(io) => io.raw_os_error(),
        _ => None,
    }
}

/// The end-of-test accounting: nothing in flight, no wake-up send pending.
async fn nothing_left() {
    settle().await;
    let s = stats();
    assert_eq!(s.ops_in_flight, 0, "{s:?}");
    assert_eq!(s.msg_ring_sends_in_flight, 0, "{s:?}");
}

const LIMIT: Duration = Duration::from_secs(60);

#[test]
fn transient_submit_errors_are_retried_and_the_ops_complete() {
    let _g = serial();
    let fds = settled_open_fds();
    watchdog(LIMIT, || {
        // On the default ring, on a ring without DEFER_TASKRUN, and with
        // timed waits through an IORING_OP_TIMEOUT (no EXT_ARG).
        let rings: [fn() -> ringio::Builder; 3] = [
            Runtime::builder,
            || Runtime::builder().defer_taskrun(false),
            || Runtime::builder().ext_arg(false),
        ];
        for (builder, err) in rings.into_iter().flat_map(|b| {
            [libc::EBUSY, libc::EAGAIN, libc::ENOMEM, libc::EINTR].map(move |e| (b, e))
        }) {
            let mut rt = builder().build().unwrap();
            rt.run(async move {
                let (r, w) = pipe();
                let before = fault::injected().enters;
                // The next 8 enters fail: the write's, the read's and the
                // sleep's SQEs wait in the SQ and go in afterwards.
                fault::inject(Fault::Enter(err), 8).unwrap();
                let data = common::pattern(err as u64, 3000);
                let (res, _) = ringio::io::write_all(&w, data.clone()).await;
                res.unwrap();
                let (res, buf) = ringio::io::read(&r, Vec::with_capacity(4096)).await;
                assert_eq!(res.unwrap(), 3000, "errno {err}");
                assert_eq!(buf, data);
                ringio::sleep(Duration::from_millis(2)).await.unwrap();
                // Every enter of this loop failed until the budget was spent.
                assert_eq!(fault::injected().enters - before, 8, "errno {err}");
                fault::clear();
                nothing_left().await;
            })
            .unwrap();
        }
    });
    assert_eq!(open_fds(), fds);
}

#[test]
fn eintr_on_a_read_or_write_is_an_interrupted_error_and_nothing_is_consumed() {
    let _g = serial();
    let fds = settled_open_fds();
    watchdog(LIMIT, || {
        block_on(async {
            // A pipe read: Interrupted, and the bytes are still there.
            let (r, w) = pipe();
            let (res, _) = ringio::io::write_all(&w, b"hello".to_vec()).await;
            res.unwrap();
            fault::inject(
                Fault::Complete {
                    opcode: opcode::Read::CODE,
                    errno: libc::EINTR,
                },
                1,
            )
            .unwrap();
            let (res, buf) = ringio::io::read(&r, Vec::with_capacity(16)).await;
            let e = res.unwrap_err();
            assert_eq!(errno(&e), Some(libc::EINTR), "{e:?}");
            assert!(buf.is_empty());
            assert_eq!(fault::injected().completions, 1);
            let (res, buf) = ringio::io::read(&r, Vec::with_capacity(16)).await;
            assert_eq!(res.unwrap(), 5);
            assert_eq!(buf, b"hello");

            // A socket: plain read/write surface it; read_exact and
            // write_all retry it.
            let (a, b) = tcp_pair().await;
            fault::inject(
                Fault::Complete {
                    opcode: opcode::Send::CODE,
                    errno: libc::EINTR,
                },
                1,
            )
            .unwrap();
            let (res, _) = a.write(b"abc".to_vec()).await;
            assert_eq!(errno(&res.unwrap_err()), Some(libc::EINTR));
            fault::inject(
                Fault::Complete {
                    opcode: opcode::Send::CODE,
                    errno: libc::EINTR,
                },
                3,
            )
            .unwrap();
            let data = common::pattern(7, 100_000);
            let writer = {
                let data = data.clone();
                ringio::create_task(async move {
                    let (res, _) = a.write_all(data).await;
                    res.map(|()| a)
                })
            };
            fault::inject(
                Fault::Complete {
                    opcode: opcode::Recv::CODE,
                    errno: libc::EINTR,
                },
                3,
            )
            .unwrap();
            let (res, got) = b.read_exact(Vec::with_capacity(100_000)).await;
            res.unwrap();
            assert_eq!(got, data, "every byte, in order, once");
            let a = writer.await.unwrap();
            assert_eq!(fault::injected().completions, 8);
            fault::inject(
                Fault::Complete {
                    opcode: opcode::Recv::CODE,
                    errno: libc::EINTR,
                },
                1,
            )
            .unwrap();
            let (res, _) = a.write_all(b"tail".to_vec()).await;
            res.unwrap();
            let (res, _) = b.read(Vec::with_capacity(16)).await;
            assert_eq!(errno(&res.unwrap_err()), Some(libc::EINTR));
            let (res, buf) = b.read(Vec::with_capacity(16)).await;
            assert_eq!(res.unwrap(), 4);
            assert_eq!(buf, b"tail");
            fault::clear();
            drop((a, b, r, w));
            nothing_left().await;
        })
    });
    assert_eq!(open_fds(), fds);
}

#[test]
fn an_unasked_ecanceled_is_an_error_not_a_cancellation_nor_a_hang() {
    let _g = serial();
    let fds = settled_open_fds();
    watchdog(LIMIT, || {
        block_on(async {
            let (a, b) = tcp_pair().await;
            let (res, _) = a.write_all(b"kept".to_vec()).await;
            res.unwrap();
            let before = stats().ops_canceled_by_kernel;
            fault::inject(
                Fault::Complete {
                    opcode: opcode::Recv::CODE,
                    errno: libc::ECANCELED,
                },
                1,
            )
            .unwrap();
            let task = ringio::create_task(async move {
                let (res, _) = b.read(Vec::with_capacity(16)).await;
                Ok::<_, Error>((res, b))
            });
            let t2 = task.clone();
            let (res, b) = task.await.unwrap();
            assert!(!t2.cancelled());
            let e = res.unwrap_err();
            assert!(!e.is_cancelled(), "{e:?}");
            assert_eq!(errno(&e), Some(libc::ECANCELED), "{e:?}");
            assert_eq!(stats().ops_canceled_by_kernel, before + 1);
            // The bytes were never taken: the next read has them.
            let (res, buf) = b.read(Vec::with_capacity(16)).await;
            assert_eq!(res.unwrap(), 4);
            assert_eq!(buf, b"kept");
            // On an accept: an error, no fd made, and the listener works on.
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            fault::inject(
                Fault::Complete {
                    opcode: opcode::Accept::CODE,
                    errno: libc::ECANCELED,
                },
                1,
            )
            .unwrap();
            let e = listener.accept().await.unwrap_err();
            assert_eq!(errno(&e), Some(libc::ECANCELED), "{e:?}");
            let c = ringio::create_task(async move { TcpStream::connect(addr).await });
            let (s, _) = listener.accept().await.unwrap();
            let c = c.await.unwrap();
            fault::clear();
            drop((a, b, c, s, listener));
            nothing_left().await;
        })
    });
    assert_eq!(open_fds(), fds);
}

#[test]
fn short_reads_and_writes_return_the_short_count_and_the_loops_finish() {
    let _g = serial();
    let fds = settled_open_fds();
    watchdog(LIMIT, || {
        block_on(async {
            let (a, b) = tcp_pair().await;
            // A plain send and recv cut to 3 bytes: the count says so, and
            // the rest is neither sent nor consumed.
            fault::inject(
                Fault::Short {
                    opcode: opcode::Send::CODE,
                    max: 3,
                },
                1,
            )
            .unwrap();
            let (res, _) = a.write(b"abcdefgh".to_vec()).await;
            assert_eq!(res.unwrap(), 3);
            fault::inject(
                Fault::Short {
                    opcode: opcode::Recv::CODE,
                    max: 2,
                },
                1,
            )
            .unwrap();
            let (res, buf) = b.read(Vec::with_capacity(16)).await;
            assert_eq!(res.unwrap(), 2);
            assert_eq!(buf, b"ab");
            let (res, buf) = b.read(Vec::with_capacity(16)).await;
            assert_eq!(res.unwrap(), 1);
            assert_eq!(buf, b"c");

            // write_all and read_exact through hundreds of short transfers.
            let before = fault::injected().shortened;
            fault::inject(
                Fault::Short {
                    opcode: opcode::Send::CODE,
                    max: 977,
                },
                u32::MAX,
            )
            .unwrap();
            fault::inject(
                Fault::Short {
                    opcode: opcode::Recv::CODE,
                    max: 1493,
                },
                u32::MAX,
            )
            .unwrap();
            let data = common::pattern(11, 300_000);
            let writer = {
                let data = data.clone();
                ringio::create_task(async move {
                    let (res, _) = a.write_all(data).await;
                    res.map(|()| a)
                })
            };
            let (res, got) = b.read_exact(Vec::with_capacity(300_000)).await;
            res.unwrap();
            assert_eq!(got, data);
            let a = writer.await.unwrap();
            let shortened = fault::injected().shortened - before;
            assert!(shortened >= 300_000 / 1493, "{shortened}");

            // File reads and writes at offsets.
            let dir = std::env::temp_dir().join(format!("ringio-faults-{}", std::process::id()));
            let file = ringio::fs::File::options()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(&dir)
                .await
                .unwrap();
            fault::clear();
            fault::inject(
                Fault::Short {
                    opcode: opcode::Write::CODE,
                    max: 100,
                },
                u32::MAX,
            )
            .unwrap();
            let (res, _) = file.write_at(data[..1000].to_vec(), 0).await;
            assert_eq!(res.unwrap(), 100);
            let (res, _) = file.write_all_at(data[..5000].to_vec(), 0).await;
            res.unwrap();
            fault::clear();
            fault::inject(
                Fault::Short {
                    opcode: opcode::Read::CODE,
                    max: 64,
                },
                1,
            )
            .unwrap();
            let (res, buf) = file.read_at(Vec::with_capacity(5000), 10).await;
            assert_eq!(res.unwrap(), 64);
            assert_eq!(buf, &data[10..74]);
            let (res, buf) = file.read_at(Vec::with_capacity(5000), 0).await;
            assert_eq!(res.unwrap(), 5000);
            assert_eq!(buf, &data[..5000]);
            file.close().await.unwrap();
            std::fs::remove_file(&dir).unwrap();
            fault::clear();
            drop((a, b));
            nothing_left().await;
        })
    });
    assert_eq!(open_fds(), fds);
}

#[test]
fn a_dropped_or_cancelled_op_with_an_injected_completion_frees_its_slot() {
    let _g = serial();
    let fds = settled_open_fds();
    watchdog(LIMIT, || {
        block_on(async {
            let (a, b) = tcp_pair().await;
            let b = std::rc::Rc::new(b);
            for i in 0..200u32 {
                fault::inject(
                    Fault::Complete {
                        opcode: opcode::Recv::CODE,
                        errno: if i % 2 == 0 {
                            libc::EINTR
                        } else {
                            libc::ECANCELED
                        },
                    },
                    1,
                )
                .unwrap();
                if i % 3 == 0 {
                    // Dropped mid-flight: the buffer stays in the op table
                    // until the NOP's completion, then goes.
                    common::poll_once_and_drop(b.read(vec![0u8; 64])).await;
                } else {
                    // Cancelled while in flight.
                    let t = ringio::create_task({
                        let b = b.clone();
                        async move {
                            let (res, _) = b.read(Vec::with_capacity(64)).await;
                            res
                        }
                    });
                    if i % 3 == 1 {
                        t.cancel();
                    }
                    let res = t.await;
                    assert!(res.is_err(), "{res:?}");
                }
            }
            fault::clear();
            // Nothing was consumed by any of them.
            let (res, _) = a.write_all(b"end".to_vec()).await;
            res.unwrap();
            let (res, buf) = b.read(Vec::with_capacity(16)).await;
            assert_eq!(res.unwrap(), 3);
            assert_eq!(buf, b"end");
            drop((a, b));
            nothing_left().await;
        })
    });
    assert_eq!(open_fds(), fds);
}

/// `n` round trips from core 0 to core 1, which sleeps (so it is parked in
/// its ring when the work arrives); how long they took and core 1's stats.
fn round_trips(fault: Option<Fault>, n: usize) -> (Duration, u64, ringio::LoopStats) {
    let mut rt = Runtime::builder().cores(2).build_multi().unwrap();
    let outs = rt
        .run_on_each(move |core| async move {
            if core.id() != 0 {
                // Its loop stays up, serving core 0's work, until core 0
                // is done.
                return None;
            }
            let mut begin = Instant::now();
            for round in 0..n + 3 {
                // After three warm-up round trips, core 1 is parked in its
                // ring between them: the next wake-up is the one to fail.
                if round == 3 {
                    if let Some(f) = fault {
                        fault::inject(f, 1).unwrap();
                    }
                    begin = Instant::now();
                }
                let v = core
                    .next()
                    .spawn(async move {
                        ringio::sleep(Duration::from_micros(300)).await?;
                        Ok::<_, Error>((round, ringio::get_running_loop().unwrap().stats()))
                    })
                    .await
                    .unwrap();
                assert_eq!(v.0, round);
            }
            let took = begin.elapsed();
            let last = core
                .next()
                .spawn(async { Ok::<_, Error>(ringio::get_running_loop().unwrap().stats()) })
                .await
                .unwrap();
            nothing_left().await;
            Some((took, fault::injected().msg_rings, last))
        })
        .unwrap();
    outs.into_iter().flatten().next().unwrap()
}

#[test]
fn a_failed_msg_ring_wakeup_falls_back_to_the_eventfd() {
    let _g = serial();
    let fds = settled_open_fds();
    let (took, injected, last) = watchdog(LIMIT, || {
        round_trips(Some(Fault::MsgRing(libc::EOVERFLOW)), 20)
    });
    println!("20 round trips with a failed MSG_RING: {took:?}; core 1: {last:?}");
    assert_eq!(injected, 1, "the fault was injected");
    // The failed send was retried through core 1's eventfd.
    assert!(last.wakeups_eventfd >= 1, "{last:?}");
    assert!(last.wakeups_msg_ring >= 19, "{last:?}");
    // Without the fallback, the wake-up would wait for core 1's bounded
    // wait (1 s); with it, 20 round trips take milliseconds. Generous.
    assert!(took < Duration::from_millis(900), "{took:?}");
    assert_eq!(open_fds(), fds);
}

#[test]
fn a_lost_msg_ring_wakeup_delays_one_round_trip_at_most_by_the_bound() {
    let _g = serial();
    let fds = settled_open_fds();
    let (took, injected, last) = watchdog(LIMIT, || round_trips(Some(Fault::MsgRing(0)), 20));
    println!("20 round trips with a lost MSG_RING: {took:?}; core 1: {last:?}");
    assert_eq!(injected, 1, "the fault was injected");
    // The lost wake-up costs at most core 1's bounded wait (1 s) once;
    // the 19 round trips after it must not each wait for the bound.
    assert!(took < Duration::from_secs(4), "{took:?}");
    assert!(last.wakeups_msg_ring >= 19, "{last:?}");
    assert_eq!(open_fds(), fds);
}

#[test]
fn random_faults_on_a_busy_stream_lose_and_duplicate_nothing() {
    let _g = serial();
    let fds = settled_open_fds();
    let seed: u64 = std::env::var("RINGIO_FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed);
    watchdog(LIMIT, move || {
        block_on(async move {
            let (a, b) = tcp_pair().await;
            let (r, w) = pipe();
            for (i, f) in [
                Fault::Enter(libc::EAGAIN),
                Fault::Enter(libc::EBUSY),
                Fault::Short {
                    opcode: opcode::Send::CODE,
                    max: 1 + (seed % 700) as u32,
                },
                Fault::Short {
                    opcode: opcode::Recv::CODE,
                    max: 1 + (seed % 1100) as u32,
                },
                Fault::Complete {
                    opcode: opcode::Send::CODE,
                    errno: libc::EINTR,
                },
                Fault::Complete {
                    opcode: opcode::Recv::CODE,
                    errno: libc::EINTR,
                },
                Fault::Short {
                    opcode: opcode::Write::CODE,
                    max: 10,
                },
                Fault::Complete {
                    opcode: opcode::Read::CODE,
                    errno: libc::EINTR,
                },
            ]
            .into_iter()
            .enumerate()
            {
                fault::inject_randomly(f, 3, seed + i as u64).unwrap();
            }
            let total = 1 << 20;
            let data = common::pattern(seed, total);
            let writer = {
                let data = data.clone();
                ringio::create_task(async move {
                    let mut off = 0;
                    while off < data.len() {
                        let end = (off + 8192).min(data.len());
                        let (res, _) = a.write_all(data[off..end].to_vec()).await;
                        res?;
                        // A pipe write and read with faults too.
                        let (res, _) =
                            ringio::io::write_all(&w, data[off..off + 64].to_vec()).await;
                        res?;
                        off = end;
                    }
                    Ok::<_, Error>((a, w))
                })
            };
            let pipe_reader = ringio::create_task(async move {
                let mut piped = Vec::new();
                loop {
                    let (res, buf) = ringio::io::read(&r, Vec::with_capacity(4096)).await;
                    match res {
                        Ok(0) => return Ok::<_, Error>(piped),
                        Ok(_) => piped.extend_from_slice(&buf),
                        Err(e) if errno(&e) == Some(libc::EINTR) => {}
                        Err(e) => return Err(e),
                    }
                }
            });
            let mut got = Vec::with_capacity(total);
            while got.len() < total {
                let (res, buf) = b.read(Vec::with_capacity(16384)).await;
                match res {
                    Ok(0) => panic!("end of stream after {} bytes", got.len()),
                    Ok(_) => got.extend_from_slice(&buf),
                    Err(e) if errno(&e) == Some(libc::EINTR) => {}
                    Err(e) => panic!("{e:?}"),
                }
            }
            assert_eq!(got.len(), total);
            assert!(got == data, "the stream came through whole and in order");
            let (a, w) = writer.await.unwrap();
            drop(w);
            let piped = pipe_reader.await.unwrap();
            let expect: Vec<u8> = (0..total)
                .step_by(8192)
                .flat_map(|off| data[off..off + 64].iter().copied())
                .collect();
            assert!(piped == expect, "every piped byte read once, in order");
            let n = fault::injected();
            fault::clear();
            assert!(
                n.enters > 0 && n.completions > 0 && n.shortened > 0,
                "{n:?}"
            );
            drop((a, b));
            nothing_left().await;
        })
    });
    assert_eq!(open_fds(), fds);
}

#[test]
fn faults_that_cannot_be_injected_are_invalid_arguments() {
    let bad = [
        Fault::Enter(libc::EBADF),
        Fault::Short {
            opcode: opcode::Nop::CODE,
            max: 10,
        },
        Fault::Short {
            opcode: opcode::Read::CODE,
            max: 0,
        },
        Fault::Complete {
            opcode: opcode::Read::CODE,
            errno: 0,
        },
        Fault::MsgRing(-1),
    ];
    for f in bad {
        let e = fault::inject(f, 1).unwrap_err();
        assert!(matches!(e, Error::InvalidArgument(_)), "{f:?}: {e:?}");
    }
    let e = fault::inject_randomly(Fault::Enter(libc::EAGAIN), 0, 1).unwrap_err();
    assert!(matches!(e, Error::InvalidArgument(_)), "{e:?}");
    assert_eq!(
        fault::injected(),
        fault::Injected::default(),
        "nothing was armed"
    );
}

#[test]
fn an_op_with_a_linked_timeout_takes_its_injected_result_at_once() {
    let _g = serial();
    let fds = settled_open_fds();
    watchdog(LIMIT, || {
        block_on(async {
            let (r, w) = pipe();
            // The NOP that replaces the read keeps the link: its
            // LINK_TIMEOUT is cancelled with it, not left to fire.
            fault::inject(
                Fault::Complete {
                    opcode: opcode::Read::CODE,
                    errno: libc::EINTR,
                },
                1,
            )
            .unwrap();
            let begin = Instant::now();
            let (res, _) = ringio::io::read(&r, Vec::with_capacity(16))
                .timeout(Duration::from_secs(20))
                .await;
            assert_eq!(errno(&res.unwrap_err()), Some(libc::EINTR));
            assert!(begin.elapsed() < Duration::from_secs(10));
            // A shortened read with a deadline reads what it may.
            let (res, _) = ringio::io::write_all(&w, b"0123456789".to_vec()).await;
            res.unwrap();
            fault::inject(
                Fault::Short {
                    opcode: opcode::Read::CODE,
                    max: 4,
                },
                1,
            )
            .unwrap();
            let (res, buf) = ringio::io::read(&r, Vec::with_capacity(16))
                .timeout(Duration::from_secs(20))
                .await;
            assert_eq!(res.unwrap(), 4);
            assert_eq!(buf, b"0123");
            // And one that times out still times out.
            let (res, _) = ringio::io::read(&r, Vec::with_capacity(16))
                .timeout(Duration::from_millis(20))
                .await;
            assert_eq!(res.unwrap(), 6, "the rest was still there");
            let (res, _) = ringio::io::read(&r, Vec::with_capacity(16))
                .timeout(Duration::from_millis(20))
                .await;
            assert!(res.unwrap_err().is_timeout());
            drop((r, w));
            nothing_left().await;
        })
    });
    assert_eq!(open_fds(), fds);
}
