use std::time::{Duration, Instant};
fn main() {
    ringio::run(async {
        let mut v = Vec::new();
        for _ in 0..200 {
            let s = Instant::now();
            ringio::sleep(Duration::from_millis(2)).await.unwrap();
            v.push(s.elapsed() - Duration::from_millis(2));
        }
        v.sort();
        println!("p50 {:?} p90 {:?} max {:?}", v[100], v[180], v[199]);
    });
}
