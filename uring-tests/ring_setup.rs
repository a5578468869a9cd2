//! Integration tests: the runtime builder's ring options (SQPOLL,
//! COOP_TASKRUN, the CQ size) bring up a working ring, or a clear error;
//! `build_multi` hands every core the options, the timer slack too.

mod common;
use common::*;

use std::net::Shutdown;
use std::time::Duration;

use ringio::io::BufRing;
use ringio::net::{TcpListener, TcpStream};
use ringio::{Error, Runtime};

/// Ops, timers, a cancelled op, and a TCP exchange with multishot receive:
/// the ring works.
async fn exercise() -> ringio::Result<()> {
    for _ in 0..100 {
        ringio::io::nop().await?;
    }
    ringio::sleep(Duration::from_millis(2)).await?;
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let c = ringio::create_task(async move { TcpStream::connect(addr).await });
    let (server, _) = listener.accept().await?;
    let client = c.await?;
    // A read dropped mid-flight (cancelled in the kernel).
    poll_once_and_drop(server.read(Vec::with_capacity(8))).await;
    let data = pattern(7, 50_000);
    let (r, _) = client.write_all(data.clone()).await;
    r?;
    client.shutdown(Shutdown::Write).await?;
    let pool = BufRing::new(16, 1024)?;
    let mut rx = server.recv_multishot(&pool);
    let mut got = Vec::new();
    while let Some(b) = rx.next().await {
        got.extend_from_slice(&b?);
    }
    assert!(got == data);
    Ok(())
}

#[test]
fn sqpoll_ring_comes_up_and_works() {
    let _g = serial();
    let mut rt = match Runtime::builder().sqpoll(Duration::from_millis(10)).build() {
        Ok(rt) => rt,
        // A sandbox may forbid it: then the error must say so.
        Err(Error::Unsupported(msg)) => {
            assert!(msg.contains("SQPOLL"), "{msg}");
            eprintln!("SQPOLL not available here: {msg}");
            return;
        }
        Err(e) => panic!("{e:?}"),
    };
    rt.run(async {
        let s = stats();
        assert!(s.sqpoll && !s.defer_taskrun && !s.coop_taskrun);
        exercise().await.unwrap();
        // Idle past the thread's idle time: the next submission wakes it.
        ringio::sleep(Duration::from_millis(50)).await.unwrap();
        exercise().await.unwrap();
    })
    .unwrap();
}

#[test]
fn sqpoll_pinned_to_a_cpu() {
    let _g = serial();
    match Runtime::builder()
        .sqpoll(Duration::from_millis(5))
        .sqpoll_cpu(0)
        .build()
    {
        Ok(mut rt) => rt.run(async { exercise().await.unwrap() }).unwrap(),
        Err(Error::Unsupported(msg)) => {
            assert!(msg.contains("SQPOLL"), "{msg}");
            eprintln!("SQPOLL not available here: {msg}");
        }
        Err(e) => panic!("{e:?}"),
    }
    // A CPU that does not exist: a clear error, not a hang or a panic.
    let r = Runtime::builder()
        .sqpoll(Duration::from_millis(5))
        .sqpoll_cpu(4095)
        .build();
    eprintln!("sqpoll_cpu(4095): {r:?}");
    assert!(
        matches!(r, Err(Error::Unsupported(_) | Error::Io(_))),
        "{r:?}"
    );
}

#[test]
fn coop_taskrun_ring_comes_up_and_works() {
    let _g = serial();
    let mut rt = Runtime::builder().coop_taskrun(true).build().unwrap();
    rt.run(async {
        let s = stats();
        assert!(s.coop_taskrun && !s.defer_taskrun && !s.sqpoll);
        exercise().await.unwrap();
    })
    .unwrap();
}

#[test]
fn cq_size_is_set_and_checked() {
    let _g = serial();
    let mut rt = Runtime::builder()
        .ring_entries(64)
        .cq_entries(4096)
        .build()
        .unwrap();
    rt.run(async {
        assert_eq!(stats().cq_entries, 4096);
        exercise().await.unwrap();
    })
    .unwrap();
    // The default: four times the SQ.
    let mut rt = Runtime::builder().ring_entries(64).build().unwrap();
    assert_eq!(rt.run(async { stats().cq_entries }).unwrap(), 256);
    for n in [1, 63, 65537, u32::MAX] {
        let r = Runtime::builder().ring_entries(64).cq_entries(n).build();
        assert!(matches!(r, Err(Error::InvalidArgument(_))), "{n}: {r:?}");
    }
}

#[test]
fn combinations_the_kernel_refuses_are_clear_errors() {
    let _g = serial();
    let r = Runtime::builder()
        .sqpoll(Duration::from_millis(5))
        .coop_taskrun(true)
        .build();
    assert!(
        matches!(&r, Err(Error::InvalidArgument(m)) if m.contains("sqpoll")),
        "{r:?}"
    );
    let r = Runtime::builder().sqpoll_cpu(0).build();
    assert!(
        matches!(&r, Err(Error::InvalidArgument(m)) if m.contains("sqpoll")),
        "{r:?}"
    );
    // Per-core SQPOLL CPUs without SQPOLL, an empty list, or on one loop.
    let r = Runtime::builder().cores(1).sqpoll_cpus([0]).build_multi();
    assert!(
        matches!(&r, Err(Error::InvalidArgument(m)) if m.contains("sqpoll")),
        "{r:?}"
    );
    let r = Runtime::builder()
        .cores(1)
        .sqpoll(Duration::from_millis(5))
        .sqpoll_cpus([])
        .build_multi();
    assert!(matches!(r, Err(Error::InvalidArgument(_))), "{r:?}");
    let r = Runtime::builder()
        .sqpoll(Duration::from_millis(5))
        .sqpoll_cpus([0])
        .build();
    assert!(matches!(r, Err(Error::InvalidArgument(_))), "{r:?}");
    // A combination the driver refuses, on every core: the first core's
    // error comes back.
    let r = Runtime::builder()
        .cores(2)
        .sqpoll(Duration::from_millis(5))
        .coop_taskrun(true)
        .build_multi();
    assert!(
        matches!(&r, Err(Error::InvalidArgument(m)) if m.contains("sqpoll")),
        "{r:?}"
    );
}

/// What each core's loop reports about its ring: (defer_taskrun, sqpoll,
/// coop_taskrun, cq_entries, ext_arg, a default BufRing is kernel-registered).
fn each_core(mut rt: ringio::MultiRuntime) -> Vec<(bool, bool, bool, u32, bool, bool)> {
    rt.run_on_each(|_core| async {
        let s = stats();
        exercise().await.unwrap();
        let kernel_pool = BufRing::new(4, 256).unwrap().is_kernel();
        (
            s.defer_taskrun,
            s.sqpoll,
            s.coop_taskrun,
            s.cq_entries,
            s.ext_arg,
            kernel_pool,
        )
    })
    .unwrap()
}

#[test]
fn build_multi_sets_up_every_cores_ring_as_asked() {
    let _g = serial();
    // The defaults: DEFER_TASKRUN, EXT_ARG, CQ four times the SQ.
    let rt = Runtime::builder()
        .cores(2)
        .ring_entries(64)
        .build_multi()
        .unwrap();
    assert_eq!(
        each_core(rt),
        vec![(true, false, false, 256, true, true); 2]
    );
    // COOP_TASKRUN, a CQ size, no EXT_ARG, SEND_ZC hidden (so a default
    // BufRing falls back to user space, as on a kernel before 6.0).
    let rt = Runtime::builder()
        .cores(2)
        .ring_entries(64)
        .coop_taskrun(true)
        .cq_entries(2048)
        .ext_arg(false)
        .without_opcodes([io_uring::opcode::SendZc::CODE])
        .build_multi()
        .unwrap();
    assert_eq!(
        each_core(rt),
        vec![(false, false, true, 2048, false, false); 2]
    );
    // A plain ring (as before 6.1).
    let rt = Runtime::builder()
        .cores(2)
        .defer_taskrun(false)
        .build_multi()
        .unwrap();
    assert_eq!(
        each_core(rt),
        vec![(false, false, false, 1024, true, true); 2]
    );
}

/// The kernel's SQPOLL threads of this process (`iou-sqp-<pid>`), with the
/// CPUs each may run on.
fn sqpoll_threads() -> Vec<String> {
    let mut out = Vec::new();
    for t in std::fs::read_dir("/proc/self/task").unwrap() {
        let dir = t.unwrap().path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if comm.starts_with("iou-sqp") {
            let status = std::fs::read_to_string(dir.join("status")).unwrap_or_default();
            let cpus = status
                .lines()
                .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
                .unwrap_or("")
                .trim()
                .to_string();
            out.push(cpus);
        }
    }
    out.sort();
    out
}

#[test]
fn build_multi_with_sqpoll_runs_one_kernel_thread_per_core() {
    let _g = serial();
    assert!(sqpoll_threads().is_empty());
    let cpus: Vec<u32> = (0..2).map(|i| i % nproc() as u32).collect();
    let rt = match Runtime::builder()
        .cores(2)
        .sqpoll(Duration::from_millis(10))
        .sqpoll_cpus(cpus.iter().rev().copied())
        .build_multi()
    {
        Ok(rt) => rt,
        Err(Error::Unsupported(msg)) => {
            assert!(msg.contains("SQPOLL"), "{msg}");
            eprintln!("SQPOLL not available here: {msg}");
            return;
        }
        Err(e) => panic!("{e:?}"),
    };
    // One SQPOLL thread per core's ring, each pinned as asked. The kernel
    // starts a ring's thread and pins it on its own schedule, so a listing
    // taken at once may miss one: wait for it, bounded.
    let mut want: Vec<String> = cpus.iter().map(|c| c.to_string()).collect();
    want.sort();
    let mut seen = sqpoll_threads();
    for _ in 0..400 {
        if seen == want {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
        seen = sqpoll_threads();
    }
    assert_eq!(seen, want);
    assert_eq!(
        each_core(rt),
        vec![(false, true, false, 1024, true, true); 2]
    );
    // The threads go with the rings.
    for _ in 0..200 {
        if sqpoll_threads().is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(
        sqpoll_threads().is_empty(),
        "SQPOLL threads outlived their rings"
    );
}

fn nproc() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// 64 tasks each queue a NOP in the same turn.
async fn sixty_four_nops_in_one_turn() {
    let tasks: Vec<_> = (0..64)
        .map(|_| ringio::create_task(async { ringio::io::nop().await }))
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
}

#[test]
fn submit_batch_hands_queued_ops_to_the_kernel_mid_turn() {
    let _g = serial();
    let mut rt = Runtime::builder().submit_batch(8).build().unwrap();
    rt.run(async {
        let before = stats();
        sixty_four_nops_in_one_turn().await;
        let after = stats();
        // 64 NOPs queued 8 at a time: each eighth goes in at once.
        assert_eq!(after.batch_submits - before.batch_submits, 8);
        assert!(after.enters - before.enters >= 8);
        exercise().await.unwrap();
    })
    .unwrap();
    // The default: one enter per turn, none mid-turn.
    Runtime::new()
        .unwrap()
        .run(async {
            let before = stats();
            sixty_four_nops_in_one_turn().await;
            let after = stats();
            assert_eq!(after.batch_submits, 0);
            assert!(after.enters - before.enters < 8, "{after:?}");
        })
        .unwrap();
}

/// Ring enters on each core while 40 sleeps due 0.5 ms apart run out.
fn enters_for_spread_sleeps(mut rt: ringio::MultiRuntime) -> Vec<u64> {
    rt.run_on_each(|_core| async {
        let lp = ringio::get_running_loop().unwrap();
        let before = lp.stats().driver.enters;
        let sleeps: Vec<_> = (0..40u64)
            .map(|i| {
                let d = Duration::from_micros(1_000 + 500 * i);
                ringio::create_task(async move { ringio::sleep(d).await })
            })
            .collect();
        for s in sleeps {
            s.await.unwrap();
        }
        lp.stats().driver.enters - before
    })
    .unwrap()
}

#[test]
fn build_multi_gives_every_core_the_timer_slack() {
    let _g = serial();
    let precise = enters_for_spread_sleeps(Runtime::builder().cores(2).build_multi().unwrap());
    let slack = Duration::from_millis(20);
    let coalesced = enters_for_spread_sleeps(
        Runtime::builder()
            .cores(2)
            .timer_slack(slack)
            .build_multi()
            .unwrap(),
    );
    // 40 deadlines over 20.5 ms: a wait each without slack, one or two
    // grid steps of 20 ms with it.
    for (p, c) in precise.iter().zip(&coalesced) {
        assert!(
            c * 2 < *p,
            "enters per core: {c} with {slack:?} of slack, {p} without"
        );
    }
}
