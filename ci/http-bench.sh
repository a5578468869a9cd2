#!/usr/bin/env bash
# HTTP plaintext benchmark (issue 15): hyper on ringio (examples/http.rs)
# against hyper on tokio's current_thread runtime (benches/http_tokio.rs),
# each server on one core, loaded by wrk on loopback. Not part of CI: the
# figures need a quiet machine. Needs wrk (Debian: apt-get install wrk).
# Besides wrk's req/s and p99 it prints the server's CPU time per request
# (from /proc), which other load on the machine disturbs less.
# Knobs: HTTP_BENCH_SECS (default 10), HTTP_BENCH_CONNS (default 256),
# HTTP_BENCH_RUNS (default 1).
set -euo pipefail
cd "$(dirname "$0")/.."

secs=${HTTP_BENCH_SECS:-10}
conns=${HTTP_BENCH_CONNS:-256}
runs=${HTTP_BENCH_RUNS:-1}
if ! command -v wrk >/dev/null 2>&1; then
    echo "wrk not found (Debian/Ubuntu: apt-get install -y wrk)" >&2
    exit 1
fi

cargo build --release --quiet --features hyper --example http --example http_tokio

# With 2 or more CPUs, the server gets CPU 0 and wrk CPU 1.
server_cpu=() client_cpu=()
if [ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null 2>&1; then
    server_cpu=(taskset -c 0)
    client_cpu=(taskset -c 1)
fi

pid=
cleanup() { if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi; }
trap cleanup EXIT

# bench NAME PORT CMD...: start the server, wait for it, run wrk, stop it.
bench() {
    local name=$1 port=$2
    shift 2
    "${server_cpu[@]}" "$@" --addr "127.0.0.1:$port" 2>/dev/null &
    pid=$!
    for _ in $(seq 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then break; fi
        sleep 0.1
    done
    local out t0 t1
    t0=$(awk '{print $14 + $15}' "/proc/$pid/stat")
    out=$("${client_cpu[@]}" wrk -t1 -c"$conns" -d"${secs}s" --latency "http://127.0.0.1:$port/")
    t1=$(awk '{print $14 + $15}' "/proc/$pid/stat")
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    pid=
    local rps p99 reqs cpu errors
    rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
    p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
    reqs=$(awk '/requests in/ {print $1}' <<<"$out")
    # The server's user+system CPU time over the run, per request.
    cpu=$(awk -v t="$((t1 - t0))" -v hz="$(getconf CLK_TCK)" -v n="$reqs" \
        'BEGIN { if (n > 0) printf "%.2f", t / hz * 1e6 / n; else print "-" }')
    errors=$(grep -E 'Non-2xx|Socket errors' <<<"$out" | tr '\n' ' ' || true)
    printf '%-14s %12s req/s   p99 %10s   server CPU %6s us/req   %s\n' \
        "$name" "$rps" "$p99" "$cpu" "$errors"
}

echo "machine: $(nproc) cpus, kernel $(uname -r), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(date -u '+%Y-%m-%d %H:%M UTC'), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "wrk -t1 -c$conns -d${secs}s --latency, server on one core"
for run in $(seq "$runs"); do
    [ "$runs" -gt 1 ] && echo "-- run $run"
    bench "ringio+hyper" 18080 target/release/examples/http --cores 1
    bench "tokio+hyper" 18081 target/release/examples/http_tokio
done
