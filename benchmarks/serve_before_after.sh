#!/usr/bin/env bash
# Two builds of `troika serve` compared on the hot paths, interleaved so a
# shared machine's load falls on both alike: per round, each binary in turn
# (default config, process pool) gets GET / at 1000 connections and
# /is_prime/112272535095293?algorithm=miller-rabin at 50 connections (wrk -t2,
# SECONDS each); prints req/s, p50/p99 and the server's VmHWM/VmRSS after the
# GET / run.
#
#   benchmarks/serve_before_after.sh BEFORE_BIN AFTER_BIN [ROUNDS] [SECONDS]
#
# Needs wrk (apt-get install -y wrk). Listens on 127.0.0.1:${PORT:-28180}.
set -euo pipefail
before=$1 after=$2 rounds=${3:-3} secs=${4:-10} port=${PORT:-28180}
command -v wrk >/dev/null || { echo "wrk not found: apt-get install -y wrk" >&2; exit 1; }

one() {
  local bin=$1 label=$2 work pid a b
  work=$(mktemp -d)
  printf '[server]\ndata_dir = "%s"\n' "$work" > "$work/serve.toml"
  setsid "$bin" serve --port "$port" --config "$work/serve.toml" > "$work/out" 2> "$work/log" &
  pid=$!
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.1
  done
  a=$(wrk -t2 -c1000 -d"${secs}s" --timeout 5s --latency "http://127.0.0.1:$port/" 2>&1)
  local mem
  mem=$(awk '/VmHWM|VmRSS/ {printf "%s %s kB ", $1, $2}' "/proc/$pid/status")
  b=$(wrk -t2 -c50 -d"${secs}s" --timeout 5s --latency \
    "http://127.0.0.1:$port/is_prime/112272535095293?algorithm=miller-rabin" 2>&1)
  printf '%-7s GET / %8s req/s p50 %-9s p99 %-9s %s| miller-rabin %9s req/s p50 %-8s | load %s\n' \
    "$label" "$(awk '/^Requests\/sec/ {print $2}' <<<"$a")" \
    "$(awk '/^ +50%/ {print $2}' <<<"$a")" "$(awk '/^ +99%/ {print $2}' <<<"$a")" "$mem" \
    "$(awk '/^Requests\/sec/ {print $2}' <<<"$b")" "$(awk '/^ +50%/ {print $2}' <<<"$b")" \
    "$(cut -d' ' -f1 /proc/loadavg)"
  kill -TERM -- "-$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  rm -rf "$work"
}

echo "== $(nproc) cores; $before vs $after, $rounds rounds, wrk ${secs}s a row"
for _ in $(seq "$rounds"); do
  one "$before" before
  one "$after" after
done
