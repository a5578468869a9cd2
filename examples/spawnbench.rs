use ringio::Error;
use std::time::Instant;
fn main() {
    let n: u32 = std::env::var("N").ok().and_then(|s| s.parse().ok()).unwrap_or(1_000_000);
    for _ in 0..std::env::var("R").ok().and_then(|s| s.parse().ok()).unwrap_or(3) {
        let t0 = Instant::now();
        ringio::run(async move {
            for _ in 0..n { let t = ringio::create_task(async { Ok::<_, Error>(1) }); t.await.unwrap(); }
        });
        println!("spawn+join seq {:?}/task", t0.elapsed() / n);
        let t0 = Instant::now();
        ringio::run(async move {
            let ts: Vec<_> = (0..n/10).map(|_| ringio::create_task(async { Ok::<_, Error>(1) })).collect();
            for t in ts { t.await.unwrap(); }
        });
        println!("spawn+join batch {:?}/task", t0.elapsed() / (n/10));
    }
}
