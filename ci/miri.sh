#!/usr/bin/env bash
# Runs the tests that need no ring — the raw task (allocation, wakers,
# drops in every state, panics), the waiter list, the ownership of
# kernel-visible structs (KernelBox) and of user buffers while an op has
# them (KernelBuf) —
# under Miri, which checks every unsafe access and reports leaks.
# Needs a nightly toolchain with the miri component
# (`rustup +nightly component add miri`); says so and exits 0 without one.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! rustup run nightly rustc --version >/dev/null 2>&1; then
    echo "== miri: skipped (no nightly toolchain: rustup toolchain install nightly --component miri)"
    exit 0
fi
if ! cargo +nightly miri --version >/dev/null 2>&1; then
    rustup +nightly component add miri rust-src >/dev/null 2>&1 || true
fi
if ! cargo +nightly miri --version >/dev/null 2>&1; then
    echo "== miri: skipped (nightly has no miri component and it could not be added)"
    exit 0
fi
echo "== miri (cargo +nightly miri test --lib task:: kernel_box kernel_buf)"
# Isolation off: the tests make an eventfd (the loop's remote queue) and
# spawn threads to wake tasks from them.
export MIRIFLAGS="${MIRIFLAGS:--Zmiri-disable-isolation}"
cargo +nightly miri test --lib -- task:: kernel_box kernel_buf
