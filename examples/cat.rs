//! `cat` through the ring: each file is read with `IORING_OP_READ` at
//! explicit offsets and written to standard output with `IORING_OP_WRITE`,
//! with two buffers so that the next read runs while the last chunk is
//! being written.
//!
//! ```text
//! cargo run --release --example cat -- FILE...
//! ```

use std::os::fd::AsRawFd;
use std::process::ExitCode;

use ringio::fs::File;

const CHUNK: usize = 256 * 1024;

/// Copies `path` to `out`. Returns `Ok(false)` when the reader of `out` went
/// away (EPIPE), which ends `cat` quietly.
async fn copy(path: &str, out: &impl AsRawFd) -> ringio::Result<bool> {
    let file = File::open(path).await?;
    let mut offset = 0u64;
    let (res, mut chunk) = file.read_at(Vec::with_capacity(CHUNK), offset).await;
    let mut n = res?;
    let mut spare = Vec::with_capacity(CHUNK);
    while n > 0 {
        offset += n as u64;
        // Write this chunk and read the next one at the same time.
        // (`futures_util` is a separate crate: ringio uses it, but a program
        // of your own must list `futures-util` in its Cargo.toml to do this.)
        let ((wres, written), (rres, next)) = futures_util::future::join(
            ringio::io::write_all(out, chunk),
            file.read_at(spare, offset),
        )
        .await;
        match wres {
            Err(e) if e.raw_os_error() == Some(libc::EPIPE) => return Ok(false),
            r => r?,
        }
        n = rres?;
        spare = written;
        chunk = next;
    }
    file.close().await?;
    Ok(true)
}

fn main() -> ExitCode {
    let paths: Vec<String> = std::env::args().skip(1).collect();
    if paths.is_empty() || paths.iter().any(|p| p == "-h" || p == "--help") {
        eprintln!("usage: cat FILE...");
        return ExitCode::from(2);
    }
    // SIGPIPE would kill us mid-write; EPIPE is handled instead.
    // SAFETY: setting a signal's disposition to SIG_IGN is async-signal-safe
    // and done before any other thread exists.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    ringio::run(async move {
        let stdout = std::io::stdout();
        let mut code = ExitCode::SUCCESS;
        for p in &paths {
            match copy(p, &stdout).await {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => {
                    eprintln!("cat: {p}: {e}");
                    code = ExitCode::FAILURE;
                }
            }
        }
        code
    })
}
