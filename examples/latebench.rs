use std::time::{Duration, Instant};
use std::rc::Rc;
use std::cell::RefCell;
fn main() {
    let n = 20_000u64;
    let late = Rc::new(RefCell::new(Vec::new()));
    let l2 = late.clone();
    let t0 = Instant::now();
    ringio::run(async move {
        let mut ts = Vec::new();
        for i in 0..n {
            let d = Duration::from_micros(1000 + (i * 7919) % 99_000);
            let l = l2.clone();
            ts.push(ringio::create_task(async move {
                let s = Instant::now();
                ringio::sleep(d).await?;
                l.borrow_mut().push(s.elapsed() - d);
                Ok::<_, ringio::Error>(())
            }));
        }
        for t in ts { t.await.unwrap(); }
    });
    let v = late.borrow();
    let mean = v.iter().sum::<Duration>() / v.len() as u32;
    let max = v.iter().max().unwrap();
    println!("total {:?}, mean lateness {:?}, max {:?}", t0.elapsed(), mean, max);
}
