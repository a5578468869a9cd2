//! Integration tests: cancel (against a real ring).
//!
//! The guide's cancellation rules, one by one, with kernel operations really in flight.

mod common;
use common::*;

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::os::fd::{AsRawFd, OwnedFd};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use ringio::{Error, Promise, Result, Runtime};

const HOUR: Duration = Duration::from_secs(3600);

/// A plain blocking write(2), outside the ring.
fn write_now(fd: &OwnedFd, data: &[u8]) {
    // SAFETY: `data` is valid for `data.len()` bytes.
    let n = unsafe { libc::write(fd.as_raw_fd(), data.as_ptr().cast(), data.len()) };
    assert_eq!(n, data.len() as isize);
}

fn driver() -> ringio::DriverStats {
    ringio::get_running_loop().unwrap().stats().driver
}

/// Turns the loop until `cond` holds: synchronisation on the state a test
/// waits for, not on a guessed delay. The bound only catches a hang.
async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !cond() {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "still waiting for {what}"
        );
        ringio::sleep(ms(1)).await.unwrap();
    }
}

fn is_cancelled_with(r: &Result<impl std::fmt::Debug>, want: Option<&str>) -> bool {
    matches!(r, Err(Error::Cancelled { msg }) if msg.as_deref() == want)
}

/// Sets a flag when dropped: shows a future was dropped.
struct DropFlag(Rc<Cell<bool>>);
impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.set(true);
    }
}

/// A future from outside ringio: ready once `ready` is set, woken by hand.
struct Foreign {
    ready: Rc<Cell<bool>>,
    waker: Rc<RefCell<Option<Waker>>>,
}
impl Future for Foreign {
    type Output = u32;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<u32> {
        if self.ready.get() {
            return Poll::Ready(7);
        }
        *self.waker.borrow_mut() = Some(cx.waker().clone());
        Poll::Pending
    }
}

// --- rule 1 -----------------------------------------------------------------

#[test]
fn cancel_asks_and_returns_false_once_done() {
    block_on(async {
        let t = ringio::create_task(async {
            ringio::sleep(ms(1)).await?;
            Ok::<_, Error>(1)
        });
        assert!(t.cancel(), "a pending task accepts the request");
        assert_eq!(t.cancelling(), 1);
        assert!(is_cancelled_with(&t.clone().await, None));
        assert!(!t.cancel());
        assert!(!t.cancel_with("again"));
        assert_eq!(t.cancelling(), 0);

        let done = ringio::create_task(async { Ok::<_, Error>(2) });
        assert_eq!(done.clone().await.unwrap(), 2);
        assert!(!done.cancel());
        assert!(!done.cancelled());
    });
}

// --- rules 2–3 --------------------------------------------------------------

#[test]
fn cancel_with_message_reaches_the_await_point() {
    block_on(async {
        let t = ringio::create_task(async {
            let r = ringio::sleep(HOUR).await;
            Ok::<_, Error>(r)
        });
        ringio::sleep(ms(2)).await.unwrap();
        let timers = ringio::get_running_loop().unwrap().stats().timers;
        assert!(t.cancel_with("shutting down"));
        let seen = t.await.unwrap();
        assert!(is_cancelled_with(&seen, Some("shutting down")), "{seen:?}");
        // The sleep left the timer heap.
        assert_eq!(
            ringio::get_running_loop().unwrap().stats().timers,
            timers - 1
        );
    });
}

#[test]
fn catch_clean_up_with_awaits_and_suppress() {
    block_on(async {
        let steps = Rc::new(RefCell::new(Vec::new()));
        let s = steps.clone();
        let t = ringio::create_task(async move {
            match ringio::sleep(HOUR).await {
                Err(e) if e.is_cancelled() => {
                    s.borrow_mut().push("caught");
                    // Further awaits work normally.
                    ringio::sleep(ms(5)).await?;
                    ringio::io::nop().await?;
                    let sub = ringio::create_task(async { Ok::<_, Error>(40) });
                    let v = sub.await?;
                    s.borrow_mut().push("cleaned up");
                    Ok::<_, Error>(v + 2)
                }
                other => panic!("expected a cancellation: {other:?}"),
            }
        });
        ringio::sleep(ms(2)).await.unwrap();
        t.cancel();
        assert_eq!(t.clone().await.unwrap(), 42);
        assert!(t.done());
        assert!(!t.cancelled(), "suppressed: the task ends normally");
        assert_eq!(*steps.borrow(), ["caught", "cleaned up"]);
    });
}

#[test]
fn catch_clean_up_and_reraise() {
    block_on(async {
        let t = ringio::create_task(async {
            let r = ringio::sleep(HOUR).await;
            assert!(r.is_err());
            ringio::sleep(ms(5)).await?;
            r
        });
        ringio::sleep(ms(2)).await.unwrap();
        let t0 = Instant::now();
        t.cancel_with("why");
        let r = t.clone().await;
        assert!(is_cancelled_with(&r, Some("why")), "{r:?}");
        assert!(t0.elapsed() >= ms(5), "the cleanup sleep ran");
        assert!(t.cancelled());
    });
}

// --- rule 4 -----------------------------------------------------------------

#[test]
fn awaiting_a_task_cancels_it_too() {
    block_on(async {
        let inner = ringio::create_task(ringio::sleep(HOUR));
        let i = inner.clone();
        let outer = ringio::create_task(async move { i.await });
        ringio::sleep(ms(2)).await.unwrap();
        outer.cancel_with("from main");
        let r = outer.clone().await;
        assert!(is_cancelled_with(&r, Some("from main")), "{r:?}");
        assert!(outer.cancelled());
        assert!(inner.cancelled(), "the inner task was cancelled too");
        assert!(is_cancelled_with(&inner.result(), Some("from main")));
    });
}

#[test]
fn inner_task_that_suppresses_gives_its_value_to_the_awaiter() {
    block_on(async {
        let inner = ringio::create_task(async {
            let r = ringio::sleep(HOUR).await;
            Ok::<_, Error>(if r.is_err() { "suppressed" } else { "slept" })
        });
        let i = inner.clone();
        let outer = ringio::create_task(async move { i.await });
        ringio::sleep(ms(2)).await.unwrap();
        outer.cancel();
        // As in asyncio: the cancel went to the inner task, which ate it.
        assert_eq!(outer.clone().await.unwrap(), "suppressed");
        assert!(!outer.cancelled() && !inner.cancelled());
    });
}

#[test]
fn awaiting_a_promise_cancels_it() {
    block_on(async {
        let p: Promise<u32> = Promise::new();
        let p2 = p.clone();
        let t = ringio::create_task(async move { p2.await });
        ringio::sleep(ms(2)).await.unwrap();
        t.cancel_with("bye");
        assert!(is_cancelled_with(&t.clone().await, Some("bye")));
        assert!(p.cancelled());
        assert!(matches!(p.set_result(1), Err(Error::InvalidState(_))));
    });
}

#[test]
fn self_cancel_is_forwarded_to_the_next_awaited_task() {
    block_on(async {
        let inner = ringio::create_task(ringio::sleep(HOUR));
        let i = inner.clone();
        let outer = ringio::create_task(async move {
            ringio::current_task().unwrap().cancel_with("self");
            // Not yet delivered: no await point so far.
            let r = i.await;
            Ok::<_, Error>(r)
        });
        let r = outer.clone().await.unwrap();
        assert!(is_cancelled_with(&r, Some("self")), "{r:?}");
        assert!(inner.cancelled(), "the awaited task was cancelled");
    });
}

#[test]
fn self_cancel_then_await_a_pending_task_ends_the_awaiter_cancelled() {
    block_on(async {
        let inner = ringio::create_task(ringio::sleep(HOUR));
        let i = inner.clone();
        let outer = ringio::create_task(async move {
            ringio::current_task().unwrap().cancel();
            i.await?;
            Ok::<_, Error>(())
        });
        assert!(is_cancelled_with(&outer.clone().await, None));
        assert!(outer.cancelled());
        assert!(inner.cancelled());
    });
}

#[test]
fn self_cancel_is_forwarded_to_a_promise() {
    block_on(async {
        let p: Promise<u32> = Promise::new();
        let p2 = p.clone();
        let outer = ringio::create_task(async move {
            ringio::current_task().unwrap().cancel();
            p2.await
        });
        assert!(is_cancelled_with(&outer.clone().await, None));
        assert!(p.cancelled());
    });
}

#[test]
fn self_cancel_is_delivered_at_the_next_sleep() {
    block_on(async {
        let t = ringio::create_task(async {
            ringio::current_task().unwrap().cancel_with("me");
            let before = Instant::now();
            let r = ringio::sleep(HOUR).await;
            Ok::<_, Error>((r, before.elapsed()))
        });
        let (r, took) = t.await.unwrap();
        assert!(is_cancelled_with(&r, Some("me")));
        // About no time, not the hour: a generous bound for a busy machine.
        assert!(took < Duration::from_secs(30), "{took:?}");
    });
}

// --- rule 5 -----------------------------------------------------------------

#[test]
fn cancel_after_the_awaited_task_finished_but_before_resume_wins() {
    block_on(async {
        let outer_slot: Rc<RefCell<Option<ringio::TaskRef>>> = Rc::new(RefCell::new(None));
        let slot = outer_slot.clone();
        let inner = ringio::create_task(async move {
            ringio::sleep(ms(5)).await?;
            // The awaiter will be woken by our end; before it resumes, a
            // callback (scheduled now, so it runs first) cancels it.
            let outer = slot.borrow().clone().unwrap();
            ringio::get_running_loop().unwrap().call_soon(move || {
                assert!(outer.cancel());
            });
            Ok::<_, Error>(String::from("inner value"))
        });
        let i = inner.clone();
        let outer = ringio::create_task(async move {
            let r = i.await;
            Ok::<_, Error>(r)
        });
        *outer_slot.borrow_mut() = Some(outer.as_ref());
        let r = outer.clone().await.unwrap();
        assert!(is_cancelled_with(&r, None), "the cancel wins: {r:?}");
        assert!(!inner.cancelled());
        assert_eq!(
            inner.result().unwrap(),
            "inner value",
            "value still readable"
        );
    });
}

#[test]
fn cancel_after_the_promise_resolved_but_before_resume_wins() {
    block_on(async {
        let p: Promise<String> = Promise::new();
        let p2 = p.clone();
        let waiter = ringio::create_task(async move {
            let r = p2.await;
            Ok::<_, Error>(r)
        });
        ringio::sleep(ms(2)).await.unwrap();
        let (p3, w) = (p.clone(), waiter.clone());
        ringio::get_running_loop().unwrap().call_soon(move || {
            p3.set_result("resolved".into()).unwrap();
            assert!(w.cancel_with("late"));
        });
        let r = waiter.await.unwrap();
        assert!(is_cancelled_with(&r, Some("late")), "{r:?}");
        assert!(!p.cancelled());
        assert_eq!(p.result().unwrap(), "resolved");
    });
}

#[test]
fn read_in_flight_is_cancelled_in_the_kernel() {
    let mut rt = Runtime::new().unwrap();
    rt.run(async {
        let (r, _w) = pipe();
        let r = Rc::new(r);
        let before = driver();
        let rr = r.clone();
        let reader = ringio::create_task(async move {
            let (res, buf) = ringio::io::read(&*rr, Vec::with_capacity(128)).await;
            Ok::<_, Error>((res, buf))
        });
        ringio::sleep(ms(10)).await.unwrap();
        let mid = driver();
        assert_eq!(mid.ops_in_flight, before.ops_in_flight + 1, "{mid:?}");
        assert!(!reader.done());
        assert!(reader.cancel_with("stop reading"));
        let (res, buf) = reader.await.unwrap();
        // Err(Cancelled) comes only from a CQE that said -ECANCELED.
        assert!(is_cancelled_with(&res, Some("stop reading")), "{res:?}");
        assert!(buf.capacity() >= 128, "the buffer came back");
        assert!(buf.is_empty());
        let after = driver();
        assert_eq!(after.cancel_requests, before.cancel_requests + 1);
        assert_eq!(
            after.ops_canceled_by_kernel,
            before.ops_canceled_by_kernel + 1,
            "{after:?}"
        );
        assert_eq!(after.ops_in_flight, before.ops_in_flight);
    })
    .unwrap();
    let stats = rt.stats().driver;
    assert_eq!(stats.ops_in_flight, 0, "{stats:?}");
}

#[test]
fn leftover_read_in_flight_is_reaped_at_the_end_of_run() {
    let mut rt = Runtime::new().unwrap();
    let (r, w) = pipe();
    let r = Rc::new(r);
    let rr = r.clone();
    let task = rt
        .run(async move {
            let t = ringio::create_task(async move {
                let (res, _buf) = ringio::io::read(&*rr, Vec::with_capacity(16)).await;
                res
            });
            ringio::sleep(ms(5)).await.unwrap();
            assert_eq!(driver().ops_in_flight, 1);
            t
        })
        .unwrap();
    assert!(task.cancelled(), "{task:?}");
    let stats = rt.stats().driver;
    assert_eq!(stats.ops_in_flight, 0, "{stats:?}");
    assert!(stats.ops_canceled_by_kernel >= 1, "{stats:?}");
    // The read really left the kernel: data written now stays in the pipe.
    write_now(&w, b"x");
    let mut b = [0u8; 4];
    // SAFETY: reading into a 4-byte stack buffer.
    let n = unsafe { libc::read(r.as_raw_fd(), b.as_mut_ptr().cast(), 4) };
    assert_eq!(n, 1);
}

#[test]
fn a_read_completed_before_the_cancel_keeps_its_data() {
    block_on(async {
        let (r, w) = pipe();
        let r = Rc::new(r);
        let rr = r.clone();
        let before = driver();
        let reader = ringio::create_task(async move {
            let (res, buf) = ringio::io::read(&*rr, Vec::with_capacity(64)).await;
            // The cancel was not lost: it arrives at the next await point.
            let next = ringio::sleep(HOUR).await;
            Ok::<_, Error>((res, buf, next))
        });
        ringio::sleep(ms(10)).await.unwrap();
        // The data arrives, then the cancel, before the loop turns: the
        // kernel finishes the read before the task sees its cancel.
        write_now(&w, b"payload");
        reader.cancel_with("too late");
        let (res, buf, next) = reader.clone().await.unwrap();
        assert_eq!(res.unwrap(), 7);
        assert_eq!(buf, b"payload");
        assert!(is_cancelled_with(&next, Some("too late")), "{next:?}");
        let after = driver();
        assert_eq!(after.ops_canceled_by_kernel, before.ops_canceled_by_kernel);
        assert_eq!(after.ops_in_flight, 0);
    });
}

#[test]
fn a_read_completed_before_the_cancel_and_then_no_await() {
    // The completed read's data is returned; the task gets to use it.
    block_on(async {
        let (r, w) = pipe();
        let r = Rc::new(r);
        let rr = r.clone();
        let reader = ringio::create_task(async move {
            let (res, buf) = ringio::io::read(&*rr, Vec::with_capacity(64)).await;
            res?;
            Ok::<_, Error>(buf)
        });
        ringio::sleep(ms(10)).await.unwrap();
        write_now(&w, b"data");
        reader.cancel();
        let r = reader.clone().await;
        // Cancellation rule 5 read literally: the data is returned and the cancel
        // waits for a next await point, which never comes; the task ends
        // with its value. (asyncio would end it cancelled "right before the
        // coroutine stops", dropping the value: a deliberate difference.)
        assert_eq!(r.unwrap(), b"data");
        assert!(!reader.cancelled());
    });
}

// --- rule 6 -----------------------------------------------------------------

#[test]
fn a_task_parked_in_std_pending_is_dropped_and_ends_cancelled() {
    block_on(async {
        let dropped = Rc::new(Cell::new(false));
        let d = dropped.clone();
        let t = ringio::create_task(async move {
            let _guard = DropFlag(d);
            std::future::pending::<()>().await;
            Ok::<_, Error>(())
        });
        ringio::sleep(ms(2)).await.unwrap();
        assert!(!dropped.get());
        t.cancel_with("gone");
        assert!(is_cancelled_with(&t.clone().await, Some("gone")));
        assert!(t.cancelled());
        assert!(dropped.get(), "the task's future was dropped");
    });
}

#[test]
fn a_task_parked_in_a_foreign_future_is_dropped_when_cancelled() {
    block_on(async {
        let dropped = Rc::new(Cell::new(false));
        let ready = Rc::new(Cell::new(false));
        let waker = Rc::new(RefCell::new(None));
        let (d, f) = (
            dropped.clone(),
            Foreign {
                ready: ready.clone(),
                waker: waker.clone(),
            },
        );
        let t = ringio::create_task(async move {
            let _guard = DropFlag(d);
            let v = f.await;
            Ok::<_, Error>(v)
        });
        ringio::sleep(ms(2)).await.unwrap();
        assert!(waker.borrow().is_some(), "parked in the foreign future");
        t.cancel();
        assert!(is_cancelled_with(&t.clone().await, None));
        assert!(dropped.get());
        // A foreign future woken the normal way works as usual.
        let ready2 = Rc::new(Cell::new(false));
        let waker2 = Rc::new(RefCell::new(None::<Waker>));
        let f2 = Foreign {
            ready: ready2.clone(),
            waker: waker2.clone(),
        };
        let t2 = ringio::create_task(async move { Ok::<_, Error>(f2.await) });
        ringio::sleep(ms(2)).await.unwrap();
        ready2.set(true);
        waker2.borrow_mut().take().unwrap().wake();
        assert_eq!(t2.await.unwrap(), 7);
    });
}

#[test]
fn a_foreign_future_that_completes_passes_the_cancel_to_the_next_await() {
    block_on(async {
        let ready = Rc::new(Cell::new(false));
        let waker = Rc::new(RefCell::new(None));
        let f = Foreign {
            ready: ready.clone(),
            waker: waker.clone(),
        };
        let t = ringio::create_task(async move {
            let v = f.await;
            let r = ringio::sleep(HOUR).await;
            Ok::<_, Error>((v, r))
        });
        ringio::sleep(ms(2)).await.unwrap();
        // The foreign future is ready by the time the cancel's poll comes.
        ready.set(true);
        t.cancel_with("at the sleep");
        let (v, r) = t.await.unwrap();
        assert_eq!(v, 7);
        assert!(is_cancelled_with(&r, Some("at the sleep")), "{r:?}");
    });
}

// --- double cancel, cancel before the first poll ------------------------------

#[test]
fn double_cancel_gives_one_error() {
    block_on(async {
        let errors = Rc::new(Cell::new(0));
        let e2 = errors.clone();
        let t = ringio::create_task(async move {
            if ringio::sleep(HOUR).await.is_err() {
                e2.set(e2.get() + 1);
            }
            // A second await after the (one) delivery works normally.
            if ringio::sleep(ms(10)).await.is_err() {
                e2.set(e2.get() + 1);
            }
            ringio::io::nop().await?;
            Ok::<_, Error>("finished")
        });
        ringio::sleep(ms(2)).await.unwrap();
        assert!(t.cancel());
        assert!(t.cancel_with("second"));
        assert_eq!(t.cancelling(), 2);
        assert_eq!(t.clone().await.unwrap(), "finished");
        assert_eq!(errors.get(), 1);
    });
}

#[test]
fn cancel_before_the_first_poll_runs_none_of_the_body() {
    block_on(async {
        let ran = Rc::new(Cell::new(false));
        let r = ran.clone();
        let t = ringio::create_task(async move {
            r.set(true);
            Ok::<_, Error>(())
        });
        assert!(t.cancel_with("early"));
        assert!(is_cancelled_with(&t.clone().await, Some("early")));
        assert!(t.cancelled());
        assert!(!ran.get(), "the body ran");
    });
}

// --- rule 7 -----------------------------------------------------------------

/// Data whose drop is observable: stands for a buffer the kernel writes to.
struct Tracked {
    buf: Vec<u8>,
    _flag: DropFlag,
}

/// A read on `fd` through the public `Op` API, owning `Tracked`.
fn tracked_read(fd: &OwnedFd, dropped: Rc<Cell<bool>>) -> ringio::Op<Tracked> {
    let mut data = Tracked {
        buf: Vec::with_capacity(32),
        _flag: DropFlag(dropped),
    };
    let sqe = io_uring::opcode::Read::new(
        io_uring::types::Fd(fd.as_raw_fd()),
        data.buf.as_mut_ptr(),
        32,
    )
    .offset(u64::MAX)
    .build();
    // SAFETY: the SQE points into `data.buf`'s heap allocation, owned by the
    // op until its completion.
    unsafe { ringio::Op::submit(sqe, data).unwrap() }
}

#[test]
fn dropping_an_op_future_cancels_it_and_keeps_its_buffer_until_the_cqe() {
    let mut rt = Runtime::new().unwrap();
    rt.run(async {
        let (r, _w) = pipe();
        let before = driver();
        let dropped = Rc::new(Cell::new(false));
        let mut op = tracked_read(&r, dropped.clone());
        assert!((&mut op).now_or_never().is_none(), "empty pipe: pending");
        drop(op);
        // The kernel may still write into the buffer: it is parked, not freed.
        assert!(!dropped.get(), "the buffer was freed before the CQE");
        assert_eq!(driver().ops_in_flight, before.ops_in_flight + 1);
        until("the cancelled read's CQE", || {
            driver().ops_in_flight == before.ops_in_flight
        })
        .await;
        let after = driver();
        assert!(dropped.get(), "freed once the CQE was reaped");
        assert_eq!(after.ops_in_flight, before.ops_in_flight);
        assert_eq!(after.cancel_requests, before.cancel_requests + 1);
        assert_eq!(
            after.ops_canceled_by_kernel,
            before.ops_canceled_by_kernel + 1
        );
    })
    .unwrap();
    assert_eq!(rt.stats().driver.ops_in_flight, 0);
}

#[test]
fn an_op_that_loses_a_select_is_cancelled() {
    let mut rt = Runtime::new().unwrap();
    rt.run(async {
        let (r, _w) = pipe();
        let before = driver();
        let which = {
            let read = ringio::io::read(&r, Vec::with_capacity(16)).fuse();
            let timeout = ringio::sleep(ms(10)).fuse();
            futures_util::pin_mut!(read, timeout);
            futures_util::select! {
                _ = read => "read",
                _ = timeout => "timeout",
            }
            // The losing read future is dropped here, in flight.
        };
        assert_eq!(which, "timeout");
        until("the losing read's CQE", || {
            driver().ops_in_flight == before.ops_in_flight
        })
        .await;
        let after = driver();
        assert_eq!(after.ops_in_flight, before.ops_in_flight, "{after:?}");
        assert_eq!(
            after.ops_canceled_by_kernel,
            before.ops_canceled_by_kernel + 1
        );
    })
    .unwrap();
    assert_eq!(rt.stats().driver.ops_in_flight, 0);
}

#[test]
fn ops_dropped_in_flight_at_the_end_of_run_leak_nothing() {
    let dropped = Rc::new(Cell::new(false));
    let d = dropped.clone();
    let mut rt = Runtime::new().unwrap();
    let (r, _w) = pipe();
    let r = Rc::new(r);
    let rr = r.clone();
    rt.run(async move {
        let mut op = tracked_read(&rr, d);
        assert!((&mut op).now_or_never().is_none());
        // Leaked into a forgotten place? No: dropped here, in flight.
        drop(op);
    })
    .unwrap();
    assert!(dropped.get(), "reaped and freed by the end of run");
    assert_eq!(rt.stats().driver.ops_in_flight, 0);
}

#[test]
fn a_cancelled_task_with_many_reads_in_flight_leaves_no_slab_entry() {
    let mut rt = Runtime::builder().ring_entries(4).build().unwrap();
    let pipes: Rc<Vec<(OwnedFd, OwnedFd)>> = Rc::new((0..20).map(|_| pipe()).collect());
    let p = pipes.clone();
    rt.run(async move {
        let mut tasks = Vec::new();
        for i in 0..20 {
            let p = p.clone();
            tasks.push(ringio::create_task(async move {
                let (res, _b) = ringio::io::read(&p[i].0, Vec::with_capacity(8)).await;
                res
            }));
        }
        // Through a 4-entry ring the 20 reads take several enters.
        until("20 reads in flight", || driver().ops_in_flight == 20).await;
        for t in &tasks {
            t.cancel();
        }
        for t in tasks {
            assert!(t.await.unwrap_err().is_cancelled());
        }
        assert_eq!(driver().ops_in_flight, 0);
    })
    .unwrap();
    let s = rt.stats().driver;
    assert_eq!(s.ops_in_flight, 0);
    assert!(s.ops_canceled_by_kernel >= 20, "{s:?}");
}

#[test]
fn a_second_cancel_of_the_awaiter_reaches_the_inner_task_again() {
    block_on(async {
        // The inner task survives the first cancel (a graceful stage that
        // itself sleeps); the second cancel of the awaiter must reach it
        // too, as asyncio forwards every cancel() to the awaited future.
        let inner = ringio::create_task(async {
            let first = ringio::sleep(HOUR).await;
            assert!(first.is_err());
            ringio::sleep(Duration::from_secs(60)).await?;
            Ok::<_, Error>("finished the graceful stage")
        });
        let i = inner.clone();
        let outer = ringio::create_task(async move { i.await });
        ringio::sleep(ms(5)).await.unwrap();
        outer.cancel_with("first");
        ringio::sleep(ms(5)).await.unwrap();
        assert!(!inner.done(), "the inner task suppressed the first cancel");
        let t0 = Instant::now();
        outer.cancel_with("second");
        let r = outer.clone().await;
        // Well before the inner task's 60 s graceful stage would end.
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "second cancel not forwarded"
        );
        assert!(is_cancelled_with(&r, Some("second")), "{r:?}");
        assert!(inner.cancelled());
    });
}

#[test]
fn sleep_of_duration_max_is_cancellable_not_a_panic() {
    block_on(async {
        let t = ringio::create_task(ringio::sleep(Duration::MAX));
        let u = ringio::create_task(ringio::sleep_with(Duration::MAX, 1));
        ringio::sleep(ms(5)).await.unwrap();
        assert!(!t.done(), "{:?}", t.result());
        assert!(!u.done());
        t.cancel();
        u.cancel();
        assert!(t.await.unwrap_err().is_cancelled());
        assert!(u.await.unwrap_err().is_cancelled());
        // And the loop can still wait on its other timers.
        let t0 = Instant::now();
        ringio::sleep(ms(10)).await.unwrap();
        assert!(t0.elapsed() >= ms(10));
    });
}

#[test]
fn self_cancel_is_delivered_at_the_next_op_without_starting_it() {
    block_on(async {
        let (r, w) = pipe();
        write_now(&w, b"ready");
        let r = Rc::new(r);
        let rr = r.clone();
        let before = driver();
        let t = ringio::create_task(async move {
            ringio::current_task().unwrap().cancel_with("self");
            let (res, buf) = ringio::io::read(&*rr, Vec::with_capacity(16)).await;
            // Delivered once: the next op runs normally.
            let (again, buf2) = ringio::io::read(&*rr, Vec::with_capacity(16)).await;
            Ok::<_, Error>((res, buf, again, buf2))
        });
        let (res, buf, again, buf2) = t.await.unwrap();
        assert!(is_cancelled_with(&res, Some("self")), "{res:?}");
        assert!(
            buf.is_empty() && buf.capacity() >= 16,
            "the buffer came back"
        );
        // The cancelled read never started: the data is still there.
        assert_eq!(again.unwrap(), 5);
        assert_eq!(buf2, b"ready");
        let after = driver();
        assert_eq!(after.ops_submitted, before.ops_submitted + 1);
        assert_eq!(after.cancel_requests, before.cancel_requests);
    });
}

#[test]
fn a_read_completed_before_the_cancel_passes_it_to_the_next_op() {
    block_on(async {
        let (r, w) = pipe();
        let r = Rc::new(r);
        let rr = r.clone();
        let reader = ringio::create_task(async move {
            let (res, buf) = ringio::io::read(&*rr, Vec::with_capacity(64)).await;
            let next = ringio::io::nop().await;
            Ok::<_, Error>((res, buf, next))
        });
        ringio::sleep(ms(10)).await.unwrap();
        write_now(&w, b"payload");
        reader.cancel_with("after data");
        let (res, buf, next) = reader.await.unwrap();
        assert_eq!(res.unwrap(), 7);
        assert_eq!(buf, b"payload");
        assert!(is_cancelled_with(&next, Some("after data")), "{next:?}");
    });
}

#[test]
fn a_task_looping_on_ops_that_complete_at_once_sees_its_cancel() {
    block_on(async {
        // NOPs complete at submission, before any ASYNC_CANCEL can reach
        // them; the cancel must still get through.
        let spun = Rc::new(Cell::new(0u32));
        let sp = spun.clone();
        let spinner = ringio::create_task(async move {
            loop {
                if let Err(e) = ringio::io::nop().await {
                    return Ok::<_, Error>((sp.get(), e));
                }
                sp.set(sp.get() + 1);
            }
        });
        // A reader on a pipe that always has data.
        let (r, w) = pipe();
        write_now(&w, &[7u8; 4096]);
        let read = Rc::new(Cell::new(0u32));
        let rd = read.clone();
        let reader = ringio::create_task(async move {
            loop {
                let (res, _buf) = ringio::io::read(&r, Vec::with_capacity(1)).await;
                if let Err(e) = res {
                    return Ok::<_, Error>((rd.get(), e));
                }
                rd.set(rd.get() + 1);
            }
        });
        until("both loops running", || spun.get() > 0 && read.get() > 0).await;
        assert!(!spinner.done() && !reader.done());
        spinner.cancel_with("stop spinning");
        reader.cancel_with("stop reading");
        let (n, e) = spinner.await.unwrap();
        assert!(n > 0);
        assert!(matches!(&e, Error::Cancelled { msg: Some(m) } if m == "stop spinning"));
        let (n, e) = reader.await.unwrap();
        // Stopped by the cancel, not by the data running out (a read of
        // the then empty pipe would be cancelled in the kernel, too).
        assert!(n > 0 && n <= 4096);
        assert!(matches!(&e, Error::Cancelled { msg: Some(m) } if m == "stop reading"));
        drop(w);
    });
}

/// A small deterministic generator for the race test.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

#[test]
fn cancels_racing_with_completions_lose_no_data() {
    const N: usize = 40;
    let mut rt = Runtime::builder().ring_entries(16).build().unwrap();
    let pipes: Rc<Vec<(OwnedFd, OwnedFd)>> = Rc::new((0..N).map(|_| pipe()).collect());
    for (r, _) in pipes.iter() {
        // SAFETY: setting O_NONBLOCK on our own descriptor, for the final
        // drain after the run.
        unsafe {
            let fl = libc::fcntl(r.as_raw_fd(), libc::F_GETFL);
            libc::fcntl(r.as_raw_fd(), libc::F_SETFL, fl | libc::O_NONBLOCK);
        }
    }
    let p = pipes.clone();
    let (got, written) = rt
        .run(async move {
            let got: Rc<RefCell<Vec<usize>>> = Rc::new(RefCell::new(vec![0; N]));
            let mut readers = Vec::new();
            for i in 0..N {
                let (p, g) = (p.clone(), got.clone());
                readers.push(ringio::create_task(async move {
                    loop {
                        let (res, _buf) = ringio::io::read(&p[i].0, Vec::with_capacity(8)).await;
                        match res {
                            Ok(n) => g.borrow_mut()[i] += n,
                            Err(e) if e.is_cancelled() => return Ok::<_, Error>(()),
                            Err(e) => return Err(e),
                        }
                    }
                }));
            }
            let mut written = vec![0usize; N];
            let mut rng = Lcg(42);
            for round in 0..200 {
                for _ in 0..rng.next(6) {
                    let i = rng.next(N as u64) as usize;
                    let len = 1 + rng.next(20) as usize;
                    write_now(&p[i].1, &vec![b'x'; len]);
                    written[i] += len;
                }
                if round % 5 == 0 {
                    let i = rng.next(N as u64) as usize;
                    readers[i].cancel();
                }
                if rng.next(3) == 0 {
                    ringio::sleep(Duration::ZERO).await.unwrap();
                } else {
                    ringio::io::nop().await.unwrap();
                }
            }
            for t in &readers {
                t.cancel();
            }
            for t in readers {
                t.await
                    .unwrap_or_else(|e| assert!(e.is_cancelled(), "{e:?}"));
            }
            let got = got.borrow().clone();
            (got, written)
        })
        .unwrap();
    let stats = rt.stats().driver;
    assert_eq!(stats.ops_in_flight, 0);
    assert!(stats.ops_canceled_by_kernel > 0, "{stats:?}");
    assert!(got.iter().sum::<usize>() > 0);
    for i in 0..N {
        let mut left = 0;
        let mut b = [0u8; 4096];
        loop {
            // SAFETY: reading into a stack buffer of the given size.
            let n = unsafe { libc::read(pipes[i].0.as_raw_fd(), b.as_mut_ptr().cast(), b.len()) };
            if n <= 0 {
                break;
            }
            left += n as usize;
        }
        assert_eq!(
            got[i] + left,
            written[i],
            "pipe {i}: read {} + left {left} != written {}",
            got[i],
            written[i]
        );
    }
}

#[test]
fn cancel_travels_down_a_chain_of_awaits() {
    block_on(async {
        let leaf = ringio::create_task(ringio::sleep(HOUR));
        let l = leaf.clone();
        let mid = ringio::create_task(async move { l.await });
        let m = mid.clone();
        let top = ringio::create_task(async move { m.await });
        ringio::sleep(ms(5)).await.unwrap();
        top.cancel_with("from the top");
        assert!(is_cancelled_with(&top.clone().await, Some("from the top")));
        assert!(mid.cancelled() && leaf.cancelled());
        assert!(is_cancelled_with(&leaf.result(), Some("from the top")));
    });
}

#[test]
fn dropping_a_task_handle_does_not_cancel_it() {
    block_on(async {
        let done = Rc::new(Cell::new(false));
        let d = done.clone();
        drop(ringio::create_task(async move {
            ringio::sleep(ms(10)).await?;
            d.set(true);
            Ok::<_, Error>(())
        }));
        // Bounded only to catch a hang: the task ends on its own.
        until("the handle-less task to end", || done.get()).await;
    });
}

#[test]
fn a_write_blocked_on_a_full_pipe_is_cancelled_and_says_how_much_went_out() {
    block_on(async {
        let (r, w) = pipe();
        // SAFETY: making our own descriptors non-blocking, to fill and
        // drain the pipe synchronously.
        unsafe {
            for fd in [r.as_raw_fd(), w.as_raw_fd()] {
                let fl = libc::fcntl(fd, libc::F_GETFL);
                libc::fcntl(fd, libc::F_SETFL, fl | libc::O_NONBLOCK);
            }
        }
        let chunk = vec![b'a'; 4096];
        let mut prefill = 0usize;
        loop {
            // SAFETY: writing from a buffer of the given size.
            let n = unsafe { libc::write(w.as_raw_fd(), chunk.as_ptr().cast(), chunk.len()) };
            if n <= 0 {
                break;
            }
            prefill += n as usize;
        }
        // SAFETY: back to a blocking writer: the ring's write must wait.
        unsafe {
            let fl = libc::fcntl(w.as_raw_fd(), libc::F_GETFL);
            libc::fcntl(w.as_raw_fd(), libc::F_SETFL, fl & !libc::O_NONBLOCK);
        }
        let w = Rc::new(w);
        let ww = w.clone();
        let before = driver();
        let writer = ringio::create_task(async move {
            let (res, buf) = ringio::io::write(&*ww, vec![b'z'; 100_000]).await;
            Ok::<_, Error>((res, buf.len()))
        });
        ringio::sleep(ms(20)).await.unwrap();
        assert!(!writer.done(), "the pipe is full: the write waits");
        writer.cancel_with("enough");
        let (res, buf_len) = writer.await.unwrap();
        assert_eq!(buf_len, 100_000, "the buffer came back whole");
        let mut in_pipe = 0usize;
        let mut b = vec![0u8; 65536];
        loop {
            // SAFETY: reading into a buffer of the given size.
            let n = unsafe { libc::read(r.as_raw_fd(), b.as_mut_ptr().cast(), b.len()) };
            if n <= 0 {
                break;
            }
            in_pipe += n as usize;
        }
        match res {
            // The kernel got some of it out before the cancel: the count
            // says exactly how much.
            Ok(n) => assert_eq!(prefill + n, in_pipe),
            Err(e) => {
                assert!(is_cancelled_with(&Err::<(), _>(e), Some("enough")));
                assert_eq!(in_pipe, prefill, "cancelled, yet bytes went out");
                assert_eq!(
                    driver().ops_canceled_by_kernel,
                    before.ops_canceled_by_kernel + 1
                );
            }
        }
    });
}

#[test]
fn an_op_made_while_a_cancel_is_pending_and_dropped_unpolled_still_runs() {
    block_on(async {
        let (r, w) = pipe();
        let t = ringio::create_task(async move {
            ringio::current_task().unwrap().cancel();
            // A fire-and-forget write, made and dropped without a poll.
            let data = b"sent anyway".to_vec();
            let sqe = io_uring::opcode::Write::new(
                io_uring::types::Fd(w.as_raw_fd()),
                data.as_ptr(),
                data.len() as u32,
            )
            .offset(u64::MAX)
            .build();
            // SAFETY: the SQE points into `data`'s heap buffer, owned by the op.
            drop(unsafe { ringio::Op::submit(sqe, data) }.unwrap());
            // The cancel is still pending: delivered here.
            let r = ringio::sleep(HOUR).await;
            // `w` stays open until the queued write has reached the kernel.
            Ok::<_, Error>((r, w))
        });
        let (slept, w) = t.await.unwrap();
        assert!(slept.unwrap_err().is_cancelled());
        ringio::io::nop().await.unwrap();
        drop(w);
        let (res, buf) = ringio::io::read(&r, Vec::with_capacity(32)).await;
        assert_eq!(res.unwrap(), 11);
        assert_eq!(buf, b"sent anyway");
        assert_eq!(driver().ops_in_flight, 0);
    });
}

/// Op data whose drop looks at the loop (as a socket type closing its fd
/// through the ring would).
struct LooksAtLoop {
    buf: Vec<u8>,
    seen: Rc<Cell<Option<usize>>>,
}
impl Drop for LooksAtLoop {
    fn drop(&mut self) {
        let lp = ringio::get_running_loop().unwrap();
        self.seen.set(Some(lp.stats().driver.ops_in_flight));
    }
}

#[test]
fn op_data_dropped_by_the_loop_may_use_the_loop() {
    block_on(async {
        let (r, w) = pipe();
        let seen = Rc::new(Cell::new(None));
        for complete_first in [false, true] {
            let mut data = LooksAtLoop {
                buf: Vec::with_capacity(8),
                seen: seen.clone(),
            };
            let sqe = io_uring::opcode::Read::new(
                io_uring::types::Fd(r.as_raw_fd()),
                data.buf.as_mut_ptr(),
                8,
            )
            .offset(u64::MAX)
            .build();
            // SAFETY: the SQE points into `data.buf`'s heap buffer.
            let mut op = unsafe { ringio::Op::submit(sqe, data) }.unwrap();
            assert!((&mut op).now_or_never().is_none());
            if complete_first {
                // The CQE is reaped (and kept for the op) before the drop.
                write_now(&w, b"x");
                ringio::sleep(ms(5)).await.unwrap();
            }
            seen.set(None);
            drop(op);
            ringio::sleep(ms(5)).await.unwrap();
            assert!(seen.get().is_some(), "the data was dropped");
        }
        assert_eq!(driver().ops_in_flight, 0);
    });
}

#[test]
fn op_data_dropped_at_the_end_of_run_may_use_the_loop() {
    let seen = Rc::new(Cell::new(None));
    let s = seen.clone();
    let (r, _w) = pipe();
    let mut rt = Runtime::new().unwrap();
    rt.run(async move {
        let mut data = LooksAtLoop {
            buf: Vec::with_capacity(8),
            seen: s,
        };
        let sqe = io_uring::opcode::Read::new(
            io_uring::types::Fd(r.as_raw_fd()),
            data.buf.as_mut_ptr(),
            8,
        )
        .offset(u64::MAX)
        .build();
        // SAFETY: the SQE points into `data.buf`'s heap buffer.
        let mut op = unsafe { ringio::Op::submit(sqe, data) }.unwrap();
        assert!((&mut op).now_or_never().is_none());
        // Its CQE is reaped by run's finish.
        drop(op);
        r
    })
    .unwrap();
    assert!(seen.get().is_some(), "dropped during run's finish");
    assert_eq!(rt.stats().driver.ops_in_flight, 0);
}

#[test]
fn a_main_task_that_ends_cancelled_makes_run_return_the_cancellation() {
    let mut rt = Runtime::new().unwrap();
    let r = rt.run(async {
        ringio::current_task().unwrap().cancel_with("main gives up");
        // A foreign future: the main task's future is dropped (rule 6).
        std::future::pending::<()>().await;
    });
    assert!(is_cancelled_with(&r, Some("main gives up")), "{r:?}");
    // A cancellation delivered at an await and returned is a value of the
    // main future, not an error of run().
    let r = rt.run(async {
        ringio::current_task().unwrap().cancel();
        ringio::sleep(HOUR).await
    });
    assert!(
        matches!(r, Ok(Err(Error::Cancelled { msg: None }))),
        "{r:?}"
    );
    assert_eq!(rt.stats().tasks, 0);
}

#[test]
fn a_multishot_op_made_while_a_cancel_is_pending_delivers_it() {
    block_on(async {
        let (r, w) = pipe();
        let t = ringio::create_task(async move {
            ringio::current_task().unwrap().cancel_with("no polling");
            let sqe = io_uring::opcode::PollAdd::new(
                io_uring::types::Fd(r.as_raw_fd()),
                libc::POLLIN as u32,
            )
            .multi(true)
            .build();
            // SAFETY: a poll points to no memory.
            let mut op = unsafe { ringio::Op::submit(sqe, ()) }.unwrap();
            let first = std::future::poll_fn(|cx| op.poll_next(cx)).await;
            let second = std::future::poll_fn(|cx| op.poll_next(cx)).await;
            Ok::<_, Error>((first, second, r))
        });
        let (first, second, _r) = t.await.unwrap();
        match first {
            Some((res, _)) => assert!(is_cancelled_with(&res, Some("no polling")), "{res:?}"),
            None => panic!("the multishot op ended without delivering the cancel"),
        }
        assert!(second.is_none());
        drop(w);
        assert_eq!(driver().ops_in_flight, 0);
    });
}
