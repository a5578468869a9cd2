#!/usr/bin/env bash
# The project's test command: formatting, lints, docs, then every test
# (unit, doc, and the integration tests in uring-tests/ against a real ring).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1; then
    echo "cargo not found: install a Rust toolchain (rustup) first" >&2
    exit 1
fi
rustup component add rustfmt clippy >/dev/null 2>&1 || true

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --all-targets -- -D warnings
echo "== cargo clippy --all-features"
cargo clippy --all-targets --all-features -- -D warnings
echo "== cargo doc"
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --quiet --all-features
echo "== cargo test"
# --all-features: the tokio-io and hyper tests (uring-tests/tokio_io.rs,
# uring-tests/hyper.rs) and the http examples need their features.
cargo test --release --all-features -- --test-threads=2

bash ci/miri.sh

# The wake protocol's loom models: about 5 s to run, plus a build of its
# own (target/loom) the first time.
bash ci/loom.sh
