//! Integration tests: a plain `read` or `read_exact` on a stream socket
//! whose future is dropped while its receive is in flight loses nothing.
//! What the kernel had received for it (or receives before the cancel
//! lands) is kept with the socket and returned first by the next read or
//! receive stream, in order (against a real ring).
//!
//! Every test takes `SERIAL`: the fd-leak checks count `/proc/self/fd`,
//! which all threads of the test process share.

mod common;
use common::*;

use std::future::Future;
use std::pin::{Pin, pin};
use std::rc::Rc;
use std::task::Poll;
use std::time::{Duration, Instant};

use futures_util::future::{Either, select};
use ringio::io::{BufRing, BufRingMode, BufRingOptions};
use ringio::net::{DirectStream, TcpListener, TcpStream, UnixStream};

/// The byte at position `p` of a test stream: a hash of the position, so a
/// byte lost, repeated or out of order shows at once.
fn pat(p: u64) -> u8 {
    (p.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as u8
}

/// A connected TCP pair, the client with `TCP_NODELAY`: (client, server).
async fn nodelay_pair() -> (TcpStream, TcpStream) {
    let (client, server) = tcp_pair().await;
    client.set_nodelay(true).unwrap();
    (client, server)
}

/// Polls `fut` once (so that it submits its receive) and hands it back,
/// boxed, for the caller to drop later.
async fn poll_once<F: Future + 'static>(fut: F) -> Pin<Box<dyn Future<Output = F::Output>>> {
    let mut fut: Pin<Box<dyn Future<Output = F::Output>>> = Box::pin(fut);
    std::future::poll_fn(|cx| {
        assert!(
            fut.as_mut().poll(cx).is_pending(),
            "nothing to receive yet: the read waits"
        );
        Poll::Ready(())
    })
    .await;
    fut
}

/// Lets the loop reap what the kernel completed meanwhile.
async fn reap() {
    ringio::sleep(ms(20)).await.unwrap();
}

/// Reads exactly `n` bytes with plain reads (each bounded by a deadline,
/// so a lost byte fails the test instead of hanging it).
async fn read_n(s: &impl ReadSome, n: usize) -> Vec<u8> {
    let mut got = Vec::new();
    while got.len() < n {
        let buf = s.read_some(Vec::with_capacity(n - got.len())).await;
        assert!(!buf.is_empty(), "end of stream after {} bytes", got.len());
        got.extend_from_slice(&buf);
    }
    got
}

/// `read` with a 5 s deadline, on either stream type.
trait ReadSome {
    fn read_some(&self, buf: Vec<u8>) -> impl Future<Output = Vec<u8>>;
}

impl ReadSome for TcpStream {
    async fn read_some(&self, buf: Vec<u8>) -> Vec<u8> {
        let (res, buf) = self.read(buf).timeout(Duration::from_secs(5)).await;
        res.expect("the bytes arrive (not lost with a dropped read)");
        buf
    }
}

impl ReadSome for UnixStream {
    async fn read_some(&self, buf: Vec<u8>) -> Vec<u8> {
        let (res, buf) = self.read(buf).timeout(Duration::from_secs(5)).await;
        res.expect("the bytes arrive (not lost with a dropped read)");
        buf
    }
}

/// Starts a 64-byte read on `server`, has `client` send `bytes`, lets the
/// receive complete with them, and drops the read: its bytes now wait in
/// the socket's stash. The server comes back shared, as the read had it.
async fn drop_a_read_that_received(
    client: &TcpStream,
    server: TcpStream,
    bytes: &[u8],
) -> Rc<TcpStream> {
    let server = Rc::new(server);
    let s2 = server.clone();
    let read = poll_once(async move { s2.read(Vec::with_capacity(64)).await }).await;
    let (res, _) = client.write_all(bytes.to_vec()).await;
    res.unwrap();
    // The receive completes with the bytes; nobody takes them.
    reap().await;
    drop(read);
    server
}

#[test]
fn a_read_dropped_after_its_data_arrived_gives_the_bytes_to_the_next_read() {
    let _g = serial();
    block_on(async {
        let (client, server) = nodelay_pair().await;
        let server = drop_a_read_that_received(&client, server, b"hello").await;
        assert_eq!(stats().ops_in_flight, 0, "the completion was reaped");
        // A smaller buffer takes part of them; the next read the rest.
        assert_eq!(server.read_some(Vec::with_capacity(3)).await, b"hel");
        assert_eq!(server.read_some(Vec::with_capacity(64)).await, b"lo");
        let (res, _) = client.write_all(b"world".to_vec()).await;
        res.unwrap();
        assert_eq!(server.read_some(Vec::with_capacity(64)).await, b"world");
    });
}

#[test]
fn a_read_exact_dropped_midway_gives_back_every_byte_it_had() {
    let _g = serial();
    block_on(async {
        let (client, server) = nodelay_pair().await;
        read_exact_dropped_midway(client, server).await;
    });
}

/// `read_exact` on either server type.
trait ReadExact: 'static {
    fn read_exact_vec(
        &self,
        buf: Vec<u8>,
    ) -> impl Future<Output = ringio::io::BufResult<(), Vec<u8>>>;
}

impl ReadExact for TcpStream {
    fn read_exact_vec(
        &self,
        buf: Vec<u8>,
    ) -> impl Future<Output = ringio::io::BufResult<(), Vec<u8>>> {
        self.read_exact(buf)
    }
}

impl ReadExact for DirectStream {
    fn read_exact_vec(
        &self,
        buf: Vec<u8>,
    ) -> impl Future<Output = ringio::io::BufResult<(), Vec<u8>>> {
        self.read_exact(buf)
    }
}

/// A `read_exact` of 10 bytes on `server` takes 4, then 2 more, and is
/// dropped while waiting for the rest: the next `read_exact` gets those 6
/// first, then the 4 sent after the drop.
async fn read_exact_dropped_midway<S: ReadExact>(client: TcpStream, server: S) {
    let server = Rc::new(server);
    let s2 = server.clone();
    let read = poll_once(async move { s2.read_exact_vec(Vec::with_capacity(10)).await }).await;
    // 4 bytes: the first receive returns them into the buffer, the
    // second waits for the other 6.
    let (res, _) = client.write_all(b"abcd".to_vec()).await;
    res.unwrap();
    reap().await;
    // 2 more: the second receive returns them, the third waits.
    let (res, _) = client.write_all(b"ef".to_vec()).await;
    res.unwrap();
    reap().await;
    drop(read);
    settle().await;
    let (res, _) = client.write_all(b"ghij".to_vec()).await;
    res.unwrap();
    let (res, buf) = ringio::io::with_timeout(
        Duration::from_secs(5),
        server.read_exact_vec(Vec::with_capacity(10)),
    )
    .await;
    res.expect("the 6 bytes of the dropped read_exact come first");
    assert_eq!(buf, b"abcdefghij");
}

#[test]
fn a_read_dropped_with_nothing_received_leaves_the_stream_as_it_was() {
    let _g = serial();
    block_on(async {
        let (client, server) = nodelay_pair().await;
        let server = Rc::new(server);
        let s2 = server.clone();
        let read = poll_once(async move { s2.read(Vec::with_capacity(64)).await }).await;
        drop(read);
        settle().await;
        let (res, _) = client.write_all(b"later".to_vec()).await;
        res.unwrap();
        assert_eq!(server.read_some(Vec::with_capacity(64)).await, b"later");
    });
}

#[test]
fn a_receive_stream_after_a_dropped_read_returns_its_bytes_first() {
    let _g = serial();
    block_on(async {
        let (client, server) = nodelay_pair().await;
        let server = drop_a_read_that_received(&client, server, b"first").await;
        let ring =
            BufRing::with_options(BufRingOptions::new(4, 4096).mode(BufRingMode::Local)).unwrap();
        let mut stream = server.recv_multishot(&ring);
        let (next, limit) = (stream.next(), ringio::sleep(Duration::from_secs(5)));
        let Either::Left((buf, _)) = select(pin!(next), pin!(limit)).await else {
            panic!("the dropped read's bytes are lost");
        };
        let buf = buf.unwrap().unwrap();
        assert_eq!(&buf[..], b"first");
        assert_eq!(buf.id(), u16::MAX, "kept on the heap, not a pool buffer");
        let (res, _) = client.write_all(b"second".to_vec()).await;
        res.unwrap();
        let buf = stream.next().await.unwrap().unwrap();
        assert_eq!(&buf[..], b"second");
        assert_eq!(ring.available(), 3, "one pool buffer out");
    });
}

/// Sends `total` bytes of the pattern in uneven chunks, with pauses, so
/// that receives complete at many different moments.
async fn send_pattern<W>(total: u64, mut write: impl FnMut(Vec<u8>) -> W)
where
    W: Future<Output = ringio::Result<()>>,
{
    let mut at = 0;
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    while at < total {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let len = (1 + x % 3000).min(total - at);
        write((at..at + len).map(pat).collect()).await.unwrap();
        at += len;
        if x % 4 == 0 {
            ringio::sleep(Duration::from_micros(x % 200)).await.unwrap();
        }
    }
}

/// Receives `total` bytes with plain reads, each raced against a short
/// timer with `select` (both orders): when the timer wins, the read is
/// dropped, often with its receive completed or about to. Checks every
/// byte's position; returns how many reads were dropped.
async fn race_reads<S: RaceRead>(s: &S, total: u64) -> u64 {
    let mut at = 0u64;
    let mut dropped = 0;
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let mut progress = Instant::now();
    while at < total {
        assert!(
            progress.elapsed() < Duration::from_secs(5),
            "no byte for 5 s after {at} of {total}: bytes lost"
        );
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let cap = 1 + (x % 4096) as usize;
        let timer = ringio::sleep(Duration::from_micros(x % 150));
        let read = s.race_read(Vec::with_capacity(cap));
        let got = if x % 2 == 0 {
            match select(pin!(read), pin!(timer)).await {
                Either::Left(((res, buf), _)) => Some((res, buf)),
                Either::Right(_) => None,
            }
        } else {
            match select(pin!(timer), pin!(read)).await {
                Either::Right(((res, buf), _)) => Some((res, buf)),
                Either::Left(_) => None,
            }
        };
        match got {
            None => dropped += 1,
            Some((res, buf)) => {
                let n = res.unwrap();
                assert!(n > 0, "end of stream after {at} of {total} bytes");
                for (i, &b) in buf.iter().enumerate() {
                    let p = at + i as u64;
                    assert_eq!(b, pat(p), "byte {p}: lost, repeated or reordered");
                }
                at += n as u64;
                progress = Instant::now();
            }
        }
    }
    assert_eq!(at, total);
    dropped
}

/// A plain `read` on either stream type.
trait RaceRead {
    fn race_read(
        &self,
        buf: Vec<u8>,
    ) -> impl Future<Output = ringio::io::BufResult<usize, Vec<u8>>>;
}

impl RaceRead for TcpStream {
    fn race_read(
        &self,
        buf: Vec<u8>,
    ) -> impl Future<Output = ringio::io::BufResult<usize, Vec<u8>>> {
        self.read(buf)
    }
}

impl RaceRead for UnixStream {
    fn race_read(
        &self,
        buf: Vec<u8>,
    ) -> impl Future<Output = ringio::io::BufResult<usize, Vec<u8>>> {
        self.read(buf)
    }
}

impl RaceRead for DirectStream {
    fn race_read(
        &self,
        buf: Vec<u8>,
    ) -> impl Future<Output = ringio::io::BufResult<usize, Vec<u8>>> {
        self.read(buf)
    }
}

const RACE_BYTES: u64 = 4 << 20;

/// A TCP connection: the client, and the server's end accepted into the
/// ring's direct descriptor table. `None` where the kernel lacks direct
/// accepts (before 5.19).
async fn direct_pair() -> Option<(TcpStream, DirectStream)> {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let connect = ringio::create_task(async move { TcpStream::connect(addr).await });
    let server = match listener.accept_direct().await {
        Ok(s) => s,
        Err(ringio::Error::Unsupported(why)) => {
            eprintln!("skipped: {why}");
            return None;
        }
        Err(e) => panic!("accept_direct: {e}"),
    };
    let client = connect.await.unwrap();
    client.set_nodelay(true).unwrap();
    Some((client, server))
}

#[test]
fn direct_stream_reads_raced_with_a_timer_deliver_every_byte_once_in_order() {
    let _g = serial();
    block_on(async {
        let Some((client, server)) = direct_pair().await else {
            return;
        };
        race_a_pair(client, &server).await;
    });
}

#[test]
fn a_direct_stream_read_exact_dropped_midway_gives_back_every_byte_it_had() {
    let _g = serial();
    block_on(async {
        let Some((client, server)) = direct_pair().await else {
            return;
        };
        read_exact_dropped_midway(client, server).await;
    });
}

#[test]
fn tcp_reads_raced_with_a_timer_deliver_every_byte_once_in_order() {
    let _g = serial();
    block_on(async {
        let (client, server) = nodelay_pair().await;
        race_a_pair(client, &server).await;
    });
}

#[test]
fn unix_reads_raced_with_a_timer_deliver_every_byte_once_in_order() {
    let _g = serial();
    block_on(async {
        let (client, server) = UnixStream::pair().unwrap();
        race_a_pair(client, &server).await;
    });
}

/// `write_all` of a `Vec` on either client type.
trait WriteVec: 'static {
    fn write_vec(&self, buf: Vec<u8>) -> impl Future<Output = ringio::Result<()>>;
}

impl WriteVec for TcpStream {
    async fn write_vec(&self, buf: Vec<u8>) -> ringio::Result<()> {
        self.write_all(buf).await.0
    }
}

impl WriteVec for UnixStream {
    async fn write_vec(&self, buf: Vec<u8>) -> ringio::Result<()> {
        self.write_all(buf).await.0
    }
}

/// Sends `RACE_BYTES` of the pattern from `client` in a task while
/// `server`'s reads race a timer, and checks that the timer won enough
/// races for the test to mean something.
async fn race_a_pair<C: WriteVec, S: RaceRead>(client: C, server: &S) {
    let client = Rc::new(client);
    let writer = ringio::create_task(async move {
        send_pattern(RACE_BYTES, |b| {
            let c = client.clone();
            async move { c.write_vec(b).await }
        })
        .await;
        Ok::<(), ringio::Error>(())
    });
    let dropped = race_reads(server, RACE_BYTES).await;
    writer.await.unwrap();
    settle().await;
    eprintln!("{dropped} reads dropped");
    assert!(
        dropped > 100,
        "the timer won {dropped} races: too few to test"
    );
}

#[test]
fn a_unix_read_dropped_after_its_data_arrived_gives_the_bytes_to_the_next_read() {
    let _g = serial();
    block_on(async {
        let (client, server) = UnixStream::pair().unwrap();
        let server = Rc::new(server);
        let s2 = server.clone();
        let read = poll_once(async move { s2.read(Vec::with_capacity(64)).await }).await;
        let (res, _) = client.write_all(b"unix bytes".to_vec()).await;
        res.unwrap();
        reap().await;
        drop(read);
        assert_eq!(read_n(&*server, 10).await, b"unix bytes");
    });
}

#[test]
fn a_dropped_read_and_its_dropped_socket_leak_nothing() {
    let _g = serial();
    block_on(async {
        // Once, so that the ring's and the runtime's own fds are open.
        let (c, s) = UnixStream::pair().unwrap();
        drop((c, s));
        settle().await;
        let fds = open_fds();
        for round in 0..50 {
            let (client, server) = nodelay_pair().await;
            let server = Rc::new(server);
            let s2 = server.clone();
            let read = poll_once(async move { s2.read(Vec::with_capacity(4096)).await }).await;
            if round % 2 == 0 {
                // Completed with bytes nobody reads: they go to the stash,
                // which goes with the socket.
                let (res, _) = client.write_all(vec![7; 1000]).await;
                res.unwrap();
                reap().await;
            }
            // The socket first (the read holds the other reference), then
            // the read: its receive is still in flight on odd rounds.
            drop(server);
            drop(read);
            drop(client);
            let (a, b) = UnixStream::pair().unwrap();
            let read = poll_once(async move { b.read(Vec::with_capacity(64)).await }).await;
            let (res, _) = a.write_all(b"x".to_vec()).await;
            res.unwrap();
            if round % 2 == 0 {
                reap().await;
            }
            drop(read);
            drop(a);
        }
        settle().await;
        assert_eq!(stats().ops_in_flight, 0, "op table empty");
        // Closes are ring ops too: give them a moment.
        for _ in 0..100 {
            if open_fds() == fds {
                break;
            }
            ringio::sleep(ms(5)).await.unwrap();
        }
        assert_eq!(open_fds(), fds, "every fd closed");
    });
}

/// Sends `bytes` on `fd` with a plain syscall: the data is in the peer's
/// socket when this returns, without a turn of the loop.
fn send_now(fd: std::os::fd::RawFd, bytes: &[u8]) {
    // SAFETY: `bytes` is valid for its length; `fd` is an open socket.
    let n = unsafe { libc::send(fd, bytes.as_ptr().cast(), bytes.len(), 0) };
    assert_eq!(
        n,
        bytes.len() as isize,
        "{}",
        std::io::Error::last_os_error()
    );
}

/// A dropped read whose receive completed (with "AAAA") before the loop
/// reaped it, while the next read was already queued and then completed
/// with "BBBB": the reads return "AAAA" before "BBBB". Which receive takes
/// the bytes depends on when the kernel runs its task work, so this runs
/// on every kind of ring.
async fn dropped_read_then_next_read_in_order() {
    use std::os::fd::AsRawFd;
    for _ in 0..20 {
        let (client, server) = nodelay_pair().await;
        let server = Rc::new(server);
        let s2 = server.clone();
        let first = poll_once(async move { s2.read(Vec::with_capacity(64)).await }).await;
        // The first receive reaches the kernel and waits there.
        ringio::sleep(ms(1)).await.unwrap();
        send_now(client.as_raw_fd(), b"AAAA");
        drop(first);
        let s3 = server.clone();
        let second = poll_once(async move { s3.read(Vec::with_capacity(64)).await }).await;
        send_now(client.as_raw_fd(), b"BBBB");
        let (res, buf) = second.await;
        let n = res.unwrap();
        let mut got = buf[..n].to_vec();
        got.extend(read_n(&*server, 8 - n).await);
        assert_eq!(got, b"AAAABBBB");
    }
}

#[test]
fn bytes_of_a_dropped_read_come_before_those_of_the_read_after_it() {
    on_every_ring_setup(dropped_read_then_next_read_in_order);
}

/// A `read_exact` dropped with part of its buffer filled and its next
/// receive in flight: that part is the socket's, ahead of bytes a read
/// started right after the drop receives, even when the kernel completes
/// that read before it reports the dropped receive's cancellation.
async fn dropped_read_exact_then_next_read_in_order() {
    use std::os::fd::AsRawFd;
    for _ in 0..20 {
        let (client, server) = nodelay_pair().await;
        let server = Rc::new(server);
        let s2 = server.clone();
        let first = poll_once(async move { s2.read_exact(Vec::with_capacity(10)).await }).await;
        ringio::sleep(ms(1)).await.unwrap();
        send_now(client.as_raw_fd(), b"abcd");
        // The first receive returns "abcd"; polled again, the read_exact
        // takes them and its second receive waits for 6 more.
        ringio::sleep(ms(5)).await.unwrap();
        let mut first = first;
        std::future::poll_fn(|cx| {
            assert!(first.as_mut().poll(cx).is_pending());
            Poll::Ready(())
        })
        .await;
        ringio::sleep(ms(1)).await.unwrap();
        drop(first);
        // Ready before the next read reaches the kernel.
        send_now(client.as_raw_fd(), b"efgh");
        let got = read_n(&*server, 8).await;
        assert_eq!(got, b"abcdefgh");
    }
}

#[test]
fn bytes_a_dropped_read_exact_had_come_before_those_of_the_read_after_it() {
    on_every_ring_setup(dropped_read_exact_then_next_read_in_order);
}

/// Runs `case` on the default ring and on rings without DEFER_TASKRUN,
/// with COOP_TASKRUN and with SQPOLL (where they are supported): the
/// order of completions, which these tests are about, differs between
/// them.
fn on_every_ring_setup<F: std::future::Future<Output = ()> + 'static>(case: fn() -> F) {
    let _g = serial();
    let setups = [
        ("default", ringio::Runtime::builder()),
        (
            "no DEFER_TASKRUN",
            ringio::Runtime::builder().defer_taskrun(false),
        ),
        (
            "COOP_TASKRUN",
            ringio::Runtime::builder().coop_taskrun(true),
        ),
        ("SQPOLL", ringio::Runtime::builder().sqpoll(ms(10))),
    ];
    for (name, b) in setups {
        let Ok(mut rt) = b.build() else {
            eprintln!("{name}: not supported here, skipped");
            continue;
        };
        eprintln!("{name}");
        rt.run(case()).unwrap();
    }
}
