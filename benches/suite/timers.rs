//! Timers (issues 6 and 8): wake-up lateness of 100k (and 10k) concurrent
//! sleeps of 1–100 ms, and the cost of arming and cancelling one timer per simulated
//! request with 100 / 10,000 / 100,000 timers pending.
//!
//! The raw ring's rows use one kernel `IORING_OP_TIMEOUT` per sleep and
//! `IORING_OP_TIMEOUT_REMOVE` to cancel: they show why ringio keeps its
//! timers in userspace (the kernel searches its timeout list linearly).

use std::pin::pin;
use std::time::{Duration, Instant};

use io_uring::{opcode, types};

use crate::util::{poll_once, push, raw_ring, thread_cpu, tokio_ct};
use crate::{Better, Row};

/// Sleep `i` lasts 1..=100 ms, spread evenly.
fn delay_of(i: usize) -> Duration {
    Duration::from_millis(1 + ((i * 7919) % 100) as u64)
}

/// What one lateness run gives.
struct Lateness {
    /// Wall time from the first spawn to the last wake-up, minus 100 ms.
    over_floor_ms: f64,
    mean_all_us: f64,
    mean_50_100_us: f64,
    /// Thread CPU time of the whole run, per sleep.
    cpu_ns_per_sleep: f64,
}

fn summarize(late_ns: &[u64], total: Duration, cpu: Duration) -> Lateness {
    let mut all = 0f64;
    let (mut s2, mut n2) = (0f64, 0usize);
    for (i, &l) in late_ns.iter().enumerate() {
        all += l as f64;
        if delay_of(i) >= Duration::from_millis(50) {
            s2 += l as f64;
            n2 += 1;
        }
    }
    Lateness {
        over_floor_ms: (total.as_secs_f64() - 0.1) * 1e3,
        mean_all_us: all / late_ns.len() as f64 / 1e3,
        mean_50_100_us: s2 / n2 as f64 / 1e3,
        cpu_ns_per_sleep: cpu.as_nanos() as f64 / late_ns.len() as f64,
    }
}

/// On a loop with `Builder::timer_slack(slack)` (zero: the default).
fn ringio_lateness(sleeps: usize, slack: Duration) -> Lateness {
    let mut rt = ringio::Runtime::builder()
        .timer_slack(slack)
        .build()
        .expect("ringio runtime");
    rt.run(async move {
        let cpu0 = thread_cpu();
        let t0 = Instant::now();
        let mut v = Vec::with_capacity(sleeps);
        for i in 0..sleeps {
            let d = delay_of(i);
            v.push(ringio::create_task(async move {
                let t = Instant::now();
                ringio::sleep(d).await?;
                Ok::<u64, ringio::Error>(t.elapsed().saturating_sub(d).as_nanos() as u64)
            }));
        }
        let mut late = Vec::with_capacity(sleeps);
        for t in v {
            late.push(t.await.unwrap());
        }
        summarize(&late, t0.elapsed(), thread_cpu() - cpu0)
    })
    .expect("lateness run")
}

fn tokio_lateness(rt: &tokio::runtime::Runtime, sleeps: usize) -> Lateness {
    rt.block_on(async move {
        let cpu0 = thread_cpu();
        let t0 = Instant::now();
        let mut v = Vec::with_capacity(sleeps);
        for i in 0..sleeps {
            let d = delay_of(i);
            v.push(tokio::spawn(async move {
                let t = Instant::now();
                tokio::time::sleep(d).await;
                t.elapsed().saturating_sub(d).as_nanos() as u64
            }));
        }
        let mut late = Vec::with_capacity(sleeps);
        for h in v {
            late.push(h.await.unwrap());
        }
        summarize(&late, t0.elapsed(), thread_cpu() - cpu0)
    })
}

/// One kernel timeout per sleep, submitted in batches of 32 (the arming
/// time of a batch is taken after its submit), reaped as they fire.
fn raw_lateness(sleeps: usize) -> Lateness {
    let mut ring = raw_ring(4096);
    let cpu0 = thread_cpu();
    let t0 = Instant::now();
    let ts: Vec<types::Timespec> = (0..sleeps)
        .map(|i| types::Timespec::from(delay_of(i)))
        .collect();
    let mut armed = vec![t0; sleeps];
    let mut late = vec![0u64; sleeps];
    let mut done = 0usize;
    let reap = |ring: &mut io_uring::IoUring, late: &mut Vec<u64>, armed: &[Instant]| {
        let now = Instant::now();
        let mut n = 0;
        for cqe in ring.completion() {
            let i = cqe.user_data() as usize;
            late[i] = now
                .saturating_duration_since(armed[i] + delay_of(i))
                .as_nanos() as u64;
            n += 1;
        }
        n
    };
    for start in (0..sleeps).step_by(32) {
        let end = (start + 32).min(sleeps);
        for (i, t) in ts.iter().enumerate().take(end).skip(start) {
            let sqe = opcode::Timeout::new(t).build().user_data(i as u64);
            push(&mut ring, &sqe);
        }
        // Submit and run completions already due (GETEVENTS, no wait:
        // with DEFER_TASKRUN completions are posted only inside an enter).
        // SAFETY: a plain io_uring_enter without an argument struct.
        unsafe {
            ring.submitter()
                .enter::<libc::sigset_t>(32, 0, io_uring::EnterFlags::GETEVENTS.bits(), None)
                .unwrap();
        }
        let now = Instant::now();
        armed[start..end].fill(now);
        done += reap(&mut ring, &mut late, &armed);
    }
    while done < sleeps {
        ring.submit_and_wait(1).unwrap();
        done += reap(&mut ring, &mut late, &armed);
    }
    summarize(&late, t0.elapsed(), thread_cpu() - cpu0)
}

fn ringio_arm_cancel(pending: usize, iters: usize) -> (f64, f64) {
    ringio::run(async move {
        // `pending` sleeps armed and kept (polled once, never completed).
        let mut keep: Vec<std::pin::Pin<Box<ringio::Sleep>>> = Vec::with_capacity(pending);
        for i in 0..pending {
            let mut s = Box::pin(ringio::sleep(Duration::from_secs(100 + (i % 1000) as u64)));
            poll_once(s.as_mut()).await;
            keep.push(s);
        }
        let t = Instant::now();
        for i in 0..iters {
            let s = pin!(ringio::sleep(Duration::from_millis(50 + (i % 100) as u64)));
            poll_once(s).await;
        }
        let sleep_ns = t.elapsed().as_nanos() as f64 / iters as f64;
        let lp = ringio::get_running_loop().unwrap();
        let t = Instant::now();
        for i in 0..iters {
            lp.call_later(Duration::from_millis(50 + (i % 100) as u64), || {})
                .cancel();
        }
        let call_ns = t.elapsed().as_nanos() as f64 / iters as f64;
        drop(keep);
        (sleep_ns, call_ns)
    })
}

fn tokio_arm_cancel(rt: &tokio::runtime::Runtime, pending: usize, iters: usize) -> f64 {
    rt.block_on(async move {
        let mut keep: Vec<std::pin::Pin<Box<tokio::time::Sleep>>> = Vec::with_capacity(pending);
        for i in 0..pending {
            let mut s = Box::pin(tokio::time::sleep(Duration::from_secs(
                100 + (i % 1000) as u64,
            )));
            poll_once(s.as_mut()).await;
            keep.push(s);
        }
        let t = Instant::now();
        for i in 0..iters {
            // What `select!` does with a sleep that loses: poll, then drop.
            let s = pin!(tokio::time::sleep(Duration::from_millis(
                50 + (i % 100) as u64
            )));
            poll_once(s).await;
        }
        t.elapsed().as_nanos() as f64 / iters as f64
    })
}

/// `pending` kernel timeouts armed, then `iters` × (TIMEOUT + TIMEOUT_REMOVE
/// of it), both CQEs reaped each time.
fn raw_arm_cancel(pending: usize, iters: usize) -> f64 {
    let mut ring = raw_ring(1024);
    let far = types::Timespec::new().sec(100);
    for i in 0..pending {
        push(
            &mut ring,
            &opcode::Timeout::new(&far).build().user_data(i as u64),
        );
    }
    ring.submit().unwrap();
    let mid = types::Timespec::new().sec(50);
    let t = Instant::now();
    for i in 0..iters {
        let ud = (1u64 << 40) + i as u64;
        push(&mut ring, &opcode::Timeout::new(&mid).build().user_data(ud));
        push(
            &mut ring,
            &opcode::TimeoutRemove::new(ud).build().user_data(u64::MAX),
        );
        let mut got = 0;
        while got < 2 {
            ring.submit_and_wait(2 - got).unwrap();
            got += ring.completion().count();
        }
    }
    t.elapsed().as_nanos() as f64 / iters as f64
}

pub fn run(cfg: &crate::util::Config) -> Vec<Row> {
    let ct = tokio_ct();
    let mut rows = Vec::new();
    for sleeps in [100_000usize, 10_000] {
        let k = sleeps / 1000;
        let mut over = Row::new(
            "timers",
            format!("{k}k sleeps 1–100 ms: wall over 100 ms floor"),
            "ms",
            Better::Lower,
        );
        let mut mean = Row::new(
            "timers",
            format!("{k}k sleeps: mean lateness"),
            "µs",
            Better::Lower,
        );
        let mut mean2 = Row::new(
            "timers",
            format!("{k}k sleeps: mean lateness of 50–100 ms ones"),
            "µs",
            Better::Lower,
        );
        let mut cpu = Row::new(
            "timers",
            format!("{k}k sleeps: CPU per sleep (spawn, arm, fire, join)"),
            "ns",
            Better::Lower,
        );
        for rep in 0..cfg.reps {
            for j in 0..3 {
                // Rotate the order between repetitions.
                let which = (j + rep) % 3;
                let l = match which {
                    0 => ringio_lateness(sleeps, Duration::ZERO),
                    1 => tokio_lateness(&ct, sleeps),
                    _ => raw_lateness(sleeps),
                };
                let pick = |r: &mut Row, v: f64| match which {
                    0 => r.ringio.push(v),
                    1 => r.tokio.push(v),
                    _ => r.raw.push(v),
                };
                pick(&mut over, l.over_floor_ms);
                pick(&mut mean, l.mean_all_us);
                pick(&mut mean2, l.mean_50_100_us);
                pick(&mut cpu, l.cpu_ns_per_sleep);
            }
        }
        rows.extend([over, mean, mean2, cpu]);
    }
    // The same 10k sleeps on a loop with a 1 ms timer slack (tokio's timer
    // resolution), against tokio in the same repetitions.
    let slack = Duration::from_millis(1);
    let mut mean = Row::new(
        "timers",
        "10k sleeps, ringio timer_slack(1 ms): mean lateness",
        "µs",
        Better::Lower,
    );
    let mut cpu = Row::new(
        "timers",
        "10k sleeps, ringio timer_slack(1 ms): CPU per sleep",
        "ns",
        Better::Lower,
    );
    for rep in 0..cfg.reps {
        for j in 0..2 {
            let ringio_first = (j + rep) % 2 == 0;
            let l = if ringio_first {
                ringio_lateness(10_000, slack)
            } else {
                tokio_lateness(&ct, 10_000)
            };
            let (m, c) = if ringio_first {
                (&mut mean.ringio, &mut cpu.ringio)
            } else {
                (&mut mean.tokio, &mut cpu.tokio)
            };
            m.push(l.mean_all_us);
            c.push(l.cpu_ns_per_sleep);
        }
    }
    rows.extend([mean, cpu]);
    for (pending, raw_iters) in [(100usize, 4000usize), (10_000, 200), (100_000, 12)] {
        let mut arm = Row::new(
            "timers",
            format!("arm+cancel, {pending} pending (sleep poll+drop; raw: TIMEOUT+REMOVE)"),
            "ns",
            Better::Lower,
        );
        let mut call = Row::new(
            "timers",
            format!("call_later+cancel, {pending} pending"),
            "ns",
            Better::Lower,
        );
        for _ in 0..cfg.reps {
            let (s, c) = ringio_arm_cancel(pending, 100_000);
            arm.ringio.push(s);
            call.ringio.push(c);
            arm.tokio.push(tokio_arm_cancel(&ct, pending, 100_000));
            arm.raw.push(raw_arm_cancel(pending, raw_iters));
        }
        rows.push(arm);
        rows.push(call);
    }
    rows
}
