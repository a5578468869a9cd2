//! Zero-copy send (issue 14): `TcpStream::send_zc` (`IORING_OP_SEND_ZC`,
//! two completions, the buffer back after the notification) against a
//! plain `write_all` (`IORING_OP_SEND`), both ringio, at 64 KiB and 1 MiB
//! per call, 256 MiB in all to a reader thread on 127.0.0.1 that discards.
//! The ringio column is send_zc, the raw column the plain send (same run),
//! so ringio/raw reads as "zero-copy over plain". Loopback cannot send
//! without copying (the kernel copies and says so in the notification), so
//! this measures the cost of the second completion more than a NIC's gain.

use std::io::Read;
use std::time::Instant;

use ringio::io::IoBuf;

use crate::util::{listener, pin_to_cpu, tcp_pair};
use crate::{Better, Row};

const TOTAL: usize = 256 << 20;

fn one(size: usize, zc: bool) -> f64 {
    let l = listener();
    let (c, mut s) = tcp_pair(&l);
    let reader = std::thread::spawn(move || {
        pin_to_cpu(1);
        let mut buf = vec![0u8; 1 << 20];
        let mut got = 0;
        while got < TOTAL {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => got += n,
            }
        }
        got
    });
    let sender = std::thread::spawn(move || {
        pin_to_cpu(0);
        ringio::run(async move {
            use std::os::fd::{FromRawFd, IntoRawFd};
            // SAFETY: the std stream gives up its descriptor.
            let c = unsafe { ringio::net::TcpStream::from_raw_fd(c.into_raw_fd()) };
            let mut buf = vec![9u8; size];
            let t = Instant::now();
            for _ in 0..TOTAL / size {
                if zc {
                    let mut off = 0;
                    while off < size {
                        let (r, s) = c.send_zc(buf.slice(off..)).await;
                        off += r.unwrap();
                        buf = s.into_inner();
                    }
                } else {
                    let (r, b) = c.write_all(buf).await;
                    r.unwrap();
                    buf = b;
                }
            }
            t.elapsed().as_secs_f64()
        })
    });
    let secs = sender.join().unwrap();
    assert_eq!(reader.join().unwrap(), TOTAL);
    TOTAL as f64 / secs / 1e6
}

pub fn run(cfg: &crate::util::Config) -> Vec<Row> {
    let mut rows = Vec::new();
    for size in [64 << 10, 1 << 20] {
        let label = if size >= 1 << 20 { "1 MiB" } else { "64 KiB" };
        let mut r = Row::new(
            "send_zc",
            format!("{label} sends, 256 MiB: send_zc (ringio col.) vs plain send (raw col.)"),
            "MB/s",
            Better::Higher,
        );
        for _ in 0..cfg.reps {
            r.ringio.push(one(size, true));
            r.raw.push(one(size, false));
        }
        rows.push(r);
    }
    rows
}
