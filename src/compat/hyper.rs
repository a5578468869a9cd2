//! hyper 1.x on ringio (cargo feature `hyper`): its I/O, executor and
//! timer traits, so hyper's servers and clients, HTTP/1.1 and HTTP/2, run
//! on a ringio loop with no tokio runtime.
//!
//! - **I/O**: [`Compat`] implements `hyper::rt::Read` and `hyper::rt::Write`
//!   for any stream it wraps (a [`TcpStream`](crate::net::TcpStream), a
//!   [`UnixStream`](crate::net::UnixStream)). It is ringio's one
//!   owned-buffer adapter, with its rules: reads go to the ring in the
//!   adapter's buffer and are copied into hyper's; writes are write-behind
//!   (`poll_write` copies and submits, reports the bytes written, and the
//!   next write or `poll_flush` waits for the send — hyper flushes after
//!   every message it writes; with `with_buf_ring` on a kernel pool the
//!   flush returns once the send is with the ring, see [`Compat`]). It reports `is_write_vectored`, so hyper
//!   hands a message's head and body as separate slices, which the adapter
//!   gathers into one send instead of hyper copying them into one buffer
//!   first.
//! - **Executor**: [`LocalExecutor`] implements `hyper::rt::Executor`; each
//!   future hyper hands it (HTTP/2 streams and the client's connection
//!   work) becomes a ringio task on the running loop with
//!   [`create_task`](crate::create_task). ringio tasks stay on the loop
//!   that made them, so the futures need not be `Send`.
//! - **Timer**: [`RingTimer`] implements `hyper::rt::Timer` with sleeps on
//!   the loop's timer heap ([`RingSleep`]), for hyper's header-read
//!   timeout, keep-alive and HTTP/2 ping timers.
//!
//! **Cancellation.** A connection's reads and writes are ringio await
//! points. Cancelling the task that drives a connection cancels the ring
//! operation in flight and hyper's connection future ends with an I/O
//! error carrying the cancellation — except an HTTP/1 connection idle
//! between requests, which hyper closes without an error (it takes a
//! failed read there for the peer's end). [`drive`] awaits a connection
//! and ends with [`Error::Cancelled`] in both cases; [`into_error`] turns
//! a `hyper::Error` back into a [`ringio::Error`](crate::Error), keeping a
//! cancellation a cancellation. Dropping a connection future
//! cancels its operations (ringio's drop rules) and closes the socket.
//! hyper's timers are not cancellation points: a [`RingSleep`] leaves a
//! pending cancellation to the connection's next ring operation.
//!
//! # A server and a client
//!
//! ```
//! use http_body_util::{BodyExt, Full};
//! use hyper::body::{Bytes, Incoming};
//! use hyper::{Request, Response};
//! use ringio::compat::hyper::{RingTimer, into_error};
//! use ringio::io::Compat;
//! use ringio::net::{TcpListener, TcpStream};
//!
//! async fn hello(_: Request<Incoming>) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
//!     Ok(Response::new(Full::new(Bytes::from_static(b"Hello, World!"))))
//! }
//!
//! ringio::run(async {
//!     let listener = TcpListener::bind("127.0.0.1:0")?;
//!     let addr = listener.local_addr()?;
//!     let server = ringio::create_task(async move {
//!         let (stream, _) = listener.accept().await?;
//!         hyper::server::conn::http1::Builder::new()
//!             .timer(RingTimer)
//!             .serve_connection(Compat::new(stream), hyper::service::service_fn(hello))
//!             .await
//!             .map_err(into_error)
//!     });
//!
//!     let stream = TcpStream::connect(addr).await?;
//!     let (mut send, conn) = hyper::client::conn::http1::handshake(Compat::new(stream))
//!         .await
//!         .map_err(into_error)?;
//!     let conn = ringio::create_task(async move { conn.await.map_err(into_error) });
//!     let req = Request::get("/").header("host", "localhost").body(Full::new(Bytes::new()))?;
//!     let res = send.send_request(req).await.map_err(into_error)?;
//!     assert_eq!(res.status(), 200);
//!     let body = res.into_body().collect().await.map_err(into_error)?.to_bytes();
//!     assert_eq!(&body[..], b"Hello, World!");
//!     drop(send); // the client connection ends, and so does the server's
//!     conn.await?;
//!     server.await?;
//!     Ok::<_, Box<dyn std::error::Error>>(())
//! })
//! .unwrap();
//! ```

use std::future::Future;
use std::io::{self, IoSlice};
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::rt::{Read, ReadBufCursor, Write};

use crate::error::Error;
use crate::io::Compat;
use crate::runtime::context;
use crate::runtime::event_loop::TimerAction;
use crate::time::heap::TimerKey;

impl<S: AsRawFd + Unpin> Read for Compat<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        let want = buf.remaining();
        self.get_mut()
            .poll_read_into(cx, want, |bytes| buf.put_slice(bytes))
            .map_ok(|_| ())
    }
}

impl<S: AsRawFd + Unpin> Write for Compat<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().poll_write_from(cx, &[IoSlice::new(data)])
    }

    /// Gathers the slices into one ring write (up to the adapter's buffer
    /// capacity), instead of a write per slice.
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().poll_write_from(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_flush_inner(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_close_inner(cx)
    }
}

/// `hyper::rt::Executor` on the running ringio loop: each future becomes a
/// task ([`create_task`](crate::create_task)) on the loop that polls the
/// connection. Give it to hyper's HTTP/2 builders (server
/// `http2::Builder::new(LocalExecutor)`, client
/// `http2::handshake(LocalExecutor, io)`).
///
/// The futures need not be `Send`: ringio tasks never leave their loop.
/// hyper calls `execute` from inside a connection's poll, so there is
/// always a running loop; called outside one it panics, as
/// [`create_task`](crate::create_task) does.
///
/// ```
/// use hyper::rt::Executor;
/// use ringio::compat::hyper::LocalExecutor;
///
/// ringio::run(async {
///     let (tx, rx) = std::sync::mpsc::channel();
///     LocalExecutor.execute(async move { tx.send(7).unwrap() });
///     ringio::sleep(std::time::Duration::ZERO).await?;
///     assert_eq!(rx.try_recv(), Ok(7));
///     Ok::<_, ringio::Error>(())
/// })
/// .unwrap();
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct LocalExecutor;

impl<F> hyper::rt::Executor<F> for LocalExecutor
where
    F: Future + 'static,
{
    fn execute(&self, fut: F) {
        crate::create_task(async move {
            fut.await;
            Ok::<(), Error>(())
        });
    }
}

/// `hyper::rt::Timer` on the running loop's timer heap (the timers of
/// [`sleep`](crate::sleep)). Give it to hyper's builders with
/// `.timer(RingTimer)`: it drives the HTTP/1 header-read timeout (30 s
/// by default once a timer is set) and HTTP/2 keep-alive pings.
///
/// ```
/// use std::time::{Duration, Instant};
/// use hyper::rt::Timer;
/// use ringio::compat::hyper::RingTimer;
///
/// ringio::run(async {
///     let t0 = Instant::now();
///     RingTimer.sleep(Duration::from_millis(20)).await;
///     assert!(t0.elapsed() >= Duration::from_millis(20));
/// });
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct RingTimer;

impl hyper::rt::Timer for RingTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(RingSleep::until(crate::time::deadline_after(duration)))
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(RingSleep::until(deadline))
    }

    fn reset(&self, sleep: &mut Pin<Box<dyn hyper::rt::Sleep>>, new_deadline: Instant) {
        // Re-arm in place when it is ours: no new allocation.
        match sleep.as_mut().downcast_mut_pin::<RingSleep>() {
            Some(mut s) => s.reset(new_deadline),
            None => *sleep = self.sleep_until(new_deadline),
        }
    }
}

/// The sleep of [`RingTimer`]: done at its deadline, as a timer in the
/// running loop's heap (armed at the first poll, for the deadline as it
/// is: no clock read; a deadline already past fires at the loop's next
/// turn).
///
/// Unlike [`Sleep`](crate::Sleep) it is not a cancellation point: while
/// the polling task has a cancellation pending it stays pending and
/// leaves the cancellation to the next ring operation, since hyper could
/// only take a fired timer for a timeout.
#[derive(Debug)]
pub struct RingSleep {
    deadline: Instant,
    /// The armed timer: the loop's id and the heap entry.
    timer: Option<(u64, TimerKey)>,
}

impl RingSleep {
    /// A sleep until `deadline`.
    pub fn until(deadline: Instant) -> RingSleep {
        RingSleep {
            deadline,
            timer: None,
        }
    }

    /// When it is done.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Moves the deadline (the timer is re-armed at the next poll).
    pub fn reset(&mut self, deadline: Instant) {
        self.disarm();
        self.deadline = deadline;
    }

    fn disarm(&mut self) {
        if let Some((loop_id, key)) = self.timer.take() {
            context::with_loop(|lp| {
                if lp.id == loop_id {
                    lp.timers.borrow_mut().remove(key);
                }
            });
        }
    }
}

impl Future for RingSleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if crate::task::await_point::AwaitPoint::current().is_pending() {
            // Not ours to deliver (see the type's doc); the task was woken
            // for it and its next ring operation delivers it.
            return Poll::Pending;
        }
        let this = &mut *self;
        let fired = context::with_loop(|lp| {
            let mut timers = lp.timers.borrow_mut();
            match this.timer {
                Some((loop_id, key)) if loop_id == lp.id => match timers.get_mut(key) {
                    Some(TimerAction::Wake(w)) => {
                        if !w.will_wake(cx.waker()) {
                            *w = cx.waker().clone();
                        }
                        false
                    }
                    // Fired: fired timers leave the heap.
                    _ => true,
                },
                _ => {
                    let key = timers.insert(this.deadline, TimerAction::Wake(cx.waker().clone()));
                    this.timer = Some((lp.id, key));
                    false
                }
            }
        });
        match fired {
            Some(false) => Poll::Pending,
            // Fired, or no running loop (where a timer can never fire,
            // hyper's reading of "done" is the safe one: a timeout).
            _ => {
                this.timer = None;
                Poll::Ready(())
            }
        }
    }
}

impl Drop for RingSleep {
    fn drop(&mut self) {
        self.disarm();
    }
}

impl hyper::rt::Sleep for RingSleep {}

/// A `hyper::Error` as a [`ringio::Error`](crate::Error): when its cause is
/// an I/O error from the ring, that error as ringio reported it (so a
/// cancelled connection gives [`Error::Cancelled`] and a deadline
/// [`Error::Timeout`]); any other hyper error (a parse error, a closed
/// channel) as [`Error::Other`] wrapping it.
///
/// ```
/// # use ringio::compat::hyper::into_error;
/// fn to_ringio(r: Result<(), hyper::Error>) -> ringio::Result<()> {
///     r.map_err(into_error)
/// }
/// ```
pub fn into_error(e: hyper::Error) -> Error {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(&e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<io::Error>() {
            if let Some(inner) = io.get_ref().and_then(|i| i.downcast_ref::<Error>()) {
                return inner.clone();
            }
            if let Some(code) = io.raw_os_error() {
                return Error::from(io::Error::from_raw_os_error(code));
            }
        }
        source = s.source();
    }
    Error::other(e)
}

/// Awaits a hyper connection future (a server's `serve_connection`, a
/// client's `Connection`) and gives its outcome as a ringio result, with
/// [`into_error`] for its error.
///
/// If the task was cancelled while the connection ran, the result is
/// [`Error::Cancelled`] even when hyper ended the connection without an
/// error: an HTTP/1 connection idle between requests takes a failed read
/// for the peer's end and closes cleanly, which would otherwise hide the
/// cancellation (guide, cancellation rules: a task that is cancelled
/// should end cancelled unless it means to suppress it).
///
/// ```
/// # use ringio::compat::hyper::drive;
/// # use ringio::io::Compat;
/// # use ringio::net::TcpStream;
/// async fn serve(stream: TcpStream) -> ringio::Result<()> {
///     let svc = hyper::service::service_fn(|_req| async {
///         Ok::<_, std::convert::Infallible>(hyper::Response::new(String::from("hi")))
///     });
///     drive(hyper::server::conn::http1::Builder::new().serve_connection(Compat::new(stream), svc))
///         .await
/// }
/// ```
pub async fn drive<F>(conn: F) -> crate::Result<()>
where
    F: Future<Output = Result<(), hyper::Error>>,
{
    let task = crate::current_task();
    let before = task.as_ref().map_or(0, |t| t.cancelling());
    let res = conn.await;
    let after = task.as_ref().map_or(0, |t| t.cancelling());
    match res {
        Err(e) => Err(into_error(e)),
        Ok(()) if after > before => Err(Error::Cancelled { msg: None }),
        Ok(()) => Ok(()),
    }
}
