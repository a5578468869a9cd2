//! Per-op overhead on `IORING_OP_NOP`: ringio's `io::nop()` one at a time
//! and from 32 concurrent tasks (one loop turn submits their 32 SQEs at
//! once) against a raw ring doing the same (tokio has no ring: —).

use std::time::Instant;

use io_uring::opcode;

use crate::util::{push, raw_ring};
use crate::{Better, Row};

const N: usize = 256_000;
pub const BATCH: usize = 32;

pub fn ringio_seq(n: usize) -> f64 {
    ringio::run(async move {
        let t = Instant::now();
        for _ in 0..n {
            ringio::io::nop().await.unwrap();
        }
        t.elapsed().as_nanos() as f64 / n as f64
    })
}

pub fn ringio_batch(n: usize) -> f64 {
    ringio::run(async move {
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
}

pub fn raw(n: usize, batch: usize) -> f64 {
    let mut ring = raw_ring(256);
    let t = Instant::now();
    for _ in 0..n / batch {
        for _ in 0..batch {
            push(&mut ring, &opcode::Nop::new().build().user_data(1));
        }
        ring.submit_and_wait(batch).unwrap();
        let got = ring.completion().count();
        assert_eq!(got, batch);
    }
    t.elapsed().as_nanos() as f64 / n as f64
}

pub fn run(cfg: &crate::util::Config) -> Vec<Row> {
    let mut seq = Row::new(
        "nop",
        "NOP submitted+reaped one at a time",
        "ns/op",
        Better::Lower,
    );
    let mut bat = Row::new(
        "nop",
        "NOP, 32 in flight (32 tasks / raw batch of 32)",
        "ns/op",
        Better::Lower,
    );
    for _ in 0..cfg.reps {
        seq.ringio.push(ringio_seq(N / 4));
        seq.raw.push(raw(N / 4, 1));
        bat.ringio.push(ringio_batch(N));
        bat.raw.push(raw(N, BATCH));
    }
    vec![seq, bat]
}
