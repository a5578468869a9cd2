#!/usr/bin/env bash
# Model checks of the cross-thread wake protocol with loom
# (src/task/raw/loom_tests.rs): a remote wake racing the loop's drain and
# the task's poll, the last waker dropped on another thread while the loop
# drops the task, a push while the loop goes to sleep. loom runs ringio's
# own atomics (src/sync.rs) through every interleaving and every outcome
# the memory model allows.
#
# Built with `--cfg loom` in its own target dir (target/loom), so the
# normal build is not invalidated. LOOM_MAX_PREEMPTIONS (default 3) bounds
# the preemptions explored per execution: 3 runs in about 10 s here; the
# unbounded search of the three-thread models takes longer than 5 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."

export LOOM_MAX_PREEMPTIONS="${LOOM_MAX_PREEMPTIONS:-3}"
echo "== loom (LOOM_MAX_PREEMPTIONS=$LOOM_MAX_PREEMPTIONS)"
RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}/loom" \
    cargo test --release --lib loom_tests:: -- --test-threads=2
