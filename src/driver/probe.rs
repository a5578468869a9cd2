//! Which opcodes this kernel's ring supports (`IORING_REGISTER_PROBE`), and the
//! kernel version that brings each one, for [`Error::Unsupported`] messages.

use io_uring::opcode;
use io_uring::register::Probe;

use crate::error::Error;

/// The opcodes ringio uses, with their names and the kernel that added them.
const KNOWN: &[(u8, &str, &str)] = &[
    (opcode::Nop::CODE, "IORING_OP_NOP", "5.1"),
    (opcode::Readv::CODE, "IORING_OP_READV", "5.1"),
    (opcode::Writev::CODE, "IORING_OP_WRITEV", "5.1"),
    (opcode::Fsync::CODE, "IORING_OP_FSYNC", "5.1"),
    (opcode::ReadFixed::CODE, "IORING_OP_READ_FIXED", "5.1"),
    (opcode::WriteFixed::CODE, "IORING_OP_WRITE_FIXED", "5.1"),
    (opcode::Timeout::CODE, "IORING_OP_TIMEOUT", "5.4"),
    (opcode::Accept::CODE, "IORING_OP_ACCEPT", "5.5"),
    (opcode::AsyncCancel::CODE, "IORING_OP_ASYNC_CANCEL", "5.5"),
    (opcode::LinkTimeout::CODE, "IORING_OP_LINK_TIMEOUT", "5.5"),
    (opcode::Connect::CODE, "IORING_OP_CONNECT", "5.5"),
    (opcode::OpenAt::CODE, "IORING_OP_OPENAT", "5.6"),
    (opcode::Close::CODE, "IORING_OP_CLOSE", "5.6"),
    (opcode::Statx::CODE, "IORING_OP_STATX", "5.6"),
    (opcode::Read::CODE, "IORING_OP_READ", "5.6"),
    (opcode::Write::CODE, "IORING_OP_WRITE", "5.6"),
    (opcode::Send::CODE, "IORING_OP_SEND", "5.6"),
    (opcode::Recv::CODE, "IORING_OP_RECV", "5.6"),
    (opcode::SendMsg::CODE, "IORING_OP_SENDMSG", "5.3"),
    (opcode::RecvMsg::CODE, "IORING_OP_RECVMSG", "5.3"),
    (opcode::RenameAt::CODE, "IORING_OP_RENAMEAT", "5.11"),
    (opcode::UnlinkAt::CODE, "IORING_OP_UNLINKAT", "5.11"),
    (opcode::MkDirAt::CODE, "IORING_OP_MKDIRAT", "5.15"),
    (opcode::Shutdown::CODE, "IORING_OP_SHUTDOWN", "5.11"),
    (opcode::MsgRingData::CODE, "IORING_OP_MSG_RING", "5.18"),
    (opcode::Socket::CODE, "IORING_OP_SOCKET", "5.19"),
    (opcode::SendZc::CODE, "IORING_OP_SEND_ZC", "6.0"),
    (opcode::Splice::CODE, "IORING_OP_SPLICE", "5.7"),
];

/// The ring's opcode support, read once at start.
pub(crate) struct OpcodeSupport {
    /// Bit `code` set: the ring supports opcode `code` and it is not
    /// hidden. Read once from the kernel's probe, so the check every
    /// submission makes is one bit test.
    supported: u128,
    /// Whether the kernel had a probe; without one (before 5.6) every
    /// opcode is taken as present and the op's own -EINVAL speaks.
    probed: bool,
}

impl OpcodeSupport {
    /// `hidden`: opcodes treated as missing (bit `code`), to run the
    /// fallbacks of older kernels on a new one (`Builder::without_opcodes`).
    pub(crate) fn read(submitter: &io_uring::Submitter<'_>, hidden: u128) -> OpcodeSupport {
        let mut probe = Probe::new();
        let probe = submitter.register_probe(&mut probe).ok().map(|_| probe);
        let mut supported = 0u128;
        for code in 0..128u8 {
            if probe.as_ref().is_none_or(|p| p.is_supported(code)) {
                supported |= 1 << code;
            }
        }
        OpcodeSupport {
            supported: supported & !hidden,
            probed: probe.is_some(),
        }
    }

    /// Whether the ring supports `code`.
    #[inline]
    pub(crate) fn supports(&self, code: u8) -> bool {
        match 1u128.checked_shl(u32::from(code)) {
            Some(bit) => self.supported & bit != 0,
            // No opcode this high exists today; the kernel judges it.
            None => !self.probed,
        }
    }

    /// `Ok` if `code` is supported, else an `Unsupported` error naming the
    /// opcode and the kernel version that brings it.
    #[inline]
    pub(crate) fn require(&self, code: u8) -> Result<(), Error> {
        if self.supports(code) {
            return Ok(());
        }
        self.unsupported(code)
    }

    #[cold]
    fn unsupported(&self, code: u8) -> Result<(), Error> {
        let (name, since) = KNOWN
            .iter()
            .find(|(c, _, _)| *c == code)
            .map(|(_, n, v)| (*n, *v))
            .unwrap_or(("opcode", "a newer kernel"));
        Err(Error::Unsupported(format!(
            "{name} (opcode {code}) is not supported by this kernel's io_uring; it needs Linux {since} or later"
        )))
    }
}
