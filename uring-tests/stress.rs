//! A seeded soak of the task layer: tasks spawned locally and through a
//! `LoopHandle` from other threads, woken from other threads, cancelled
//! and dropped at random moments. At the end every task ended exactly
//! once, every future was dropped exactly once, and the heap is back where
//! it was (a counting allocator: nothing of any task is left).

use std::alloc::{GlobalAlloc, Layout, System};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicIsize, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use ringio::{Error, Runtime, Task};

/// Counts live heap bytes of the whole process.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every method forwards to `System` with the caller's arguments
// unchanged, so `System`'s guarantees hold; the counting is an atomic.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Ordering::Relaxed);
        // SAFETY: forwarded.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Ordering::Relaxed);
        // SAFETY: forwarded.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Ordering::Relaxed);
        // SAFETY: forwarded.
        unsafe { System.alloc_zeroed(l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new as isize - l.size() as isize, Ordering::Relaxed);
        // SAFETY: forwarded.
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// xorshift64*: the same moves for the same seed.
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

/// Wakers handed to the waking threads.
type Mailbox = Arc<Mutex<Vec<Waker>>>;

/// A foreign future (no ringio await point): parks once, with its waker
/// posted to another thread, and is done on its next poll.
struct RemoteGate {
    mailbox: Mailbox,
    posted: bool,
}

impl Future for RemoteGate {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.posted {
            return Poll::Ready(());
        }
        self.posted = true;
        self.mailbox.lock().unwrap().push(cx.waker().clone());
        Poll::Pending
    }
}

/// Counts the drops of the futures that hold one.
struct Ended(Arc<AtomicUsize>);
impl Drop for Ended {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// What one task does: a seeded mix of the ways a task parks. The guard
/// is made with the future, so a task cancelled before its first poll
/// counts too.
fn worker(
    seed: u64,
    mailbox: Mailbox,
    ended: Arc<AtomicUsize>,
) -> impl Future<Output = ringio::Result<u64>> {
    let guard = Ended(ended);
    async move {
        let _guard = guard;
        work(seed, mailbox).await
    }
}

async fn work(seed: u64, mailbox: Mailbox) -> ringio::Result<u64> {
    let mut rng = Rng(seed | 1);
    for _ in 0..rng.below(6) {
        match rng.below(4) {
            0 => ringio::sleep(Duration::from_micros(rng.below(500))).await?,
            1 => ringio::sleep(Duration::ZERO).await?,
            2 => {
                RemoteGate {
                    mailbox: mailbox.clone(),
                    posted: false,
                }
                .await
            }
            _ => ringio::io::nop().await?,
        }
    }
    Ok(seed)
}

struct Totals {
    spawned: usize,
    ended: usize,
    callbacks: usize,
}

/// One soak: `n` local tasks and `n / 4` spawned from other threads.
fn soak(seed: u64, n: usize) -> Totals {
    let mailbox: Mailbox = Arc::new(Mutex::new(Vec::new()));
    let ended = Arc::new(AtomicUsize::new(0));
    let remote_spawned = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let callbacks = Rc::new(std::cell::Cell::new(0usize));

    let mut rt = Runtime::new().expect("ring setup");
    let handle = rt.event_loop().handle();

    // Two threads wake what the tasks posted, in seeded order, with every
    // kind of wake (by value, by reference, a clone woken and dropped).
    let wakers: Vec<_> = (0..2)
        .map(|t| {
            let (mailbox, stop) = (mailbox.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut rng = Rng(seed ^ (t + 7));
                while !stop.load(Ordering::SeqCst) {
                    let batch = std::mem::take(&mut *mailbox.lock().unwrap());
                    for w in batch {
                        match rng.below(3) {
                            0 => w.wake(),
                            1 => w.wake_by_ref(),
                            _ => {
                                // A clone outlives the original.
                                let c = w.clone();
                                drop(w);
                                c.wake()
                            }
                        }
                    }
                    std::thread::yield_now();
                }
            })
        })
        .collect();
    // A thread that spawns tasks onto the loop through its handle.
    let spawner = {
        let (mailbox, ended, handle, remote_spawned) = (
            mailbox.clone(),
            ended.clone(),
            handle.clone(),
            remote_spawned.clone(),
        );
        std::thread::spawn(move || {
            let mut pending = Vec::new();
            for i in 0..n / 4 {
                let (m, e) = (mailbox.clone(), ended.clone());
                let s = seed.wrapping_add(1_000_003 * i as u64);
                // The future is made on the loop's thread (it holds ring
                // ops), unless the loop closed first.
                let made = remote_spawned.clone();
                pending.push(handle.spawn_with(move || {
                    made.fetch_add(1, Ordering::SeqCst);
                    worker(s, m, e)
                }));
            }
            // Each ends: with its value, or cancelled by the loop's end.
            for cf in pending {
                match cf.result(Some(Duration::from_secs(60))) {
                    Ok(_) => {}
                    Err(e) => assert!(!e.is_timeout(), "a remote task never ended"),
                }
            }
        })
    };

    let cbs = callbacks.clone();
    let (m, e) = (mailbox.clone(), ended.clone());
    rt.run(async move {
        let mut rng = Rng(seed);
        let mut kept: Vec<Task<u64>> = Vec::new();
        for i in 0..n {
            let t = ringio::create_task(worker(seed.wrapping_add(i as u64), m.clone(), e.clone()));
            let c = cbs.clone();
            t.add_done_callback(move |_| c.set(c.get() + 1));
            match rng.below(4) {
                0 => {
                    t.cancel();
                }
                1 => drop(t), // detached: runs on
                _ => kept.push(t),
            }
            if rng.below(8) == 0 {
                ringio::sleep(Duration::ZERO).await.unwrap();
            }
            if !kept.is_empty() && rng.below(16) == 0 {
                let k = rng.below(kept.len() as u64) as usize;
                kept.swap_remove(k).cancel_with("soak");
            }
        }
        // Await some, leave the rest to run()'s shutdown.
        for t in kept.into_iter().step_by(2) {
            match t.await {
                Ok(_) => {}
                Err(e) => assert!(e.is_cancelled(), "{e:?}"),
            }
        }
        Ok::<_, Error>(())
    })
    .expect("main task")
    .unwrap();
    spawner.join().unwrap();
    stop.store(true, Ordering::SeqCst);
    wakers.into_iter().for_each(|t| t.join().unwrap());
    drop(rt);
    // Wakers of tasks long gone, never woken: dropping them frees the last
    // of those tasks' memory, on this thread.
    mailbox.lock().unwrap().clear();
    Totals {
        spawned: n + remote_spawned.load(Ordering::SeqCst),
        ended: ended.load(Ordering::SeqCst),
        callbacks: callbacks.get(),
    }
}

#[test]
fn every_task_ends_once_and_nothing_is_left() {
    // A first, larger round warms up what lives for the whole process and
    // keeps its capacity (thread-local tables, the harness's buffers):
    // measured rounds after it must give back every byte.
    let n = 3000;
    soak(1, 2 * n);
    for seed in [0x5eed_u64, 0xfeed_beef, 42] {
        let before = LIVE.load(Ordering::SeqCst);
        let totals = soak(seed, n);
        let after = LIVE.load(Ordering::SeqCst);
        assert_eq!(
            totals.ended, totals.spawned,
            "seed {seed:#x}: every future is dropped exactly once"
        );
        assert_eq!(
            totals.callbacks, n,
            "seed {seed:#x}: one done callback each"
        );
        assert!(
            after == before,
            "seed {seed:#x}: {} bytes left on the heap after the runtime went",
            after - before
        );
    }
}
