#!/usr/bin/env bash
# HTTP plaintext benchmark (issue 15): hyper on ringio (examples/http.rs)
# against hyper on tokio's current_thread runtime (benches/http/tokio_server.rs),
# each server on one core, loaded by wrk on loopback. Not part of CI: the
# figures need a quiet machine. Needs wrk (Debian: apt-get install wrk).
# Besides wrk's req/s and p99 it prints the server's CPU time per request
# (from /proc), which other load on the machine disturbs less.
# Knobs: HTTP_BENCH_SECS (default 10), HTTP_BENCH_CONNS (default 256),
# HTTP_BENCH_RUNS (default 1; with more, the runs alternate ringio, tokio,
# ringio, ... and the medians and the median per-run ratio are printed),
# HTTP_BENCH_PLAIN=1 (also run the ringio server with `--read plain`, a
# receive per read instead of the multishot receive into a buffer ring,
# between the two in each run), HTTP_BENCH_CLIENT=ring (load the servers
# with benches/http/load.rs, a closed-loop client on ringio, instead of
# wrk: on two CPUs wrk costs about as much CPU per request as the server
# and caps the measured rate; this client costs a fifth to a third
# less, so the server is the bound), HTTP_BENCH_PIPELINE=N (each write
# carries N pipelined requests, as TechEmpower's plaintext test sends 16:
# wrk with benches/http/pipeline.lua, http_load with --pipeline). The
# client's CPU time per request is printed too.
set -euo pipefail
cd "$(dirname "$0")/.."

secs=${HTTP_BENCH_SECS:-10}
conns=${HTTP_BENCH_CONNS:-256}
pipeline=${HTTP_BENCH_PIPELINE:-1}
runs=${HTTP_BENCH_RUNS:-1}
client=${HTTP_BENCH_CLIENT:-wrk}
case "$client" in
    wrk)
        if ! command -v wrk >/dev/null 2>&1; then
            echo "wrk not found (Debian/Ubuntu: apt-get install -y wrk)" >&2
            exit 1
        fi
        ;;
    ring) ;;
    *)
        echo "HTTP_BENCH_CLIENT: wrk or ring, not $client" >&2
        exit 1
        ;;
esac

cargo build --release --quiet --features hyper --example http --example http_tokio --example http_load

# With 2 or more CPUs, the server gets CPU 0 and wrk CPU 1.
server_cpu=() client_cpu=()
if [ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null 2>&1; then
    server_cpu=(taskset -c 0)
    client_cpu=(taskset -c 1)
fi

pid=
cleanup() { if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi; }
trap cleanup EXIT

# load PORT SECS: runs the client against the server on PORT for SECS
# seconds and prints its report (wrk's, or http_load's line). With
# TIMEFORMAT below, bash's `time` adds the client's user and system CPU
# seconds as the last line.
TIMEFORMAT='cpu %U %S'
load() {
    local port=$1 secs=$2
    if [ "$client" = wrk ]; then
        local script=()
        if [ "$pipeline" -gt 1 ]; then
            script=(-s benches/http/pipeline.lua)
        fi
        time "${client_cpu[@]}" wrk -t1 -c"$conns" -d"${secs}s" --latency "${script[@]}" \
            "http://127.0.0.1:$port/" -- "$pipeline"
    else
        time "${client_cpu[@]}" target/release/examples/http_load --addr "127.0.0.1:$port" \
            --conns "$conns" --secs "$secs" --warmup 0 --pipeline "$pipeline"
    fi
}

# bench NAME PORT CMD...: start the server, wait for it, warm it up with a
# 1 s run (connections made, buffers grown), run the load, stop it.
results=$(mktemp)
bench() {
    local name=$1 port=$2
    shift 2
    "${server_cpu[@]}" "$@" --addr "127.0.0.1:$port" 2>/dev/null &
    pid=$!
    for _ in $(seq 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then break; fi
        sleep 0.1
    done
    load "$port" 1 >/dev/null 2>&1
    local out u0 s0 u1 s1
    read -r u0 s0 < <(awk '{print $14, $15}' "/proc/$pid/stat")
    out=$(load "$port" "$secs" 2>&1)
    read -r u1 s1 < <(awk '{print $14, $15}' "/proc/$pid/stat")
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    pid=
    local rps p99 reqs user sys errors client_us
    if [ "$client" = wrk ]; then
        rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
        p99=$(awk '$1 == "99%" {v = $2; if (v ~ /us$/) v = v / 1000; else if (v ~ /ms$/) v = v + 0; else v = v * 1000; print v}' <<<"$out")
        reqs=$(awk '/requests in/ {print $1}' <<<"$out")
        errors=$(grep -E 'Non-2xx|Socket errors' <<<"$out" | tr '\n' ' ' || true)
    else
        rps=$(awk '/^http_load:.*req\/s/ {for (i = 1; i <= NF; i++) if ($i == "req/s,") print $(i - 1)}' <<<"$out")
        p99=$(awk '/^http_load:.*p99/ {for (i = 1; i <= NF; i++) if ($i == "p99") print $(i + 1)}' <<<"$out")
        reqs=$(awk '/^http_load:.*requests in/ {print $2}' <<<"$out")
        errors=$(awk '/^http_load:/ && !/requests in/' <<<"$out" | tr '\n' ' ')
        if [ -z "$rps" ]; then
            echo "$name: http_load failed: $out" >&2
            return 1
        fi
    fi
    client_us=$(awk -v n="$reqs" '$1 == "cpu" { if (n > 0) printf "%.2f", ($2 + $3) * 1e6 / n; else print "-" }' <<<"$out")
    # The server's user and system CPU time over the run, per request.
    per_req() { awk -v t="$1" -v hz="$(getconf CLK_TCK)" -v n="$reqs" \
        'BEGIN { if (n > 0) printf "%.2f", t / hz * 1e6 / n; else print "-" }'; }
    user=$(per_req "$((u1 - u0))")
    sys=$(per_req "$((s1 - s0))")
    printf '%-14s %10s req/s   p99 %8s ms   server CPU %6s user + %6s sys us/req   client CPU %6s us/req   %s\n' \
        "$name" "$rps" "$p99" "$user" "$sys" "$client_us" "$errors"
    echo "$name $rps $p99 $user $sys" >>"$results"
}

echo "machine: $(nproc) cpus, kernel $(uname -r), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(date -u '+%Y-%m-%d %H:%M UTC'), load $(cut -d' ' -f1-3 /proc/loadavg)"
if [ "$client" = wrk ]; then
    echo "wrk -t1 -c$conns -d${secs}s --latency, pipeline $pipeline, server on one core, runs alternating"
else
    echo "http_load --conns $conns --secs $secs --pipeline $pipeline (a ringio client), server on one core, runs alternating"
fi
for run in $(seq "$runs"); do
    [ "$runs" -gt 1 ] && echo "-- run $run"
    bench "ringio+hyper" 18080 target/release/examples/http --cores 1
    if [ "${HTTP_BENCH_PLAIN:-0}" = 1 ]; then
        bench "ringio-plain" 18082 target/release/examples/http --cores 1 --read plain
    fi
    bench "tokio+hyper" 18081 target/release/examples/http_tokio
done
if [ "$runs" -gt 1 ]; then
    # Medians over the runs, and the median of the per-run req/s ratios
    # (each ratio from two runs next to each other in time).
    awk '
        function median(a, n,   i, j, t) {
            for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
            return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
        }
        $1 == "ringio+hyper" { n++; r[n] = $2; rp[n] = $3; ru[n] = $4 + $5 }
        $1 == "ringio-plain" { k++; p[k] = $2; pp[k] = $3; pu[k] = $4 + $5 }
        $1 == "tokio+hyper" { m++; t[m] = $2; tp[m] = $3; tu[m] = $4 + $5; q[m] = r[m] / $2; if (k == m) qp[m] = p[m] / $2 }
        END {
            if (k > 0) printf "median of %d runs: ringio --read plain %.0f req/s, p99 %.2f ms, %.2f us/req; plain/tokio req/s %.3f\n", k, median(p, k), median(pp, k), median(pu, k), median(qp, k)
            printf "median of %d runs: ringio %.0f req/s, p99 %.2f ms, %.2f us/req; ", n, median(r, n), median(rp, n), median(ru, n)
            printf "tokio %.0f req/s, p99 %.2f ms, %.2f us/req; ringio/tokio req/s %.3f\n", median(t, m), median(tp, m), median(tu, m), median(q, m)
        }' "$results"
fi
rm -f "$results"
