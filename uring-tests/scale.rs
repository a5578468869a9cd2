//! Scale: thousands of TCP connections through one loop at once — the
//! server's and the clients' ends on the same ring — each echoing a
//! distinct message that is checked byte for byte, and every descriptor
//! back at the end.

mod common;

use std::time::Duration;

use common::{open_fds, pattern, settled_open_fds};
use ringio::Error;
use ringio::net::{ListenOptions, TcpListener, TcpStream};

/// As many connections as the descriptor limit allows (two descriptors
/// each, both ends being in this process), up to 10,000.
fn connections() -> usize {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid struct; results checked.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
    }
    ((lim.rlim_cur as usize).saturating_sub(512) / 2).min(10_000)
}

#[test]
fn thousands_of_connections_echo_through_one_loop() {
    let n = connections();
    assert!(
        n >= 1000,
        "a descriptor limit of {n} connections is too low to test"
    );
    let fds_before = settled_open_fds();
    let verified = ringio::run(async move {
        let listener =
            TcpListener::bind_with("127.0.0.1:0", ListenOptions::new().backlog(4096)).unwrap();
        let addr = listener.local_addr().unwrap();
        let server = ringio::create_task(async move {
            let mut handlers = Vec::with_capacity(n);
            for _ in 0..n {
                let (s, _) = listener.accept().await?;
                handlers.push(ringio::create_task(async move {
                    let (r, buf) = s.read_exact(Vec::with_capacity(64)).await;
                    r?;
                    let (r, _) = s.write_all(buf).await;
                    r
                }));
            }
            for h in handlers {
                h.await?;
            }
            Ok::<_, Error>(())
        });
        let clients: Vec<_> = (0..n)
            .map(|i| {
                ringio::create_task(async move {
                    let c = TcpStream::connect(addr).await?;
                    let msg = pattern(i as u64, 64);
                    let (r, _) = c.write_all(msg.clone()).await;
                    r?;
                    let (r, back) = c.read_exact(Vec::with_capacity(64)).await;
                    r?;
                    Ok::<_, Error>(back == msg)
                })
            })
            .collect();
        let mut verified = 0;
        for c in clients {
            if c.await.unwrap() {
                verified += 1;
            }
        }
        ringio::wait_for(server, Some(Duration::from_secs(60)))
            .await
            .unwrap();
        verified
    });
    assert_eq!(verified, n, "every connection echoed its own bytes");
    assert_eq!(open_fds(), fds_before, "file descriptors leaked");
}
