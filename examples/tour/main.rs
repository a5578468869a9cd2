//! The tour: every example of asyncio's "Coroutines and Tasks" document,
//! run on ringio, printing its output with timestamps (seconds since the
//! tour started). Durations are scaled from seconds to tenths of seconds.
//!
//! `cargo run --release --example tour` runs all sections;
//! `cargo run --release --example tour -- <section>` runs one.

mod clock;
mod combinators;
mod coroutines;
mod threads;

fn main() {
    let only: Option<String> = std::env::args().nth(1);
    let sections: &[(&str, fn())] = &[
        ("coroutines", coroutines::run),
        ("combinators", combinators::run),
        ("threads", threads::run),
    ];
    for (name, f) in sections {
        if only.as_deref().is_none_or(|o| o == *name) {
            println!("==== {name}");
            f();
        }
    }
}
