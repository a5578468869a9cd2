//! Instructions per operation, counted by callgrind: the one figure the
//! load of a shared machine cannot move. The wall-clock rows of the other
//! benchmarks swing by tens of percent between runs on this VM, wider than
//! most changes to the per-task and per-op paths; instruction counts tell
//! those changes apart, and show the same ratios against tokio and the
//! floor run for run.
//!
//! Each case runs in a child process (this same binary, `--one CASE SIDE
//! N`) under `valgrind --tool=callgrind`, at two sizes; the difference of
//! the two totals divided by the difference of the sizes is the marginal
//! count per operation, free of start-up (ring set-up, the tokio runtime,
//! valgrind's own). User space only: the kernel's share of a ring op is
//! not counted (the wall-clock rows have it). Not run by a plain `cargo
//! bench`: name it (`cargo bench --bench suite -- instr`); it needs
//! `valgrind` (Debian: `apt-get install valgrind`) and takes about a
//! minute.

use std::process::Command;

use crate::{Better, Row};

/// One side of a case: runs `n` operations.
type Side = fn(usize);

/// A workload measured on each runtime that has it.
struct Case {
    name: &'static str,
    metric: &'static str,
    unit: &'static str,
    /// The two sizes, in operations.
    sizes: (usize, usize),
    ringio: Side,
    tokio: Option<Side>,
    /// The floor: the bare `async-task` executor or a raw ring loop.
    raw: Option<Side>,
    /// A second floor, shown as a row of its own (its metric, its side)
    /// against the same ringio count.
    floor: Option<(&'static str, Side)>,
}

fn cases() -> [Case; 5] {
    [
        Case {
            name: "spawn_join",
            metric: "spawn+join of trivial tasks (floor: bare async-task)",
            unit: "instr/task",
            sizes: (50_000, 100_000),
            ringio: |n| {
                let mut rt = ringio::Runtime::new().expect("ring setup");
                crate::sched::ringio_spawn_join(&mut rt, n, 1);
            },
            tokio: Some(|n| {
                crate::sched::tokio_spawn_join(&crate::util::tokio_ct(), n, 1);
            }),
            raw: Some(|n| {
                crate::sched::floor_spawn_join(n, 1);
            }),
            floor: None,
        },
        Case {
            name: "spawn_join_warm",
            metric: "spawn+join, rounds of 1k tasks (floor: bare async-task)",
            unit: "instr/task",
            sizes: (50_000, 100_000),
            ringio: |n| {
                let mut rt = ringio::Runtime::new().expect("ring setup");
                crate::sched::ringio_spawn_join(&mut rt, 1000, n / 1000);
            },
            tokio: Some(|n| {
                crate::sched::tokio_spawn_join(&crate::util::tokio_ct(), 1000, n / 1000);
            }),
            raw: Some(|n| {
                crate::sched::floor_spawn_join(1000, n / 1000);
            }),
            floor: None,
        },
        Case {
            name: "switch",
            metric: "2 tasks pass a token",
            unit: "instr/switch",
            sizes: (200_000, 400_000),
            ringio: |n| {
                crate::sched::ringio_pingpong(n);
            },
            tokio: Some(|n| {
                crate::sched::tokio_pingpong(&crate::util::tokio_ct(), n);
            }),
            raw: None,
            floor: None,
        },
        Case {
            name: "nop32",
            metric: "NOP, 32 in flight (32 tasks / raw batch of 32), user space",
            unit: "instr/op",
            sizes: (64_000, 128_000),
            ringio: |n| {
                crate::nop::ringio_batch(n);
            },
            tokio: None,
            raw: Some(|n| {
                crate::nop::raw(n, crate::nop::BATCH);
            }),
            floor: Some((
                "NOP, 32 tasks, against the task-per-op floor (bare async-task tasks on a raw ring), user space",
                |n| {
                    crate::nop::floor_batch(n);
                },
            )),
        },
        Case {
            name: "nop1",
            metric: "NOP one at a time, user space",
            unit: "instr/op",
            sizes: (32_000, 64_000),
            ringio: |n| {
                crate::nop::ringio_seq(n);
            },
            tokio: None,
            raw: Some(|n| {
                crate::nop::raw(n, 1);
            }),
            floor: None,
        },
    ]
}

/// In the child: runs side `side` of case `case` for `n` operations.
pub fn run_one(case: &str, side: &str, n: usize) {
    let c = cases()
        .into_iter()
        .find(|c| c.name == case)
        .unwrap_or_else(|| panic!("no instr case {case}"));
    let f = match side {
        "ringio" => Some(c.ringio),
        "tokio" => c.tokio,
        "raw" => c.raw,
        "floor" => c.floor.map(|(_, side)| side),
        _ => None,
    };
    f.unwrap_or_else(|| panic!("case {case} has no side {side}"))(n);
}

/// Total instructions of one child run, from callgrind's summary.
fn count(case: &str, side: &str, n: usize) -> Result<u64, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let out = Command::new("valgrind")
        .args(["--tool=callgrind", "--callgrind-out-file=/dev/null"])
        .arg(exe)
        .args(["--one", case, side, &n.to_string()])
        .output()
        .map_err(|e| format!("valgrind: {e} (Debian: apt-get install valgrind)"))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        return Err(format!("{case}/{side} failed under valgrind:\n{stderr}"));
    }
    stderr
        .lines()
        .find_map(|l| {
            let (_, v) = l.split_once("Collected :")?;
            v.trim().parse().ok()
        })
        .ok_or_else(|| format!("no instruction count in valgrind's output:\n{stderr}"))
}

/// Marginal instructions per operation of one side.
fn per_op(case: &Case, side: &str) -> Result<f64, String> {
    let (a, b) = case.sizes;
    let ia = count(case.name, side, a)?;
    let ib = count(case.name, side, b)?;
    Ok((ib as f64 - ia as f64) / (b - a) as f64)
}

pub fn run(_cfg: &crate::util::Config) -> Vec<Row> {
    let mut rows = Vec::new();
    for case in cases() {
        let mut row = Row::new("instr", case.metric, case.unit, Better::Lower);
        // A second floor's row shares the ringio count (counted once).
        let mut floor_row = case
            .floor
            .map(|(metric, _)| Row::new("instr", metric, case.unit, Better::Lower));
        let sides: [(&str, bool, &mut Vec<f64>); 3] = [
            ("ringio", true, &mut row.ringio),
            ("tokio", case.tokio.is_some(), &mut row.tokio),
            ("raw", case.raw.is_some(), &mut row.raw),
        ];
        for (side, present, into) in sides {
            if !present {
                continue;
            }
            match per_op(&case, side) {
                Ok(v) => into.push(v),
                Err(e) => {
                    eprintln!("instr: {e}");
                    return rows;
                }
            }
        }
        if let Some(floor_row) = &mut floor_row {
            match per_op(&case, "floor") {
                Ok(v) => {
                    floor_row.ringio = row.ringio.clone();
                    floor_row.raw.push(v);
                }
                Err(e) => {
                    eprintln!("instr: {e}");
                    rows.push(row);
                    return rows;
                }
            }
        }
        rows.push(row);
        rows.extend(floor_row);
    }
    rows
}
