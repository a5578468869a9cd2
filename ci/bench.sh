#!/usr/bin/env bash
# Runs the benchmark suite (benches/suite): ringio vs tokio vs a raw
# io_uring loop, printed as one markdown table. Not part of CI (.ci/run):
# the figures need a quiet machine. Arguments pass through as filters,
# e.g. `ci/bench.sh spawn_join switch`. Knobs: RINGIO_BENCH_SECS (per
# tcp_echo/file_read cell, default 2), RINGIO_BENCH_REPS (default 3),
# RINGIO_BENCH_FILE_MB (default 256), RINGIO_BENCH_DIR, RINGIO_BENCH_ODIRECT=1.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "machine: $(nproc) cpus, kernel $(uname -r), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(date -u '+%Y-%m-%d %H:%M UTC')"
cargo bench --bench suite -- "$@"
