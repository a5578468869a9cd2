//! The core behaviours on every kernel fallback path, forced on this
//! kernel: a ring without `SINGLE_ISSUER | DEFER_TASKRUN` (as before 6.1),
//! `COOP_TASKRUN` instead, timed waits without `IORING_FEAT_EXT_ARG` (as
//! before 5.11), wake-ups without `IORING_OP_MSG_RING` (eventfd), and no
//! multishot accept. Each runs timers, pipe I/O, a cancelled read, a TCP
//! round trip and a wake-up from another thread.

mod common;

use std::time::{Duration, Instant};

use common::pipe;
use ringio::net::{TcpListener, TcpStream};
use ringio::{Builder, Error, Runtime};

const HOUR: Duration = Duration::from_secs(3600);

/// The behaviours every path must keep.
fn core_behaviours(name: &str, builder: Builder) {
    let mut rt = builder.build().unwrap_or_else(|e| panic!("{name}: {e}"));
    let handle = rt.event_loop().handle();
    let name = name.to_string();
    let stats = rt
        .run(async move {
            // Timers fire in deadline order.
            let order = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
            let sleepers: Vec<_> = [30u64, 10, 20]
                .into_iter()
                .map(|ms| {
                    let o = order.clone();
                    ringio::create_task(async move {
                        ringio::sleep(Duration::from_millis(ms)).await?;
                        o.borrow_mut().push(ms);
                        Ok::<_, Error>(())
                    })
                })
                .collect();
            for s in sleepers {
                s.await.unwrap();
            }
            assert_eq!(*order.borrow(), [10, 20, 30], "{name}: timer order");

            // Pipe I/O.
            let (r, w) = pipe();
            let (n, _) = ringio::io::write_all(&w, b"ring".to_vec()).await;
            n.unwrap();
            let (n, buf) = ringio::io::read(&r, Vec::with_capacity(16)).await;
            assert_eq!(n.unwrap(), 4, "{name}: read");
            assert_eq!(buf, b"ring");

            // A read in flight is cancelled in the kernel.
            let before = ringio::get_running_loop().unwrap().stats().driver;
            let reader = ringio::create_task(async move {
                let (res, _) = ringio::io::read(&r, Vec::with_capacity(16)).await;
                res
            });
            ringio::sleep(Duration::from_millis(5)).await.unwrap();
            reader.cancel();
            assert!(reader.await.unwrap_err().is_cancelled(), "{name}: cancel");
            let after = ringio::get_running_loop().unwrap().stats().driver;
            assert!(
                after.ops_canceled_by_kernel > before.ops_canceled_by_kernel,
                "{name}: the kernel cancelled the read"
            );

            // A TCP round trip.
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let client = ringio::create_task(async move {
                let c = TcpStream::connect(addr).await?;
                let (r, _) = c.write_all(b"ping".to_vec()).await;
                r?;
                let (n, buf) = c.read(Vec::with_capacity(8)).await;
                n?;
                Ok::<_, Error>(buf)
            });
            let (s, _) = listener.accept().await.unwrap();
            let (n, buf) = s.read(Vec::with_capacity(8)).await;
            assert_eq!(n.unwrap(), 4);
            let (r, _) = s.write_all(buf).await;
            r.unwrap();
            assert_eq!(client.await.unwrap(), b"ping", "{name}: echo");

            // A long sleep in the kernel's wait is cut short by work from
            // another thread.
            let t0 = Instant::now();
            let sleeper = ringio::create_task(async {
                ringio::sleep(HOUR).await?;
                Ok::<_, Error>(())
            });
            let remote = std::thread::spawn(move || {
                ringio::run_coroutine_threadsafe(async { Ok::<_, Error>(7) }, &handle)
                    .result(Some(Duration::from_secs(30)))
            });
            while !remote.is_finished() {
                ringio::sleep(Duration::from_millis(1)).await.unwrap();
            }
            assert_eq!(remote.join().unwrap().unwrap(), 7, "{name}: remote work");
            assert!(t0.elapsed() < Duration::from_secs(20));
            sleeper.cancel();
            assert!(sleeper.await.unwrap_err().is_cancelled());
            (ringio::get_running_loop().unwrap().stats().driver, name)
        })
        .unwrap();
    assert_eq!(
        stats.0.ops_in_flight, 0,
        "{}: nothing left in flight",
        stats.1
    );
}

#[test]
fn the_default_ring() {
    let b = Runtime::builder();
    core_behaviours("default", b);
}

#[test]
fn a_ring_without_defer_taskrun() {
    let mut rt = Runtime::builder().defer_taskrun(false).build().unwrap();
    assert!(!rt.stats().driver.defer_taskrun);
    rt.run(async {}).unwrap();
    core_behaviours("no DEFER_TASKRUN", Runtime::builder().defer_taskrun(false));
}

#[test]
fn a_ring_with_coop_taskrun() {
    core_behaviours("COOP_TASKRUN", Runtime::builder().coop_taskrun(true));
}

#[test]
fn timed_waits_without_ext_arg() {
    core_behaviours("no EXT_ARG", Runtime::builder().ext_arg(false));
}

#[test]
fn wakeups_without_msg_ring() {
    core_behaviours("no MSG_RING", Runtime::builder().msg_ring(false));
}

#[test]
fn without_multishot_accept_and_msg_ring_opcodes() {
    // IORING_OP_SOCKET stands in for multishot accept (same release).
    let b = Runtime::builder().without_opcodes([
        io_uring::opcode::Socket::CODE,
        io_uring::opcode::MsgRingData::CODE,
    ]);
    core_behaviours("no multishot, no MSG_RING opcode", b);
}
