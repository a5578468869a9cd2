//! Scheduler costs: spawn+join of trivial tasks, two tasks passing a token
//! (wake + switch), and a `sleep(ZERO)` / `yield_now` loop. spawn_join's
//! "raw" column is a bare `async-task` executor: the floor a task costs on
//! this machine with one allocation and no Task object.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use futures_util::task::AtomicWaker;

use crate::util::{tokio_ct, tokio_mt};
use crate::{Better, Row};

const SPAWN_N: usize = 100_000;
const SWITCH_N: usize = 1_000_000;

/// `rounds` times: spawn `n` trivial tasks, then await each, on `rt` (made
/// once and reused, as tokio's runtime is: a loop's run queue and task
/// table keep the room a burst made them grow, and a fresh loop per
/// measurement would time that growth on ringio's side only). Nanoseconds
/// per task.
pub fn ringio_spawn_join(rt: &mut ringio::Runtime, n: usize, rounds: usize) -> f64 {
    rt.run(async move {
        let t = Instant::now();
        for _ in 0..rounds {
            let mut v = Vec::with_capacity(n);
            for i in 0..n {
                v.push(ringio::create_task(
                    async move { Ok::<usize, ringio::Error>(i) },
                ));
            }
            let mut sum = 0usize;
            for t in v {
                sum += t.await.unwrap();
            }
            assert_eq!(sum, n * (n - 1) / 2);
        }
        t.elapsed().as_nanos() as f64 / (n * rounds) as f64
    })
    .expect("spawn_join on a reused runtime")
}

pub fn tokio_spawn_join(rt: &tokio::runtime::Runtime, n: usize, rounds: usize) -> f64 {
    rt.block_on(async move {
        let t = Instant::now();
        for _ in 0..rounds {
            let mut v = Vec::with_capacity(n);
            for i in 0..n {
                v.push(tokio::spawn(async move { i }));
            }
            let mut sum = 0usize;
            for h in v {
                sum += h.await.unwrap();
            }
            assert_eq!(sum, n * (n - 1) / 2);
        }
        t.elapsed().as_nanos() as f64 / (n * rounds) as f64
    })
}

thread_local! {
    static FLOOR_QUEUE: RefCell<VecDeque<async_task::Runnable>> =
        const { RefCell::new(VecDeque::new()) };
}

/// The floor: a bare single-thread executor of `async-task` tasks (one
/// allocation per task, raw-pointer wakers: what smol and async-executor
/// build on). No names, no cancellation, no context: what a task costs
/// here before any of asyncio's Task object.
pub fn floor_spawn_join(n: usize, rounds: usize) -> f64 {
    let t = Instant::now();
    let mut cx = Context::from_waker(Waker::noop());
    for _ in 0..rounds {
        let mut v = Vec::with_capacity(n);
        for i in 0..n {
            let (runnable, task) = async_task::spawn_local(async move { i }, |r| {
                FLOOR_QUEUE.with(|q| q.borrow_mut().push_back(r))
            });
            runnable.schedule();
            v.push(task);
        }
        while let Some(r) = FLOOR_QUEUE.with(|q| q.borrow_mut().pop_front()) {
            r.run();
        }
        let mut sum = 0usize;
        for task in v {
            match pin!(task).poll(&mut cx) {
                Poll::Ready(i) => sum += i,
                Poll::Pending => unreachable!("every task ran"),
            }
        }
        assert_eq!(sum, n * (n - 1) / 2);
    }
    t.elapsed().as_nanos() as f64 / (n * rounds) as f64
}

pub fn spawn_join(cfg: &crate::util::Config) -> Vec<Row> {
    let mut big = Row::new(
        "spawn_join",
        "spawn+join 100k trivial tasks",
        "ns/task",
        Better::Lower,
    );
    let mut warm = Row::new(
        "spawn_join",
        "spawn+join 1k trivial tasks, 100 rounds",
        "ns/task",
        Better::Lower,
    );
    let ct = tokio_ct();
    let mt = tokio_mt();
    // Warm up allocators and code paths once, unrecorded.
    let mut rt = ringio::Runtime::new().expect("ring setup");
    ringio_spawn_join(&mut rt, SPAWN_N / 10, 1);
    tokio_spawn_join(&ct, SPAWN_N / 10, 1);
    floor_spawn_join(SPAWN_N / 10, 1);
    for _ in 0..cfg.reps {
        big.ringio.push(ringio_spawn_join(&mut rt, SPAWN_N, 1));
        big.tokio.push(tokio_spawn_join(&ct, SPAWN_N, 1));
        big.tokio_mt.push(tokio_spawn_join(&mt, SPAWN_N, 1));
        big.raw.push(floor_spawn_join(SPAWN_N, 1));
        warm.ringio.push(ringio_spawn_join(&mut rt, 1000, 100));
        warm.tokio.push(tokio_spawn_join(&ct, 1000, 100));
        warm.tokio_mt.push(tokio_spawn_join(&mt, 1000, 100));
        warm.raw.push(floor_spawn_join(1000, 100));
    }
    vec![big, warm]
}

/// A token two tasks pass back and forth. Runtime-neutral (an atomic and
/// two `AtomicWaker`s), so both runtimes pay the same for it and the
/// difference is their wake → run-queue → poll path.
struct Baton {
    turn: AtomicUsize,
    wakers: [AtomicWaker; 2],
}

struct MyTurn<'a> {
    b: &'a Baton,
    me: usize,
}

impl Future for MyTurn<'_> {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.b.turn.load(Ordering::Acquire) == self.me {
            return Poll::Ready(());
        }
        self.b.wakers[self.me].register(cx.waker());
        if self.b.turn.load(Ordering::Acquire) == self.me {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

async fn player(b: Arc<Baton>, me: usize, passes: usize) {
    for _ in 0..passes {
        MyTurn { b: &b, me }.await;
        b.turn.store(1 - me, Ordering::Release);
        b.wakers[1 - me].wake();
    }
}

fn baton() -> Arc<Baton> {
    Arc::new(Baton {
        turn: AtomicUsize::new(0),
        wakers: [AtomicWaker::new(), AtomicWaker::new()],
    })
}

pub fn ringio_pingpong(n: usize) -> f64 {
    ringio::run(async move {
        let b = baton();
        let t = Instant::now();
        let a = ringio::create_task({
            let b = b.clone();
            async move {
                player(b, 0, n / 2).await;
                Ok::<(), ringio::Error>(())
            }
        });
        let c = ringio::create_task(async move {
            player(b, 1, n / 2).await;
            Ok::<(), ringio::Error>(())
        });
        a.await.unwrap();
        c.await.unwrap();
        t.elapsed().as_nanos() as f64 / n as f64
    })
}

pub fn tokio_pingpong(rt: &tokio::runtime::Runtime, n: usize) -> f64 {
    rt.block_on(async move {
        let b = baton();
        let t = Instant::now();
        let a = tokio::spawn(player(b.clone(), 0, n / 2));
        let c = tokio::spawn(player(b, 1, n / 2));
        a.await.unwrap();
        c.await.unwrap();
        t.elapsed().as_nanos() as f64 / n as f64
    })
}

fn ringio_sleep_zero(n: usize) -> f64 {
    ringio::run(async move {
        let t = Instant::now();
        for _ in 0..n {
            ringio::sleep(Duration::ZERO).await.unwrap();
        }
        t.elapsed().as_nanos() as f64 / n as f64
    })
}

fn tokio_yield(rt: &tokio::runtime::Runtime, n: usize) -> f64 {
    rt.block_on(async move {
        // Inside a spawned task, as ringio's loop runs `run`'s future as one.
        tokio::spawn(async move {
            let t = Instant::now();
            for _ in 0..n {
                tokio::task::yield_now().await;
            }
            t.elapsed().as_nanos() as f64 / n as f64
        })
        .await
        .unwrap()
    })
}

pub fn switch(cfg: &crate::util::Config) -> Vec<Row> {
    let mut pp = Row::new(
        "switch",
        "2 tasks pass a token 1M times",
        "ns/switch",
        Better::Lower,
    );
    let mut sz = Row::new(
        "switch",
        "1M sleep(ZERO) (tokio: yield_now)",
        "ns/yield",
        Better::Lower,
    );
    let ct = tokio_ct();
    ringio_pingpong(SWITCH_N / 10);
    tokio_pingpong(&ct, SWITCH_N / 10);
    for _ in 0..cfg.reps {
        pp.ringio.push(ringio_pingpong(SWITCH_N));
        pp.tokio.push(tokio_pingpong(&ct, SWITCH_N));
        sz.ringio.push(ringio_sleep_zero(SWITCH_N));
        sz.tokio.push(tokio_yield(&ct, SWITCH_N));
    }
    vec![pp, sz]
}
