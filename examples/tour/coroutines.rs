//! Tour section: coroutines, tasks, sleeping, cancellation, the Task
//! object, introspection, context variables (the core of the document).

use std::time::Duration;

use ringio::{ContextVar, Error, Result};

use crate::clock::secs;
use crate::say;

async fn say_after(delay: Duration, what: &str) -> Result<()> {
    ringio::sleep(delay).await?;
    say!("{what}");
    Ok(())
}

/// `main()` printing hello, waiting, printing world.
fn hello_world() {
    ringio::run(async {
        say!("hello");
        ringio::sleep(secs(1.0)).await?;
        say!("world");
        Ok::<_, Error>(())
    })
    .unwrap();
}

/// Awaiting coroutines one after the other: about 3 units.
fn sequential() {
    ringio::run(async {
        say!("started");
        say_after(secs(1.0), "hello").await?;
        say_after(secs(2.0), "world").await?;
        say!("finished");
        Ok::<_, Error>(())
    })
    .unwrap();
}

/// The same two as tasks: about 2 units.
fn concurrent() {
    ringio::run(async {
        let task1 = ringio::create_task(say_after(secs(1.0), "hello"));
        let task2 = ringio::create_task(say_after(secs(2.0), "world"));
        say!("started");
        // Wait until both tasks are completed (should take around 2 units.)
        task1.await?;
        task2.await?;
        say!("finished");
        Ok::<_, Error>(())
    })
    .unwrap();
}

async fn nested() -> Result<i32> {
    Ok(42)
}

/// Awaitables: a coroutine, a task, a future.
fn awaitables() {
    ringio::run(async {
        // Nothing happens if we just call "nested()": a future is created
        // but not awaited, so it won't run at all.
        let _not_awaited = nested();
        // Let's do it differently now and await it:
        say!("{}", nested().await?); // will print "42".

        // Schedule nested() to run soon concurrently with "main()"; the
        // task can be cancelled, or awaited until it is complete.
        let task = ringio::create_task(nested());
        say!("task gave {}", task.await?);

        // A low-level future: run_in_executor returns one. It can be
        // awaited, or given to gather with a coroutine.
        let lp = ringio::get_running_loop()?;
        say!("future gave {}", lp.run_in_executor(None, || 6 * 7).await?);
        let both = ringio::gather!(lp.run_in_executor(None, || 1), nested()).await?;
        say!("gather of a future and a coroutine: {both:?}");
        Ok::<_, Error>(())
    })
    .unwrap();
}

/// A low-level promise, awaited.
fn promise() {
    ringio::run(async {
        let lp = ringio::get_running_loop()?;
        let fut = lp.create_future::<&str>();
        let setter = fut.clone();
        lp.call_later(secs(1.0), move || {
            setter.set_result("set by call_later").unwrap();
        });
        say!("awaiting a promise");
        say!("promise gave: {}", fut.await?);
        Ok::<_, Error>(())
    })
    .unwrap();
}

/// `display_date`: the loop's clock, five ticks.
fn display_date() {
    ringio::run(async {
        let lp = ringio::get_running_loop()?;
        let end_time = lp.time() + secs(5.0).as_secs_f64();
        loop {
            say!("loop.time() = {:.3}", lp.time());
            if lp.time() + secs(1.0).as_secs_f64() >= end_time {
                break;
            }
            ringio::sleep(secs(1.0)).await?;
        }
        Ok::<_, Error>(())
    })
    .unwrap();
}

async fn cancel_me() -> Result<()> {
    say!("cancel_me(): before sleep");
    // Wait for 1 hour
    let r = ringio::sleep(Duration::from_secs(3600)).await;
    if let Err(Error::Cancelled { .. }) = &r {
        say!("cancel_me(): cancel sleep");
    }
    say!("cancel_me(): after sleep");
    r
}

/// Intercepting cancellation (the Task.cancel example).
fn cancel() {
    ringio::run(async {
        // Create a "cancel_me" Task
        let task = ringio::create_task(cancel_me());
        // Wait for 1 unit
        ringio::sleep(secs(1.0)).await?;
        task.cancel();
        match task.await {
            Err(Error::Cancelled { .. }) => say!("main(): cancel_me is cancelled now"),
            other => say!("main(): unexpected {other:?}"),
        }
        Ok::<_, Error>(())
    })
    .unwrap();
}

/// The Task object: names, done callbacks, result, exception, stack.
fn task_object() {
    ringio::run(async {
        let t = ringio::Task::builder()
            .name("sleeper")
            .spawn(ringio::sleep_with(secs(1.0), 42))?;
        t.add_done_callback(|t| say!("done callback: {} done={}", t.get_name(), t.done()));
        ringio::sleep(Duration::ZERO).await?;
        let mut out = Vec::new();
        t.print_stack(None, &mut out).unwrap();
        print!("{}", String::from_utf8_lossy(&out));
        say!("result() while pending: {:?}", t.result().unwrap_err());
        // `(&t).await` reads the value and leaves it in the task.
        say!("awaited: {}", (&t).await?);
        say!("result() after the end: {}", t.result()?);
        say!("exception(): {:?}", t.exception());
        let failing = ringio::create_task(async { Err::<(), _>(Error::msg("boom")) });
        let _ = failing.clone().await;
        say!("failed task: exception() = {:?}", failing.exception());
        say!(
            "current_task() = {}",
            ringio::current_task().unwrap().get_name()
        );
        say!("all_tasks() = {}", ringio::all_tasks().len());
        Ok::<_, Error>(())
    })
    .unwrap();
}

/// Context variables: copied into each task when it is created.
fn context_vars() {
    let request: ContextVar<&'static str> = ContextVar::with_default("request", "none");
    ringio::run(async move {
        let _token = request.set("outer");
        let r = request.clone();
        let child = ringio::create_task(async move {
            say!("child sees request={:?}", r.get());
            let _token = r.set("child");
            Ok::<_, Error>(())
        });
        child.await?;
        say!("parent still sees request={:?}", request.get());
        Ok::<_, Error>(())
    })
    .unwrap();
}

/// Runs this section's examples.
pub fn run() {
    hello_world();
    sequential();
    concurrent();
    awaitables();
    promise();
    display_date();
    cancel();
    task_object();
    context_vars();
}
