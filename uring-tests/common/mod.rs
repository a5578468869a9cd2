//! Helpers shared by the integration tests (each test file is its own
//! crate and uses a subset, hence the `dead_code` allowance).
#![allow(dead_code)]

use std::future::Future;
use std::os::fd::{FromRawFd, OwnedFd};
use std::pin::pin;
use std::sync::{Mutex, MutexGuard};
use std::task::Poll;
use std::time::Duration;

use ringio::Runtime;

/// `n` milliseconds.
pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Runs `fut` on a fresh runtime and returns its output.
pub fn block_on<F: Future + 'static>(fut: F) -> F::Output {
    Runtime::new()
        .expect("ring setup")
        .run(fut)
        .expect("main task")
}

/// A pipe: (read end, write end).
pub fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into `fds`.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(rc, 0, "pipe2: {}", std::io::Error::last_os_error());
    // SAFETY: both descriptors are fresh and owned by nobody else.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

static SERIAL: Mutex<()> = Mutex::new(());

/// Serializes the tests of one file that count this process's open fds
/// (`/proc/self/fd` is shared by every test thread).
pub fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Deterministic pseudo-random bytes (xorshift), different per seed.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// How many descriptors this process has open.
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// [`open_fds`] once it holds still: a descriptor that an earlier test of
/// this process let go of may still be on its way out (closed by a worker
/// thread, or behind the ring's last completions) when the next test takes
/// its baseline. Reads until two counts 20 ms apart agree (at most 2 s).
pub fn settled_open_fds() -> usize {
    let mut last = open_fds();
    for _ in 0..100 {
        std::thread::sleep(std::time::Duration::from_millis(20));
        let now = open_fds();
        if now == last {
            return now;
        }
        last = now;
    }
    last
}

/// The running loop's driver counters.
pub fn stats() -> ringio::DriverStats {
    ringio::get_running_loop().unwrap().stats().driver
}

/// Polls `fut` once, then drops it (mid-flight if it submitted an op).
pub async fn poll_once_and_drop<F: Future>(fut: F) {
    let mut fut = pin!(fut);
    std::future::poll_fn(|cx| {
        let _ = fut.as_mut().poll(cx);
        Poll::Ready(())
    })
    .await;
}

/// Turns the loop until no op and no MSG_RING wake-up send is in flight
/// (bounded).
pub async fn settle() {
    for _ in 0..500 {
        let s = stats();
        // A wake-up this loop sent another (MSG_RING) is the kernel's
        // until its completion is reaped, a turn or so later.
        if s.ops_in_flight == 0 && s.msg_ring_sends_in_flight == 0 {
            return;
        }
        ringio::sleep(Duration::from_millis(1)).await.unwrap();
    }
    panic!("ops or wake-up sends still in flight: {:?}", stats());
}

/// A connected TCP pair on loopback: (client, server).
pub async fn tcp_pair() -> (ringio::net::TcpStream, ringio::net::TcpStream) {
    use ringio::net::{TcpListener, TcpStream};
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let connect = ringio::create_task(async move { TcpStream::connect(addr).await });
    let (server, _) = listener.accept().await.unwrap();
    (connect.await.unwrap(), server)
}

/// Writes `data` to `client` from a task of its own, then shuts its write
/// side (the reader meets end of stream after the last byte); the task
/// gives the stream back.
pub fn send_then_close(
    client: ringio::net::TcpStream,
    data: Vec<u8>,
) -> ringio::Task<ringio::net::TcpStream> {
    ringio::create_task(async move {
        let (r, _) = client.write_all(data).await;
        r?;
        client.shutdown(std::net::Shutdown::Write).await?;
        Ok::<_, ringio::Error>(client)
    })
}

/// Both kinds of provided-buffer pool: the kernel's ring and the
/// user-space one older kernels get.
pub const MODES: [ringio::io::BufRingMode; 2] = [
    ringio::io::BufRingMode::Kernel,
    ringio::io::BufRingMode::Local,
];

/// A pool of `entries` buffers of `size` bytes, of the kind `mode` asks
/// for (checked).
pub fn pool(mode: ringio::io::BufRingMode, entries: u32, size: usize) -> ringio::io::BufRing {
    use ringio::io::{BufRing, BufRingMode, BufRingOptions};
    let ring = BufRing::with_options(BufRingOptions::new(entries, size).mode(mode)).unwrap();
    assert_eq!(ring.is_kernel(), mode == BufRingMode::Kernel);
    ring
}
