//! Integration tests: combinators (against a real ring).
//!
//! `gather`, `gather_settled`, `gather!`, `shield`, `wait_for`, `wait` and
//! `as_completed`, rule by rule, and every example of the asyncio
//! document's sections on them, with their output order and timing scaled
//! from seconds to tenths of seconds. Every test runs on a fresh
//! `Runtime` and checks afterwards that no task, timer or ring operation
//! is left; the tests that cancel or time out also check inside the run
//! that only the main task is left and no timer is armed.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::os::unix::net::UnixStream;
use std::pin::Pin;
use std::rc::Rc;
use std::time::{Duration, Instant};

use ringio::{Error, Result, ReturnWhen, Runtime};

/// The document's seconds, scaled to tenths.
fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s / 10.0)
}

const HOUR: Duration = Duration::from_secs(3600);

/// Runs `fut` on a fresh runtime; afterwards nothing may be left.
fn run<F: Future + 'static>(fut: F) -> F::Output {
    let mut rt = Runtime::new().expect("runtime");
    let out = rt.run(fut).expect("main task");
    let st = rt.stats();
    assert_eq!(st.driver.ops_in_flight, 0, "an op is left in flight");
    assert_eq!(st.tasks, 0, "a task is left");
    out
}

/// Inside a run: only the calling (main) task is alive, no timer is armed
/// and no op is in flight. Gives the loop one turn first so that done
/// callbacks already scheduled have run.
async fn assert_nothing_left() {
    ringio::sleep(Duration::ZERO).await.unwrap();
    let tasks = ringio::all_tasks();
    assert_eq!(tasks.len(), 1, "tasks left: {tasks:?}");
    let st = ringio::get_running_loop().unwrap().stats();
    assert_eq!(st.timers, 0, "a timer is left armed");
    assert_eq!(st.driver.ops_in_flight, 0, "an op is left in flight");
}

/// Seconds since `t0`, checked to be about `expect` (document seconds,
/// i.e. tenths): at least `expect` minus a little, less than `expect` plus
/// most of one tenth.
#[track_caller]
fn about(t0: Instant, expect: f64) {
    let got = t0.elapsed().as_secs_f64();
    let want = expect / 10.0;
    assert!(
        got >= want - 0.005 && got < want + 0.085,
        "took {got:.3} s, expected about {want:.3} s"
    );
}

/// A log of lines, shared by the tasks of one test.
#[derive(Clone, Default)]
struct Log(Rc<RefCell<Vec<String>>>);

impl Log {
    fn say(&self, line: impl Into<String>) {
        self.0.borrow_mut().push(line.into());
    }
    fn lines(&self) -> Vec<String> {
        self.0.borrow().clone()
    }
}

/// Sleeps `d`, then gives `v`.
async fn after<T>(d: Duration, v: T) -> Result<T> {
    ringio::sleep(d).await?;
    Ok(v)
}

/// Sleeps `d`, then fails with `msg`.
async fn fail_after<T>(d: Duration, msg: &'static str) -> Result<T> {
    ringio::sleep(d).await?;
    Err(Error::msg(msg))
}

type BoxFut<T> = Pin<Box<dyn Future<Output = Result<T>>>>;

fn boxed<T, F: Future<Output = Result<T>> + 'static>(f: F) -> BoxFut<T> {
    Box::pin(f)
}

// --- gather -------------------------------------------------------------

async fn factorial(log: Log, name: &'static str, number: u64) -> Result<u64> {
    let mut f = 1;
    for i in 2..=number {
        log.say(format!("Task {name}: Compute factorial({i})..."));
        ringio::sleep(secs(1.0)).await?;
        f *= i;
    }
    log.say(format!("Task {name}: factorial({number}) = {f}"));
    Ok(f)
}

#[test]
fn gather_factorial_example() {
    let log = Log::default();
    let l = log.clone();
    let (results, t0) = run(async move {
        let t0 = Instant::now();
        // Schedule three calls *concurrently*:
        let results = ringio::gather(vec![
            factorial(l.clone(), "A", 2),
            factorial(l.clone(), "B", 3),
            factorial(l.clone(), "C", 4),
        ])
        .await
        .unwrap();
        about(t0, 3.0);
        (results, t0)
    });
    assert_eq!(results, [2, 6, 24]);
    assert_eq!(
        log.lines(),
        [
            "Task A: Compute factorial(2)...",
            "Task B: Compute factorial(2)...",
            "Task C: Compute factorial(2)...",
            "Task A: factorial(2) = 2",
            "Task B: Compute factorial(3)...",
            "Task C: Compute factorial(3)...",
            "Task B: factorial(3) = 6",
            "Task C: Compute factorial(4)...",
            "Task C: factorial(4) = 24",
        ]
    );
    // Concurrently: about 3 tenths, not the 6 of one after the other.
    assert!(t0.elapsed() < secs(4.0));
}

#[test]
fn gather_children_start_on_the_next_loop_turn() {
    run(async {
        let started = Rc::new(Cell::new(false));
        let s = started.clone();
        let g = ringio::gather(vec![async move {
            s.set(true);
            Ok::<_, Error>(1)
        }]);
        assert!(!started.get(), "a child ran inside gather()");
        ringio::sleep(Duration::ZERO).await.unwrap();
        assert!(started.get(), "the child did not run on the next turn");
        assert_eq!(g.await.unwrap(), [1]);
    });
}

#[test]
fn gather_cancelled_before_its_children_ran_runs_none_of_them() {
    run(async {
        let ran = Rc::new(Cell::new(0));
        let child = || {
            let ran = ran.clone();
            async move {
                ran.set(ran.get() + 1);
                Ok::<_, Error>(())
            }
        };
        let g = ringio::gather(vec![child(), child()]);
        assert!(g.cancel());
        assert!(g.clone().await.unwrap_err().is_cancelled());
        // asyncio's _GatheringFuture: failed with the cancellation, not
        // cancelled itself.
        assert!(!g.cancelled());
        assert_eq!(ran.get(), 0);
        assert_nothing_left().await;
    });
}

#[test]
fn gather_results_are_in_input_order_not_completion_order() {
    run(async {
        let order = Log::default();
        let mk = |d: f64, v: u32| {
            let order = order.clone();
            boxed(async move {
                ringio::sleep(secs(d)).await?;
                order.say(v.to_string());
                Ok(v)
            })
        };
        let r = ringio::gather(vec![mk(0.3, 1), mk(0.1, 2), mk(0.2, 3)])
            .await
            .unwrap();
        assert_eq!(r, [1, 2, 3]);
        assert_eq!(order.lines(), ["2", "3", "1"]);
    });
}

#[test]
fn gather_first_error_propagates_at_once_and_siblings_keep_running() {
    run(async {
        let t0 = Instant::now();
        let slow = ringio::create_task(after(secs(3.0), "slow"));
        let medium_done = Rc::new(Cell::new(false));
        let m = medium_done.clone();
        let g = ringio::gather(vec![
            ringio::create_task(fail_after(secs(1.0), "boom")),
            slow.clone(),
            ringio::create_task(async move {
                ringio::sleep(secs(2.0)).await?;
                m.set(true);
                Ok::<_, Error>("medium")
            }),
        ]);
        let e = g.clone().await.unwrap_err();
        assert_eq!(e.to_string(), "boom");
        // At once: at the first error, not when all are done.
        about(t0, 1.0);
        assert!(g.done());
        assert!(!g.cancelled());
        assert_eq!(g.exception().unwrap().unwrap().to_string(), "boom");
        // The siblings were not cancelled and finish normally.
        assert!(!slow.done());
        assert_eq!(slow.clone().await.unwrap(), "slow");
        about(t0, 3.0);
        assert!(!slow.cancelled());
        assert!(medium_done.get());
        assert_nothing_left().await;
    });
}

#[test]
fn gather_cancel_cancels_every_child_not_done() {
    run(async {
        let done_child = ringio::create_task(async { Ok::<_, Error>(0) });
        ringio::sleep(Duration::ZERO).await.unwrap();
        assert!(done_child.done());
        let a = ringio::create_task(after(HOUR, 1));
        let b = ringio::create_task(after(HOUR, 2));
        let g = ringio::gather(vec![done_child.clone(), a.clone(), b.clone()]);
        ringio::sleep(secs(0.1)).await.unwrap();
        assert!(g.cancel_with("stop"));
        let e = g.clone().await.unwrap_err();
        assert!(
            matches!(&e, Error::Cancelled { msg: Some(m) } if m == "stop"),
            "{e:?}"
        );
        assert!(a.cancelled() && b.cancelled());
        assert!(!done_child.cancelled());
        // As asyncio's: `cancelled()` is false, the cancellation is the
        // exception, and `result()` gives it.
        assert!(!g.cancelled());
        let e = g.exception().unwrap().unwrap();
        assert!(
            matches!(&e, Error::Cancelled { msg: Some(m) } if m == "stop"),
            "{e:?}"
        );
        assert!(g.result().unwrap_err().is_cancelled());
        assert_eq!(format!("{g:?}"), "<Gather finished children=3>");
        // Done now: a second cancel does nothing.
        assert!(!g.cancel());
        assert_nothing_left().await;
    });
}

#[test]
fn gather_cancelled_through_the_awaiting_task() {
    run(async {
        let seen = Log::default();
        let child = |name: &'static str| {
            let seen = seen.clone();
            boxed(async move {
                let r = ringio::sleep(HOUR).await;
                if r.is_err() {
                    seen.say(name);
                }
                r.map(|_| 0)
            })
        };
        let g = ringio::gather(vec![child("a"), child("b")]);
        let waiter = {
            let g = g.clone();
            ringio::create_task(async move { g.await })
        };
        ringio::sleep(secs(0.1)).await.unwrap();
        assert!(waiter.cancel());
        assert!(waiter.clone().await.unwrap_err().is_cancelled());
        assert!(waiter.cancelled());
        assert!(g.done() && !g.cancelled());
        assert!(g.exception().unwrap().unwrap().is_cancelled());
        let mut s = seen.lines();
        s.sort();
        assert_eq!(s, ["a", "b"]);
        assert_nothing_left().await;
    });
}

#[test]
fn gather_cancelled_child_fails_it_without_cancelling_gather_or_siblings() {
    run(async {
        let victim = ringio::create_task(after(HOUR, 1));
        let sibling = ringio::create_task(after(secs(2.0), 2));
        let g = ringio::gather(vec![victim.clone(), sibling.clone()]);
        ringio::sleep(secs(1.0)).await.unwrap();
        victim.cancel_with("just this one");
        let e = g.clone().await.unwrap_err();
        assert!(
            matches!(&e, Error::Cancelled { msg: Some(m) } if m == "just this one"),
            "{e:?}"
        );
        // The gather failed with the cancellation but was not cancelled.
        assert!(!g.cancelled());
        assert!(g.exception().unwrap().unwrap().is_cancelled());
        // The sibling keeps running and finishes.
        assert!(!sibling.done());
        assert_eq!(sibling.clone().await.unwrap(), 2);
        assert!(!sibling.cancelled());
        assert_nothing_left().await;
    });
}

/// asyncio's `_GatheringFuture` once cancelled and its children ended:
/// `cancelled()` is false, `exception()` is the CancelledError, awaiting it
/// and `result()` raise it — with and without `return_exceptions`, and as
/// seen from its done callback.
#[test]
fn cancelled_gather_fails_with_cancelled_and_is_not_cancelled() {
    run(async {
        let g = ringio::gather(vec![after(HOUR, 1), after(HOUR, 2)]);
        let seen = Rc::new(Cell::new(None));
        let s = seen.clone();
        g.add_done_callback(move |g| s.set(Some(g.cancelled())));
        ringio::sleep(secs(0.1)).await.unwrap();
        assert!(g.cancel_with("enough"));
        let e = g.clone().await.unwrap_err();
        assert!(
            matches!(&e, Error::Cancelled { msg: Some(m) } if m == "enough"),
            "{e:?}"
        );
        assert!(g.done());
        assert!(!g.cancelled(), "a gather is never cancelled itself");
        let exc = g.exception().unwrap().unwrap();
        assert!(
            matches!(&exc, Error::Cancelled { msg: Some(m) } if m == "enough"),
            "{exc:?}"
        );
        assert!(g.result().unwrap_err().is_cancelled());
        assert!(!g.cancel(), "done: a second cancel does nothing");
        ringio::sleep(Duration::ZERO).await.unwrap();
        assert_eq!(seen.get(), Some(false), "what the done callback saw");

        let g = ringio::gather_settled(vec![after(HOUR, 1), after(HOUR, 2)]);
        ringio::sleep(secs(0.1)).await.unwrap();
        assert!(g.cancel());
        assert!(g.clone().await.unwrap_err().is_cancelled());
        assert!(g.done() && !g.cancelled());
        assert!(g.exception().unwrap().unwrap().is_cancelled());
        assert!(g.result().unwrap_err().is_cancelled());
        assert_nothing_left().await;
    });
}

#[test]
fn gather_cancel_after_it_failed_does_not_cancel_the_others() {
    run(async {
        let other = ringio::create_task(after(secs(2.0), 7));
        let g = ringio::gather!(fail_after::<()>(secs(0.5), "early"), other.clone());
        assert!(g.clone().await.is_err());
        // asyncio's note: cancelling a gather after it was marked done
        // does not cancel any submitted awaitable.
        assert!(!g.cancel());
        assert_eq!(other.clone().await.unwrap(), 7);
        assert!(!other.cancelled());
        assert_nothing_left().await;
    });
}

#[test]
fn gather_settled_collects_values_errors_and_cancellations() {
    run(async {
        let victim = ringio::create_task(after(HOUR, 0));
        let g = ringio::gather_settled(vec![
            boxed(after(secs(0.1), 1)),
            boxed(fail_after(secs(0.2), "bad")),
            boxed({
                let v = victim.clone();
                async move { v.await }
            }),
            boxed(after(secs(0.3), 4)),
        ]);
        ringio::sleep(secs(0.1)).await.unwrap();
        victim.cancel();
        let t0 = Instant::now();
        let r = g.clone().await.unwrap();
        // It waited for all of them (the slowest ends at 0.3).
        about(t0, 0.2);
        assert_eq!(r.len(), 4);
        assert_eq!(*r[0].as_ref().unwrap(), 1);
        assert_eq!(r[1].as_ref().unwrap_err().to_string(), "bad");
        assert!(r[2].as_ref().unwrap_err().is_cancelled());
        assert_eq!(*r[3].as_ref().unwrap(), 4);
        assert!(!g.cancelled());
        assert_nothing_left().await;
    });
}

#[test]
fn gather_settled_cancelled_itself_ends_cancelled() {
    run(async {
        let g = ringio::gather_settled(vec![after(HOUR, 1), after(HOUR, 2)]);
        ringio::sleep(secs(0.1)).await.unwrap();
        assert!(g.cancel());
        // The outer Err is the gather itself being cancelled
        // (return_exceptions does not swallow it).
        assert!(g.clone().await.unwrap_err().is_cancelled());
        assert!(!g.cancelled());
        assert!(g.exception().unwrap().unwrap().is_cancelled());
        assert_nothing_left().await;
    });
}

#[test]
fn gather_same_task_twice_is_awaited_once_and_read_not_moved() {
    run(async {
        let polls = Rc::new(Cell::new(0));
        let p = polls.clone();
        let t = ringio::create_task(async move {
            p.set(p.get() + 1);
            ringio::sleep(secs(0.1)).await?;
            Ok::<_, Error>(String::from("v"))
        });
        let g = ringio::gather(vec![t.clone(), t.clone()]);
        assert_eq!(format!("{g:?}"), "<Gather pending children=1>");
        assert_eq!(g.await.unwrap(), ["v", "v"]);
        assert_eq!(polls.get(), 1);
        // The task given keeps its value, as asyncio's does.
        assert_eq!(t.result().unwrap(), "v");
    });
}

#[test]
fn gather_reads_done_children_without_polling_them() {
    run(async {
        let t = ringio::create_task(async { Ok::<_, Error>(5) });
        ringio::sleep(Duration::ZERO).await.unwrap();
        assert!(t.done());
        let p = ringio::Promise::new();
        p.set_result(6).unwrap();
        let r = ringio::gather!(t.clone(), p.clone()).await.unwrap();
        assert_eq!(r, (5, 6));
        // Still readable from the handles.
        assert_eq!(t.result().unwrap(), 5);
        assert_eq!(p.result().unwrap(), 6);
    });
}

#[test]
fn gather_promises_and_cancel_cancels_them() {
    run(async {
        let p1 = ringio::Promise::<u8>::new();
        let p2 = ringio::Promise::<u8>::new();
        let g = ringio::gather(vec![p1.clone(), p2.clone()]);
        let setter = p1.clone();
        ringio::get_running_loop()
            .unwrap()
            .call_later(secs(0.1), move || setter.set_result(1).unwrap());
        ringio::sleep(secs(0.2)).await.unwrap();
        assert!(!g.done());
        assert!(g.cancel());
        assert!(p2.cancelled());
        assert!(!p1.cancelled());
        assert!(g.clone().await.unwrap_err().is_cancelled());
        assert_nothing_left().await;
    });
}

#[test]
fn gather_macro_mixes_types_and_propagates_the_first_error() {
    run(async {
        let t = ringio::create_task(after(secs(0.1), "text"));
        let (a, b, c, ()) = ringio::gather!(
            after(secs(0.2), 1u8),
            t,
            async { Ok::<_, Error>(vec![1, 2]) },
            ringio::sleep(secs(0.1)),
        )
        .await
        .unwrap();
        assert_eq!((a, b, c), (1, "text", vec![1, 2]));

        let t0 = Instant::now();
        let slow = ringio::create_task(after(secs(2.0), ()));
        let e = ringio::gather!(
            after(secs(0.5), 1),
            fail_after::<()>(secs(1.0), "x"),
            slow.clone()
        )
        .await
        .unwrap_err();
        assert_eq!(e.to_string(), "x");
        about(t0, 1.0);
        assert!(!slow.done());
        slow.await.unwrap();
        assert_nothing_left().await;
    });
}

#[test]
fn gather_of_nothing_is_done_at_once() {
    run(async {
        let g = ringio::gather(Vec::<ringio::Task<u8>>::new());
        assert!(g.done());
        assert_eq!(g.result().unwrap(), Vec::<u8>::new());
        assert_eq!(g.await.unwrap(), Vec::<u8>::new());
    });
}

#[test]
fn gather_outside_a_loop_fails_with_no_running_event_loop() {
    let g = ringio::gather(vec![async { Ok::<_, Error>(1) }]);
    assert!(g.done());
    let e = g.exception().unwrap().unwrap();
    assert_eq!(e.to_string(), "no running event loop");
}

#[test]
fn gather_handle_done_callbacks_and_result() {
    run(async {
        let g = ringio::gather(vec![after(secs(0.1), 1), after(secs(0.2), 2)]);
        assert!(g.result().unwrap_err().to_string().contains("not set"));
        let seen = Rc::new(Cell::new(None));
        let s = seen.clone();
        g.add_done_callback(move |g| s.set(Some(g.result().unwrap())));
        let removed = g.add_done_callback(|_| panic!("removed"));
        assert_eq!(g.remove_done_callback(removed), 1);
        while !g.done() {
            ringio::sleep(secs(0.05)).await.unwrap();
        }
        ringio::sleep(Duration::ZERO).await.unwrap();
        assert_eq!(seen.take(), Some(vec![1, 2]));
        assert_eq!(g.result().unwrap(), [1, 2]);
    });
}

#[test]
fn gather_of_gathers() {
    run(async {
        let inner1 = ringio::gather(vec![after(secs(0.1), 1), after(secs(0.1), 2)]);
        let inner2 = ringio::gather(vec![after(secs(0.2), 3)]);
        let outer = ringio::gather(vec![inner1.clone(), inner2]);
        assert_eq!(outer.clone().await.unwrap(), [vec![1, 2], vec![3]]);
        // Cancelling an outer gather reaches the children of the inner ones.
        let leaf = ringio::create_task(after(HOUR, 0));
        let outer = ringio::gather(vec![ringio::gather(vec![leaf.clone()])]);
        ringio::sleep(secs(0.1)).await.unwrap();
        assert!(outer.cancel());
        assert!(outer.await.unwrap_err().is_cancelled());
        assert!(leaf.cancelled());
        assert_nothing_left().await;
    });
}

// --- shield -------------------------------------------------------------

#[test]
fn shield_outer_cancelled_inner_keeps_running() {
    let log = Log::default();
    let l = log.clone();
    run(async move {
        let t0 = Instant::now();
        let inner = {
            let l = l.clone();
            ringio::create_task(async move {
                ringio::sleep(secs(2.0)).await?;
                l.say("something() finished");
                Ok::<_, Error>(42)
            })
        };
        let waiter = {
            let (inner, l) = (inner.clone(), l.clone());
            ringio::create_task(async move {
                // try: res = await shield(something())
                // except CancelledError: res = None
                let res = match ringio::shield(inner).await {
                    Err(Error::Cancelled { .. }) => None,
                    other => Some(other?),
                };
                l.say(format!("waiter: res = {res:?}"));
                Ok::<_, Error>(res)
            })
        };
        ringio::sleep(secs(1.0)).await.unwrap();
        assert!(waiter.cancel());
        assert_eq!(waiter.clone().await.unwrap(), None);
        about(t0, 1.0);
        // From the point of view of something(), nothing happened.
        assert!(!inner.done());
        assert_eq!(inner.clone().await.unwrap(), 42);
        about(t0, 2.0);
        assert!(!inner.cancelled());
        assert_nothing_left().await;
    });
    assert_eq!(log.lines(), ["waiter: res = None", "something() finished"]);
}

#[test]
fn shield_awaiter_still_gets_cancelled() {
    run(async {
        let inner = ringio::create_task(after(secs(1.0), 1));
        let waiter = {
            let inner = inner.clone();
            ringio::create_task(async move { ringio::shield(inner).await })
        };
        ringio::sleep(secs(0.5)).await.unwrap();
        waiter.cancel();
        assert!(waiter.clone().await.unwrap_err().is_cancelled());
        assert!(waiter.cancelled());
        assert_eq!(inner.await.unwrap(), 1);
        assert_nothing_left().await;
    });
}

#[test]
fn shield_of_a_plain_future_runs_it_as_a_task() {
    run(async {
        let finished = Rc::new(Cell::new(false));
        let f = finished.clone();
        let p = ringio::shield(async move {
            ringio::sleep(secs(1.0)).await?;
            f.set(true);
            Ok::<_, Error>(3)
        });
        ringio::sleep(secs(0.5)).await.unwrap();
        // Cancelling the outer promise leaves the inner one running.
        assert!(p.cancel());
        assert!(p.clone().await.unwrap_err().is_cancelled());
        assert_eq!(ringio::all_tasks().len(), 2);
        ringio::sleep(secs(0.7)).await.unwrap();
        assert!(finished.get());
        assert_nothing_left().await;
    });
}

#[test]
fn shield_cancelled_from_within_cancels_the_shield() {
    run(async {
        let inner = ringio::create_task(async {
            ringio::sleep(secs(0.5)).await?;
            // It cancels itself.
            ringio::current_task().unwrap().cancel_with("from within");
            ringio::sleep(HOUR).await?;
            Ok::<_, Error>(0)
        });
        let p = ringio::shield(inner.clone());
        let e = p.clone().await.unwrap_err();
        assert!(e.is_cancelled());
        assert!(p.cancelled());
        assert!(inner.cancelled());
        assert_nothing_left().await;
    });
}

#[test]
fn shield_passes_values_and_errors_and_reads_done_inner_at_once() {
    run(async {
        assert_eq!(ringio::shield(after(secs(0.1), 9)).await.unwrap(), 9);
        let e = ringio::shield(fail_after::<u8>(secs(0.1), "inner failed"))
            .await
            .unwrap_err();
        assert_eq!(e.to_string(), "inner failed");
        let done = ringio::create_task(async { Ok::<_, Error>(1) });
        ringio::sleep(Duration::ZERO).await.unwrap();
        let p = ringio::shield(done.clone());
        assert!(p.done(), "a done inner settles the shield at once");
        assert_eq!(p.await.unwrap(), 1);
        assert_eq!(done.result().unwrap(), 1);
    });
}

/// A gather given to `shield` is used as is and read by clone, as a task
/// or promise is: its value stays readable from the gather afterwards —
/// after the shield gave it, and after a shielded waiter was cancelled
/// while the gather went on. The same holds for a gather of gathers.
#[test]
fn shield_of_a_gather_leaves_its_value_readable() {
    run(async {
        let g = ringio::gather(vec![after(secs(0.1), 1), after(secs(0.2), 2)]);
        assert_eq!(ringio::shield(g.clone()).await.unwrap(), [1, 2]);
        assert_eq!(g.result().unwrap(), [1, 2]);
        assert_eq!(g.clone().await.unwrap(), [1, 2]);

        // The waiter is cancelled; the gather is not, and keeps its value.
        let g = ringio::gather(vec![after(secs(0.5), 5)]);
        let waiter = {
            let g = g.clone();
            ringio::create_task(async move { ringio::shield(g).await })
        };
        ringio::sleep(secs(0.1)).await.unwrap();
        assert!(waiter.cancel());
        assert!(waiter.await.unwrap_err().is_cancelled());
        assert!(!g.done());
        while !g.done() {
            ringio::sleep(secs(0.05)).await.unwrap();
        }
        assert_eq!(g.result().unwrap(), [5]);

        // A gather already done is read at once.
        let p = ringio::shield(g.clone());
        assert!(p.done());
        assert_eq!(p.await.unwrap(), [5]);
        assert_eq!(g.result().unwrap(), [5]);

        // A gather inside a gather, as asyncio: `g.result()` afterwards.
        let inner = ringio::gather(vec![after(secs(0.1), 7)]);
        let outer = ringio::gather!(inner.clone(), after(secs(0.1), 8));
        assert_eq!(outer.await.unwrap(), (vec![7], 8));
        assert_eq!(inner.result().unwrap(), [7]);

        // `wait` hands the gather back as a child that compares equal to it.
        let g = ringio::gather(vec![after(secs(0.1), 9)]);
        let (done, pending) = ringio::wait(vec![g.clone()], None, ReturnWhen::AllCompleted)
            .await
            .unwrap();
        assert!(pending.is_empty() && done[0] == g);
        assert_eq!(done[0].result().unwrap(), [9]);
        assert_eq!(g.result().unwrap(), [9]);
        assert_nothing_left().await;
    });
}

// --- wait_for -----------------------------------------------------------

async fn eternity(log: Log) -> Result<()> {
    // Sleep for one hour
    ringio::sleep(HOUR).await?;
    log.say("yay!");
    Ok(())
}

#[test]
fn wait_for_eternity_example() {
    let log = Log::default();
    let l = log.clone();
    run(async move {
        let t0 = Instant::now();
        // Wait for at most 1 second (tenth)
        match ringio::wait_for(eternity(l.clone()), Some(secs(1.0))).await {
            Err(Error::Timeout) => l.say("timeout!"),
            other => panic!("unexpected {other:?}"),
        }
        about(t0, 1.0);
        assert_nothing_left().await;
    });
    assert_eq!(log.lines(), ["timeout!"]);
}

#[test]
fn wait_for_in_time_gives_the_value() {
    run(async {
        let t0 = Instant::now();
        let v = ringio::wait_for(after(secs(1.0), "v"), Some(secs(2.0)))
            .await
            .unwrap();
        assert_eq!(v, "v");
        about(t0, 1.0);
        // The deadline's timer is gone.
        assert_nothing_left().await;
    });
}

#[test]
fn wait_for_waits_until_the_inner_really_finished_cancelling() {
    run(async {
        let cleaned = Rc::new(Cell::new(false));
        let c = cleaned.clone();
        let t0 = Instant::now();
        let r = ringio::wait_for(
            async move {
                let r = ringio::sleep(HOUR).await;
                assert!(r.as_ref().unwrap_err().is_cancelled());
                // Cleanup that takes one more tenth.
                ringio::sleep(secs(1.0)).await?;
                c.set(true);
                r
            },
            Some(secs(1.0)),
        )
        .await;
        assert!(matches!(r, Err(Error::Timeout)), "{r:?}");
        assert!(cleaned.get(), "returned before the cleanup ended");
        about(t0, 2.0);
        assert_nothing_left().await;
    });
}

#[test]
fn wait_for_error_during_cleanup_replaces_timeout() {
    run(async {
        let r = ringio::wait_for(
            async {
                let _ = ringio::sleep(HOUR).await;
                Err::<(), _>(Error::msg("cleanup failed"))
            },
            Some(secs(0.5)),
        )
        .await;
        assert_eq!(r.unwrap_err().to_string(), "cleanup failed");
        assert_nothing_left().await;
    });
}

#[test]
fn wait_for_inner_that_suppresses_the_cancel_gives_its_value() {
    run(async {
        let t0 = Instant::now();
        let r = ringio::wait_for(
            async {
                match ringio::sleep(HOUR).await {
                    Err(e) if e.is_cancelled() => Ok::<_, Error>("suppressed"),
                    _ => Ok("slept"),
                }
            },
            Some(secs(0.5)),
        )
        .await;
        assert_eq!(r.unwrap(), "suppressed");
        about(t0, 0.5);
        assert_nothing_left().await;
    });
}

#[test]
fn wait_for_none_waits_as_long_as_it_takes() {
    run(async {
        let t0 = Instant::now();
        let v = ringio::wait_for(after(secs(2.0), 5), None).await.unwrap();
        assert_eq!(v, 5);
        about(t0, 2.0);
    });
}

#[test]
fn wait_for_zero_timeout_on_unstarted_future_never_polls_it() {
    run(async {
        let polled = Rc::new(Cell::new(false));
        let p = polled.clone();
        let r = ringio::wait_for(
            async move {
                p.set(true);
                Ok::<_, Error>(1)
            },
            Some(Duration::ZERO),
        )
        .await;
        assert!(matches!(r, Err(Error::Timeout)), "{r:?}");
        ringio::sleep(Duration::ZERO).await.unwrap();
        assert!(!polled.get());
        assert_nothing_left().await;
    });
}

#[test]
fn wait_for_zero_timeout_on_tasks() {
    run(async {
        // Done: its value.
        let done = ringio::create_task(async { Ok::<_, Error>(1) });
        ringio::sleep(Duration::ZERO).await.unwrap();
        assert_eq!(
            ringio::wait_for(done, Some(Duration::ZERO)).await.unwrap(),
            1
        );
        // Pending: cancelled at once, then Timeout.
        let pending = ringio::create_task(after(HOUR, 2));
        let r = ringio::wait_for(pending.clone(), Some(Duration::ZERO)).await;
        assert!(matches!(r, Err(Error::Timeout)), "{r:?}");
        assert!(pending.cancelled());
        assert_nothing_left().await;
    });
}

#[test]
fn wait_for_timeout_cancels_a_task_given() {
    run(async {
        let t = ringio::create_task(after(HOUR, 0));
        let r = ringio::wait_for(t.clone(), Some(secs(0.5))).await;
        assert!(matches!(r, Err(Error::Timeout)), "{r:?}");
        assert!(t.cancelled());
        // A promise is cancelled at once.
        let p = ringio::Promise::<u8>::new();
        let r = ringio::wait_for(p.clone(), Some(secs(0.5))).await;
        assert!(matches!(r, Err(Error::Timeout)), "{r:?}");
        assert!(p.cancelled());
        assert_nothing_left().await;
    });
}

#[test]
fn wait_for_cancelling_the_waiter_cancels_the_inner() {
    run(async {
        let seen = Rc::new(RefCell::new(None));
        let s = seen.clone();
        let waiter = ringio::create_task(async move {
            ringio::wait_for(
                async move {
                    let r = ringio::sleep(HOUR).await;
                    *s.borrow_mut() = Some(r.clone());
                    r
                },
                Some(HOUR),
            )
            .await
        });
        ringio::sleep(secs(0.5)).await.unwrap();
        assert!(waiter.cancel_with("go away"));
        let e = waiter.clone().await.unwrap_err();
        assert!(
            matches!(&e, Error::Cancelled { msg: Some(m) } if m == "go away"),
            "{e:?}"
        );
        assert!(waiter.cancelled());
        let inner = seen.borrow().clone().expect("inner saw nothing");
        assert!(inner.unwrap_err().is_cancelled());
        assert_nothing_left().await;
    });
}

#[test]
fn wait_for_waiter_cancelled_during_timeout_cleanup_gets_cancelled() {
    run(async {
        let waiter = ringio::create_task(ringio::wait_for(
            async {
                let r = ringio::sleep(HOUR).await;
                // A slow cleanup after the timeout's cancellation.
                let _ = ringio::sleep(secs(1.0)).await;
                r
            },
            Some(secs(0.5)),
        ));
        ringio::sleep(secs(0.8)).await.unwrap();
        waiter.cancel();
        // The cancellation wins over the timeout (asyncio's `timeout()`).
        assert!(waiter.clone().await.unwrap_err().is_cancelled());
        assert_nothing_left().await;
    });
}

#[test]
fn wait_for_future_is_send_for_a_send_future() {
    fn assert_send<T: Send>(_: &T) {}
    let f = ringio::wait_for(ringio::sleep_with(secs(0.1), 1u32), Some(secs(1.0)));
    assert_send(&f);
    // And it runs.
    assert_eq!(run(f).unwrap(), 1);
}

#[test]
fn wait_for_runs_inside_a_future_sent_from_another_thread() {
    run(async {
        let handle = ringio::get_running_loop().unwrap().handle();
        let (tx, rx) = std::sync::mpsc::channel();
        // Another thread builds the future (wait_for over a Send future is
        // Send) and hands it to this loop.
        std::thread::spawn(move || {
            let fut = async move {
                let quick =
                    ringio::wait_for(ringio::sleep_with(secs(0.5), 7), Some(secs(2.0))).await;
                let slow = ringio::wait_for(ringio::sleep_with(HOUR, 0), Some(secs(0.5))).await;
                tx.send((quick, slow)).unwrap();
                Ok::<_, Error>(())
            };
            handle.spawn_detached(fut).unwrap();
        })
        .join()
        .unwrap();
        let got = loop {
            if let Ok(got) = rx.try_recv() {
                break got;
            }
            ringio::sleep(secs(0.1)).await.unwrap();
        };
        assert_eq!(got.0.unwrap(), 7);
        assert!(matches!(got.1, Err(Error::Timeout)), "{:?}", got.1);
        assert_nothing_left().await;
    });
}

#[test]
fn wait_for_on_a_ring_operation_leaves_nothing_in_flight() {
    run(async {
        let (a, _b) = UnixStream::pair().unwrap();
        let r = ringio::wait_for(
            async move {
                // No one writes: the read stays in the kernel until cancelled.
                let (r, _buf) = ringio::io::read(&a, Vec::with_capacity(16)).await;
                r
            },
            Some(secs(0.5)),
        )
        .await;
        assert!(matches!(r, Err(Error::Timeout)), "{r:?}");
        assert_nothing_left().await;
    });
}

#[test]
fn wait_for_foreign_future_is_dropped_on_timeout() {
    run(async {
        let t0 = Instant::now();
        // A future that is no ringio await point: the cancel cannot be
        // delivered inside it, so its task is dropped (cancellation rule 6).
        let r = ringio::wait_for(
            futures_util::future::pending::<Result<()>>(),
            Some(secs(0.5)),
        )
        .await;
        assert!(matches!(r, Err(Error::Timeout)), "{r:?}");
        about(t0, 0.5);
        assert_nothing_left().await;
    });
}

#[test]
fn wait_for_panic_in_inner_is_an_error() {
    run(async {
        let r = ringio::wait_for(
            async {
                ringio::sleep(secs(0.1)).await?;
                if true {
                    panic!("inner panicked");
                }
                Ok::<_, Error>(())
            },
            Some(secs(1.0)),
        )
        .await;
        assert!(
            matches!(&r, Err(Error::Panic(m)) if m == "inner panicked"),
            "{r:?}"
        );
        assert_nothing_left().await;
    });
}

#[test]
fn wait_for_dropped_midway_cancels_its_private_task() {
    run(async {
        let seen = Rc::new(Cell::new(false));
        let s = seen.clone();
        let fut = ringio::wait_for(
            async move {
                let r = ringio::sleep(HOUR).await;
                s.set(r.is_err());
                r
            },
            None,
        );
        // Poll it a while, then drop it (as a select would).
        let _ = ringio::wait_for(fut, Some(secs(0.3))).await;
        ringio::sleep(secs(0.1)).await.unwrap();
        assert!(seen.get());
        assert_nothing_left().await;
    });
}

#[test]
fn wait_for_a_gather_cancels_its_children_on_timeout() {
    run(async {
        let a = ringio::create_task(after(HOUR, 1));
        let b = ringio::create_task(after(secs(0.1), 2));
        let t0 = Instant::now();
        let r = ringio::wait_for(ringio::gather(vec![a.clone(), b.clone()]), Some(secs(0.5))).await;
        assert!(matches!(r, Err(Error::Timeout)), "{r:?}");
        about(t0, 0.5);
        assert!(a.cancelled());
        assert_eq!(b.result().unwrap(), 2);
        assert_nothing_left().await;
    });
}

#[test]
fn a_task_parked_in_a_combinator_shows_where() {
    run(async {
        let t = ringio::create_task(async {
            let line = line!() + 1;
            let r = ringio::wait_for(after(HOUR, 0), Some(HOUR)).await;
            Ok::<_, Error>((line, r))
        });
        ringio::sleep(secs(0.1)).await.unwrap();
        let stack = t.get_stack(None);
        assert_eq!(stack.len(), 1, "{stack:?}");
        let line = match &stack[0] {
            ringio::Frame::Location { file, line, .. } => {
                assert!(file.ends_with("combinators.rs"), "{file}");
                *line
            }
            other => panic!("{other:?}"),
        };
        // The cancel goes through the combinator into the inner task.
        t.cancel();
        let (want, r) = t.await.unwrap();
        assert_eq!(line, want);
        assert!(r.unwrap_err().is_cancelled());
        assert_nothing_left().await;
    });
}

// --- wait ---------------------------------------------------------------

#[test]
fn wait_empty_input_is_invalid_argument() {
    run(async {
        let r = ringio::wait(
            Vec::<ringio::Task<()>>::new(),
            None,
            ReturnWhen::AllCompleted,
        )
        .await;
        assert!(matches!(r, Err(Error::InvalidArgument(_))), "{r:?}");
    });
}

#[test]
fn wait_all_completed_never_raises_a_childs_error() {
    run(async {
        let t0 = Instant::now();
        let (done, pending) = ringio::wait(
            vec![
                boxed(after(secs(1.0), 1)),
                boxed(fail_after(secs(0.5), "bad")),
                boxed(after(secs(2.0), 3)),
            ],
            None,
            ReturnWhen::AllCompleted,
        )
        .await
        .unwrap();
        about(t0, 2.0);
        assert_eq!(done.len(), 3);
        assert!(pending.is_empty());
        assert_eq!(done[1].exception().unwrap().unwrap().to_string(), "bad");
        assert_eq!(done[0].result().unwrap(), 1);
        assert_eq!(done[2].clone().await.unwrap(), 3);
    });
}

#[test]
fn wait_first_completed_never_cancels() {
    run(async {
        let t0 = Instant::now();
        let a = ringio::create_task(after(secs(2.0), "a"));
        let b = ringio::create_task(after(secs(1.0), "b"));
        let (done, pending) =
            ringio::wait([a.clone(), b.clone()], None, ReturnWhen::FirstCompleted)
                .await
                .unwrap();
        about(t0, 1.0);
        assert_eq!(done.len(), 1);
        assert!(done[0] == b);
        assert_eq!(pending.len(), 1);
        assert!(pending[0] == a);
        // The pending one was not cancelled.
        assert_eq!(a.clone().await.unwrap(), "a");
        about(t0, 2.0);
        assert_nothing_left().await;
    });
}

#[test]
fn wait_first_exception_ignores_cancellations() {
    run(async {
        let t0 = Instant::now();
        let cancelled = ringio::create_task(after(HOUR, 0));
        let failing = ringio::create_task(fail_after::<u32>(secs(1.0), "bad"));
        let slow = ringio::create_task(after(secs(3.0), 3));
        {
            let c = cancelled.clone();
            ringio::get_running_loop()
                .unwrap()
                .call_later(secs(0.5), move || {
                    c.cancel();
                });
        }
        let (done, pending) = ringio::wait(
            [cancelled.clone(), failing.clone(), slow.clone()],
            None,
            ReturnWhen::FirstException,
        )
        .await
        .unwrap();
        // Not at the cancellation (0.05): at the exception (0.1).
        about(t0, 1.0);
        assert_eq!(done.len(), 2);
        assert!(done[0] == cancelled && done[1] == failing);
        assert_eq!(pending.len(), 1);
        assert!(pending[0] == slow);
        assert_eq!(slow.await.unwrap(), 3);
    });
}

#[test]
fn wait_first_exception_without_one_is_all_completed() {
    run(async {
        let t0 = Instant::now();
        let (done, pending) = ringio::wait(
            vec![after(secs(0.5), 1), after(secs(1.5), 2)],
            None,
            ReturnWhen::FirstException,
        )
        .await
        .unwrap();
        about(t0, 1.5);
        assert_eq!(done.len(), 2);
        assert!(pending.is_empty());
    });
}

#[test]
fn wait_timeout_returns_what_is_done_so_far() {
    run(async {
        let t0 = Instant::now();
        let slow = ringio::create_task(after(secs(3.0), 2));
        let (done, pending) = ringio::wait(
            [ringio::create_task(after(secs(0.5), 1)), slow.clone()],
            Some(secs(1.0)),
            ReturnWhen::AllCompleted,
        )
        .await
        .unwrap();
        about(t0, 1.0);
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].result().unwrap(), 1);
        assert_eq!(pending.len(), 1);
        assert!(pending[0] == slow);
        // Not cancelled by the timeout.
        assert!(!slow.cancelled());
        // Its timer and callbacks are gone.
        assert_eq!(ringio::get_running_loop().unwrap().stats().timers, 1);
        assert_eq!(slow.await.unwrap(), 2);
        assert_nothing_left().await;
    });
}

#[test]
fn wait_cancelled_leaves_the_children_running() {
    run(async {
        let child = ringio::create_task(after(secs(1.0), 1));
        let waiter = {
            let child = child.clone();
            ringio::create_task(async move {
                ringio::wait([child], Some(HOUR), ReturnWhen::AllCompleted).await
            })
        };
        ringio::sleep(secs(0.5)).await.unwrap();
        waiter.cancel();
        assert!(waiter.clone().await.unwrap_err().is_cancelled());
        assert!(!child.done());
        assert_eq!(child.await.unwrap(), 1);
        assert_nothing_left().await;
    });
}

/// The document's pitfall, rewritten for Rust: a plain future passed to
/// `wait` is moved in and becomes a task, so "is my coroutine in done"
/// cannot even be asked; create the task first and compare with it.
#[test]
fn wait_coroutine_pitfall_fixed_with_a_task() {
    run(async {
        async fn foo() -> Result<i32> {
            Ok(42)
        }
        // What a plain future becomes: a new task, not the future.
        let (done, _) = ringio::wait([foo()], None, ReturnWhen::AllCompleted)
            .await
            .unwrap();
        assert!(done[0].task().is_some());
        // The fix.
        let task = ringio::create_task(foo());
        let (done, _pending) = ringio::wait([task.clone()], None, ReturnWhen::AllCompleted)
            .await
            .unwrap();
        assert!(done.iter().any(|c| *c == task));
        assert_eq!(task.result().unwrap(), 42);
    });
}

#[test]
fn wait_same_task_twice_counts_once_and_accepts_task_refs() {
    run(async {
        let t = ringio::create_task(after(secs(0.1), ()));
        let (done, pending) =
            ringio::wait([t.as_ref(), t.as_ref()], None, ReturnWhen::AllCompleted)
                .await
                .unwrap();
        assert_eq!(done.len(), 1);
        assert!(pending.is_empty());
        assert_eq!(done[0].task_ref(), Some(t.as_ref()));
    });
}

// --- as_completed -------------------------------------------------------

#[test]
fn as_completed_gives_results_in_completion_order() {
    let log = Log::default();
    let l = log.clone();
    run(async move {
        let t0 = Instant::now();
        let aws = [(3.0, "three"), (1.0, "one"), (2.0, "two")]
            .map(|(s, what)| ringio::sleep_with(secs(s), what));
        for (i, coro) in ringio::as_completed(aws, None).enumerate() {
            let earliest_result = coro.await.unwrap();
            about(t0, i as f64 + 1.0);
            l.say(earliest_result);
        }
    });
    assert_eq!(log.lines(), ["one", "two", "three"]);
}

#[test]
fn as_completed_timeout_for_those_not_done() {
    run(async {
        let t0 = Instant::now();
        let slow = ringio::create_task(after(secs(3.0), 3));
        let aws = vec![
            ringio::create_task(after(secs(0.5), 1)),
            slow.clone(),
            ringio::create_task(after(secs(2.0), 2)),
        ];
        let mut got = Vec::new();
        for next in ringio::as_completed(aws, Some(secs(1.0))) {
            got.push(next.await);
        }
        about(t0, 1.0);
        assert_eq!(got.len(), 3);
        assert_eq!(*got[0].as_ref().unwrap(), 1);
        assert!(matches!(got[1], Err(Error::Timeout)));
        assert!(matches!(got[2], Err(Error::Timeout)));
        // The children are not cancelled.
        assert!(!slow.cancelled());
        assert_eq!(slow.await.unwrap(), 3);
        assert_nothing_left().await;
    });
}

#[test]
fn as_completed_is_a_stream() {
    run(async {
        let aws = vec![
            boxed(after(secs(1.0), 1)),
            boxed(fail_after(secs(0.5), "bad")),
            boxed(after(secs(0.2), 3)),
        ];
        let s = ringio::as_completed(aws, None);
        assert_eq!(s.len(), 3);
        // (Both an Iterator and a Stream: with `StreamExt` in scope, name the
        // trait.)
        let out: Vec<Result<u32>> = futures_util::StreamExt::collect(s).await;
        assert_eq!(out.len(), 3);
        assert_eq!(*out[0].as_ref().unwrap(), 3);
        assert_eq!(out[1].as_ref().unwrap_err().to_string(), "bad");
        assert_eq!(*out[2].as_ref().unwrap(), 1);
    });
}

#[test]
fn as_completed_dedupes_and_reads_done_tasks() {
    run(async {
        let t = ringio::create_task(async { Ok::<_, Error>(1) });
        ringio::sleep(Duration::ZERO).await.unwrap();
        let it = ringio::as_completed([t.clone(), t.clone()], None);
        assert_eq!(it.len(), 1);
        let results: Vec<_> = futures_util::future::join_all(it).await;
        assert_eq!(results.len(), 1);
        assert_eq!(*results[0].as_ref().unwrap(), 1);
    });
}

#[test]
fn as_completed_cancelled_await_leaves_the_result_for_the_next() {
    run(async {
        let mut it = ringio::as_completed([after(secs(1.0), "a"), after(secs(2.0), "b")], None);
        let first = Iterator::next(&mut it).unwrap();
        let waiter = ringio::create_task(first);
        ringio::sleep(secs(0.5)).await.unwrap();
        waiter.cancel();
        assert!(waiter.await.unwrap_err().is_cancelled());
        // The children were not cancelled; the results are all still there.
        let second = Iterator::next(&mut it).unwrap();
        assert_eq!(second.await.unwrap(), "a");
        assert!(Iterator::next(&mut it).is_none());
        // "b" still runs to its end (nobody takes its result).
        ringio::sleep(secs(1.5)).await.unwrap();
        assert_nothing_left().await;
    });
}

#[test]
fn as_completed_dropped_early_leaves_no_timer() {
    run(async {
        let slow = ringio::create_task(after(secs(1.0), 1));
        let mut it = ringio::as_completed([slow.clone()], Some(HOUR));
        let next = it.next().unwrap();
        drop(it);
        let _ = ringio::wait_for(next, Some(secs(0.2))).await;
        slow.await.unwrap();
        assert_nothing_left().await;
    });
}
