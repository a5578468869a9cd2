//! Integration tests: signals (`ringio::signal`), against a real ring.
//!
//! The tests run in parallel threads of one process, so every signal here
//! is sent to one thread (`raise`, `pthread_kill`), never to the process:
//! the harness's other threads do not block these signals, and a signal
//! sent to the process could land on one of them and end the run.

mod common;
use common::*;

use std::future::Future;
use std::pin::pin;
use std::time::{Duration, Instant};

use futures_util::future::{Either, select};
use ringio::Error;
use ringio::signal::{Signal, ctrl_c, signal};

/// Sends `signum` to the calling thread.
fn raise(signum: i32) {
    // SAFETY: raise only sends a signal to the calling thread; every test
    // holds a listener (so the signal is blocked) when it calls this.
    let rc = unsafe { libc::raise(signum) };
    assert_eq!(rc, 0, "raise: {}", std::io::Error::last_os_error());
}

/// Whether `signum` is blocked in the calling thread's mask.
fn blocked(signum: i32) -> bool {
    // SAFETY: a null new set only queries the mask into `old`.
    unsafe {
        let mut old: libc::sigset_t = std::mem::zeroed();
        assert_eq!(
            libc::pthread_sigmask(libc::SIG_BLOCK, std::ptr::null(), &mut old),
            0
        );
        libc::sigismember(&old, signum) == 1
    }
}

/// Polls `fut` once without a loop (for calls that must fail at once).
fn poll_once<F: Future>(fut: F) -> Option<F::Output> {
    futures_util::FutureExt::now_or_never(fut)
}

#[test]
fn ctrl_c_resolves_on_sigint() {
    block_on(async {
        let wait = ctrl_c();
        // A task raises SIGINT while the main task waits in the ring.
        ringio::create_task(async {
            ringio::sleep(ms(5)).await?;
            raise(libc::SIGINT);
            Ok::<_, Error>(())
        });
        let t0 = Instant::now();
        wait.await.unwrap();
        assert!(t0.elapsed() < Duration::from_secs(5));
    });
    // The listener is gone: the mask is as it was.
    assert!(!blocked(libc::SIGINT));
}

#[test]
fn each_delivery_is_received_once() {
    block_on(async {
        let mut usr1 = signal(libc::SIGUSR1).unwrap();
        assert_eq!(usr1.signum(), libc::SIGUSR1);
        for _ in 0..3 {
            raise(libc::SIGUSR1);
            usr1.recv().await.unwrap();
        }
        // Nothing more is pending: a fourth recv waits.
        let fourth = pin!(usr1.recv());
        let timer = pin!(ringio::sleep(ms(20)));
        assert!(matches!(select(fourth, timer).await, Either::Right(_)));
    });
}

#[test]
fn a_signal_from_another_thread_wakes_the_ring_wait() {
    block_on(async {
        let mut usr2 = signal(libc::SIGUSR2).unwrap();
        // SAFETY: pthread_self has no preconditions.
        let loop_thread = unsafe { libc::pthread_self() };
        let sender = std::thread::spawn(move || {
            std::thread::sleep(ms(30));
            // SAFETY: the loop thread is alive: it joins this thread below.
            unsafe { libc::pthread_kill(loop_thread, libc::SIGUSR2) }
        });
        // Nothing else is pending on this loop: only the ring's poll of the
        // signalfd can wake it.
        let t0 = Instant::now();
        usr2.recv().await.unwrap();
        assert!(t0.elapsed() >= ms(20), "{:?}", t0.elapsed());
        assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
        assert_eq!(sender.join().unwrap(), 0);
    });
}

#[test]
fn cancelling_a_wait_loses_no_delivery() {
    block_on(async {
        let sig = libc::SIGRTMIN() + 1;
        let mut listener = signal(sig).unwrap();
        // The task catches its cancellation and hands the listener back.
        let waiter = ringio::create_task(async move {
            let r = listener.recv().await;
            Ok::<_, Error>((listener, r))
        });
        ringio::sleep(ms(5)).await.unwrap();
        waiter.cancel();
        // Guide, cancellation rule 2: the poll was cancelled in the kernel,
        // then the await point said Cancelled.
        let (mut listener, r) = waiter.await.unwrap();
        assert!(r.unwrap_err().is_cancelled());
        // The signal sent now is still received by the next recv.
        raise(sig);
        listener.recv().await.unwrap();
    });
}

#[test]
fn dropping_a_wait_loses_no_delivery() {
    block_on(async {
        let mut usr1 = signal(libc::SIGUSR1).unwrap();
        for _ in 0..3 {
            // The timer wins; the recv future is dropped (rule 7).
            let recv = pin!(usr1.recv());
            let timer = pin!(ringio::sleep(ms(2)));
            assert!(matches!(select(recv, timer).await, Either::Right(_)));
        }
        // A signal raised before the next recv, after those drops, is there.
        raise(libc::SIGUSR1);
        usr1.recv().await.unwrap();
        // One raised while a wait is in flight that is then dropped: if
        // that wait did not return it, the next recv does.
        let received = {
            let recv = pin!(usr1.recv());
            let raise_then_yield = pin!(async {
                raise(libc::SIGUSR1);
                ringio::sleep(Duration::ZERO).await
            });
            match select(raise_then_yield, recv).await {
                Either::Left(_) => false,
                Either::Right((r, _)) => {
                    r.unwrap();
                    true
                }
            }
        };
        if !received {
            let again = pin!(usr1.recv());
            let timer = pin!(ringio::sleep(Duration::from_secs(5)));
            assert!(
                matches!(select(again, timer).await, Either::Left((Ok(()), _))),
                "the delivery was lost with the dropped wait"
            );
        }
    });
}

#[test]
fn realtime_signals_queue() {
    block_on(async {
        let sig = libc::SIGRTMIN() + 2;
        let mut rt = signal(sig).unwrap();
        raise(sig);
        raise(sig);
        raise(sig);
        for _ in 0..3 {
            rt.recv().await.unwrap();
        }
    });
}

#[test]
fn two_listeners_share_the_mask_and_one_receives_each_delivery() {
    let sig = libc::SIGRTMIN() + 3;
    assert!(!blocked(sig));
    block_on(async move {
        let mut a = signal(sig).unwrap();
        let b = signal(sig).unwrap();
        assert!(blocked(sig));
        drop(b);
        // Still blocked: `a` listens.
        assert!(blocked(sig));
        raise(sig);
        a.recv().await.unwrap();
    });
    assert!(!blocked(sig));
}

#[test]
fn a_signal_blocked_beforehand_stays_blocked() {
    let sig = libc::SIGRTMIN() + 4;
    let set = {
        // SAFETY: sigemptyset/sigaddset initialise and fill a local set.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, sig);
            set
        }
    };
    // SAFETY: changes only this test thread's mask.
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    drop(signal(sig).unwrap());
    assert!(blocked(sig), "the program's own block was undone");
    // SAFETY: as above.
    unsafe { libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut()) };
}

#[test]
fn a_delivery_never_received_is_discarded_with_the_last_listener() {
    let sig = libc::SIGRTMIN() + 5;
    let s = signal(sig).unwrap();
    raise(sig);
    raise(sig);
    // Dropping the listener unblocks the signal; the pending deliveries
    // would otherwise end the process now (the default action).
    drop(s);
    assert!(!blocked(sig));
}

#[test]
fn bad_signal_numbers_are_invalid_arguments() {
    for bad in [
        0,
        -1,
        libc::SIGRTMAX() + 1,
        1000,
        libc::SIGKILL,
        libc::SIGSTOP,
        libc::SIGSEGV,
        32,
    ] {
        match signal(bad) {
            Err(Error::InvalidArgument(m)) => assert!(m.contains(&bad.to_string()), "{m}"),
            other => panic!("signal({bad}): {other:?}"),
        }
    }
}

#[test]
fn recv_outside_a_loop_says_so() {
    let mut s: Signal = signal(libc::SIGUSR2).unwrap();
    let e = poll_once(s.recv()).unwrap().unwrap_err();
    assert!(
        matches!(&e, Error::InvalidState(m) if m == "no running event loop"),
        "{e:?}"
    );
}

/// Set in the child process of `a_signal_sent_to_the_process_reaches_the_listener`.
const PROCESS_CHILD: &str = "RINGIO_SIGNAL_TEST_CHILD";

/// In that child process only, blocks `SIGUSR1` in the main thread before
/// the test harness starts any thread (threads inherit the mask): what the
/// guide advises for signals sent to the whole process.
extern "C" fn block_sigusr1_in_child() {
    // SAFETY: getenv reads the environment, which is set up before
    // constructors run; the name is a NUL-terminated literal.
    let child = unsafe { libc::getenv(c"RINGIO_SIGNAL_TEST_CHILD".as_ptr()) };
    if child.is_null() {
        return;
    }
    // SAFETY: a local set, initialised before use; changes only this
    // thread's mask.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGUSR1);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

/// Runs `block_sigusr1_in_child` before `main`.
#[used]
#[unsafe(link_section = ".init_array")]
static BLOCK_SIGUSR1_IN_CHILD: extern "C" fn() = block_sigusr1_in_child;

#[test]
fn a_signal_sent_to_the_process_reaches_the_listener() {
    if std::env::var_os(PROCESS_CHILD).is_some() {
        // Every thread of this process blocks SIGUSR1, so kill() leaves it
        // pending for the process until the listener reads it.
        assert!(blocked(libc::SIGUSR1));
        block_on(async {
            let mut usr1 = signal(libc::SIGUSR1).unwrap();
            ringio::create_task(async {
                ringio::sleep(ms(10)).await?;
                // SAFETY: kill with our own pid only sends a signal.
                assert_eq!(unsafe { libc::kill(libc::getpid(), libc::SIGUSR1) }, 0);
                Ok::<_, Error>(())
            });
            usr1.recv().await.unwrap();
        });
        // The program blocked it, so it stays blocked.
        assert!(blocked(libc::SIGUSR1));
        println!("SIGNAL-CHILD-OK");
        return;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "a_signal_sent_to_the_process_reaches_the_listener",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(PROCESS_CHILD, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("SIGNAL-CHILD-OK"),
        "{:?}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}
