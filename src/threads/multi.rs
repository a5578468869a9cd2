//! Thread-per-core: `MultiRuntime`, n loops on n threads, each pinned to a
//! CPU, built by `Runtime::builder().cores(n).build_multi()`.
//!
//! Each core thread pins itself, builds its loop and ring, and reports its
//! `LoopHandle` before any user code runs, so every core's main future
//! starts knowing every other core's handle. Tasks never move between
//! cores; work crosses through `LoopHandle::spawn` (a remote queue plus an
//! `IORING_OP_MSG_RING` wake-up from the sender's ring).
//!
//! # Safety
//!
//! The `unsafe` here is CPU-affinity calls (`sched_getaffinity`,
//! `sched_setaffinity`, `CPU_SET`, `CPU_ISSET`) on `cpu_set_t` values that
//! start all-zero (a valid empty set), with CPU numbers kept below
//! `CPU_SETSIZE`.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll, Waker};
use std::thread::JoinHandle;
use std::time::Duration;

use super::shutdown::Shutdown;
use crate::error::{Error, Result};
use crate::runtime::{LoopHandle, Runtime};

/// What `Builder::build_multi` passes on: the per-loop options.
pub(crate) struct MultiConfig {
    pub(crate) cores: Option<usize>,
    pub(crate) cpus: Option<Vec<usize>>,
    pub(crate) ring_entries: u32,
    pub(crate) debug: bool,
    pub(crate) slow_callback_duration: Duration,
    pub(crate) msg_ring: bool,
    pub(crate) timer_slack: Duration,
    pub(crate) ext_arg: bool,
    /// Each core's ring is set up so (SQPOLL, COOP_TASKRUN, CQ size,
    /// DEFER_TASKRUN, hidden opcodes).
    pub(crate) ring_setup: crate::driver::RingSetup,
    /// Core `i`'s SQPOLL thread goes to `sqpoll_cpus[i % len]`.
    pub(crate) sqpoll_cpus: Option<Vec<u32>>,
}

type Job = Box<dyn FnOnce(&mut Runtime) + Send>;

struct CoreThread {
    jobs: Option<mpsc::Sender<Job>>,
    join: Option<JoinHandle<()>>,
}

/// n event loops, one thread and one ring each, each thread pinned to a
/// CPU (thread-per-core). Made by
/// [`Builder::build_multi`](crate::Builder::build_multi).
///
/// [`run_on_each`](MultiRuntime::run_on_each) runs a main future on every
/// core at once; the loops stay up until every core's main future is done,
/// so cores can hand each other work until the end. Between runs the loops
/// are closed (their handles refuse work). Dropping the runtime stops the
/// threads.
///
/// ```
/// # fn main() -> ringio::Result<()> {
/// let mut rt = ringio::Runtime::builder().cores(2).build_multi()?;
/// let ids = rt.run_on_each(|core| async move {
///     // Ask the next core to compute something and await it here.
///     let next = core.next().clone();
///     let id = core.id();
///     next.spawn(async move { Ok::<_, ringio::Error>(id * 10) }).await
/// })?;
/// assert_eq!(ids.into_iter().collect::<ringio::Result<Vec<_>>>()?, vec![0, 10]);
/// # Ok(())
/// # }
/// ```
pub struct MultiRuntime {
    threads: Vec<CoreThread>,
    handles: Arc<[LoopHandle]>,
    cpus: Vec<usize>,
    shutdown: Shutdown,
}

/// What each core's main future is built from: which core it runs on, and
/// the handles of all cores.
#[derive(Clone)]
pub struct Core {
    id: usize,
    cpu: usize,
    handles: Arc<[LoopHandle]>,
    shutdown: Shutdown,
}

impl Core {
    /// This core's index, `0..count()`.
    pub fn id(&self) -> usize {
        self.id
    }

    /// The CPU this core's thread is pinned to.
    pub fn cpu(&self) -> usize {
        self.cpu
    }

    /// How many cores the runtime has.
    pub fn count(&self) -> usize {
        self.handles.len()
    }

    /// The handle of core `i`, to send it work ([`LoopHandle::spawn`]);
    /// `None` if there is no core `i`.
    pub fn handle(&self, i: usize) -> Option<&LoopHandle> {
        self.handles.get(i)
    }

    /// The handle of the next core (`id() + 1`, wrapping around; this
    /// core's own when it is the only one): the neighbour in a ring of
    /// cores.
    pub fn next(&self) -> &LoopHandle {
        &self.handles[(self.id + 1) % self.handles.len()]
    }

    /// The handles of all cores, in core order.
    pub fn handles(&self) -> &[LoopHandle] {
        &self.handles
    }

    /// The runtime's graceful shutdown: await
    /// [`requested`](Shutdown::requested) to learn when to stop accepting
    /// work, or start one with [`Shutdown::shutdown`].
    pub fn shutdown(&self) -> &Shutdown {
        &self.shutdown
    }
}

impl fmt::Debug for Core {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<Core {} of {} cpu={}>", self.id, self.count(), self.cpu)
    }
}

impl fmt::Debug for MultiRuntime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "<MultiRuntime cores={} cpus={:?}>",
            self.cores(),
            self.cpus
        )
    }
}

/// The CPUs this thread may run on (its affinity mask).
fn allowed_cpus() -> Result<Vec<usize>> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; sched_getaffinity
    // writes at most `size_of::<cpu_set_t>()` bytes into it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: as above; pid 0 is the calling thread.
    let rc =
        unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    Ok((0..libc::CPU_SETSIZE as usize)
        // SAFETY: `cpu` is below CPU_SETSIZE, inside the set.
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .collect())
}

/// Pins the calling thread to `cpu`; an error that says why if refused.
fn pin_to(core: usize, cpu: usize) -> Result<()> {
    if cpu >= libc::CPU_SETSIZE as usize {
        return Err(Error::InvalidArgument(format!(
            "core {core}: CPU {cpu} is beyond the {} CPUs sched_setaffinity can name",
            libc::CPU_SETSIZE
        )));
    }
    // SAFETY: a zeroed cpu_set_t is a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `cpu` < CPU_SETSIZE, checked above.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: a valid set of the size we pass; pid 0 is the calling thread.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        let why = match e.raw_os_error() {
            Some(libc::EINVAL) => {
                "the CPU is not online or not in this process's allowed set (see taskset, cgroup cpuset)"
            }
            Some(libc::EPERM) => "the caller lacks the privilege to change this thread's affinity",
            _ => "the kernel refused",
        };
        return Err(Error::from(std::io::Error::new(
            e.kind(),
            format!("core {core}: cannot pin its thread to CPU {cpu}: {e}: {why}"),
        )));
    }
    Ok(())
}

impl MultiRuntime {
    pub(crate) fn start(config: MultiConfig) -> Result<MultiRuntime> {
        let allowed = allowed_cpus()?;
        let (n, cpus): (usize, Vec<usize>) = match (&config.cpus, config.cores) {
            (Some(list), cores) => {
                if list.is_empty() {
                    return Err(Error::InvalidArgument("cpus(..) was given no CPU".into()));
                }
                let n = cores.unwrap_or(list.len());
                (n, (0..n).map(|i| list[i % list.len()]).collect())
            }
            (None, cores) => {
                let n = match cores {
                    Some(n) => n,
                    None => std::thread::available_parallelism().map_or(1, |n| n.get()),
                };
                if allowed.is_empty() {
                    return Err(Error::InvalidState("this thread may run on no CPU".into()));
                }
                // More cores than CPUs share them round-robin.
                (n, (0..n).map(|i| allowed[i % allowed.len()]).collect())
            }
        };
        if n == 0 {
            return Err(Error::InvalidArgument(
                "cores(0): at least one core is needed".into(),
            ));
        }
        let mut threads = Vec::with_capacity(n);
        let mut handles = Vec::with_capacity(n);
        let mut failure = None;
        for (i, &cpu) in cpus.iter().enumerate() {
            let (ready_tx, ready_rx) = mpsc::channel::<Result<LoopHandle>>();
            let (job_tx, job_rx) = mpsc::channel::<Job>();
            let (entries, debug, slow, msg_ring, ext_arg, slack) = (
                config.ring_entries,
                config.debug,
                config.slow_callback_duration,
                config.msg_ring,
                config.ext_arg,
                config.timer_slack,
            );
            let mut setup = config.ring_setup;
            if let Some(list) = &config.sqpoll_cpus {
                setup.sqpoll_cpu = Some(list[i % list.len()]);
            }
            let spawned = std::thread::Builder::new()
                .name(format!("ringio-core-{i}"))
                .spawn(move || {
                    let built = pin_to(i, cpu).and_then(|()| {
                        Runtime::builder()
                            .ring_entries(entries)
                            .debug(debug)
                            .slow_callback_duration(slow)
                            .msg_ring(msg_ring)
                            .ext_arg(ext_arg)
                            .timer_slack(slack)
                            .ring_setup(setup)
                            .build()
                    });
                    let mut rt = match built {
                        Ok(rt) => rt,
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return;
                        }
                    };
                    let _ = ready_tx.send(Ok(rt.event_loop().handle()));
                    // Jobs until the runtime is dropped (the sender closes).
                    while let Ok(job) = job_rx.recv() {
                        job(&mut rt);
                    }
                });
            let join = match spawned {
                Ok(j) => j,
                Err(e) => {
                    failure = Some(Error::from(e));
                    break;
                }
            };
            match ready_rx.recv() {
                Ok(Ok(h)) => {
                    handles.push(h);
                    threads.push(CoreThread {
                        jobs: Some(job_tx),
                        join: Some(join),
                    });
                }
                Ok(Err(e)) => {
                    let _ = join.join();
                    failure = Some(e);
                    break;
                }
                Err(_) => {
                    let _ = join.join();
                    failure = Some(Error::msg(format!(
                        "core {i}: its thread exited while starting"
                    )));
                    break;
                }
            }
        }
        let handles: Arc<[LoopHandle]> = handles.into();
        let rt = MultiRuntime {
            threads,
            shutdown: Shutdown::new(handles.clone()),
            handles,
            cpus,
        };
        match failure {
            // Dropping `rt` stops the cores already started.
            Some(e) => Err(e),
            None => Ok(rt),
        }
    }

    /// The runtime's graceful shutdown, to start from any thread (a signal
    /// listener, say): see [`Shutdown`]. A shutdown ends the current
    /// [`run_on_each`](MultiRuntime::run_on_each); the next run starts
    /// with none requested.
    pub fn shutdown_handle(&self) -> Shutdown {
        self.shutdown.clone()
    }

    /// How many cores (loops) the runtime runs.
    pub fn cores(&self) -> usize {
        self.threads.len()
    }

    /// The CPU each core is pinned to, in core order.
    pub fn cpus(&self) -> &[usize] {
        &self.cpus
    }

    /// The handles of the cores' loops, in core order: plain threads may
    /// submit work with them while [`run_on_each`](Self::run_on_each) runs.
    pub fn handles(&self) -> &[LoopHandle] {
        &self.handles
    }

    /// Builds a main future on every core with `f(core)` — on the core's
    /// own thread, so the future need not be `Send` — and runs them all at
    /// once, each as the main task of its loop (as [`Runtime::run`]). Blocks
    /// until all are done, then gives each core's output, in core order.
    ///
    /// A core whose main future is done keeps its loop up (serving work
    /// other cores send it) until every core is done; then each loop shuts
    /// down as `run` does (cancels leftover tasks, waits for its thread
    /// work, reaps its ring). `Err` if a core's run failed (its main
    /// future panicked: `Error::Panic`), the first such error in core order.
    pub fn run_on_each<F, Fut, T>(&mut self, f: F) -> Result<Vec<T>>
    where
        F: Fn(Core) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = T> + 'static,
        T: Send + 'static,
    {
        let n = self.cores();
        // Open every loop's queue before any core starts: a core may send
        // work to another whose run has not begun yet (the loops are
        // closed between runs); it waits in that loop's queue.
        for h in self.handles.iter() {
            h.shared.reopen();
        }
        let f = Arc::new(f);
        let latch = Latch::new(n);
        let (out_tx, out_rx) = mpsc::channel::<(usize, Result<T>)>();
        for (i, t) in self.threads.iter().enumerate() {
            let core = Core {
                id: i,
                cpu: self.cpus[i],
                handles: self.handles.clone(),
                shutdown: self.shutdown.clone(),
            };
            let (f, core_latch, core_tx) = (f.clone(), latch.clone(), out_tx.clone());
            let job: Job = Box::new(move |rt: &mut Runtime| {
                let l = core_latch.clone();
                let result = rt.run(async move {
                    // A shutdown's deadline spares the main future: it ends
                    // when the tasks it awaits do.
                    let main = crate::current_task().map(|t| t.id());
                    core.shutdown.set_main(i, main);
                    let out = f(core).await;
                    l.arrive(i);
                    // Serve the other cores until they are done too.
                    l.wait().await;
                    out
                });
                // A main future that panicked never arrived (idempotent).
                core_latch.arrive(i);
                let _ = core_tx.send((i, result));
            });
            let sent = t.jobs.as_ref().map(|tx| tx.send(job).is_ok());
            if sent != Some(true) {
                latch.arrive(i);
                let _ = out_tx.send((
                    i,
                    Err(Error::msg(format!("core {i}: its thread has exited"))),
                ));
            }
        }
        drop(out_tx);
        let mut outs: Vec<Option<Result<T>>> = (0..n).map(|_| None).collect();
        for (i, r) in out_rx.iter().take(n) {
            outs[i] = Some(r);
        }
        for i in 0..n {
            self.shutdown.set_main(i, None);
        }
        self.shutdown.reset();
        outs.into_iter()
            .enumerate()
            .map(|(i, r)| {
                r.unwrap_or_else(|| Err(Error::msg(format!("core {i}: its thread died"))))
            })
            .collect()
    }
}

impl Drop for MultiRuntime {
    fn drop(&mut self) {
        for t in &mut self.threads {
            // Closing the job channel ends the core's thread.
            t.jobs.take();
        }
        for t in &mut self.threads {
            if let Some(j) = t.join.take() {
                let _ = j.join();
            }
        }
    }
}

/// Counts the cores whose main future is done; each core's main awaits the
/// last one. Waking goes through each waiting task's own loop waker (a
/// MSG_RING from the last core's ring).
#[derive(Clone)]
struct Latch {
    inner: Arc<Mutex<LatchState>>,
}

struct LatchState {
    remaining: usize,
    arrived: Vec<bool>,
    wakers: Vec<Waker>,
}

impl Latch {
    fn new(n: usize) -> Latch {
        Latch {
            inner: Arc::new(Mutex::new(LatchState {
                remaining: n,
                arrived: vec![false; n],
                wakers: Vec::new(),
            })),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LatchState> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Core `i` is done (counted once however often it is called).
    fn arrive(&self, i: usize) {
        let wakers = {
            let mut st = self.lock();
            if std::mem::replace(&mut st.arrived[i], true) {
                return;
            }
            st.remaining -= 1;
            if st.remaining > 0 {
                return;
            }
            std::mem::take(&mut st.wakers)
        };
        for w in wakers {
            w.wake();
        }
    }

    fn wait(&self) -> LatchWait {
        LatchWait {
            latch: self.clone(),
        }
    }
}

struct LatchWait {
    latch: Latch,
}

impl Future for LatchWait {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<()> {
        let mut st = self.latch.lock();
        if st.remaining == 0 {
            return Poll::Ready(());
        }
        if !st.wakers.iter().any(|w| w.will_wake(cx.waker())) {
            st.wakers.push(cx.waker().clone());
        }
        Poll::Pending
    }
}
