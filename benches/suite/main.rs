//! ringio's benchmark suite (issue 6): ringio against tokio (the epoll
//! baseline: `current_thread`, and `multi_thread` where that is fair) and a
//! raw `io-uring` loop with no runtime (the floor), measured side by side in
//! one run and printed as one table with the ratios ringio/tokio and
//! ringio/raw.
//!
//! `cargo bench` runs everything; `cargo bench -- NAME [NAME..]` runs the
//! benchmarks whose name contains one of the NAMEs (`spawn_join`, `switch`,
//! `timers`, `nop`, `tcp_echo`, `file_read`, `cancel`, `memory`).
//! `cargo bench -- instr` counts instructions per operation under
//! callgrind instead (see `instr.rs`); only when named.
//!
//! Environment: `RINGIO_BENCH_SECS` (seconds per tcp_echo cell, default 2;
//! file_read uses the same), `RINGIO_BENCH_REPS` (repetitions of every
//! measurement, interleaved, default 3; tcp_echo and file_read use
//! `max(1, REPS - 1)`), `RINGIO_BENCH_FILE_MB` (file_read's file, default
//! 256), `RINGIO_BENCH_DIR` (where that file goes, default the cargo target
//! dir), `RINGIO_BENCH_ODIRECT=1` (add O_DIRECT rows to file_read).
//!
//! Every figure is the median of its repetitions; the `spread` column is
//! (max - min) / median of ringio's repetitions, the noise of the machine.

mod alloc;
mod cancel;
mod file_read;
mod fixed_read;
mod instr;
mod memory;
mod nop;
mod ring_setup;
mod sched;
mod send_zc;
mod splice;
mod tcp_echo;
mod timers;
mod util;

use std::time::Instant;

#[global_allocator]
static GLOBAL: alloc::Counting = alloc::Counting;

/// Which way is better for a row.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Better {
    Lower,
    Higher,
}

/// One line of the result table: a metric and its median per runtime.
pub struct Row {
    pub bench: &'static str,
    pub metric: String,
    pub unit: &'static str,
    pub better: Better,
    pub ringio: Vec<f64>,
    pub tokio: Vec<f64>,
    pub tokio_mt: Vec<f64>,
    pub raw: Vec<f64>,
}

impl Row {
    pub fn new(
        bench: &'static str,
        metric: impl Into<String>,
        unit: &'static str,
        better: Better,
    ) -> Row {
        Row {
            bench,
            metric: metric.into(),
            unit,
            better,
            ringio: Vec::new(),
            tokio: Vec::new(),
            tokio_mt: Vec::new(),
            raw: Vec::new(),
        }
    }
}

pub fn median(v: &[f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let n = s.len();
    Some(if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    })
}

fn fmt_num(v: Option<f64>) -> String {
    match v {
        None => "—".into(),
        Some(x) if x.abs() >= 100_000.0 => format!("{:.0}", x),
        Some(x) if x.abs() >= 100.0 => format!("{:.0}", x),
        Some(x) if x.abs() >= 10.0 => format!("{:.1}", x),
        Some(x) => format!("{:.2}", x),
    }
}

fn fmt_ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b != 0.0 => format!("{:.2}", a / b),
        _ => "—".into(),
    }
}

fn print_table(rows: &[Row]) {
    println!();
    println!(
        "| bench | metric | unit | better | ringio | tokio ct | tokio mt | raw uring | ringio/tokio | ringio/raw | spread |"
    );
    println!("|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        let ri = median(&r.ringio);
        let tk = median(&r.tokio);
        let spread = match (ri, r.ringio.len()) {
            (Some(m), n) if n > 1 && m != 0.0 => {
                let max = r.ringio.iter().cloned().fold(f64::MIN, f64::max);
                let min = r.ringio.iter().cloned().fold(f64::MAX, f64::min);
                format!("{:.0}%", (max - min) / m * 100.0)
            }
            _ => "—".into(),
        };
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.bench,
            r.metric,
            r.unit,
            if r.better == Better::Lower {
                "lower"
            } else {
                "higher"
            },
            fmt_num(ri),
            fmt_num(tk),
            fmt_num(median(&r.tokio_mt)),
            fmt_num(median(&r.raw)),
            fmt_ratio(ri, tk),
            fmt_ratio(ri, median(&r.raw)),
            spread,
        );
    }
}

type BenchFn = fn(&util::Config) -> Vec<Row>;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let [_, one, case, side, n] = args.as_slice() {
        if one == "--one" {
            // A child of the `instr` benchmark, run under callgrind.
            instr::run_one(case, side, n.parse().expect("--one CASE SIDE N"));
            return;
        }
    }
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let cfg = util::Config::from_env();
    let benches: [(&str, BenchFn); 13] = [
        ("spawn_join", sched::spawn_join),
        ("switch", sched::switch),
        ("timers", timers::run),
        ("nop", nop::run),
        ("cancel", cancel::run),
        ("memory", memory::run),
        ("file_read", file_read::run),
        ("tcp_echo", tcp_echo::run),
        ("ring_setup", ring_setup::run),
        ("send_zc", send_zc::run),
        ("fixed_read", fixed_read::run),
        ("splice", splice::run),
        ("instr", instr::run),
    ];
    let t0 = Instant::now();
    let mut rows = Vec::new();
    for (name, f) in benches {
        if !filters.is_empty() && !filters.iter().any(|p| name.contains(p.as_str())) {
            continue;
        }
        // Minutes under valgrind: only when asked for by name.
        if name == "instr" && !filters.iter().any(|p| p == "instr") {
            continue;
        }
        let t = Instant::now();
        eprintln!("== {name}");
        rows.extend(f(&cfg));
        eprintln!("   ({name}: {:.1} s)", t.elapsed().as_secs_f64());
    }
    println!(
        "\nringio bench suite: {} cpus, reps {}, {} s per tcp_echo/file_read cell; total {:.1} s",
        util::nproc(),
        cfg.reps,
        cfg.secs,
        t0.elapsed().as_secs_f64()
    );
    print_table(&rows);
}
