//! Tour section: threads — "Running in Threads" (`to_thread`) and
//! "Scheduling From Other Threads" (`run_coroutine_threadsafe`), plus
//! ringio's thread-per-core runtime.

use ringio::{Error, Result};
use std::sync::mpsc;

use crate::clock::secs;
use crate::say;

fn blocking_io() {
    say!("start blocking_io");
    // Note that std::thread::sleep() can be replaced with any blocking
    // IO-bound operation, such as file operations.
    std::thread::sleep(secs(1.0));
    say!("blocking_io complete");
}

/// `to_thread`: the blocking call and `sleep(1)` overlap, so main takes
/// about 1 unit, not 2.
fn to_thread() {
    ringio::run(async {
        say!("started main");
        let io = ringio::create_task(ringio::to_thread(blocking_io));
        let nap = ringio::create_task(ringio::sleep(secs(1.0)));
        io.await?;
        nap.await?;
        say!("finished main");
        Ok::<_, Error>(())
    })
    .unwrap();
}

/// `run_coroutine_threadsafe`: this thread submits coroutines to a loop
/// running on another thread and waits for their results.
fn run_coroutine_threadsafe() {
    let (tx, rx) = mpsc::channel();
    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    let loop_thread = std::thread::spawn(move || {
        ringio::run(async move {
            tx.send(ringio::get_running_loop()?.handle()).unwrap();
            // Keep the loop running until told to stop (waiting on a pool
            // thread, so the loop stays free).
            let _ = ringio::to_thread(move || stop_rx.recv()).await;
            Ok::<_, Error>(())
        })
        .unwrap();
    });
    let lp = rx.recv().unwrap();

    // Create a coroutine; submit it to the given loop.
    let future = ringio::run_coroutine_threadsafe(ringio::sleep_with(secs(1.0), 3), &lp);
    // Wait for the result with an optional timeout argument.
    say!("result: {}", future.result(Some(secs(5.0))).unwrap());

    // One that takes too long: time out, then cancel the task in the loop.
    let future = ringio::run_coroutine_threadsafe(ringio::sleep_with(secs(10.0), 4), &lp);
    match future.result(Some(secs(1.0))) {
        Err(Error::Timeout) => {
            say!("The coroutine took too long, cancelling the task...");
            future.cancel();
        }
        Err(exc) => say!("The coroutine raised an exception: {exc:?}"),
        Ok(result) => say!("The coroutine returned: {result:?}"),
    }
    say!("cancelled: {}", future.cancelled());

    // An exception in the coroutine reaches the waiting thread.
    let future = ringio::run_coroutine_threadsafe(
        async { Err::<(), _>(Error::msg("something broke")) },
        &lp,
    );
    match future.result(None) {
        Err(exc) => say!("The coroutine raised an exception: {exc}"),
        Ok(()) => say!("unexpected success"),
    }
    drop(stop_tx);
    loop_thread.join().unwrap();
}

/// Thread-per-core: one pinned loop per core; each core asks the next one
/// for work and awaits it (the wake-ups go ring to ring with MSG_RING).
fn thread_per_core() -> Result<()> {
    let mut rt = ringio::Runtime::builder().build_multi()?;
    say!("{} cores on CPUs {:?}", rt.cores(), rt.cpus());
    let outs = rt.run_on_each(|core| async move {
        let next = core.next().clone();
        let me = core.id();
        let reply = next
            .spawn(async move {
                ringio::sleep(secs(0.5)).await?;
                Ok::<_, Error>(format!(
                    "{} did work for core {me}",
                    std::thread::current().name().unwrap_or("?")
                ))
            })
            .await?;
        say!("core {me}: {reply}");
        Ok::<_, Error>(me)
    })?;
    say!(
        "cores done: {:?}",
        outs.into_iter().collect::<Result<Vec<_>>>()?
    );
    Ok(())
}

/// Runs this section's examples.
pub fn run() {
    to_thread();
    run_coroutine_threadsafe();
    if let Err(e) = thread_per_core() {
        say!("thread-per-core unavailable here: {e}");
    }
}
