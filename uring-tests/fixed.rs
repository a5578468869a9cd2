//! Integration tests: registered buffers (READ_FIXED / WRITE_FIXED), with
//! and without O_DIRECT.

mod common;
use common::*;

use ringio::Error;
use ringio::fs::File;
use ringio::io::FixedBufs;

fn temp(name: &str) -> std::path::PathBuf {
    // The working directory's filesystem (the target dir's disk), where
    // O_DIRECT works; /tmp may be tmpfs, which refuses it.
    std::env::current_dir()
        .unwrap()
        .join(format!("target/ringio-fixed-{name}-{}", std::process::id()))
}

#[test]
fn fixed_reads_and_writes_round_trip_with_and_without_o_direct() {
    let _g = serial();
    for direct in [false, true] {
        ringio::run(async move {
            let bufs = FixedBufs::register(4, 4096).unwrap();
            assert_eq!(bufs.buf_size(), 4096);
            let path = temp(if direct { "direct" } else { "buffered" });
            let mut opts = File::options();
            opts.read(true).write(true).create(true).truncate(true);
            if direct {
                opts.custom_flags(libc::O_DIRECT);
            }
            let f = opts.open(&path).await.unwrap();
            let data = pattern(50, 4 * 4096);
            for (i, chunk) in data.chunks(4096).enumerate() {
                let mut b = bufs.get().unwrap();
                assert_eq!(b.fill_from(chunk), 4096);
                let (r, b) = f.write_fixed_at(b, (i * 4096) as u64).await;
                assert_eq!(r.unwrap(), 4096);
                drop(b);
            }
            assert_eq!(bufs.available(), 4);
            let mut got = Vec::new();
            for i in 0..4 {
                let (r, b) = f.read_fixed_at(bufs.get().unwrap(), i * 4096).await;
                assert_eq!(r.unwrap(), 4096);
                got.extend_from_slice(&b);
            }
            assert!(got == data, "direct={direct}");
            // Past the end: 0, the buffer's length 0.
            let (r, b) = f.read_fixed_at(bufs.get().unwrap(), 1 << 20).await;
            assert_eq!(r.unwrap(), 0);
            assert!(b.is_empty());
            drop(b);
            // All handed out: None, not a panic.
            let held: Vec<_> = (0..4).map(|_| bufs.get().unwrap()).collect();
            assert!(bufs.get().is_none());
            drop(held);
            f.close().await.unwrap();
            ringio::fs::remove_file(&path).await.unwrap();
        });
    }
}

#[test]
fn one_set_per_ring_bad_sizes_and_another_loops_buffer_are_clear_errors() {
    let _g = serial();
    let other = ringio::run(async {
        let bufs = FixedBufs::register(2, 100).unwrap();
        assert_eq!(bufs.buf_size(), 4096, "rounded up to a page");
        let r = FixedBufs::register(2, 4096);
        assert!(matches!(r, Err(Error::InvalidState(_))), "{r:?}");
        for (n, size) in [(0, 4096), (2, 0), (20000, 4096)] {
            let r = FixedBufs::register(n, size);
            assert!(
                matches!(r, Err(Error::InvalidArgument(_))),
                "{n} {size}: {r:?}"
            );
        }
        // Dropped (no buffer out): the ring takes a new set.
        drop(bufs);
        let bufs = FixedBufs::register(1, 4096).unwrap();
        bufs.get().unwrap()
    });
    ringio::run(async move {
        let path = temp("other");
        let f = File::create(&path).await.unwrap();
        let (r, _) = f.write_fixed_at(other, 0).await;
        assert!(matches!(r, Err(Error::InvalidArgument(_))), "{r:?}");
        f.close().await.unwrap();
        ringio::fs::remove_file(&path).await.unwrap();
    });
    assert!(FixedBufs::register(1, 4096).is_err(), "no running loop");
}
