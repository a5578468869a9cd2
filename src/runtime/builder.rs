//! `Runtime` and its builder: a loop on the calling thread, and `run`.
//!
//! # Safety
//!
//! The `unsafe` here is `prctl(PR_SET_TIMERSLACK)`, which takes and returns
//! plain integers and affects only the calling thread.

use std::future::Future;
use std::rc::Rc;
use std::time::Duration;

use super::context::{self, LoopGuard};
use super::event_loop::{LoopConfig, LoopInner};
use super::handle::{Loop, LoopStats};
use super::report::{Logger, Report, stderr_logger};
use crate::error::{Error, Result};
use crate::task::{Context, Task};

/// Default ring size: enough SQEs for a busy turn without flushing mid-turn.
pub const DEFAULT_RING_ENTRIES: u32 = 256;

/// Options for a [`Runtime`].
///
/// # Ring setup for `O_DIRECT` storage
///
/// With many `O_DIRECT` reads in flight (dozens of tasks, one read
/// each), a small submission queue helps: `ring_entries(8).cq_entries(64)`
/// (the CQ at least twice the operations in flight). The loop hands what
/// its tasks queued to the kernel once per turn, so a turn woken by a
/// burst of completions resubmits the whole burst at its end, and the
/// device's queue runs low meanwhile. A queue of 8 goes to the kernel as
/// soon as it fills, so the reads reach the device 8 at a time during the
/// turn. Measured with 4 KiB random reads at queue depth 32 on a virtio
/// disk (the `fixed_read` benchmark; `benches/RESULTS.md`), this reached
/// 0.96–1.11× fio's io_uring engine in five runs, 10–21 % above the
/// default ring in each (0.85–1.01×), for about the same CPU per read
/// (`ring_entries(2)` enters too often: up to 30 % more CPU). Sockets were not measured with
/// a small queue; keep the default there.
///
/// [`submit_batch(8)`](Builder::submit_batch) does the same on purpose
/// and keeps the full-size queue: it hands the queued reads to the kernel
/// every 8, mid-turn (0.90–1.05× fio in the same benchmark, at the same
/// CPU per read).
///
/// ```
/// let rt = ringio::Runtime::builder().submit_batch(8).build()?;
/// # drop(rt);
/// # Ok::<(), ringio::Error>(())
/// ```
///
/// The ring's setup flags made no difference to these reads.
/// [`coop_taskrun`](Builder::coop_taskrun) and
/// [`defer_taskrun(false)`](Builder::defer_taskrun) stayed within the
/// noise of the default, and fio sets its ring up like the default
/// (`SINGLE_ISSUER | DEFER_TASKRUN`, plus a `COOP_TASKRUN` that changes
/// nothing next to them). [`sqpoll`](Builder::sqpoll) needs a CPU of its
/// own for its kernel thread: on 2 CPUs shared with other work it read at
/// 0.5–0.9× fio. There is no `IORING_SETUP_IOPOLL` option (fio's
/// `--hipri`). It needs a device with polled queues
/// (`/sys/block/DEV/queue/io_poll` reads 1), and a ring that carries
/// block I/O only, while the loop's ring also carries the loop's own
/// timeouts and wake-ups.
#[must_use = "a builder does nothing until build() is called"]
pub struct Builder {
    ring_entries: u32,
    debug: bool,
    slow_callback_duration: Duration,
    logger: Logger,
    /// `logger(..)` was called (an `Rc`, which cannot go to core threads).
    custom_logger: bool,
    /// Thread-per-core: how many loops (`None`: one per available CPU).
    cores: Option<usize>,
    /// Thread-per-core: the CPUs to pin the cores to, in order.
    cpus: Option<Vec<usize>>,
    /// Other loops may wake this one with `IORING_OP_MSG_RING`.
    msg_ring: bool,
    ext_arg: bool,
    /// SQPOLL, COOP_TASKRUN, CQ size (issue 14).
    ring_setup: crate::driver::RingSetup,
    /// Thread-per-core: the CPU of each core's SQPOLL thread.
    sqpoll_cpus: Option<Vec<u32>>,
    /// How late a timer may fire so that nearby ones share a wake.
    timer_slack: Duration,
}

impl Default for Builder {
    fn default() -> Self {
        Builder {
            ring_entries: DEFAULT_RING_ENTRIES,
            debug: false,
            slow_callback_duration: Duration::from_millis(100),
            logger: Rc::new(stderr_logger),
            custom_logger: false,
            cores: None,
            cpus: None,
            msg_ring: true,
            ext_arg: true,
            ring_setup: crate::driver::RingSetup::default(),
            sqpoll_cpus: None,
            timer_slack: Duration::ZERO,
        }
    }
}

impl std::fmt::Debug for Builder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Builder")
            .field("ring_entries", &self.ring_entries)
            .field("debug", &self.debug)
            .field("slow_callback_duration", &self.slow_callback_duration)
            .field("cores", &self.cores)
            .field("cpus", &self.cpus)
            .field("timer_slack", &self.timer_slack)
            .finish()
    }
}

impl Builder {
    /// How late a timer may fire, so that timers due close together fire
    /// in one wake of the loop (default: zero, each at its own deadline).
    ///
    /// With a slack `d`, the loop's idle waits for a timer end on a grid
    /// of `d` counted from the loop's start: every timer due within one
    /// step of the grid fires together, at its step's end — never early,
    /// at most `d` later than it would have fired without slack. Timers
    /// found expired while the loop is busy fire at once, as without
    /// slack.
    ///
    /// Each wait the kernel times costs CPU (on a virtual machine, a timer
    /// armed through the hypervisor: tens of microseconds). Many timers
    /// that actually expire — timeouts that fire, periodic work on
    /// thousands of connections — then cost a wait each, and a slack of
    /// a millisecond (tokio's timer resolution) or less pays for itself.
    /// `benches/RESULTS.md` has the figures.
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let mut rt = ringio::Runtime::builder()
    ///     .timer_slack(Duration::from_millis(1))
    ///     .build()
    ///     .unwrap();
    /// rt.run(async {
    ///     let t = std::time::Instant::now();
    ///     ringio::sleep(Duration::from_millis(5)).await.unwrap();
    ///     assert!(t.elapsed() >= Duration::from_millis(5), "never early");
    /// })
    /// .unwrap();
    /// ```
    pub fn timer_slack(mut self, d: Duration) -> Self {
        self.timer_slack = d;
        self
    }

    /// Submission-queue entries of the ring (1 to 32768; default 256; 1 is
    /// set up as 2, the least a linked op and its timeout need). The
    /// completion queue gets four times as many. A full queue goes to the
    /// kernel at once, mid-turn: see [`Builder`] on a small queue for
    /// `O_DIRECT` storage.
    pub fn ring_entries(mut self, n: u32) -> Self {
        self.ring_entries = n;
        self
    }

    /// Debug mode (asyncio's `debug=True`): report slow polls, tasks
    /// destroyed while pending.
    pub fn debug(mut self, on: bool) -> Self {
        self.debug = on;
        self
    }

    /// How long one poll or callback may hold the loop before debug mode
    /// reports it (default 100 ms).
    pub fn slow_callback_duration(mut self, d: Duration) -> Self {
        self.slow_callback_duration = d;
        self
    }

    /// Where reports go when no exception handler takes them (default:
    /// stderr).
    pub fn logger(mut self, f: impl Fn(&Report) + 'static) -> Self {
        self.logger = Rc::new(f);
        self.custom_logger = true;
        self
    }

    /// Thread-per-core: run `n` loops, one thread and one ring each, each
    /// thread pinned to a CPU (default: one loop per CPU this process may
    /// use; more loops than CPUs share them round-robin). Build with
    /// [`build_multi`](Builder::build_multi).
    pub fn cores(mut self, n: usize) -> Self {
        self.cores = Some(n);
        self
    }

    /// Thread-per-core: pin core `i` to `cpus[i]` (round-robin if there are
    /// more cores than CPUs listed) instead of the CPUs of the process's
    /// affinity mask. Without [`cores`](Builder::cores), one core per CPU
    /// listed.
    pub fn cpus(mut self, cpus: impl IntoIterator<Item = usize>) -> Self {
        self.cpus = Some(cpus.into_iter().collect());
        self
    }

    /// Starts the thread-per-core runtime: one thread per core, pinned with
    /// `sched_setaffinity`, each with its own loop and ring, all idle until
    /// [`MultiRuntime::run_on_each`](crate::MultiRuntime::run_on_each).
    ///
    /// Every core's ring is set up with this builder's ring options
    /// ([`ring_entries`](Builder::ring_entries), [`sqpoll`](Builder::sqpoll)
    /// — one SQPOLL kernel thread per core —,
    /// [`coop_taskrun`](Builder::coop_taskrun),
    /// [`cq_entries`](Builder::cq_entries),
    /// [`defer_taskrun`](Builder::defer_taskrun),
    /// [`ext_arg`](Builder::ext_arg),
    /// [`without_opcodes`](Builder::without_opcodes)).
    ///
    /// Errors say what to change: a CPU the kernel refuses to pin to (not
    /// online, not in the process's allowed set), a ring that cannot be set
    /// up (the first core's error), `cores(0)`, or a
    /// [`logger`](Builder::logger) (an `Rc`, bound to one thread: install
    /// an exception handler in each core's future instead).
    pub fn build_multi(self) -> Result<crate::MultiRuntime> {
        if self.custom_logger {
            return Err(Error::InvalidArgument(
                "Builder::logger is bound to one thread and cannot go to the core threads; \
                 set an exception handler on each core's loop (Loop::set_exception_handler) instead"
                    .into(),
            ));
        }
        if self.sqpoll_cpus.as_ref().is_some_and(|c| c.is_empty()) {
            return Err(Error::InvalidArgument(
                "sqpoll_cpus(..) was given no CPU".into(),
            ));
        }
        if self.sqpoll_cpus.is_some() && self.ring_setup.sqpoll_idle_ms.is_none() {
            return Err(Error::InvalidArgument(
                "sqpoll_cpus needs sqpoll: it pins the cores' SQPOLL kernel threads".into(),
            ));
        }
        crate::threads::multi::MultiRuntime::start(crate::threads::multi::MultiConfig {
            cores: self.cores,
            cpus: self.cpus,
            ring_entries: self.ring_entries,
            debug: self.debug,
            slow_callback_duration: self.slow_callback_duration,
            msg_ring: self.msg_ring,
            ext_arg: self.ext_arg,
            ring_setup: self.ring_setup,
            sqpoll_cpus: self.sqpoll_cpus,
            timer_slack: self.timer_slack,
        })
    }

    /// The ring options of one core's loop (thread-per-core).
    pub(crate) fn ring_setup(mut self, setup: crate::driver::RingSetup) -> Self {
        self.ring_setup = setup;
        self
    }

    /// Whether other loops may wake this one with `IORING_OP_MSG_RING`
    /// (default: yes, where the kernel has it, 5.18+). `false` makes every
    /// wake-up from another thread go through the eventfd read armed on
    /// the ring, as on older kernels.
    pub fn msg_ring(mut self, on: bool) -> Self {
        self.msg_ring = on;
        self
    }

    /// Whether the ring's timed waits may pass their timeout to
    /// `io_uring_enter` (`IORING_FEAT_EXT_ARG`, Linux 5.11) when the kernel
    /// has it; on by default. Off, the loop waits as it does on older
    /// kernels, with one `IORING_OP_TIMEOUT` armed for its earliest
    /// deadline: a way to test that path on a new kernel. Applies to
    /// [`build`](Builder::build) and to every core of
    /// [`build_multi`](Builder::build_multi).
    pub fn ext_arg(mut self, on: bool) -> Self {
        self.ext_arg = on;
        self
    }

    /// `IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN` (Linux 6.1),
    /// on by default where the kernel has them: the kernel runs completion
    /// work only when the loop enters it, sparing interrupts (10–19 % less
    /// CPU per request measured here). Off, the ring is set up as on an
    /// older kernel — a way to test that path. Applies to
    /// [`build`](Builder::build) and to every core of
    /// [`build_multi`](Builder::build_multi).
    pub fn defer_taskrun(mut self, on: bool) -> Self {
        self.ring_setup.plain = !on;
        self
    }

    /// `IORING_SETUP_SQPOLL`: a kernel thread polls the submission queue,
    /// so submitting costs no system call while it is awake; it sleeps
    /// after `idle` without submissions (rounded to milliseconds) and the
    /// next submission wakes it with one. Use it when a core can be given
    /// to the kernel thread and latency or syscall count matters more than
    /// CPU: the thread spins for `idle` after each burst, on its own CPU
    /// (see [`sqpoll_cpu`](Builder::sqpoll_cpu)). Not with
    /// [`coop_taskrun`](Builder::coop_taskrun); replaces the default
    /// `SINGLE_ISSUER | DEFER_TASKRUN`. Unprivileged since Linux 5.11;
    /// refused, it is `Error::Unsupported` saying why. Applies to
    /// [`build`](Builder::build).
    pub fn sqpoll(mut self, idle: Duration) -> Self {
        self.ring_setup.sqpoll_idle_ms = Some(idle.as_millis().min(u32::MAX as u128) as u32);
        self
    }

    /// Pins the [`sqpoll`](Builder::sqpoll) kernel thread to `cpu`
    /// (`IORING_SETUP_SQ_AFF`): give it a CPU the loop's thread does not
    /// use, or the two take turns on one. With
    /// [`build_multi`](Builder::build_multi) it pins every core's SQPOLL
    /// thread to that one CPU (see [`sqpoll_cpus`](Builder::sqpoll_cpus)
    /// for one each).
    pub fn sqpoll_cpu(mut self, cpu: u32) -> Self {
        self.ring_setup.sqpoll_cpu = Some(cpu);
        self
    }

    /// Thread-per-core: pins core `i`'s [`sqpoll`](Builder::sqpoll) kernel
    /// thread to `cpus[i]` (round-robin if there are more cores than CPUs
    /// listed), instead of one CPU for all. Needs `sqpoll`; applies to
    /// [`build_multi`](Builder::build_multi) only.
    pub fn sqpoll_cpus(mut self, cpus: impl IntoIterator<Item = u32>) -> Self {
        self.sqpoll_cpus = Some(cpus.into_iter().collect());
        self
    }

    /// `IORING_SETUP_COOP_TASKRUN | TASKRUN_FLAG` (Linux 5.19) instead of
    /// the default `SINGLE_ISSUER | DEFER_TASKRUN` (6.1): completions still
    /// run their task work without interrupting the loop's thread, but
    /// at any system call rather than only when the loop reaps. Use it to
    /// compare, or on 5.19–6.0 kernels where `DEFER_TASKRUN` is missing; the
    /// default is as cheap or cheaper on newer ones. A kernel without it
    /// gives `Error::Unsupported`. Applies to [`build`](Builder::build)
    /// and to every core of [`build_multi`](Builder::build_multi).
    pub fn coop_taskrun(mut self, on: bool) -> Self {
        self.ring_setup.coop_taskrun = on;
        self
    }

    /// Completion-queue entries (default: four times
    /// [`ring_entries`](Builder::ring_entries); from `ring_entries` to
    /// 65536, the kernel rounds up to a power of two). Raise it when many
    /// multishot operations (receives, accepts) post completions faster
    /// than a loop turn reaps them: completions that do not fit wait in the
    /// kernel's overflow list (none is lost, but each overflow costs an
    /// extra trip into the kernel, counted in `DriverStats::cq_overflows`).
    /// Applies to [`build`](Builder::build) and to every core of
    /// [`build_multi`](Builder::build_multi).
    pub fn cq_entries(mut self, n: u32) -> Self {
        self.ring_setup.cq_entries = Some(n);
        self
    }

    /// Hands the operations the loop's tasks queue to the kernel as soon
    /// as `n` are queued, in the middle of a turn (one `io_uring_enter`
    /// that submits and does not wait), instead of all at once when the
    /// turn ends. `0` (the default) keeps the one enter per turn.
    ///
    /// For storage that completes in bursts (`O_DIRECT` reads with dozens
    /// in flight): the reads a turn resubmits reach the device `n` at a
    /// time while the turn still runs, so its queue does not run low. It
    /// does what a small [`ring_entries`](Builder::ring_entries) does
    /// (see [`Builder`] on `O_DIRECT` storage), with the full-size queue
    /// kept for bursts; 8 is a good start. Each batch costs a system call,
    /// so leave it off for sockets and for operations that complete at
    /// once, where one enter per turn is cheaper. Counted in
    /// `DriverStats::batch_submits`. Applies to [`build`](Builder::build)
    /// and to every core of [`build_multi`](Builder::build_multi).
    ///
    /// ```
    /// let rt = ringio::Runtime::builder().submit_batch(8).build().unwrap();
    /// # drop(rt);
    /// ```
    pub fn submit_batch(mut self, n: u32) -> Self {
        self.ring_setup.submit_batch = n;
        self
    }

    /// Treats these opcodes (`io_uring::opcode::*::CODE`) as missing from
    /// the kernel's probe, so that what ringio does on a kernel without
    /// them runs on this one: a fallback (plain send for
    /// `TcpStream::send_zc` without `IORING_OP_SEND_ZC`; a user-space
    /// `io::BufRing` without it, which marks Linux 6.0) or
    /// `Error::Unsupported` naming the opcode. For tests; applies to
    /// every core of [`build_multi`](Builder::build_multi) too.
    pub fn without_opcodes(mut self, codes: impl IntoIterator<Item = u8>) -> Self {
        for c in codes {
            if c < 128 {
                self.ring_setup.hidden_opcodes |= 1u128 << c;
            }
        }
        self
    }

    /// Creates the loop and its ring on the calling thread (one loop; see
    /// [`build_multi`](Builder::build_multi) for thread-per-core). Errors
    /// say what to change: a ring size of 0 or above 32768, `RLIMIT_MEMLOCK` too low,
    /// io_uring missing or disabled.
    pub fn build(self) -> Result<Runtime> {
        if self.cores.is_some_and(|n| n != 1) || self.cpus.is_some() {
            return Err(Error::InvalidArgument(
                "cores(n)/cpus(..) run one loop per core on its own thread: build with build_multi()"
                    .into(),
            ));
        }
        if self.sqpoll_cpus.is_some() {
            return Err(Error::InvalidArgument(
                "sqpoll_cpus(..) pins each core's SQPOLL thread: build with build_multi(), \
                 or use sqpoll_cpu for one loop"
                    .into(),
            ));
        }
        let config = LoopConfig {
            ring_entries: self.ring_entries,
            debug: self.debug,
            slow_callback_duration: self.slow_callback_duration,
            logger: self.logger,
            msg_ring: self.msg_ring,
            timer_slack: self.timer_slack,
        };
        let setup = self.ring_setup;
        let inner = crate::driver::with_ext_arg(self.ext_arg, || {
            crate::driver::with_setup(setup, || LoopInner::new(&config))
        })?;
        Ok(Runtime { inner })
    }
}

/// An event loop with its ring, on the thread that built it (asyncio's
/// `Runner`). [`run`](Runtime::run) may be called more than once; the ring
/// closes when the `Runtime` is dropped.
pub struct Runtime {
    inner: Rc<LoopInner>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Runtime({:?})", Loop::from_inner(self.inner.clone()))
    }
}

impl Runtime {
    /// Options for a runtime.
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// A runtime with default options.
    pub fn new() -> Result<Runtime> {
        Builder::default().build()
    }

    /// Runs `fut` as the main task until it completes, then finishes as
    /// asyncio's `run` does: cancels the tasks still pending and waits for
    /// their cleanup (reporting errors they raise), shuts down what
    /// registered with the loop (the `to_thread` pool), and takes back from
    /// the kernel every operation still in flight.
    ///
    /// `Err` when called inside a running loop ("run() cannot be called
    /// from a running event loop"), when the main task was cancelled
    /// without giving a value, or when it panicked (`Error::Panic`).
    pub fn run<F: Future + 'static>(&mut self, fut: F) -> Result<F::Output> {
        if context::current_loop().is_some() {
            return Err(Error::InvalidState(
                "run() cannot be called from a running event loop".into(),
            ));
        }
        let lp = self.inner.clone();
        lp.closed.set(false);
        lp.shared.reopen();
        let _guard = LoopGuard::enter(lp.clone());
        let _slack = TimerSlack::set(TIMER_SLACK_NS);
        let main: Task<F::Output> = Task::builder()
            .context(Context::current())
            .spawn(async move { Ok::<_, Error>(fut.await) })?;
        while !main.done() {
            lp.run_once();
        }
        lp.shutdown();
        lp.closed.set(true);
        main.take_outcome()
    }

    /// The loop, for inspection between runs.
    pub fn event_loop(&self) -> Loop {
        Loop::from_inner(self.inner.clone())
    }

    /// Counters of the loop and its ring.
    pub fn stats(&self) -> LoopStats {
        self.event_loop().stats()
    }
}

/// The loop thread's timer slack while it runs: the kernel may delay the
/// ring wait's timeout by up to this much (Linux's default of 50 µs is most
/// of a timer's lateness).
const TIMER_SLACK_NS: libc::c_ulong = 1_000;

/// Sets the calling thread's timer slack, restoring the old value on drop.
struct TimerSlack {
    old: libc::c_int,
}

impl TimerSlack {
    fn set(ns: libc::c_ulong) -> TimerSlack {
        // SAFETY: PR_GET/SET_TIMERSLACK take and return plain integers and
        // only affect the calling thread.
        let old = unsafe { libc::prctl(libc::PR_GET_TIMERSLACK) };
        // SAFETY: as above.
        unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, ns) };
        TimerSlack { old }
    }
}

impl Drop for TimerSlack {
    fn drop(&mut self) {
        if self.old > 0 {
            // SAFETY: as in `TimerSlack::set`.
            unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, self.old as libc::c_ulong) };
        }
    }
}

/// Runs `fut` on a new loop on this thread and returns its output
/// (asyncio's `run`). The loop's ring is closed before it returns.
///
/// # Panics
///
/// Where asyncio raises: inside a running loop ("run() cannot be called
/// from a running event loop"); if the ring cannot be set up (use
/// [`Runtime::builder`] to get that as an `Error`); and it re-raises a
/// panic of the main future. The panics of a nested `run` and of a ring
/// that cannot be set up point at the caller's line (`#[track_caller]`).
///
/// ```
/// let answer = ringio::run(async { 6 * 7 });
/// assert_eq!(answer, 42);
/// ```
#[track_caller]
pub fn run<F: Future + 'static>(fut: F) -> F::Output {
    let mut rt = match Runtime::new() {
        Ok(rt) => rt,
        Err(e) => panic!("ringio::run: cannot start the event loop: {e}"),
    };
    match rt.run(fut) {
        Ok(v) => v,
        Err(Error::Panic(msg)) => std::panic::resume_unwind(Box::new(msg)),
        Err(e) => panic!("{e}"),
    }
}
