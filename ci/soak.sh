#!/usr/bin/env bash
# The long I/O soak (issue 13): 1,000,000 operations (socket reads and
# writes with data in flight, multishot receives, file reads, accepts,
# sleeps) in tasks cancelled or dropped at seeded random moments; every
# byte accounted for, no fd, op-table slot, provided buffer, timer or task
# left, RSS flat between the halves. The test command runs the same test
# with 50,000 operations.
#
#   RINGIO_SOAK_OPS   operations (default here 1000000)
#   RINGIO_SOAK_SEED  the seed of the moves (default: the test's own)
set -euo pipefail
cd "$(dirname "$0")/.."

export RINGIO_SOAK_OPS="${RINGIO_SOAK_OPS:-1000000}"
# With fault-injection: the same soak again under seeded random faults.
nice -n 10 cargo test --release --features fault-injection --test soak -- --nocapture --test-threads=1
