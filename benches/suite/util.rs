//! Helpers shared by the benchmarks: configuration, CPU pinning, clocks,
//! sockets, a PRNG, and polling a future exactly once.

use std::future::Future;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{FromRawFd, RawFd};
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

pub struct Config {
    /// Repetitions of each measurement (interleaved between runtimes).
    pub reps: usize,
    /// Seconds per tcp_echo cell and per file_read run.
    pub secs: f64,
}

impl Config {
    pub fn from_env() -> Config {
        let reps = std::env::var("RINGIO_BENCH_REPS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(3usize)
            .max(1);
        let secs = std::env::var("RINGIO_BENCH_SECS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(2.0f64);
        Config { reps, secs }
    }

    /// Repetitions for the long, time-bounded benchmarks.
    pub fn long_reps(&self) -> usize {
        (self.reps - 1).max(1)
    }
}

pub fn nproc() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Pins the calling thread to `cpu` (modulo the CPUs there are).
pub fn pin_to_cpu(cpu: usize) {
    let cpu = cpu % nproc();
    // SAFETY: a zeroed cpu_set_t is valid; CPU_SET writes within it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// CPU time (user + system) the calling thread has used.
pub fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid clock id and out pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// CPU time (user + system) the whole process has used so far, its
/// kernel threads (an SQPOLL thread) included.
pub fn process_cpu() -> Duration {
    // SAFETY: getrusage writes into the struct we pass.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        ru
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// xorshift64*: cheap, deterministic random numbers.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// Polls `fut` once (registering its waker), whatever it returns.
pub async fn poll_once<F: Future>(mut fut: Pin<&mut F>) {
    std::future::poll_fn(|cx| {
        let _ = fut.as_mut().poll(cx);
        Poll::Ready(())
    })
    .await
}

/// A listener on 127.0.0.1 with a backlog large enough for every benchmark
/// client to connect before the server accepts.
pub fn listener() -> TcpListener {
    // SAFETY: plain socket calls on a descriptor this function owns; the
    // address struct is fully initialised.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        let one: libc::c_int = 1;
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_REUSEADDR,
            &one as *const _ as *const libc::c_void,
            4,
        );
        let mut addr: libc::sockaddr_in = std::mem::zeroed();
        addr.sin_family = libc::AF_INET as u16;
        addr.sin_addr.s_addr = u32::from_ne_bytes([127, 0, 0, 1]);
        addr.sin_port = 0;
        let r = libc::bind(
            fd,
            &addr as *const _ as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_in>() as u32,
        );
        assert!(r == 0, "bind: {}", std::io::Error::last_os_error());
        let r = libc::listen(fd, 4096);
        assert!(r == 0, "listen: {}", std::io::Error::last_os_error());
        TcpListener::from_raw_fd(fd)
    }
}

pub fn set_nodelay(fd: RawFd) {
    let one: libc::c_int = 1;
    // SAFETY: setsockopt on a socket with a valid option buffer.
    unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_NODELAY,
            &one as *const _ as *const libc::c_void,
            4,
        );
    }
}

/// A connected pair of TCP sockets on 127.0.0.1: (client, server side).
pub fn tcp_pair(l: &TcpListener) -> (TcpStream, TcpStream) {
    let addr: SocketAddr = l.local_addr().unwrap();
    let c = TcpStream::connect(addr).unwrap();
    let (s, _) = l.accept().unwrap();
    c.set_nodelay(true).unwrap();
    s.set_nodelay(true).unwrap();
    (c, s)
}

pub fn tokio_ct() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

pub fn tokio_mt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(nproc().max(2))
        .enable_all()
        .build()
        .unwrap()
}

/// A raw ring as the floor runs it: SINGLE_ISSUER | DEFER_TASKRUN where the
/// kernel has them (as ringio sets its ring up).
pub fn raw_ring(entries: u32) -> io_uring::IoUring {
    io_uring::IoUring::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .setup_cqsize(entries * 4)
        .build(entries)
        .or_else(|_| io_uring::IoUring::new(entries))
        .expect("io_uring setup")
}

/// Pushes `sqe`, flushing the submission queue first if it is full.
pub fn push(ring: &mut io_uring::IoUring, sqe: &io_uring::squeue::Entry) {
    loop {
        // SAFETY: callers only push SQEs whose memory outlives their CQE.
        if unsafe { ring.submission().push(sqe) }.is_ok() {
            return;
        }
        ring.submit().expect("io_uring_enter");
    }
}
