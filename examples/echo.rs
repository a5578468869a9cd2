//! A TCP echo server on the ring.
//!
//! ```text
//! cargo run --release --example echo -- [--addr 127.0.0.1:7878] [--cores N] [--buf BYTES] [--multishot | --no-multishot]
//! ```
//!
//! With `--cores N` it runs `Runtime::builder().cores(N).build_multi()`:
//! N threads, each pinned to a core with its own ringio loop (and ring) and
//! its own `SO_REUSEPORT` listener on the same port. The kernel spreads
//! connections among them, and a connection stays on the core that
//! accepted it (thread-per-core).
//!
//! Connections come from a multishot accept (`TcpListener::incoming`);
//! each is echoed by its own task.
//!
//! By default (`--no-multishot`) each connection has its own buffer that
//! goes to the ring for the read and comes back for the write. With
//! `--multishot` (where the kernel has provided-buffer rings, Linux 6.0+;
//! plain reads elsewhere), each core has one `BufRing` of receive buffers
//! shared by all its connections, and each connection one multishot
//! receive (`TcpStream::recv_multishot`): an idle connection holds no
//! buffer (a fifth of the memory per idle connection), and each buffer
//! received is written back as it is, which returns it to the pool. It is
//! not the default because it is not faster: on this project's machine it
//! ties the plain server with 4 KiB messages and is 15-20 % slower with
//! 64 B ones (benches/RESULTS.md).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Mutex;

use ringio::io::BufRing;
use ringio::net::{ListenOptions, TcpListener, TcpStream};

struct Args {
    addr: SocketAddr,
    cores: usize,
    buf: usize,
    /// Multishot receive into a shared pool (where the kernel has it).
    multishot: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        addr: "127.0.0.1:7878".parse().map_err(|e| format!("{e}"))?,
        cores: 1,
        buf: 16 * 1024,
        multishot: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        match flag.as_str() {
            "--addr" => {
                let v = value("--addr")?;
                args.addr = v.parse().map_err(|e| format!("--addr {v}: {e}"))?;
            }
            "--cores" => {
                let v = value("--cores")?;
                args.cores = v.parse().map_err(|e| format!("--cores {v}: {e}"))?;
                if args.cores == 0 {
                    return Err("--cores must be at least 1".into());
                }
            }
            "--buf" => {
                let v = value("--buf")?;
                args.buf = v.parse().map_err(|e| format!("--buf {v}: {e}"))?;
                if args.buf == 0 {
                    return Err("--buf must be at least 1".into());
                }
            }
            "--multishot" => args.multishot = true,
            "--no-multishot" => args.multishot = false,
            "-h" | "--help" => {
                return Err(
                    "usage: echo [--addr IP:PORT] [--cores N] [--buf BYTES] [--multishot | --no-multishot]"
                        .into(),
                );
            }
            other => return Err(format!("unknown argument {other}; try --help")),
        }
    }
    Ok(args)
}

/// Echoes one connection until the peer closes it.
async fn echo(stream: TcpStream, buf_size: usize) -> ringio::Result<()> {
    stream.set_nodelay(true)?;
    let mut buf = Vec::with_capacity(buf_size);
    loop {
        let (res, b) = stream.read(buf).await;
        if res? == 0 {
            return Ok(());
        }
        // `read` set the length to the count received: echo exactly that.
        let (res, b) = stream.write_all(b).await;
        res?;
        buf = b;
    }
}

/// Echoes one connection with a multishot receive into the core's pool:
/// each buffer received is written back as it is (no copy) and goes back
/// to the pool once written.
async fn echo_multishot(stream: TcpStream, pool: BufRing) -> ringio::Result<()> {
    stream.set_nodelay(true)?;
    let mut rx = stream.recv_multishot(&pool);
    while let Some(buf) = rx.next().await {
        let (res, _buf) = stream.write_all(buf?).await;
        res?;
    }
    Ok(())
}

/// Buffers in a core's pool: enough for bursts on many connections.
const POOL_ENTRIES: u32 = 1024;

/// One core's server: accept forever, a task per connection.
async fn serve(listener: TcpListener, buf_size: usize, multishot: bool) -> ringio::Result<()> {
    let pool = if multishot {
        let pool = BufRing::new(POOL_ENTRIES, buf_size)?;
        if !pool.is_kernel() {
            eprintln!("echo: this kernel has no provided-buffer rings; plain reads instead");
        }
        // Without the kernel's ring, plain reads are as good.
        pool.is_kernel().then_some(pool)
    } else {
        None
    };
    let mut incoming = listener.incoming();
    while let Some(conn) = incoming.next().await {
        match conn {
            Ok(stream) => {
                let pool = pool.clone();
                ringio::create_task(async move {
                    let res = match pool {
                        Some(pool) => echo_multishot(stream, pool).await,
                        None => echo(stream, buf_size).await,
                    };
                    if let Err(e) = res {
                        // A peer that resets is normal for an echo server.
                        if e.raw_os_error() != Some(libc::ECONNRESET) {
                            eprintln!("echo: connection error: {e}");
                        }
                    }
                    Ok::<(), ringio::Error>(())
                });
            }
            Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) => {
                eprintln!("echo: accept: {e}; pausing accepts for 100 ms");
                ringio::sleep(std::time::Duration::from_millis(100)).await?;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(msg) => {
            eprintln!("{msg}");
            return ExitCode::from(2);
        }
    };
    let opts = ListenOptions::new().reuse_port(args.cores > 1);
    // Bind the first listener before starting the cores, so that a bad
    // address fails fast and every core binds the same (possibly
    // OS-chosen) port.
    let first = match TcpListener::bind_with(args.addr, opts) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("echo: cannot listen on {}: {e}", args.addr);
            return ExitCode::FAILURE;
        }
    };
    let addr = first.local_addr().unwrap_or(args.addr);
    eprintln!(
        "echo: listening on {addr} with {} core(s), {}-byte buffers, {}",
        args.cores,
        args.buf,
        if args.multishot {
            "multishot receive into a shared pool"
        } else {
            "one buffer per connection"
        }
    );
    // One loop per core, each on its own pinned thread with its own ring.
    let mut rt = match ringio::Runtime::builder().cores(args.cores).build_multi() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("echo: cannot start {} core(s): {e}", args.cores);
            return ExitCode::FAILURE;
        }
    };
    // Core 0 serves the listener bound above; every other core binds its
    // own on the same port (SO_REUSEPORT), so the kernel spreads new
    // connections and each stays on the core that accepted it.
    let first = Mutex::new(Some(first));
    let buf = args.buf;
    let multishot = args.multishot;
    let results = rt.run_on_each(move |core| {
        let mine = if core.id() == 0 {
            first.lock().unwrap_or_else(|e| e.into_inner()).take()
        } else {
            None
        };
        async move {
            let listener = match mine {
                Some(l) => l,
                None => TcpListener::bind_with(addr, opts)?,
            };
            serve(listener, buf, multishot).await
        }
    });
    let mut code = ExitCode::SUCCESS;
    match results {
        Ok(per_core) => {
            for (i, r) in per_core.into_iter().enumerate() {
                if let Err(e) = r {
                    eprintln!("echo: core {i}: {e}");
                    code = ExitCode::FAILURE;
                }
            }
        }
        Err(e) => {
            eprintln!("echo: {e}");
            code = ExitCode::FAILURE;
        }
    }
    code
}
