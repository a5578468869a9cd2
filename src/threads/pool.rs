//! `ThreadPool`: the bounded pool of blocking threads behind `to_thread`
//! and `Loop::run_in_executor` (asyncio's default `ThreadPoolExecutor`).
//!
//! Threads start lazily, one per job that finds no idle thread, up to
//! `max_threads`; jobs beyond that wait in a FIFO queue. A thread idle for
//! `keep_alive` retires. Shutting down lets the queued jobs run, then waits
//! (with a bound) for every thread to exit.

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// A job: a closure that does its own result handling.
pub(crate) type Job = Box<dyn FnOnce() + Send>;

/// How long `run` waits for a loop's outstanding thread work by default:
/// asyncio's `THREAD_JOIN_TIMEOUT` (300 s).
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(300);

/// How long an idle pool thread waits for work before it retires.
pub const DEFAULT_KEEP_ALIVE: Duration = Duration::from_secs(10);

static NEXT_POOL: AtomicU64 = AtomicU64::new(1);

/// A bounded pool of threads for blocking work (asyncio's
/// `ThreadPoolExecutor`). Cheap to clone; clones are the same pool.
///
/// Each loop makes its own default pool the first time it needs one
/// ([`crate::to_thread`]); [`crate::Loop::set_default_executor`] installs
/// another, and [`crate::Loop::run_in_executor`] can name one per call.
///
/// ```
/// use std::time::Duration;
///
/// let pool = ringio::ThreadPool::builder()
///     .max_threads(2)
///     .keep_alive(Duration::from_millis(50))
///     .build();
/// ringio::run(async move {
///     let lp = ringio::get_running_loop().unwrap();
///     let n = lp.run_in_executor(Some(&pool), || 6 * 7).await.unwrap();
///     assert_eq!(n, 42);
/// });
/// ```
#[derive(Clone)]
pub struct ThreadPool {
    pub(crate) inner: Arc<PoolInner>,
}

pub(crate) struct PoolInner {
    id: u64,
    state: Mutex<PoolState>,
    /// Idle threads wait here for jobs.
    work: Condvar,
    /// `shutdown` waits here for threads to exit.
    exited: Condvar,
    max_threads: usize,
    keep_alive: Duration,
    shutdown_timeout: Duration,
    name: String,
}

#[derive(Default)]
struct PoolState {
    queue: VecDeque<Job>,
    /// Live threads.
    threads: usize,
    /// Threads waiting for a job.
    idle: usize,
    /// Jobs running now.
    running: usize,
    shutdown: bool,
    started: u64,
    retired: u64,
    completed: u64,
}

/// A snapshot of a pool's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PoolStats {
    /// Threads alive now.
    pub threads: usize,
    /// Of those, waiting for work.
    pub idle: usize,
    /// Jobs running now.
    pub running: usize,
    /// Jobs waiting for a thread.
    pub queued: usize,
    /// Threads started since the pool was made.
    pub started: u64,
    /// Threads that retired after `keep_alive` idle.
    pub retired: u64,
    /// Jobs finished.
    pub completed: u64,
}

/// Options for a [`ThreadPool`].
#[derive(Clone, Debug)]
#[must_use = "a builder does nothing until build() is called"]
pub struct ThreadPoolBuilder {
    max_threads: usize,
    keep_alive: Duration,
    shutdown_timeout: Duration,
    name: String,
}

impl Default for ThreadPoolBuilder {
    fn default() -> Self {
        ThreadPoolBuilder {
            max_threads: default_max_threads(),
            keep_alive: DEFAULT_KEEP_ALIVE,
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
            name: "ringio-blocking".into(),
        }
    }
}

/// asyncio's (`ThreadPoolExecutor`'s) default: `min(32, cpus + 4)`.
fn default_max_threads() -> usize {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    (cpus + 4).min(32)
}

impl ThreadPoolBuilder {
    /// The most threads the pool runs at once (default `min(32, cpus + 4)`,
    /// as asyncio's). At least 1.
    pub fn max_threads(mut self, n: usize) -> Self {
        self.max_threads = n.max(1);
        self
    }

    /// How long an idle thread waits for work before it exits (default 10 s).
    pub fn keep_alive(mut self, d: Duration) -> Self {
        self.keep_alive = d;
        self
    }

    /// How long the end of `run` waits for a loop's work still running on
    /// this pool before it reports and returns (default 300 s, asyncio's).
    pub fn shutdown_timeout(mut self, d: Duration) -> Self {
        self.shutdown_timeout = d;
        self
    }

    /// The prefix of the threads' names (default `ringio-blocking`).
    pub fn name(mut self, prefix: impl Into<String>) -> Self {
        self.name = prefix.into();
        self
    }

    /// Makes the pool. No thread starts until the first job.
    pub fn build(self) -> ThreadPool {
        ThreadPool {
            inner: Arc::new(PoolInner {
                id: NEXT_POOL.fetch_add(1, Ordering::Relaxed),
                state: Mutex::new(PoolState::default()),
                work: Condvar::new(),
                exited: Condvar::new(),
                max_threads: self.max_threads,
                keep_alive: self.keep_alive,
                shutdown_timeout: self.shutdown_timeout,
                name: self.name,
            }),
        }
    }
}

impl Default for ThreadPool {
    fn default() -> Self {
        ThreadPoolBuilder::default().build()
    }
}

impl ThreadPool {
    /// Options for a pool.
    pub fn builder() -> ThreadPoolBuilder {
        ThreadPoolBuilder::default()
    }

    /// A pool of at most `max_threads` threads, other options default.
    pub fn new(max_threads: usize) -> ThreadPool {
        ThreadPoolBuilder::default()
            .max_threads(max_threads)
            .build()
    }

    /// The pool's thread limit.
    pub fn max_threads(&self) -> usize {
        self.inner.max_threads
    }

    /// The bound `run` waits for a loop's outstanding work on this pool.
    pub fn shutdown_timeout(&self) -> Duration {
        self.inner.shutdown_timeout
    }

    /// The pool's counters.
    pub fn stats(&self) -> PoolStats {
        let st = self.inner.lock();
        PoolStats {
            threads: st.threads,
            idle: st.idle,
            running: st.running,
            queued: st.queue.len(),
            started: st.started,
            retired: st.retired,
            completed: st.completed,
        }
    }

    /// Whether [`shutdown`](ThreadPool::shutdown) was called.
    pub fn is_shutdown(&self) -> bool {
        self.inner.lock().shutdown
    }

    /// Runs `f` on a pool thread and returns at once; `f` must handle its
    /// own result. `Err(InvalidState)` after shutdown (asyncio's words:
    /// "cannot schedule new futures after shutdown"); `Err(Io)` if no
    /// thread could be started at all.
    pub fn execute(&self, f: impl FnOnce() + Send + 'static) -> Result<()> {
        self.inner.submit(Box::new(f))
    }

    /// Stops taking jobs, lets the queued ones run, and waits up to
    /// `timeout` (`None`: no limit) for every thread to exit. `true` if
    /// they all did. Threads still busy at the deadline finish their job
    /// and exit on their own.
    pub fn shutdown(&self, timeout: Option<Duration>) -> bool {
        // A timeout too long to represent is no limit.
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        let mut st = self.inner.lock();
        st.shutdown = true;
        self.inner.work.notify_all();
        while st.threads > 0 {
            st = match deadline {
                None => self
                    .inner
                    .exited
                    .wait(st)
                    .unwrap_or_else(|e| e.into_inner()),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return false;
                    }
                    self.inner
                        .exited
                        .wait_timeout(st, d - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
            };
        }
        true
    }
}

impl PartialEq for ThreadPool {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

impl Eq for ThreadPool {}

impl fmt::Debug for ThreadPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.stats();
        write!(
            f,
            "<ThreadPool {} max_threads={} threads={} idle={} queued={}>",
            self.inner.id, self.inner.max_threads, s.threads, s.idle, s.queued
        )
    }
}

impl PoolInner {
    fn lock(&self) -> MutexGuard<'_, PoolState> {
        // A job never runs under the lock, so a poisoned lock only means a
        // panic in our own bookkeeping; the state is still consistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn submit(self: &Arc<Self>, job: Job) -> Result<()> {
        let mut st = self.lock();
        if st.shutdown {
            return Err(Error::InvalidState(
                "cannot schedule new futures after shutdown".into(),
            ));
        }
        st.queue.push_back(job);
        // Start a thread when the idle ones cannot take every queued job
        // (asyncio's `_adjust_thread_count`), within the bound.
        if st.idle < st.queue.len() && st.threads < self.max_threads {
            st.threads += 1;
            st.started += 1;
            let n = st.started;
            drop(st);
            let me = self.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("{}-{}", self.name, n))
                .spawn(move || me.worker());
            if let Err(e) = spawned {
                let mut st = self.lock();
                st.threads -= 1;
                if st.threads == 0 {
                    // Nobody will ever run it: give the job back (dropping
                    // it tells its awaiter) and say why.
                    let job = st.queue.pop_back();
                    drop(st);
                    drop(job);
                    return Err(Error::from(std::io::Error::new(
                        e.kind(),
                        format!("cannot start a thread for blocking work: {e}"),
                    )));
                }
            }
            return Ok(());
        }
        drop(st);
        self.work.notify_one();
        Ok(())
    }

    fn worker(self: Arc<Self>) {
        let mut st = self.lock();
        loop {
            if let Some(job) = st.queue.pop_front() {
                st.running += 1;
                drop(st);
                // The job catches its closure's panic itself; this guard is
                // for a panic in its result hand-off, which must not kill
                // the bookkeeping.
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                st = self.lock();
                st.running -= 1;
                st.completed += 1;
                continue;
            }
            if st.shutdown {
                break;
            }
            st.idle += 1;
            let (guard, timeout) = self
                .work
                .wait_timeout(st, self.keep_alive)
                .unwrap_or_else(|e| e.into_inner());
            st = guard;
            st.idle -= 1;
            if timeout.timed_out() && st.queue.is_empty() && !st.shutdown {
                st.retired += 1;
                break;
            }
        }
        st.threads -= 1;
        drop(st);
        self.exited.notify_all();
    }
}
