//! The ring driver: one `io_uring` per loop, its submission queue, and the
//! table of operations in flight.
//!
//! The driver knows nothing about tasks. It takes SQEs, keeps the owned data
//! of each operation until its CQE is reaped, and hands wakers back to the
//! loop. The loop decides when to enter the kernel (once per turn) and for how
//! long (its earliest timer deadline).
//!
//! # Safety
//!
//! The driver's `unsafe` is the ring itself: SQEs pushed to the submission
//! queue name memory that the op table (or the driver: the eventfd buffer,
//! the wait timespec) keeps alive until their CQE is reaped; buffers and
//! buffer rings are registered only while their memory is mapped; the
//! descriptor duplicated for `MSG_RING` is owned by one `OwnedFd`.

pub mod fault;
mod op_table;
mod probe;

pub(crate) use op_table::{OpKey, OrphanCleanup};

use std::collections::VecDeque;
use std::io;
use std::os::fd::RawFd;
use std::task::Waker;
use std::time::{Duration, Instant};

use io_uring::types::{SubmitArgs, Timespec};
use io_uring::{IoUring, opcode, squeue, types};

use crate::error::{Error, Result};
use op_table::OpTable;
use probe::OpcodeSupport;

/// `user_data` of SQEs whose CQE nobody waits for (ASYNC_CANCEL requests).
const UD_IGNORED: u64 = u64::MAX;
/// `user_data` of the eventfd read that wakes the loop from other threads.
const UD_EVENTFD: u64 = u64::MAX - 1;
/// `user_data` of the CQE another loop posts into this ring with
/// `IORING_OP_MSG_RING` to wake it (cross-loop wakeup without an eventfd).
pub(crate) const UD_MSG_RING: u64 = u64::MAX - 2;
/// Tag of this ring's own internal operations (the MSG_RING it sends):
/// `user_data` is `UD_INTERNAL | index` into `Driver::internal`. Op-table
/// keys (`OpKey::user_data`: a slab index and a generation) stay below
/// bit 61.
const UD_INTERNAL: u64 = 1 << 62;

/// Tag of the `IORING_OP_TIMEOUT` the loop arms for its timed waits on a
/// kernel without `IORING_FEAT_EXT_ARG`: `user_data` is `UD_WAIT_TIMEOUT |
/// seq`, so that the CQE of a replaced timeout is told from the armed one's.
const UD_WAIT_TIMEOUT: u64 = 1 << 61;
/// `user_data` from this bit up is the driver's own (the entries above);
/// an op's key fits below it (`OpKey::user_data`: bits 0–59).
const UD_OWN_SHIFT: u32 = 61;

thread_local! {
    /// Set by [`with_ext_arg`] while a loop is built: whether its ring may
    /// use `IORING_FEAT_EXT_ARG` (if the kernel has it).
    static USE_EXT_ARG: std::cell::Cell<bool> = const { std::cell::Cell::new(true) };
}

/// Runs `f` (which builds a loop on this thread) with the use of
/// `IORING_FEAT_EXT_ARG` allowed or not: `false` makes the ring wait as on a
/// kernel before 5.11, with an `IORING_OP_TIMEOUT`, so that path is tested
/// on newer kernels too.
pub(crate) fn with_ext_arg<R>(on: bool, f: impl FnOnce() -> R) -> R {
    let old = USE_EXT_ARG.with(|c| c.replace(on));
    let out = f();
    USE_EXT_ARG.with(|c| c.set(old));
    out
}

/// How a loop's ring is set up beyond its size: the runtime builder's
/// ring options (`Builder::sqpoll`, `coop_taskrun`, `cq_entries`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct RingSetup {
    /// `IORING_SETUP_SQPOLL` with this idle time in milliseconds.
    pub(crate) sqpoll_idle_ms: Option<u32>,
    /// `IORING_SETUP_SQ_AFF`: the CPU of the SQPOLL thread.
    pub(crate) sqpoll_cpu: Option<u32>,
    /// `IORING_SETUP_COOP_TASKRUN | TASKRUN_FLAG` instead of
    /// `SINGLE_ISSUER | DEFER_TASKRUN`.
    pub(crate) coop_taskrun: bool,
    /// Completion-queue entries (default: four times the SQ's).
    pub(crate) cq_entries: Option<u32>,
    /// A plain ring, without `SINGLE_ISSUER | DEFER_TASKRUN`: what a
    /// kernel before 6.1 gets, to test that path on a new one.
    pub(crate) plain: bool,
    /// Opcodes to treat as missing (bit `code`): the fallbacks of older
    /// kernels, tested on a new one.
    pub(crate) hidden_opcodes: u128,
    /// Hand the queued SQEs to the kernel as soon as this many are queued,
    /// mid-turn (0: only when the SQ is full, or at the turn's end).
    pub(crate) submit_batch: u32,
}

thread_local! {
    static RING_SETUP: std::cell::Cell<RingSetup> = const {
        std::cell::Cell::new(RingSetup {
            sqpoll_idle_ms: None,
            sqpoll_cpu: None,
            coop_taskrun: false,
            cq_entries: None,
            plain: false,
            hidden_opcodes: 0,
            submit_batch: 0,
        })
    };
}

/// Runs `f` (which builds a loop on this thread) with its ring set up as
/// `setup` says.
pub(crate) fn with_setup<R>(setup: RingSetup, f: impl FnOnce() -> R) -> R {
    let old = RING_SETUP.with(|c| c.replace(setup));
    let out = f();
    RING_SETUP.with(|c| c.set(old));
    out
}

thread_local! {
    /// Direct descriptors the kernel created for ops nobody awaits any
    /// more (an orphaned direct accept), to close at the next park: the
    /// orphan cleanup that finds them cannot reach the driver.
    static FIXED_TO_CLOSE: std::cell::RefCell<Vec<u32>> = const {
        std::cell::RefCell::new(Vec::new())
    };
}

/// Closes direct descriptor `slot` of this thread's ring at its next park.
pub(crate) fn close_fixed_later(slot: u32) {
    FIXED_TO_CLOSE.with(|v| v.borrow_mut().push(slot));
}

/// Largest ring the kernel accepts (`IORING_MAX_ENTRIES`).
pub const MAX_RING_ENTRIES: u32 = 32768;

/// Counters the driver keeps, readable through [`crate::Loop::stats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DriverStats {
    /// Operations whose final completion has not been reaped yet.
    pub ops_in_flight: usize,
    /// Wake-ups this loop sent to other loops (`IORING_OP_MSG_RING`) whose
    /// own completion has not been reaped yet.
    pub msg_ring_sends_in_flight: usize,
    /// Operations submitted for callers since the loop started.
    pub ops_submitted: u64,
    /// Completion-queue entries reaped (all kinds).
    pub cqes_reaped: u64,
    /// Completions of caller operations that said `-ECANCELED`: the kernel
    /// really cancelled the operation.
    pub ops_canceled_by_kernel: u64,
    /// `IORING_OP_ASYNC_CANCEL` requests submitted.
    pub cancel_requests: u64,
    /// Calls to `io_uring_enter`.
    pub enters: u64,
    /// Times the submission queue was full and had to be flushed mid-turn.
    pub sq_full_flushes: u64,
    /// Times `Builder::submit_batch` handed queued SQEs to the kernel
    /// mid-turn.
    pub batch_submits: u64,
    /// Times a reap found completions held back in the kernel because the
    /// completion queue was full (`IORING_SQ_CQ_OVERFLOW`), and went back
    /// for them at once.
    pub cq_overflows: u64,
    /// Whether the ring runs with `SINGLE_ISSUER | DEFER_TASKRUN`.
    pub defer_taskrun: bool,
    /// Whether timed waits pass their timeout to `io_uring_enter`
    /// (`IORING_FEAT_EXT_ARG`, Linux 5.11); otherwise the loop keeps one
    /// `IORING_OP_TIMEOUT` armed for its earliest deadline.
    pub ext_arg: bool,
    /// Whether a kernel thread polls the submission queue
    /// (`IORING_SETUP_SQPOLL`, `Builder::sqpoll`).
    pub sqpoll: bool,
    /// Whether the ring runs with `IORING_SETUP_COOP_TASKRUN`
    /// (`Builder::coop_taskrun`).
    pub coop_taskrun: bool,
    /// Completion-queue entries, as the kernel set them up.
    pub cq_entries: u32,
}

/// The ring, its submission backlog, and the in-flight operations.
pub(crate) struct Driver {
    // Field order matters: `ring` is dropped before `ops`, but `Drop` has
    // already reaped every CQE by then, so nothing the kernel owns is freed.
    ring: IoUring,
    ops: OpTable,
    /// SQEs that did not fit in the SQ even after a flush (the kernel said
    /// EBUSY/EAGAIN), each with whether it heads a linked pair. Their op
    /// slots stay in `ops`; they go in next turn.
    backlog: VecDeque<(squeue::Entry, bool)>,
    support: OpcodeSupport,
    stats: DriverStats,
    /// The eventfd other threads write to wake this loop (owned by the
    /// loop's shared half); a read of it is kept armed on the ring.
    eventfd: RawFd,
    /// The 8-byte buffer the armed eventfd read writes into. Boxed so its
    /// address is stable; it lives as long as the driver, and the driver
    /// reaps the read before it drops.
    eventfd_buf: Box<u64>,
    eventfd_armed: bool,
    /// Cached whether a non-blocking reap needs a syscall (DEFER_TASKRUN
    /// posts completions only inside `io_uring_enter`).
    defer_taskrun: bool,
    /// The ring's own operations that have no future (MSG_RING sent to
    /// another loop): what to do with their result. They point to no
    /// memory, so nothing has to outlive them but this callback.
    internal: slab::Slab<Box<dyn FnOnce(i32)>>,
    /// The ring supports `IORING_OP_MSG_RING` (5.18+), probed at start.
    msg_ring: bool,
    /// Submission generation: bumped after every `io_uring_enter` that left
    /// nothing queued (SQ and backlog empty). An op queued in an earlier
    /// generation has certainly reached the kernel.
    sub_gen: u64,
    /// Wakers and dead op data reaped outside `park` (while pushing a
    /// dropped op's SQE to the kernel); `park` hands them out.
    stray_wake: Vec<Waker>,
    stray_dead: Vec<Box<dyn std::any::Any>>,
    /// The kernel has `IORING_FEAT_EXT_ARG` (and its use is allowed).
    ext_arg: bool,
    /// Without `ext_arg`: the wait timeout armed in the kernel, as its
    /// `user_data` and the instant it fires, until its CQE is reaped.
    wait_timeout: Option<(u64, Instant)>,
    wait_timeout_seq: u64,
    /// The timespec of the next wait timeout. The kernel copies it when it
    /// takes the SQE; boxed so its address is stable until then.
    wait_ts: Box<Timespec>,
    /// Provided-buffer group ids given back by unregistered buffer rings,
    /// and the next never-used one.
    free_bgids: Vec<u16>,
    next_bgid: u16,
    /// A kernel thread polls the SQ (`IORING_SETUP_SQPOLL`).
    sqpoll: bool,
    /// Queued SQEs that go to the kernel at once, mid-turn
    /// (`Builder::submit_batch`; 0: off).
    submit_batch: usize,
    /// Slots of the registered direct descriptor table (0: none yet).
    file_table: u32,
    /// The ring has a set of registered buffers.
    buffers_registered: bool,
}

/// What a CQE reap turned up besides op completions.
#[derive(Default)]
pub(crate) struct Reaped {
    /// The cross-thread eventfd fired: drain the remote queue.
    pub(crate) remote_wakeup: bool,
    /// Data of dropped ops the kernel has finished with. The caller drops
    /// it after releasing its borrow of the driver: a `Drop` impl in there
    /// may use the loop (and so the driver) again.
    pub(crate) dead: Vec<Box<dyn std::any::Any>>,
}

impl Driver {
    /// Sets up a ring of `entries` (a power of two is not required; the
    /// kernel rounds up).
    pub(crate) fn new(entries: u32, eventfd: RawFd) -> Result<Driver> {
        if entries == 0 {
            return Err(Error::InvalidArgument(
                "ring_entries must be at least 1".into(),
            ));
        }
        if entries > MAX_RING_ENTRIES {
            return Err(Error::InvalidArgument(format!(
                "ring_entries {entries} is larger than the kernel's maximum of {MAX_RING_ENTRIES}"
            )));
        }
        // A linked pair (an op and its LINK_TIMEOUT) must enter the SQ
        // together; a one-entry SQ could never take it, and the backlog
        // (and every SQE queued behind it) would wait forever.
        let entries = entries.max(2);
        let setup = RING_SETUP.with(|c| c.get());
        let cq_entries = match setup.cq_entries {
            None => entries.saturating_mul(4).min(MAX_RING_ENTRIES * 2),
            Some(n) if n < entries || n > MAX_RING_ENTRIES * 2 => {
                return Err(Error::InvalidArgument(format!(
                    "cq_entries {n} must be at least the ring's {entries} submission entries \
                     and at most {}",
                    MAX_RING_ENTRIES * 2
                )));
            }
            Some(n) => n,
        };
        if setup.sqpoll_idle_ms.is_some() && setup.coop_taskrun {
            return Err(Error::InvalidArgument(
                "sqpoll and coop_taskrun cannot be combined: the kernel refuses \
                 IORING_SETUP_COOP_TASKRUN on an SQPOLL ring (its thread runs the task work)"
                    .into(),
            ));
        }
        if setup.sqpoll_cpu.is_some() && setup.sqpoll_idle_ms.is_none() {
            return Err(Error::InvalidArgument(
                "sqpoll_cpu needs sqpoll: it pins the SQPOLL kernel thread".into(),
            ));
        }
        let (ring, defer_taskrun) = if let Some(idle) = setup.sqpoll_idle_ms {
            let mut b = IoUring::builder();
            b.setup_sqpoll(idle).setup_cqsize(cq_entries);
            if let Some(cpu) = setup.sqpoll_cpu {
                b.setup_sqpoll_cpu(cpu);
            }
            let ring = b.build(entries).map_err(|e| match e.raw_os_error() {
                Some(libc::EPERM) => Error::Unsupported(
                    "IORING_SETUP_SQPOLL was refused (EPERM): before Linux 5.11 it needs \
                     CAP_SYS_ADMIN, and a seccomp or io_uring_disabled policy may forbid it"
                        .into(),
                ),
                Some(libc::EINVAL) => Error::Unsupported(format!(
                    "IORING_SETUP_SQPOLL (Linux 5.1; unprivileged since 5.11) was refused \
                     (EINVAL){}",
                    if setup.sqpoll_cpu.is_some() {
                        ": is the sqpoll_cpu online and allowed?"
                    } else {
                        ""
                    }
                )),
                _ => setup_error(e, entries),
            })?;
            (ring, false)
        } else if setup.coop_taskrun {
            let ring = IoUring::builder()
                .setup_coop_taskrun()
                .setup_taskrun_flag()
                .setup_cqsize(cq_entries)
                .build(entries)
                .map_err(|e| match e.raw_os_error() {
                    Some(libc::EINVAL) => Error::Unsupported(
                        "IORING_SETUP_COOP_TASKRUN is not supported by this kernel's io_uring; \
                         it needs Linux 5.19 or later"
                            .into(),
                    ),
                    _ => setup_error(e, entries),
                })?;
            (ring, false)
        } else if setup.plain {
            let ring = IoUring::builder()
                .setup_cqsize(cq_entries)
                .build(entries)
                .map_err(|e| setup_error(e, entries))?;
            (ring, false)
        } else {
            // SINGLE_ISSUER | DEFER_TASKRUN (6.1+) spares the kernel's task-work
            // interrupts: 10-19% less CPU per request on this project's machine.
            match IoUring::builder()
                .setup_single_issuer()
                .setup_defer_taskrun()
                .setup_cqsize(cq_entries)
                .build(entries)
            {
                Ok(ring) => (ring, true),
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => (
                    IoUring::builder()
                        .setup_cqsize(cq_entries)
                        .build(entries)
                        .map_err(|e| setup_error(e, entries))?,
                    false,
                ),
                Err(e) => return Err(setup_error(e, entries)),
            }
        };
        let sqpoll = ring.params().is_setup_sqpoll();
        let cq_entries = ring.params().cq_entries();
        let support = OpcodeSupport::read(&ring.submitter(), setup.hidden_opcodes);
        let msg_ring = support.supports(opcode::MsgRingData::CODE);
        let ext_arg = ring.params().is_feature_ext_arg() && USE_EXT_ARG.with(|c| c.get());
        if !ext_arg && !support.supports(opcode::Timeout::CODE) {
            return Err(Error::Unsupported(
                "this kernel's io_uring can time a wait neither with IORING_FEAT_EXT_ARG \
                 (Linux 5.11) nor with IORING_OP_TIMEOUT (Linux 5.4); timers need one of them"
                    .into(),
            ));
        }
        Ok(Driver {
            ring,
            ops: OpTable::default(),
            backlog: VecDeque::new(),
            support,
            stats: DriverStats {
                defer_taskrun,
                ext_arg,
                sqpoll,
                coop_taskrun: setup.coop_taskrun,
                cq_entries,
                ..DriverStats::default()
            },
            eventfd,
            eventfd_buf: Box::new(0),
            eventfd_armed: false,
            defer_taskrun,
            internal: slab::Slab::new(),
            msg_ring,
            sub_gen: 0,
            stray_wake: Vec::new(),
            stray_dead: Vec::new(),
            ext_arg,
            wait_timeout: None,
            wait_timeout_seq: 0,
            wait_ts: Box::new(Timespec::new()),
            free_bgids: Vec::new(),
            next_bgid: 0,
            sqpoll,
            submit_batch: setup.submit_batch as usize,
            file_table: 0,
            buffers_registered: false,
        })
    }

    /// Whether the ring supports `code` (probed at start).
    pub(crate) fn supports(&self, code: u8) -> bool {
        self.support.supports(code)
    }

    /// Registers a provided-buffer ring (`IORING_REGISTER_PBUF_RING`,
    /// Linux 5.19) of `entries` entries at `addr` under a fresh buffer
    /// group id, which it returns.
    ///
    /// # Safety
    ///
    /// `addr` must be page-aligned memory of `entries` `io_uring_buf`
    /// entries that stays valid (with every buffer its entries name) until
    /// [`Driver::unregister_buf_ring`] is called with the returned id, or
    /// the ring is gone.
    pub(crate) unsafe fn register_buf_ring(&mut self, addr: u64, entries: u16) -> io::Result<u16> {
        let bgid = match self.free_bgids.pop() {
            Some(id) => id,
            None => {
                let id = self.next_bgid;
                self.next_bgid = self.next_bgid.checked_add(1).ok_or_else(|| {
                    io::Error::new(
                        io::ErrorKind::OutOfMemory,
                        "every provided-buffer group id of this ring is in use",
                    )
                })?;
                id
            }
        };
        // SAFETY: forwarded from the caller.
        match unsafe {
            self.ring
                .submitter()
                .register_buf_ring_with_flags(addr, entries, bgid, 0)
        } {
            Ok(()) => Ok(bgid),
            Err(e) => {
                self.free_bgids.push(bgid);
                Err(e)
            }
        }
    }

    /// Registers `bufs` as the ring's fixed buffers (`IORING_REGISTER_BUFFERS`).
    /// One set per ring: `InvalidState` if it has one.
    ///
    /// # Safety
    ///
    /// The memory the iovecs name must stay valid until
    /// [`Driver::unregister_buffers`] has returned.
    pub(crate) unsafe fn register_buffers(&mut self, bufs: &[libc::iovec]) -> Result<()> {
        if self.buffers_registered {
            return Err(Error::InvalidState(
                "this loop's ring already has registered buffers (one FixedBufs set per ring; \
                 drop it first)"
                    .into(),
            ));
        }
        // SAFETY: forwarded from the caller.
        unsafe { self.ring.submitter().register_buffers(bufs) }.map_err(|e| {
            Error::from(io::Error::new(
                e.kind(),
                format!(
                    "IORING_REGISTER_BUFFERS failed: {e} (ENOMEM: RLIMIT_MEMLOCK too low for \
                     the buffers on kernels before 5.12)"
                ),
            ))
        })?;
        self.buffers_registered = true;
        Ok(())
    }

    /// Unregisters the ring's fixed buffers.
    pub(crate) fn unregister_buffers(&mut self) -> io::Result<()> {
        self.ring.submitter().unregister_buffers()?;
        self.buffers_registered = false;
        Ok(())
    }

    /// The direct descriptor table's size, registering a sparse one of
    /// `size` slots (`IORING_REGISTER_FILES2` sparse, Linux 5.19) if the
    /// ring has none yet.
    pub(crate) fn file_table(&mut self, size: u32) -> io::Result<u32> {
        if self.file_table == 0 {
            self.ring.submitter().register_files_sparse(size)?;
            self.file_table = size;
        }
        Ok(self.file_table)
    }

    /// Closes direct descriptor `slot` through the ring, after every SQE
    /// queued so far (which resolved or will resolve it first).
    pub(crate) fn close_fixed(&mut self, slot: u32) {
        self.push(
            opcode::Close::new(types::Fixed(slot))
                .build()
                .user_data(UD_IGNORED),
        );
    }

    /// Unregisters the provided-buffer ring of group `bgid`: the kernel no
    /// longer reads its entries. Only once no op that selects from it is
    /// in flight.
    pub(crate) fn unregister_buf_ring(&mut self, bgid: u16) -> io::Result<()> {
        self.ring.submitter().unregister_buf_ring(bgid)?;
        self.free_bgids.push(bgid);
        Ok(())
    }

    /// Whether this ring can send `IORING_OP_MSG_RING` (probed at start).
    pub(crate) fn supports_msg_ring(&self) -> bool {
        self.msg_ring
    }

    /// A duplicate of the ring's descriptor, for other loops to target with
    /// `IORING_OP_MSG_RING`. A duplicate (not the number itself) so that a
    /// handle outliving this driver never messages a reused descriptor.
    pub(crate) fn dup_ring_fd(&self) -> io::Result<std::os::fd::OwnedFd> {
        use std::os::fd::{AsRawFd, FromRawFd};
        // SAFETY: F_DUPFD_CLOEXEC on the ring's open descriptor; the result
        // is checked and owned by the `OwnedFd` alone.
        let fd = unsafe { libc::fcntl(self.ring.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor nobody else owns.
        Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
    }

    /// Posts a wake-up CQE (`UD_MSG_RING`) into the ring `target` with
    /// `IORING_OP_MSG_RING`, submitted at once (a loop thread that blocks
    /// right after must not hold the message back). `on_done` gets the
    /// result of the send (negative errno if the message was not posted).
    pub(crate) fn send_msg_ring(&mut self, target: RawFd, on_done: Box<dyn FnOnce(i32)>) {
        let index = self.internal.insert(on_done);
        let sqe = opcode::MsgRingData::new(types::Fd(target), 0, UD_MSG_RING, None)
            .build()
            .user_data(UD_INTERNAL | index as u64);
        self.push(fault::on_msg_ring(sqe));
        self.refill_from_backlog();
        self.flush();
    }

    /// `Ok` if the ring supports `code`; else an error naming the opcode and
    /// the kernel that brings it.
    pub(crate) fn require(&self, code: u8) -> Result<()> {
        self.support.require(code)
    }

    pub(crate) fn stats(&self) -> DriverStats {
        DriverStats {
            ops_in_flight: self.ops.len(),
            msg_ring_sends_in_flight: self.internal.len(),
            ..self.stats
        }
    }

    /// Whether any operation is still owned by the kernel: a caller's, or
    /// a wake-up this loop sent to another (so that a loop that always has
    /// ready work still enters the kernel to reap its sends' completions).
    pub(crate) fn has_ops_in_flight(&self) -> bool {
        self.ops.len() > 0 || !self.internal.is_empty()
    }

    /// Queues `sqe` for a caller and returns the key its CQE will carry;
    /// `waker` (the poller's, when the op's future submits it from its
    /// poll) is woken by the completion.
    ///
    /// # Safety
    ///
    /// Every buffer or struct the SQE points to must stay valid until the
    /// operation's final CQE is reaped. Callers guarantee it by keeping that
    /// memory inside the data of an [`Op`], which parks it in the op table
    /// if the future is dropped early.
    #[inline]
    pub(crate) unsafe fn submit(
        &mut self,
        sqe: squeue::Entry,
        cleanup: Option<OrphanCleanup>,
        waker: Option<Waker>,
    ) -> OpKey {
        let key = self.ops.insert(cleanup, self.sub_gen, waker);
        self.stats.ops_submitted += 1;
        self.push(fault::on_submit(sqe.user_data(key.user_data())));
        self.submit_if_batch_full();
        key
    }

    /// With `Builder::submit_batch(n)`: once `n` SQEs are queued, hands
    /// them to the kernel now, without waiting for anything, instead of at
    /// the end of the turn. A device that completes in bursts (`O_DIRECT`
    /// reads) then gets the reads a turn resubmits while the turn still
    /// runs, rather than all at its end.
    #[inline]
    fn submit_if_batch_full(&mut self) {
        if self.submit_batch > 0 && self.ring.submission().len() >= self.submit_batch {
            self.stats.batch_submits += 1;
            self.flush();
        }
    }

    /// Queues a linked pair (an op and its `LINK_TIMEOUT`): both go into the
    /// SQ back to back so the link holds. The timeout's CQE is ignored.
    ///
    /// # Safety
    ///
    /// As for [`Driver::submit`]; `timeout` must point to memory owned by the
    /// same op data.
    pub(crate) unsafe fn submit_linked(
        &mut self,
        sqe: squeue::Entry,
        timeout: squeue::Entry,
        cleanup: Option<OrphanCleanup>,
        waker: Option<Waker>,
    ) -> OpKey {
        let key = self.ops.insert(cleanup, self.sub_gen, waker);
        self.stats.ops_submitted += 1;
        // A link must not be split by a flush between the two entries: make
        // room for both, or queue both in the backlog.
        if self.sq_room() < 2 {
            self.flush();
        }
        let head = fault::on_submit(sqe.user_data(key.user_data()).flags(squeue::Flags::IO_LINK));
        let tail = timeout.user_data(UD_IGNORED);
        if self.sq_room() < 2 || !self.backlog.is_empty() {
            self.backlog.push_back((head, true));
            self.backlog.push_back((tail, false));
        } else {
            self.push(head);
            self.push(tail);
            self.submit_if_batch_full();
        }
        key
    }

    /// Asks the kernel to cancel op `key` (`IORING_OP_ASYNC_CANCEL`), once.
    pub(crate) fn cancel(&mut self, key: OpKey) {
        let Some(slot) = self.ops.get_mut(key) else {
            return;
        };
        if slot.cancel_sent() || slot.finished() {
            return;
        }
        slot.set_cancel_sent();
        self.stats.cancel_requests += 1;
        self.push(
            opcode::AsyncCancel::new(key.user_data())
                .build()
                .user_data(UD_IGNORED),
        );
    }

    /// Bounds how many unread completions multishot op `key` may queue
    /// before it is cancelled (see `OpSlot::max_queued`).
    pub(crate) fn limit_queued(&mut self, key: OpKey, max: u32) {
        if let Some(slot) = self.ops.get_mut(key) {
            slot.set_max_queued(max);
        }
    }

    /// Takes the next completion of op `key`, `(res, flags, final)`, or,
    /// if none is there yet, registers the waker to wake when one comes
    /// (`make` gives it, unless the one registered already wakes the same
    /// as `waker`: `same`). One slot lookup, on the path of every op.
    #[inline]
    pub(crate) fn poll_op(
        &mut self,
        key: OpKey,
        waker: &Waker,
        same: impl Fn(&Waker, &Waker) -> bool,
        make: impl FnOnce(&Waker) -> Waker,
    ) -> Option<(i32, u32, bool)> {
        let slot = self.ops.get_mut(key)?;
        let Some((res, flags)) = slot.pop_result() else {
            slot.set_waker(waker, same, make);
            return None;
        };
        let last = slot.finished() && slot.results_empty();
        if last {
            self.ops.remove_taken(key);
        }
        Some((res, flags, last))
    }

    /// Takes the next completion of op `key`: `(res, flags, final)`.
    #[cfg(test)]
    pub(crate) fn take_result(&mut self, key: OpKey) -> Option<(i32, u32, bool)> {
        let slot = self.ops.get_mut(key)?;
        let (res, flags) = slot.pop_result()?;
        let last = slot.finished() && slot.results_empty();
        if last {
            self.ops.remove(key);
        }
        Some((res, flags, last))
    }

    /// The future of op `key` is gone. If the kernel still owns the op, park
    /// `data` in its slot until the final CQE and ask for a cancel; otherwise
    /// free the slot (running the orphan cleanup on unread results) and
    /// give `data` back, for the caller to drop once it no longer borrows
    /// the driver.
    #[must_use = "drop the returned data after releasing the driver"]
    pub(crate) fn orphan(
        &mut self,
        key: OpKey,
        data: Option<Box<dyn std::any::Any>>,
    ) -> Option<Box<dyn std::any::Any>> {
        let Some(slot) = self.ops.get_mut(key) else {
            return data;
        };
        if slot.queued_in(self.sub_gen) {
            // The op's SQE may still sit in the SQ (or the backlog). It names
            // its descriptor by number, and the kernel looks the number up
            // only when it issues the entry: once the caller's future is
            // gone, nothing keeps that descriptor open, and a close plus an
            // open elsewhere would have the op run on another file. Issuing
            // it now, before `drop` returns, resolves the number while the
            // caller still holds the descriptor (an issued op holds its own
            // reference to the file). This costs one enter, only for an op
            // dropped in the same loop turn it was queued in.
            self.issue_queued();
        }
        let Some(slot) = self.ops.get_mut(key) else {
            return data;
        };
        let mut data = data;
        slot.release_unread(data.as_deref_mut());
        if slot.finished() {
            self.ops.remove(key);
            return data;
        }
        slot.set_orphaned(data);
        self.cancel(key);
        None
    }

    /// Pushes one SQE, flushing the SQ to the kernel when it is full. An SQE
    /// the kernel cannot take right now waits in the backlog; it is never
    /// dropped, and its op's memory stays in the op table meanwhile.
    #[inline]
    fn push(&mut self, sqe: squeue::Entry) {
        if !self.backlog.is_empty() {
            self.backlog.push_back((sqe, false));
            return;
        }
        // SAFETY: the memory behind every SQE is owned by the op table or by
        // the driver itself (eventfd buffer) until the CQE is reaped; see
        // `Driver::submit`.
        if unsafe { self.ring.submission().push(&sqe) }.is_ok() {
            return;
        }
        self.stats.sq_full_flushes += 1;
        self.flush();
        // SAFETY: as above.
        if unsafe { self.ring.submission().push(&sqe) }.is_err() {
            self.backlog.push_back((sqe, false));
        }
    }

    /// Free entries in the submission queue.
    fn sq_room(&mut self) -> usize {
        let sq = self.ring.submission();
        sq.capacity() - sq.len()
    }

    /// Moves backlog entries into the SQ while there is room.
    fn refill_from_backlog(&mut self) {
        while let Some(heads_link) = self.backlog.front().map(|&(_, h)| h) {
            // A linked pair goes in whole or not at all: a link cut at the
            // end of a submission would run the op without its timeout.
            if self.sq_room() < if heads_link { 2 } else { 1 } {
                break;
            }
            let Some((sqe, _)) = self.backlog.pop_front() else {
                break;
            };
            // SAFETY: as in `push`.
            if unsafe { self.ring.submission().push(&sqe) }.is_err() {
                self.backlog.push_front((sqe, heads_link));
                break;
            }
        }
    }

    /// Hands the queued SQEs to the kernel without waiting.
    fn flush(&mut self) {
        self.stats.enters += 1;
        // If the kernel cannot take them now (CQ overflow, memory), they stay
        // in the SQ and go in on the next enter, after a reap.
        check_enter(fault::enter(|| self.ring.submit()));
        self.note_enter();
    }

    /// After an `io_uring_enter`: if nothing is left queued, every SQE
    /// queued so far has been issued, so a new submission generation starts.
    fn note_enter(&mut self) {
        if self.ring.submission().is_empty() && self.backlog.is_empty() {
            self.sub_gen += 1;
        }
    }

    /// Hands every queued SQE to the kernel now, before a descriptor they
    /// name is closed with `close(2)`: the kernel resolves an SQE's fd when
    /// it consumes the entry, so a queued SQE must not outlive the number
    /// (a new socket could reuse it). Returns whether nothing is left queued
    /// (the SQ was taken whole and the backlog is empty).
    pub(crate) fn submit_queued(&mut self) -> bool {
        loop {
            self.refill_from_backlog();
            let queued = self.ring.submission().len();
            if queued == 0 {
                break;
            }
            self.flush();
            if self.sqpoll {
                self.wait_sq_thread();
            }
            if self.ring.submission().len() == queued {
                // The kernel took none (EBUSY/EAGAIN): try again later.
                break;
            }
        }
        !self.has_pending_submissions()
    }

    /// With SQPOLL, the kernel thread takes SQEs on its own time: wait
    /// (briefly, yielding the CPU) until it has taken what is queued, so
    /// that "issued" still means "resolved by the kernel" (descriptor
    /// numbers are looked up then). Bounded: a thread that does not come
    /// leaves the entries queued, and the caller falls back as for a full
    /// SQ (a close goes through the ring behind them).
    fn wait_sq_thread(&mut self) {
        for i in 0..10_000 {
            if self.ring.submission().is_empty() {
                return;
            }
            if self.ring.submission().need_wakeup() {
                self.enter_nonblocking(0);
            }
            if i < 100 {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
    }

    /// Hands every queued SQE to the kernel before returning, reaping
    /// completions in between if the kernel refuses entries for lack of
    /// CQ room or memory. What the reaps turn up waits in `stray_*` for
    /// the next `park`.
    fn issue_queued(&mut self) {
        for _ in 0..64 {
            if self.submit_queued() {
                return;
            }
            let to_submit = self.ring.submission().len() as u32;
            self.enter_nonblocking(to_submit);
            let mut wake = std::mem::take(&mut self.stray_wake);
            let mut reaped = Reaped::default();
            self.reap(&mut wake, &mut reaped);
            self.stray_wake = wake;
            self.stray_dead.append(&mut reaped.dead);
        }
    }

    /// Queues an SQE that points to no memory and whose completion nobody
    /// reads (a `close` of a descriptor that must wait behind queued SQEs).
    pub(crate) fn submit_detached(&mut self, sqe: squeue::Entry) {
        self.push(sqe.user_data(UD_IGNORED));
    }

    /// Whether there is anything the kernel has not seen yet.
    pub(crate) fn has_pending_submissions(&mut self) -> bool {
        !self.ring.submission().is_empty() || !self.backlog.is_empty()
    }

    /// Whether a non-blocking turn would skip the kernel and find nothing
    /// here: no op in flight, nothing to submit, no completion or dropped
    /// op's data held back for the next park, no fixed slot to close.
    pub(crate) fn is_quiet(&mut self) -> bool {
        !self.has_ops_in_flight()
            && !self.has_pending_submissions()
            && self.stray_wake.is_empty()
            && self.stray_dead.is_empty()
            && (self.file_table == 0 || FIXED_TO_CLOSE.with(|v| v.borrow().is_empty()))
    }

    /// Arms the eventfd read if it is not armed.
    pub(crate) fn arm_eventfd(&mut self) {
        if self.eventfd_armed {
            return;
        }
        self.eventfd_armed = true;
        let ptr: *mut u64 = &mut *self.eventfd_buf;
        let sqe = opcode::Read::new(types::Fd(self.eventfd), ptr.cast(), 8)
            .build()
            .user_data(UD_EVENTFD);
        self.push(sqe);
    }

    /// One trip into the kernel: submit what is queued, then wait for at
    /// least one completion for at most `timeout` (`None`: no limit;
    /// `Some(ZERO)`: do not block). Completions are reaped into the op
    /// table; wakers to wake are pushed onto `wake`.
    pub(crate) fn park(&mut self, timeout: Option<Duration>, wake: &mut Vec<Waker>) -> Reaped {
        let orphans = FIXED_TO_CLOSE.with(|v| std::mem::take(&mut *v.borrow_mut()));
        for slot in orphans {
            if self.file_table > 0 {
                self.close_fixed(slot);
            }
        }
        self.refill_from_backlog();
        let mut reaped = Reaped::default();
        // Completions reaped while a dropped op was pushed to the kernel:
        // their wakers are due now, so this turn must not block.
        let stray = !self.stray_wake.is_empty() || !self.stray_dead.is_empty();
        wake.append(&mut self.stray_wake);
        reaped.dead.append(&mut self.stray_dead);
        let timeout = if stray { Some(Duration::ZERO) } else { timeout };
        let nonblocking = timeout == Some(Duration::ZERO);
        // Fast path: nothing to submit and completions already visible (or
        // nothing could arrive): skip the syscall.
        if nonblocking && !self.has_pending_submissions() && !self.defer_taskrun {
            self.reap(wake, &mut reaped);
            self.reap_overflow(wake, &mut reaped);
            return reaped;
        }
        if nonblocking {
            let to_submit = self.ring.submission().len() as u32;
            self.enter_nonblocking(to_submit);
        } else {
            if let (Some(t), false) = (timeout, self.ext_arg) {
                self.arm_wait_timeout(t);
            }
            self.stats.enters += 1;
            let result = fault::enter(|| match timeout {
                Some(t) if self.ext_arg => {
                    let ts = Timespec::new().sec(t.as_secs()).nsec(t.subsec_nanos());
                    let args = SubmitArgs::new().timespec(&ts);
                    self.ring.submitter().submit_with_args(1, &args)
                }
                // Without EXT_ARG the armed IORING_OP_TIMEOUT ends the wait.
                _ => self.ring.submitter().submit_and_wait(1),
            });
            check_enter(result);
            self.note_enter();
        }
        self.reap(wake, &mut reaped);
        self.reap_overflow(wake, &mut reaped);
        reaped
    }

    /// Without `IORING_FEAT_EXT_ARG`: makes sure an `IORING_OP_TIMEOUT`
    /// fires no later than `t` from now, so that the wait that follows ends
    /// by then. One is kept armed: it is reused while it fires no later than
    /// needed (firing early only costs a turn), and replaced (removed, then
    /// armed anew) when an earlier deadline comes. Never one per timer.
    fn arm_wait_timeout(&mut self, t: Duration) {
        let due = Instant::now() + t;
        if let Some((ud, at)) = self.wait_timeout {
            if at <= due {
                return;
            }
            self.push(opcode::TimeoutRemove::new(ud).build().user_data(UD_IGNORED));
        }
        self.wait_timeout_seq += 1;
        let ud = UD_WAIT_TIMEOUT | (self.wait_timeout_seq & (UD_WAIT_TIMEOUT - 1));
        *self.wait_ts = Timespec::new().sec(t.as_secs()).nsec(t.subsec_nanos());
        let ts: *const Timespec = &*self.wait_ts;
        self.push(opcode::Timeout::new(ts).build().user_data(ud));
        self.wait_timeout = Some((ud, due));
    }

    /// Completions the kernel could not post because the CQ was full wait
    /// in its overflow list (the ring has `IORING_FEAT_NODROP`: none is
    /// lost). Now that the CQ has room, flush them with a non-blocking
    /// enter and reap them in this turn, instead of a turn later.
    fn reap_overflow(&mut self, wake: &mut Vec<Waker>, reaped: &mut Reaped) {
        // Bounded: each round frees the whole CQ, so a few rounds empty any
        // overflow list; the rest waits for the next turn.
        for _ in 0..8 {
            if !self.ring.submission().cq_overflow() {
                return;
            }
            self.stats.cq_overflows += 1;
            self.enter_nonblocking(0);
            self.reap(wake, reaped);
        }
    }

    /// `io_uring_enter` that submits `to_submit` SQEs and waits for nothing:
    /// with GETEVENTS and `min_complete` 0 it runs deferred task work and
    /// flushes the CQ overflow list, so what is complete becomes visible.
    fn enter_nonblocking(&mut self, to_submit: u32) {
        self.stats.enters += 1;
        let mut flags = io_uring::EnterFlags::GETEVENTS;
        if self.sqpoll {
            // The SQPOLL thread submits; wake it if it went to sleep.
            std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
            if self.ring.submission().need_wakeup() {
                flags |= io_uring::EnterFlags::SQ_WAKEUP;
            }
        }
        // SAFETY: a plain io_uring_enter with no argument struct.
        let result = fault::enter(|| unsafe {
            self.ring
                .submitter()
                .enter::<libc::sigset_t>(to_submit, 0, flags.bits(), None)
        });
        check_enter(result);
        self.note_enter();
    }

    /// Drains the completion queue.
    fn reap(&mut self, wake: &mut Vec<Waker>, reaped: &mut Reaped) {
        // Multishot ops past their bound of unread completions, cancelled
        // once the completion queue is let go (rare: no allocation else).
        let mut over_bound = Vec::new();
        let mut cq = self.ring.completion();
        cq.sync();
        for cqe in &mut cq {
            self.stats.cqes_reaped += 1;
            match cqe.user_data() {
                // An op's key (bits 0-59): the usual completion, told apart
                // from the driver's own entries with one test, first.
                key if key >> UD_OWN_SHIFT == 0 => {
                    if cqe.result() == -libc::ECANCELED {
                        self.stats.ops_canceled_by_kernel += 1;
                    }
                    let (res, flags) = (cqe.result(), cqe.flags());
                    match self
                        .ops
                        .complete(key, res, flags, &mut reaped.dead, &mut over_bound)
                    {
                        Ok(Some(w)) => wake.push(w),
                        Ok(None) => {}
                        // A completion for an op whose slot is gone or
                        // reused: the ordering rule (a slot is freed only
                        // after its final CQE, and a cancel reaches the
                        // kernel before its target's slot can be freed)
                        // says this never happens.
                        Err(()) => {
                            debug_assert!(false, "a stale completion (user_data {key:#x})")
                        }
                    }
                }
                UD_IGNORED => {}
                UD_EVENTFD => {
                    self.eventfd_armed = false;
                    reaped.remote_wakeup = true;
                }
                UD_MSG_RING => reaped.remote_wakeup = true,
                ud if ud & UD_WAIT_TIMEOUT != 0 && ud & UD_INTERNAL == 0 => {
                    // Fired (-ETIME) or removed (-ECANCELED): if it is the
                    // armed one, the next timed wait arms a new one.
                    if self.wait_timeout.is_some_and(|(armed, _)| armed == ud) {
                        self.wait_timeout = None;
                    }
                }
                ud if ud & UD_INTERNAL != 0 => {
                    let index = (ud & !UD_INTERNAL) as usize;
                    if let Some(on_done) = self.internal.try_remove(index) {
                        on_done(cqe.result());
                    }
                }
                ud => debug_assert!(false, "a completion no entry of ours made ({ud:#x})"),
            }
        }
        drop(cq);
        for full in over_bound {
            // Nobody reads it fast enough: stop it (its owner re-arms once
            // it has read what is queued).
            self.cancel(full);
        }
    }

    /// Cancels every in-flight operation (and the eventfd read) and reaps
    /// completions until the kernel owns nothing of ours. Called at shutdown.
    /// Returns the data of dropped ops, to drop outside the driver's borrow.
    pub(crate) fn drain(&mut self) -> Vec<Box<dyn std::any::Any>> {
        for key in self.ops.keys() {
            self.orphan_for_shutdown(key);
        }
        if self.eventfd_armed {
            self.push(
                opcode::AsyncCancel::new(UD_EVENTFD)
                    .build()
                    .user_data(UD_IGNORED),
            );
        }
        let mut wake = Vec::new();
        let mut dead = Vec::new();
        // Each round waits up to 100 ms; cancels of ordinary ops finish in
        // microseconds, so the bound only matters for a wedged device.
        for _ in 0..600 {
            if self.ops.len() == 0 && !self.eventfd_armed && self.internal.is_empty() {
                break;
            }
            let reaped = self.park(Some(Duration::from_millis(100)), &mut wake);
            dead.extend(reaped.dead);
            wake.clear();
        }
        dead
    }

    /// At shutdown, the future of op `key` will never read its results:
    /// release what the kernel created for them (the orphan cleanup closes
    /// an accepted or opened fd), then free the slot or, if the kernel still
    /// owns the op, cancel it and free the slot at its final CQE.
    fn orphan_for_shutdown(&mut self, key: OpKey) {
        let Some(slot) = self.ops.get_mut(key) else {
            return;
        };
        slot.release_unread(None);
        if slot.finished() {
            self.ops.remove(key);
        } else {
            slot.set_orphaned(None);
            self.cancel(key);
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // No RefCell borrow of the driver is held here: dropping the data
        // of finished ops right away is fine.
        drop(self.drain());
        if self.ops.len() > 0 || self.eventfd_armed {
            // The kernel still owns memory of ours (an op that ignored its
            // cancel for a minute). Freeing it would let the kernel write into
            // freed memory; leaking it is the only safe choice.
            let ops = std::mem::take(&mut self.ops);
            std::mem::forget(ops);
            let buf = std::mem::replace(&mut self.eventfd_buf, Box::new(0));
            std::mem::forget(buf);
        }
    }
}

/// Turns a failed `io_uring_setup` into an error that says what to do.
fn setup_error(e: io::Error, entries: u32) -> Error {
    match e.raw_os_error() {
        Some(libc::ENOMEM) => {
            let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
            // SAFETY: getrlimit writes into the struct we pass.
            unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) };
            Error::InvalidArgument(format!(
                "io_uring_setup failed with ENOMEM for a ring of {entries} entries: RLIMIT_MEMLOCK is {} KiB, \
                 too low for that ring; raise it (ulimit -l) or ask for fewer ring_entries",
                lim.rlim_cur / 1024
            ))
        }
        Some(libc::ENOSYS) => Error::Unsupported(
            "io_uring is not available: this kernel has no io_uring_setup (it needs Linux 5.1 or later)".into(),
        ),
        Some(libc::EPERM) => Error::Unsupported(
            "io_uring_setup was refused (EPERM): io_uring is disabled by kernel.io_uring_disabled or a seccomp policy".into(),
        ),
        _ => Error::from(io::Error::new(e.kind(), format!("io_uring_setup failed: {e}"))),
    }
}

/// What an `io_uring_enter` may fail with and still be fine: ETIME (the wait
/// timed out), EINTR (a signal), EBUSY/EAGAIN/ENOMEM (the CQ is full or the
/// kernel is short of memory: it took no SQE, so reap and enter again).
/// Anything else means the ring is broken.
fn check_enter(result: io::Result<usize>) {
    if let Err(e) = result {
        if !matches!(
            e.raw_os_error(),
            Some(libc::ETIME | libc::EINTR | libc::EBUSY | libc::EAGAIN | libc::ENOMEM)
        ) {
            panic_ring(e);
        }
    }
}

/// An `io_uring_enter` error other than the transient ones means the ring is
/// unusable (EBADF, EFAULT): the loop cannot go on without losing track of
/// what the kernel owns.
fn panic_ring(e: io::Error) -> ! {
    panic!("ringio: io_uring_enter failed: {e}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the driver until op `key` completes; its result.
    fn wait_for(d: &mut Driver, key: OpKey) -> i32 {
        let mut wake = Vec::new();
        for _ in 0..100 {
            if let Some((res, _, _)) = d.take_result(key) {
                return res;
            }
            d.park(Some(Duration::from_millis(10)), &mut wake);
            wake.clear();
        }
        panic!("the op never completed");
    }

    #[test]
    fn a_linked_pair_fits_in_the_smallest_ring() {
        // ring_entries(1) is accepted; a linked op must still go through.
        let mut d = Driver::new(1, -1).unwrap();
        let ts = Box::new(Timespec::new().sec(5));
        let link = opcode::LinkTimeout::new(&*ts as *const Timespec).build();
        // SAFETY: NOP points to nothing; the timespec outlives the op.
        let key = unsafe { d.submit_linked(opcode::Nop::new().build(), link, None, None) };
        assert_eq!(wait_for(&mut d, key), 0);
        // And an op queued after it is not stuck behind it.
        // SAFETY: NOP points to nothing.
        let key = unsafe { d.submit(opcode::Nop::new().build(), None, None) };
        assert_eq!(wait_for(&mut d, key), 0);
        assert_eq!(d.stats().ops_in_flight, 0);
    }
}
