//! Tour section: combinators — running tasks concurrently (`gather`),
//! shielding from cancellation (`shield`), timeouts (`wait_for`) and the
//! waiting primitives (`wait`, `as_completed`).

use std::time::Duration;

use ringio::{Error, Result, ReturnWhen};

use crate::clock::secs;
use crate::say;

async fn factorial(name: &str, number: u64) -> Result<u64> {
    let mut f = 1;
    for i in 2..=number {
        say!("Task {name}: Compute factorial({i})...");
        ringio::sleep(secs(1.0)).await?;
        f *= i;
    }
    say!("Task {name}: factorial({number}) = {f}");
    Ok(f)
}

/// `gather`: three factorials concurrently, about 3 units in all.
fn gather() {
    ringio::run(async {
        // Schedule three calls *concurrently*:
        let results = ringio::gather(vec![
            factorial("A", 2),
            factorial("B", 3),
            factorial("C", 4),
        ])
        .await?;
        say!("results: {results:?}");
        // Futures of different types: the `gather!` macro gives a tuple.
        let (n, s) = ringio::gather!(
            ringio::sleep_with(secs(1.0), 1),
            ringio::sleep_with(secs(1.0), "one")
        )
        .await?;
        say!("gather!: ({n}, {s:?})");
        Ok::<_, Error>(())
    })
    .unwrap();
}

async fn something() -> Result<&'static str> {
    ringio::sleep(secs(2.0)).await?;
    say!("something(): done, its caller was cancelled but it was not");
    Ok("result")
}

/// `shield`: the caller is cancelled at 1 unit, `something()` finishes at 2.
fn shield() {
    ringio::run(async {
        let inner = ringio::create_task(something());
        let caller = {
            let inner = inner.clone();
            ringio::create_task(async move {
                // try: res = await shield(something())
                // except CancelledError: res = None
                let res = match ringio::shield(inner).await {
                    Err(Error::Cancelled { .. }) => None,
                    other => Some(other?),
                };
                say!("caller: res = {res:?}");
                Ok::<_, Error>(res)
            })
        };
        ringio::sleep(secs(1.0)).await?;
        caller.cancel();
        caller.await?;
        say!("main: something() gave {:?}", inner.await?);
        Ok::<_, Error>(())
    })
    .unwrap();
}

async fn eternity() -> Result<()> {
    // Sleep for one hour
    ringio::sleep(Duration::from_secs(3600)).await?;
    say!("yay!");
    Ok(())
}

/// `wait_for`: an eternity, cut at 1 unit.
fn wait_for() {
    ringio::run(async {
        // Wait for at most 1 unit
        match ringio::wait_for(eternity(), Some(secs(1.0))).await {
            Err(Error::Timeout) => say!("timeout!"),
            other => say!("unexpected: {other:?}"),
        }
    });
}

async fn foo() -> Result<i32> {
    Ok(42)
}

/// `wait`, and the document's pitfall rewritten for Rust: a future given
/// to `wait` is moved in and comes back as the task it became, so keep a
/// task of your own to find it in `done`.
fn wait() {
    ringio::run(async {
        // "coro in done" cannot be asked: `foo()` was moved into wait.
        let (done, _pending) = ringio::wait([foo()], None, ReturnWhen::AllCompleted).await?;
        say!("a plain future came back as {:?}", done[0]);

        // Here is how the above snippet can be fixed:
        let task = ringio::create_task(foo());
        let (done, _pending) = ringio::wait([task.clone()], None, ReturnWhen::AllCompleted).await?;
        if done.iter().any(|c| *c == task) {
            // Everything will work as expected now.
            say!("task in done: result {}", task.result()?);
        }

        // FIRST_COMPLETED with a timeout: nothing is cancelled.
        let slow = ringio::create_task(ringio::sleep_with(secs(3.0), "slow"));
        let quick = ringio::create_task(ringio::sleep_with(secs(1.0), "quick"));
        let (done, pending) = ringio::wait(
            [slow.clone(), quick.clone()],
            Some(secs(2.0)),
            ReturnWhen::FirstCompleted,
        )
        .await?;
        say!(
            "first completed: {} done, {} pending",
            done.len(),
            pending.len()
        );
        say!("the pending one still finishes: {}", slow.await?);
        Ok::<_, Error>(())
    })
    .unwrap();
}

/// `as_completed`: results in the order they arrive (1, 2, 3 units), the
/// last one after the timeout.
fn as_completed() {
    ringio::run(async {
        let aws = [(3.0, "three"), (1.0, "one"), (2.0, "two"), (9.0, "nine")]
            .map(|(s, what)| ringio::sleep_with(secs(s), what));
        for coro in ringio::as_completed(aws, Some(secs(5.0))) {
            match coro.await {
                Ok(earliest_result) => say!("as_completed: {earliest_result}"),
                Err(e) => say!("as_completed: {e}"),
            }
        }
    });
}

/// Runs this section's examples.
pub fn run() {
    gather();
    shield();
    wait_for();
    wait();
    as_completed();
}
