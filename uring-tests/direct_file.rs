//! Integration tests: files opened into the ring's direct descriptor table
//! (IORING_OP_OPENAT with IORING_FILE_INDEX_ALLOC), used with
//! IOSQE_FIXED_FILE.

mod common;
use common::*;

use io_uring::opcode;
use ringio::fs::{DirectFile, File, OpenOptions};
use ringio::net::DirectStream;
use ringio::{Error, Runtime};

fn temp(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("ringio-directfile-{name}-{}", std::process::id()))
}

async fn open_rw(path: &std::path::Path) -> ringio::Result<DirectFile> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .open_direct(path)
        .await
}

#[test]
fn a_direct_file_reads_and_writes_without_a_descriptor() {
    let _g = serial();
    ringio::run(async {
        DirectStream::reserve_table(16).unwrap();
        let path = temp("rw");
        let fds = open_fds();
        let f = open_rw(&path).await.unwrap();
        assert_eq!(open_fds(), fds, "a direct open creates no descriptor");
        let data = pattern(70, 300_000);
        let (r, _) = f.write_all_at(data.clone(), 1000).await;
        r.unwrap();
        let (r, n) = f.write_at(&b"head"[..], 0).await;
        assert_eq!(r.unwrap(), 4, "{n:?}");
        f.sync_all().await.unwrap();
        let (r, buf) = f.read_at(Vec::with_capacity(100), 1000).await;
        assert_eq!(r.unwrap(), 100);
        assert!(buf[..] == data[..100]);
        // Past the end: 0.
        let (r, _) = f.read_at(Vec::with_capacity(8), 1_000_000).await;
        assert_eq!(r.unwrap(), 0);
        let (r, _) = f.read_at(Vec::new(), 0).await;
        assert!(matches!(r, Err(Error::InvalidArgument(_))), "{r:?}");
        f.close().await.unwrap();
        // What went through the slot is in the file.
        let all = ringio::fs::read(&path).await.unwrap();
        assert_eq!(&all[..4], b"head");
        assert!(all[1000..] == data[..]);
        // A read-only direct open of a missing file: the kernel's error.
        let r = OpenOptions::new()
            .read(true)
            .open_direct(temp("missing"))
            .await;
        assert!(
            matches!(&r, Err(Error::Io(e)) if e.kind() == std::io::ErrorKind::NotFound),
            "{r:?}"
        );
        ringio::fs::remove_file(&path).await.unwrap();
    });
}

#[test]
fn a_full_table_is_a_clear_error_and_no_slot_leaks() {
    let _g = serial();
    ringio::run(async {
        assert_eq!(DirectStream::reserve_table(4).unwrap(), 4);
        let path = temp("full");
        ringio::fs::write(&path, b"x".to_vec()).await.unwrap();
        // Count the free slots: open until the table says it is full.
        async fn fill(path: &std::path::Path) -> Vec<DirectFile> {
            let mut held = Vec::new();
            loop {
                match File::options().read(true).open_direct(path).await {
                    Ok(f) => held.push(f),
                    Err(e) => {
                        assert!(e.to_string().contains("full (all 4 slots"), "{e}");
                        return held;
                    }
                }
                assert!(held.len() <= 4);
            }
        }
        let held = fill(&path).await;
        assert_eq!(held.len(), 4);
        let mut slots: Vec<u32> = held.iter().map(|f| f.slot()).collect();
        slots.sort();
        assert_eq!(slots, [0, 1, 2, 3]);
        // Dropped (closed through the ring) and closed: all free again.
        let mut held = held.into_iter();
        held.next().unwrap().close().await.unwrap();
        drop(held);
        settle().await;
        assert_eq!(fill(&path).await.len(), 4, "slots leaked by drop or close");
        // An open dropped mid-flight: its slot is closed, not leaked.
        for _ in 0..4 {
            poll_once_and_drop(File::options().read(true).open_direct(&path)).await;
        }
        settle().await;
        assert_eq!(fill(&path).await.len(), 4, "slots leaked by dropped opens");
        ringio::fs::remove_file(&path).await.unwrap();
    });
}

#[test]
fn without_the_kernel_feature_it_is_unsupported_naming_the_kernel() {
    let _g = serial();
    let mut rt = Runtime::builder()
        .without_opcodes([opcode::Socket::CODE])
        .build()
        .unwrap();
    rt.run(async {
        let r = OpenOptions::new()
            .read(true)
            .open_direct("/etc/hostname")
            .await;
        assert!(
            matches!(&r, Err(Error::Unsupported(m)) if m.contains("5.19")),
            "{r:?}"
        );
    })
    .unwrap();
}
