//! The Task object's finer asyncio behaviours, each as CPython 3.12 shows
//! it, on the single-allocation task: self-cancellation at return, cancel
//! forwarded at once to what a task awaits, a pending cancel surviving an
//! await that does not suspend, one order for callbacks and awaiters, the
//! other-loop error, the text form, and `cancel()` retrieving an exception.

mod common;

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use common::{block_on, ms};
use ringio::{Error, Promise, Report, ReportKind, Runtime, Task};

const HOUR: Duration = Duration::from_secs(3600);

/// A runtime whose reports are collected.
fn capturing_runtime() -> (Runtime, Rc<RefCell<Vec<Report>>>) {
    let reports = Rc::new(RefCell::new(Vec::new()));
    let sink = reports.clone();
    let rt = Runtime::builder()
        .logger(move |r: &Report| sink.borrow_mut().push(r.clone()))
        .build()
        .unwrap();
    (rt, reports)
}

#[test]
fn a_task_that_cancels_itself_and_returns_ends_cancelled() {
    block_on(async {
        let t = ringio::create_task(async {
            ringio::current_task().unwrap().cancel_with("mine");
            Ok::<_, Error>(5)
        });
        let r = t.clone().await;
        assert!(t.cancelled(), "{r:?}");
        match r {
            Err(Error::Cancelled { msg }) => assert_eq!(msg.as_deref(), Some("mine")),
            other => panic!("expected the task's own cancellation, got {other:?}"),
        }
    });
}

#[test]
fn cancel_cancels_an_awaited_promise_at_once() {
    block_on(async {
        let p: Promise<u32> = Promise::new();
        let inner = p.clone();
        let waiter = ringio::create_task(async move { inner.await });
        ringio::sleep(ms(1)).await.unwrap();
        assert!(!p.done());
        assert!(waiter.cancel());
        // No loop turn in between: asyncio's `cancel()` cancels the
        // `_fut_waiter` synchronously.
        assert!(
            p.cancelled(),
            "the awaited promise is cancelled by cancel() itself"
        );
        let r = waiter.clone().await;
        assert!(r.unwrap_err().is_cancelled());
        assert!(waiter.cancelled());
    });
}

#[test]
fn cancel_cancels_an_awaited_task_at_once() {
    block_on(async {
        let inner = ringio::create_task(async {
            ringio::sleep(HOUR).await?;
            Ok::<_, Error>(1)
        });
        let awaited = inner.clone();
        let outer = ringio::create_task(async move { awaited.await });
        ringio::sleep(ms(1)).await.unwrap();
        assert_eq!(inner.cancelling(), 0);
        outer.cancel_with("stop");
        assert_eq!(inner.cancelling(), 1, "forwarded by cancel() itself");
        assert!(format!("{inner}").contains("cancelling"), "{inner}");
        let r = outer.clone().await;
        assert!(
            matches!(r, Err(Error::Cancelled { msg: Some(ref m) }) if m == "stop"),
            "{r:?}"
        );
        assert!(inner.cancelled());
        assert!(outer.cancelled());
    });
}

#[test]
fn a_pending_cancel_survives_an_await_that_does_not_suspend() {
    block_on(async {
        let done = ringio::create_task(async { Ok::<_, Error>(7) });
        let settled: Promise<u32> = Promise::new();
        settled.set_result(8).unwrap();
        ringio::sleep(ms(1)).await.unwrap();
        assert!(done.done());
        let t = ringio::create_task(async move {
            ringio::current_task().unwrap().cancel();
            // Neither await suspends: both give their values.
            let a = done.await?;
            let b = (&settled).await?;
            // The first real suspension gets the cancellation.
            let slept = ringio::sleep(HOUR).await;
            Ok::<_, Error>((a, b, slept.unwrap_err().is_cancelled()))
        });
        assert_eq!(t.await.unwrap(), (7, 8, true));
    });
}

#[test]
fn callbacks_and_awaiters_run_in_registration_order_on_a_promise() {
    block_on(async {
        let log = Rc::new(RefCell::new(Vec::<&str>::new()));
        let p: Promise<u32> = Promise::new();
        let l = log.clone();
        p.add_done_callback(move |_| l.borrow_mut().push("callback before"));
        let (inner, l) = (p.clone(), log.clone());
        let waiter = ringio::create_task(async move {
            let v = inner.await?;
            l.borrow_mut().push("awaiter");
            Ok::<_, Error>(v)
        });
        ringio::sleep(ms(1)).await.unwrap(); // the awaiter registers
        let l = log.clone();
        p.add_done_callback(move |_| l.borrow_mut().push("callback after"));
        p.set_result(3).unwrap();
        assert_eq!(waiter.await.unwrap(), 3);
        ringio::sleep(ms(1)).await.unwrap();
        assert_eq!(
            *log.borrow(),
            ["callback before", "awaiter", "callback after"]
        );
    });
}

/// A task that returns 1 once the returned gate is set.
fn gated_task() -> (Promise<()>, Task<i32>) {
    let gate: Promise<()> = Promise::new();
    let g = gate.clone();
    let task = ringio::create_task(async move {
        g.await?;
        Ok::<_, Error>(1)
    });
    (gate, task)
}

#[test]
fn callbacks_and_awaiters_run_in_registration_order_on_a_task() {
    block_on(async {
        let log = Rc::new(RefCell::new(Vec::<&str>::new()));
        let (gate, task) = gated_task();
        let l = log.clone();
        task.add_done_callback(move |_| l.borrow_mut().push("callback before"));
        let (awaited, l) = (task.clone(), log.clone());
        let waiter = ringio::create_task(async move {
            let v = awaited.await?;
            l.borrow_mut().push("awaiter");
            Ok::<_, Error>(v)
        });
        ringio::sleep(ms(1)).await.unwrap();
        let l = log.clone();
        task.add_done_callback(move |_| l.borrow_mut().push("callback after"));
        gate.set_result(()).unwrap();
        assert_eq!(waiter.await.unwrap(), 1);
        ringio::sleep(ms(1)).await.unwrap();
        assert_eq!(
            *log.borrow(),
            ["callback before", "awaiter", "callback after"]
        );
    });
}

/// A task's first awaiter is kept in its header, the rest in a list: one
/// registered before a callback still runs before it, and a second
/// awaiter after both.
#[test]
fn a_first_awaiter_keeps_its_place_before_later_callbacks_and_awaiters() {
    block_on(async {
        let log = Rc::new(RefCell::new(Vec::<&str>::new()));
        let (gate, task) = gated_task();
        let awaiter = |name: &'static str| {
            let (awaited, l) = (task.clone(), log.clone());
            ringio::create_task(async move {
                // The first await moves the value out; either way the
                // awaiter resumes once the task has ended.
                let ended = awaited.await.is_ok();
                l.borrow_mut().push(name);
                Ok::<_, Error>(ended)
            })
        };
        let first = awaiter("first awaiter");
        ringio::sleep(ms(1)).await.unwrap();
        let l = log.clone();
        task.add_done_callback(move |_| l.borrow_mut().push("callback"));
        let second = awaiter("second awaiter");
        ringio::sleep(ms(1)).await.unwrap();
        gate.set_result(()).unwrap();
        assert!(first.await.unwrap(), "the first awaiter reads the value");
        assert!(!second.await.unwrap(), "it was moved out by then");
        ringio::sleep(ms(1)).await.unwrap();
        assert_eq!(
            *log.borrow(),
            ["first awaiter", "callback", "second awaiter"]
        );
    });
}

#[test]
fn awaiting_another_loops_promise_fails_at_once() {
    // Made on a first runtime (kept alive), awaited on a second one on the
    // same thread: nothing on the second loop could ever settle it, so the
    // await fails instead of hanging. A task of the first loop is done by
    // the end of its `run` (cancelled there): awaiting it reads that end
    // without suspending, as asyncio does for a done future.
    let mut first = Runtime::new().unwrap();
    let (p, t) = first
        .run(async {
            let p: Promise<u32> = Promise::new();
            let t: Task<u32> = ringio::create_task(async {
                ringio::sleep(HOUR).await?;
                Ok::<_, Error>(1)
            });
            (p, t)
        })
        .unwrap();
    assert!(t.cancelled(), "run() cancels what is left");
    let (a, b) = block_on(async move { (p.await, t.await) });
    match a {
        Err(Error::InvalidState(m)) => assert!(m.contains("different loop"), "{m}"),
        other => panic!("expected the different-loop error, got {other:?}"),
    }
    assert!(b.unwrap_err().is_cancelled());
}

#[test]
fn the_text_form_says_cancelling_and_shows_the_result() {
    block_on(async {
        let t = ringio::create_task(async {
            ringio::sleep(ms(5)).await?;
            Ok::<_, Error>(42)
        });
        assert!(format!("{t:?}").starts_with("<Task pending name="), "{t:?}");
        let r = ringio::create_task(async { Ok::<_, Error>(42u32) });
        ringio::sleep(ms(1)).await.unwrap();
        let text = format!("{r:?}");
        assert!(
            text.starts_with("<Task finished name=") && text.ends_with(" result=42>"),
            "{text}"
        );
        t.cancel();
        assert!(
            format!("{t:?}").starts_with("<Task cancelling name="),
            "{t:?}"
        );
        assert!(t.clone().await.unwrap_err().is_cancelled());
        assert!(
            format!("{t:?}").starts_with("<Task cancelled name="),
            "{t:?}"
        );
    });
}

#[test]
fn cancel_of_a_failed_task_marks_its_exception_retrieved() {
    let (mut rt, reports) = capturing_runtime();
    rt.run(async {
        let failed = ringio::create_task(async { Err::<(), _>(Error::msg("boom")) });
        let unread = ringio::create_task(async { Err::<(), _>(Error::msg("unread")) });
        ringio::sleep(ms(1)).await.unwrap();
        assert!(failed.done() && unread.done());
        assert!(!failed.cancel(), "cancel() of a finished task is false");
        drop((failed, unread));
    })
    .unwrap();
    let never: Vec<String> = reports
        .borrow()
        .iter()
        .filter(|r| r.kind == ReportKind::ExceptionNeverRetrieved)
        .map(|r| format!("{r:?}"))
        .collect();
    assert_eq!(never.len(), 1, "only the unread one is reported: {never:?}");
    assert!(never[0].contains("unread"), "{never:?}");
}
