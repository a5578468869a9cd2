//! Cancelling a pending socket recv. ringio: the `Op` is dropped (or its
//! task cancelled) and the loop sends `IORING_OP_ASYNC_CANCEL`; measured
//! until the recv's CQE is reaped. tokio: a pending `read` is dropped (its
//! readiness registration stays; nothing goes to the kernel). raw: RECV,
//! then ASYNC_CANCEL, both CQEs reaped.

use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::pin::pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use io_uring::{opcode, types};
use tokio::io::AsyncReadExt;

use crate::util::{listener, poll_once, push, raw_ring, tcp_pair, tokio_ct};
use crate::{Better, Row};

const ITERS: usize = 20_000;

fn recv_sqe(fd: i32, buf: &mut Vec<u8>) -> io_uring::squeue::Entry {
    opcode::Recv::new(types::Fd(fd), buf.as_mut_ptr(), buf.capacity() as u32).build()
}

fn ringio_drop(s: &TcpStream, iters: usize) -> f64 {
    let fd = s.as_raw_fd();
    ringio::run(async move {
        let lp = ringio::get_running_loop().unwrap();
        let base = lp.stats().driver.ops_in_flight;
        let t = Instant::now();
        for _ in 0..iters {
            {
                let mut buf = Vec::with_capacity(64);
                let sqe = recv_sqe(fd, &mut buf);
                // SAFETY: the SQE points into `buf`'s heap memory, owned by the op.
                let op = pin!(unsafe { ringio::Op::submit(sqe, buf) }.unwrap());
                poll_once(op).await;
            }
            // Dropped: ASYNC_CANCEL goes out next turn; wait for the reap.
            while lp.stats().driver.ops_in_flight > base {
                ringio::sleep(Duration::ZERO).await.unwrap();
            }
        }
        t.elapsed().as_nanos() as f64 / iters as f64
    })
}

fn ringio_task_cancel(s: &TcpStream, iters: usize) -> f64 {
    let fd = s.as_raw_fd();
    ringio::run(async move {
        let t = Instant::now();
        for _ in 0..iters {
            let task = ringio::create_task(async move {
                let mut buf = Vec::with_capacity(64);
                let sqe = recv_sqe(fd, &mut buf);
                // SAFETY: as above.
                let out = unsafe { ringio::Op::submit(sqe, buf) }?.await;
                out.result.map(|_| ())
            });
            // Let it run to its await point (the recv is submitted).
            ringio::sleep(Duration::ZERO).await.unwrap();
            task.cancel();
            assert!(task.await.unwrap_err().is_cancelled());
        }
        t.elapsed().as_nanos() as f64 / iters as f64
    })
}

fn tokio_drop(rt: &tokio::runtime::Runtime, s: &TcpStream, iters: usize) -> f64 {
    let s = s.try_clone().unwrap();
    rt.block_on(async move {
        s.set_nonblocking(true).unwrap();
        let mut s = tokio::net::TcpStream::from_std(s).unwrap();
        let mut buf = [0u8; 64];
        let t = Instant::now();
        for _ in 0..iters {
            let f = pin!(s.read(&mut buf));
            poll_once(f).await;
        }
        t.elapsed().as_nanos() as f64 / iters as f64
    })
}

fn tokio_abort(rt: &tokio::runtime::Runtime, s: &TcpStream, iters: usize) -> f64 {
    let s = s.try_clone().unwrap();
    rt.block_on(async move {
        s.set_nonblocking(true).unwrap();
        let s = Arc::new(tokio::net::TcpStream::from_std(s).unwrap());
        let t = Instant::now();
        for _ in 0..iters {
            let s2 = s.clone();
            let h = tokio::spawn(async move { s2.readable().await });
            tokio::task::yield_now().await;
            h.abort();
            assert!(h.await.unwrap_err().is_cancelled());
        }
        t.elapsed().as_nanos() as f64 / iters as f64
    })
}

fn raw(s: &TcpStream, iters: usize) -> f64 {
    let fd = s.as_raw_fd();
    let mut ring = raw_ring(64);
    let mut buf = Vec::with_capacity(64);
    let t = Instant::now();
    for _ in 0..iters {
        push(&mut ring, &recv_sqe(fd, &mut buf).user_data(1));
        ring.submit().unwrap();
        push(&mut ring, &opcode::AsyncCancel::new(1).build().user_data(2));
        let mut got = 0;
        while got < 2 {
            ring.submit_and_wait(2 - got).unwrap();
            got += ring.completion().count();
        }
    }
    t.elapsed().as_nanos() as f64 / iters as f64
}

pub fn run(cfg: &crate::util::Config) -> Vec<Row> {
    let l = listener();
    let (_client, server) = tcp_pair(&l);
    let ct = tokio_ct();
    let mut drop_row = Row::new(
        "cancel",
        "drop a pending recv (ringio/raw: ASYNC_CANCEL until reaped; tokio: drop read)",
        "ns",
        Better::Lower,
    );
    let mut task_row = Row::new(
        "cancel",
        "spawn task pending in recv, cancel, join (tokio: abort)",
        "ns",
        Better::Lower,
    );
    for _ in 0..cfg.reps {
        drop_row.ringio.push(ringio_drop(&server, ITERS));
        drop_row.tokio.push(tokio_drop(&ct, &server, ITERS));
        drop_row.raw.push(raw(&server, ITERS));
        task_row.ringio.push(ringio_task_cancel(&server, ITERS));
        task_row.tokio.push(tokio_abort(&ct, &server, ITERS));
    }
    vec![drop_row, task_row]
}
