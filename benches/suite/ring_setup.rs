//! The runtime builder's ring options (issue 14): NOP per-op cost and TCP
//! echo (256 connections × 4 KiB, the tcp_echo client and cell) on the
//! default ring (`SINGLE_ISSUER | DEFER_TASKRUN`), with `coop_taskrun`,
//! with `sqpoll` (1 ms idle, unpinned) and with a 16× CQ
//! (`cq_entries`). The ringio column is the option's figure, the raw
//! column the default ring's from the same run, so ringio/raw reads as
//! "option over default".
//!
//! With SQPOLL the kernel's polling thread does the submitting; its CPU
//! time is not the server thread's, so "server CPU per request" leaves it
//! out (the thread takes a CPU away from the client on this 2-CPU
//! machine, which the req/s figure shows).

use std::time::{Duration, Instant};

use crate::tcp_echo::{Server, one};
use crate::{Better, Row};

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Setup {
    Default,
    Coop,
    Sqpoll,
    BigCq,
}

impl Setup {
    pub fn builder(self) -> ringio::Builder {
        self.make_builder()()
    }

    /// The function that makes this setup's builder (the echo cell's
    /// server takes it as a plain function).
    fn make_builder(self) -> fn() -> ringio::Builder {
        match self {
            Setup::Default => ringio::Runtime::builder,
            Setup::Coop => || ringio::Runtime::builder().coop_taskrun(true),
            Setup::Sqpoll => || ringio::Runtime::builder().sqpoll(Duration::from_millis(1)),
            Setup::BigCq => || ringio::Runtime::builder().cq_entries(16 * 1024),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Setup::Default => "default",
            Setup::Coop => "coop_taskrun",
            Setup::Sqpoll => "sqpoll 1 ms",
            Setup::BigCq => "cq_entries 16384",
        }
    }
}

const N: usize = 128_000;
const BATCH: usize = 32;

fn nop_seq(setup: Setup, n: usize) -> f64 {
    let mut rt = setup.builder().build().unwrap();
    rt.run(async move {
        let t = Instant::now();
        for _ in 0..n {
            ringio::io::nop().await.unwrap();
        }
        t.elapsed().as_nanos() as f64 / n as f64
    })
    .unwrap()
}

fn nop_batch(setup: Setup, n: usize) -> f64 {
    let mut rt = setup.builder().build().unwrap();
    rt.run(async move {
        let t = Instant::now();
        let tasks: Vec<_> = (0..BATCH)
            .map(|_| {
                ringio::create_task(async move {
                    for _ in 0..n / BATCH {
                        ringio::io::nop().await?;
                    }
                    Ok::<(), ringio::Error>(())
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        t.elapsed().as_nanos() as f64 / n as f64
    })
    .unwrap()
}

pub fn run(cfg: &crate::util::Config) -> Vec<Row> {
    let mut rows = Vec::new();
    for setup in [Setup::Coop, Setup::Sqpoll, Setup::BigCq] {
        let name = setup.name();
        let mut seq = Row::new(
            "ring_setup",
            format!("{name}: NOP one at a time"),
            "ns/op",
            Better::Lower,
        );
        let mut bat = Row::new(
            "ring_setup",
            format!("{name}: NOP, 32 in flight"),
            "ns/op",
            Better::Lower,
        );
        let mut rps = Row::new(
            "ring_setup",
            format!("{name}: echo 256 conns × 4 KiB"),
            "req/s",
            Better::Higher,
        );
        let mut cpu = Row::new(
            "ring_setup",
            format!("{name}: echo 256 × 4 KiB, server thread CPU per request"),
            "µs",
            Better::Lower,
        );
        for _ in 0..cfg.reps {
            for (s, pick) in [
                (
                    setup,
                    (|r: &mut Row| &mut r.ringio) as fn(&mut Row) -> &mut Vec<f64>,
                ),
                (Setup::Default, |r: &mut Row| &mut r.raw),
            ] {
                pick(&mut seq).push(nop_seq(s, N / 4));
                pick(&mut bat).push(nop_batch(s, N));
                let c = one(Server::RingioWith(s.make_builder()), 256, 4096, cfg.secs);
                pick(&mut rps).push(c.rps);
                pick(&mut cpu).push(c.server_us_per_req);
            }
        }
        rows.extend([seq, bat, rps, cpu]);
    }
    rows
}
