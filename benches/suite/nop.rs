//! Per-op overhead on `IORING_OP_NOP`: ringio's `io::nop()` one at a time
//! and from 32 concurrent tasks (one loop turn submits their 32 SQEs at
//! once) against a raw ring doing the same (tokio has no ring: —), and
//! the same 32 tasks on the smallest runtime that has a task per op (the
//! task-per-op floor, [`floor_batch`]).

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use io_uring::{IoUring, opcode};
use slab::Slab;

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

thread_local! {
    /// The floor's run queue (async-task's schedule function must be
    /// `Send`, so it cannot hold an `Rc` to a queue of its own).
    static FLOOR_QUEUE: RefCell<VecDeque<async_task::Runnable>> =
        const { RefCell::new(VecDeque::new()) };
}

/// The floor's ring and its in-flight NOPs: a slab slot per op (its
/// result once reaped, and the waker of the task awaiting it), keyed by
/// the SQE's user_data.
struct FloorRing {
    ring: RefCell<IoUring>,
    ops: RefCell<Slab<(Option<i32>, Option<Waker>)>>,
}

/// A NOP on the floor's ring: queued at its first poll, ready once its
/// completion is reaped.
struct FloorNop<'a> {
    floor: &'a FloorRing,
    key: Option<usize>,
}

impl Future for FloorNop<'_> {
    type Output = i32;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<i32> {
        let this = self.get_mut();
        let mut ops = this.floor.ops.borrow_mut();
        match this.key {
            None => {
                let key = ops.insert((None, Some(cx.waker().clone())));
                push(
                    &mut this.floor.ring.borrow_mut(),
                    &opcode::Nop::new().build().user_data(key as u64),
                );
                this.key = Some(key);
                Poll::Pending
            }
            Some(key) => match ops[key].0 {
                Some(res) => {
                    ops.remove(key);
                    Poll::Ready(res)
                }
                None => {
                    ops[key].1 = Some(cx.waker().clone());
                    Poll::Pending
                }
            },
        }
    }
}

/// The task-per-op floor: `BATCH` bare `async-task` tasks, each awaiting
/// one NOP at a time through the least glue that carries a completion to
/// a task (a slab of result-and-waker slots, the key as user_data), and
/// one ring enter each time the run queue is empty. No cancellation, no
/// deadline, no task object, no context: what a task switch per op costs
/// before any of ringio's semantics, against which ringio's own
/// `ringio_batch` is measured.
pub fn floor_batch(n: usize) -> f64 {
    let floor = Rc::new(FloorRing {
        ring: RefCell::new(raw_ring(256)),
        ops: RefCell::new(Slab::with_capacity(BATCH)),
    });
    let running = Rc::new(Cell::new(BATCH));
    let t = Instant::now();
    let mut tasks = Vec::with_capacity(BATCH);
    for _ in 0..BATCH {
        let (floor, running) = (floor.clone(), running.clone());
        let future = async move {
            for _ in 0..n / BATCH {
                let res = FloorNop {
                    floor: &floor,
                    key: None,
                }
                .await;
                assert_eq!(res, 0);
            }
            running.set(running.get() - 1);
        };
        let (runnable, task) = async_task::spawn_local(future, |r| {
            FLOOR_QUEUE.with(|q| q.borrow_mut().push_back(r))
        });
        runnable.schedule();
        tasks.push(task);
    }
    loop {
        while let Some(r) = FLOOR_QUEUE.with(|q| q.borrow_mut().pop_front()) {
            r.run();
        }
        if running.get() == 0 {
            break;
        }
        let mut ring = floor.ring.borrow_mut();
        ring.submit_and_wait(1).expect("io_uring_enter");
        let mut ops = floor.ops.borrow_mut();
        for cqe in ring.completion() {
            let slot = &mut ops[cqe.user_data() as usize];
            slot.0 = Some(cqe.result());
            if let Some(w) = slot.1.take() {
                w.wake();
            }
        }
    }
    drop(tasks);
    t.elapsed().as_nanos() as f64 / n as f64
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
    // The raw column here is the task-per-op floor, not the bare ring.
    let mut floor = Row::new(
        "nop",
        "NOP, 32 tasks: ringio / task-per-op floor (bare async-task tasks on a raw ring)",
        "ns/op",
        Better::Lower,
    );
    for _ in 0..cfg.reps {
        seq.ringio.push(ringio_seq(N / 4));
        seq.raw.push(raw(N / 4, 1));
        // One ringio run per repetition serves both rows.
        let ringio = ringio_batch(N);
        bat.ringio.push(ringio);
        bat.raw.push(raw(N, BATCH));
        floor.ringio.push(ringio);
        floor.raw.push(floor_batch(N));
    }
    vec![seq, bat, floor]
}
