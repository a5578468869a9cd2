//! Fault injection for tests (cargo feature `fault-injection`, off by
//! default): the real ring runs, but the driver is made to see what a
//! loaded or misbehaving kernel sends back.
//!
//! - `io_uring_enter` fails with EBUSY, EAGAIN, ENOMEM or EINTR: the enter
//!   is skipped and the error goes to the driver's own handling, exactly as
//!   when the kernel refuses a submission (it took no SQE).
//! - An operation completes with `-errno` (EINTR, ECANCELED, ...): its SQE
//!   is replaced, before the kernel sees it, by an `IORING_OP_NOP` with
//!   `IORING_NOP_INJECT_RESULT` carrying the same `user_data` (and link
//!   flag). The kernel never runs the real op, so no byte is read or
//!   written that the runtime then forgets; the op's memory is still held
//!   in the op table until that NOP's CQE, as for any op.
//! - A read or write comes back short: the SQE's length is cut before
//!   submission, so the kernel really transfers fewer bytes (and the rest
//!   stays in the socket or file).
//! - A MSG_RING wake-up fails (`-errno`: the runtime falls back to the
//!   target's eventfd) or is lost (result 0 but nothing posted, the lost
//!   wake-ups of some 6.1 stable kernels): the send becomes a NOP with that
//!   result.
//!
//! Faults are set per thread (the thread of the loop they hit) with
//! [`inject`] or [`inject_randomly`], and counted in [`injected`]. With the
//! feature off, the hooks are empty inline functions.
//!
//! Invariants (the `unsafe` here): an SQE is `io_uring::squeue::Entry`, a
//! `#[repr(C)]` wrapper of the kernel's 64-byte `io_uring_sqe`, made from
//! zeroed memory and plain integer fields, so it can be read and rebuilt
//! as 64 bytes at the kernel ABI's offsets.

#[cfg(not(feature = "fault-injection"))]
use {io_uring::squeue::Entry, std::io};

#[cfg(feature = "fault-injection")]
pub use imp::{Fault, Injected, clear, inject, inject_randomly, injected};

/// An SQE about to be queued for a caller's op (its `user_data` set):
/// the same SQE, or its faulty replacement.
#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub(crate) fn on_submit(sqe: Entry) -> Entry {
    sqe
}

/// A MSG_RING SQE about to be queued: the same, or a NOP with an injected
/// result.
#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub(crate) fn on_msg_ring(sqe: Entry) -> Entry {
    sqe
}

/// Runs the `io_uring_enter` in `enter`, or fails without entering.
#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub(crate) fn enter(enter: impl FnOnce() -> io::Result<usize>) -> io::Result<usize> {
    enter()
}

#[cfg(feature = "fault-injection")]
pub(crate) use imp::{enter, on_msg_ring, on_submit};

#[cfg(feature = "fault-injection")]
mod imp {
    use std::cell::RefCell;
    use std::io;
    use std::sync::OnceLock;

    use io_uring::opcode;
    use io_uring::squeue::Entry;

    use crate::error::{Error, Result};

    /// A fault to inject into the current thread's loop.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    #[non_exhaustive]
    pub enum Fault {
        /// `io_uring_enter` fails with this errno (`EBUSY`, `EAGAIN`,
        /// `ENOMEM` or `EINTR`) without entering the kernel: the queued
        /// SQEs stay queued, as when the kernel refuses them.
        Enter(i32),
        /// An operation with this opcode (`io_uring::opcode::*::CODE`)
        /// completes with `-errno` without being run: its SQE becomes a NOP
        /// that injects that result (`IORING_NOP_INJECT_RESULT`).
        Complete {
            /// The opcode of the operations to fail.
            opcode: u8,
            /// The positive errno their completion carries, negated.
            errno: i32,
        },
        /// An operation with this opcode (`READ`, `WRITE`, `RECV`, `SEND`,
        /// `READ_FIXED`, `WRITE_FIXED`) asking for more than `max` bytes
        /// asks for `max`: the kernel does a short transfer.
        Short {
            /// The opcode of the operations to shorten.
            opcode: u8,
            /// The most bytes the shortened operation moves (at least 1).
            max: u32,
        },
        /// A MSG_RING wake-up this loop sends completes with `-errno`
        /// without being sent; `0` reports success but posts nothing (a
        /// lost wake-up).
        MsgRing(i32),
    }

    /// How many faults were injected on this thread, by kind.
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    #[non_exhaustive]
    pub struct Injected {
        /// `io_uring_enter` calls failed.
        pub enters: u64,
        /// Operations completed with an injected error.
        pub completions: u64,
        /// Operations shortened.
        pub shortened: u64,
        /// MSG_RING sends failed or lost.
        pub msg_rings: u64,
    }

    struct Rule {
        fault: Fault,
        /// Injections left (`u64::MAX`: no limit).
        left: u64,
        /// Inject on one eligible event in `one_in` (seeded); 1: every one.
        one_in: u64,
        rng: u64,
    }

    #[derive(Default)]
    struct State {
        rules: Vec<Rule>,
        counts: Injected,
    }

    thread_local! {
        static STATE: RefCell<State> = RefCell::new(State::default());
    }

    const OPCODES_WITH_BYTE_LEN: [u8; 6] = [
        opcode::Read::CODE,
        opcode::Write::CODE,
        opcode::Recv::CODE,
        opcode::Send::CODE,
        opcode::ReadFixed::CODE,
        opcode::WriteFixed::CODE,
    ];

    fn check(fault: Fault) -> Result<()> {
        let bad = |what: String| Err(Error::InvalidArgument(what));
        match fault {
            Fault::Enter(e) => {
                if ![libc::EBUSY, libc::EAGAIN, libc::ENOMEM, libc::EINTR].contains(&e) {
                    return bad(format!(
                        "Fault::Enter({e}): only the transient errors of io_uring_enter \
                         (EBUSY, EAGAIN, ENOMEM, EINTR) can be injected"
                    ));
                }
            }
            Fault::Complete { errno, .. } => {
                if !(1..4096).contains(&errno) {
                    return bad(format!(
                        "Fault::Complete: errno {errno} is not a positive errno"
                    ));
                }
                nop_inject_supported()?;
            }
            Fault::Short { opcode, max } => {
                if !OPCODES_WITH_BYTE_LEN.contains(&opcode) {
                    return bad(format!(
                        "Fault::Short: opcode {opcode} has no byte length to cut (READ, WRITE, \
                         RECV, SEND, READ_FIXED, WRITE_FIXED have)"
                    ));
                }
                if max == 0 {
                    return bad("Fault::Short: max must be at least 1 byte".into());
                }
            }
            Fault::MsgRing(errno) => {
                if !(0..4096).contains(&errno) {
                    return bad(format!(
                        "Fault::MsgRing: errno {errno} is not 0 or a positive errno"
                    ));
                }
                nop_inject_supported()?;
            }
        }
        Ok(())
    }

    /// Injects `fault` on the next `times` events it applies to on this
    /// thread's loop. `Error::InvalidArgument` for a fault that cannot be
    /// injected; `Error::Unsupported` if the kernel lacks
    /// `IORING_NOP_INJECT_RESULT` (needed by `Complete` and `MsgRing`).
    pub fn inject(fault: Fault, times: u32) -> Result<()> {
        check(fault)?;
        STATE.with(|s| {
            s.borrow_mut().rules.push(Rule {
                fault,
                left: times.into(),
                one_in: 1,
                rng: 1,
            })
        });
        Ok(())
    }

    /// Injects `fault` on each event it applies to with probability
    /// `1 / one_in`, drawn from `seed`, until [`clear`].
    pub fn inject_randomly(fault: Fault, one_in: u32, seed: u64) -> Result<()> {
        check(fault)?;
        if one_in == 0 {
            return Err(Error::InvalidArgument(
                "inject_randomly: one_in must be at least 1".into(),
            ));
        }
        STATE.with(|s| {
            s.borrow_mut().rules.push(Rule {
                fault,
                left: u64::MAX,
                one_in: one_in.into(),
                rng: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
            })
        });
        Ok(())
    }

    /// Removes every fault of this thread (the counts stay).
    pub fn clear() {
        STATE.with(|s| s.borrow_mut().rules.clear());
    }

    /// The faults injected on this thread so far.
    pub fn injected() -> Injected {
        STATE.with(|s| s.borrow().counts)
    }

    /// The first rule that `applies` and fires this time, consumed.
    fn fire(applies: impl Fn(Fault) -> bool) -> Option<Fault> {
        STATE.with(|s| {
            let mut s = s.borrow_mut();
            if s.rules.is_empty() {
                return None;
            }
            let mut hit = None;
            for rule in s.rules.iter_mut().filter(|r| r.left > 0) {
                if !applies(rule.fault) {
                    continue;
                }
                if rule.one_in > 1 {
                    // xorshift64*
                    rule.rng ^= rule.rng >> 12;
                    rule.rng ^= rule.rng << 25;
                    rule.rng ^= rule.rng >> 27;
                    if rule.rng.wrapping_mul(0x2545_F491_4F6C_DD1D) % rule.one_in != 0 {
                        continue;
                    }
                }
                if rule.left != u64::MAX {
                    rule.left -= 1;
                }
                hit = Some(rule.fault);
                break;
            }
            s.rules.retain(|r| r.left > 0);
            if let Some(f) = hit {
                let c = &mut s.counts;
                match f {
                    Fault::Enter(_) => c.enters += 1,
                    Fault::Complete { .. } => c.completions += 1,
                    Fault::Short { .. } => c.shortened += 1,
                    Fault::MsgRing(_) => c.msg_rings += 1,
                }
            }
            hit
        })
    }

    const _: () = assert!(std::mem::size_of::<Entry>() == 64);

    fn bytes(sqe: &Entry) -> [u8; 64] {
        // SAFETY: `Entry` is 64 initialised bytes (see the module's
        // invariants); reading them as bytes reads nothing else.
        unsafe { std::mem::transmute_copy(sqe) }
    }

    fn entry(b: [u8; 64]) -> Entry {
        // SAFETY: every bit pattern is a valid `io_uring_sqe` for Rust (it
        // has only integer fields); the kernel checks the values.
        unsafe { std::mem::transmute::<[u8; 64], Entry>(b) }
    }

    // Offsets in `struct io_uring_sqe` (include/uapi/linux/io_uring.h).
    const FLAGS: usize = 1;
    const LEN: usize = 24;
    const OP_FLAGS: usize = 28;
    const USER_DATA: usize = 32;
    /// The flags a NOP keeps: those that order it among other SQEs (a
    /// linked `LINK_TIMEOUT` stays linked to it).
    const ORDER_FLAGS: u8 = 0x02 | 0x04 | 0x08; // IO_DRAIN | IO_LINK | IO_HARDLINK
    const IORING_NOP_INJECT_RESULT: u32 = 1;

    fn read_u32(b: &[u8; 64], at: usize) -> u32 {
        u32::from_ne_bytes(b[at..at + 4].try_into().expect("4 bytes"))
    }

    /// A NOP that completes with `res`, in place of `orig` (same
    /// `user_data`, same ordering flags).
    fn nop_with_result(orig: &Entry, res: i32) -> Entry {
        let o = bytes(orig);
        let mut b = bytes(&opcode::Nop::new().build());
        b[FLAGS] = o[FLAGS] & ORDER_FLAGS;
        b[LEN..LEN + 4].copy_from_slice(&(res as u32).to_ne_bytes());
        b[OP_FLAGS..OP_FLAGS + 4].copy_from_slice(&IORING_NOP_INJECT_RESULT.to_ne_bytes());
        b[USER_DATA..USER_DATA + 8].copy_from_slice(&o[USER_DATA..USER_DATA + 8]);
        entry(b)
    }

    /// Whether this kernel's NOP injects a result (a probe on a ring of
    /// its own, once per process): an older one would complete the NOP
    /// with 0, which an op would take for end of file.
    fn nop_inject_supported() -> Result<()> {
        static SUPPORTED: OnceLock<bool> = OnceLock::new();
        let ok = *SUPPORTED.get_or_init(|| {
            let Ok(mut ring) = io_uring::IoUring::new(2) else {
                return false;
            };
            let sqe = nop_with_result(&opcode::Nop::new().build().user_data(7), -libc::EINTR);
            // SAFETY: a NOP points to no memory.
            if unsafe { ring.submission().push(&sqe) }.is_err() || ring.submit_and_wait(1).is_err()
            {
                return false;
            }
            ring.completion()
                .next()
                .is_some_and(|c| c.user_data() == 7 && c.result() == -libc::EINTR)
        });
        if ok {
            Ok(())
        } else {
            Err(Error::Unsupported(
                "fault injection of completions needs IORING_NOP_INJECT_RESULT (a NOP that \
                 completes with a given result, Linux 6.x)"
                    .into(),
            ))
        }
    }

    pub(crate) fn on_submit(sqe: Entry) -> Entry {
        let code = sqe.get_opcode() as u8;
        let b = bytes(&sqe);
        let len = read_u32(&b, LEN);
        let fault = fire(|f| match f {
            Fault::Complete { opcode, .. } => opcode == code,
            Fault::Short { opcode, max } => opcode == code && len > max,
            _ => false,
        });
        match fault {
            Some(Fault::Complete { errno, .. }) => nop_with_result(&sqe, -errno),
            Some(Fault::Short { max, .. }) => {
                let mut b = b;
                b[LEN..LEN + 4].copy_from_slice(&max.to_ne_bytes());
                entry(b)
            }
            _ => sqe,
        }
    }

    pub(crate) fn on_msg_ring(sqe: Entry) -> Entry {
        match fire(|f| matches!(f, Fault::MsgRing(_))) {
            Some(Fault::MsgRing(errno)) => nop_with_result(&sqe, -errno),
            _ => sqe,
        }
    }

    pub(crate) fn enter(enter: impl FnOnce() -> io::Result<usize>) -> io::Result<usize> {
        match fire(|f| matches!(f, Fault::Enter(_))) {
            Some(Fault::Enter(errno)) => Err(io::Error::from_raw_os_error(errno)),
            _ => enter(),
        }
    }
}
