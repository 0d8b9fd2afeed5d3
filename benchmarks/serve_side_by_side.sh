#!/usr/bin/env bash
# `troika serve` against the Python peer Flask app (benchmarks/peers/py_flask_app.py)
# under wrk, in one run, on the same machine (issue 6's numbers):
#   - GET / at 1000 connections (p50, requests/s, errors);
#   - GET /is_prime/112272535095293?algorithm=trial (the Python peer's trial division);
#   - the same with miller-rabin (troika only: the Flask app has only trial
#     division and ignores the parameter, so its row is the trial figure).
# troika runs with its default process pool; a second troika with
# --pool threads gives the is_prime rows for the thread pool too.
#
#   benchmarks/serve_side_by_side.sh [SECONDS]   (per wrk run, default 10)
#
# TROIKA_BIN=path/to/troika runs that binary instead of building
# target/release/troika (to compare two builds); RSS_SECS=0 skips the RSS run.
#
# Needs wrk (apt-get install -y wrk) and Flask (pip install flask). wrk runs
# on the same cores as the servers, so its own CPU use counts against both.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
peers=${PEERS:-$PWD/benchmarks/peers}
troika_port=${TROIKA_PORT:-18080}
flask_port=${FLASK_PORT:-18090}
threads_port=${THREADS_PORT:-18081}
command -v wrk >/dev/null || { echo "wrk not found: apt-get install -y wrk" >&2; exit 1; }
python3 -c 'import flask' 2>/dev/null || { echo "Flask not found: pip install flask" >&2; exit 1; }

bin=${TROIKA_BIN:-./target/release/troika}
[ -n "${TROIKA_BIN:-}" ] || cargo build --release --quiet -p troika-cli
work=$(mktemp -d)
pids=()
# Each server runs in a process group of its own (setsid), so the cleanup
# also ends Flask's ProcessPoolExecutor children.
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM -- "-$pid" 2>/dev/null || true; done
  sleep 1
  for pid in "${pids[@]}"; do kill -KILL -- "-$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
for port in "$troika_port" "$threads_port" "$flask_port"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "port $port is taken: set TROIKA_PORT / FLASK_PORT" >&2; exit 1
  fi
done
trap cleanup EXIT

# troika with its defaults (delays 0.1/0.2/0.3 s, demo file/db/api), logs to a file.
printf '[server]\ndata_dir = "%s"\n' "$work" > "$work/serve.toml"
setsid "$bin" serve --port "$troika_port" --config "$work/serve.toml" \
  > "$work/troika.out" 2> "$work/troika.log" &
pids+=($!)
setsid "$bin" serve --port "$threads_port" --pool threads --config "$work/serve.toml" \
  > "$work/troika-threads.out" 2> "$work/troika-threads.log" &
pids+=($!)
setsid python3 "$peers/py_flask_app.py" "$flask_port" > "$work/flask.log" 2>&1 &
pids+=($!)

wait_port() {
  for _ in $(seq 1 200); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.05
  done
  echo "nothing listening on port $1" >&2; exit 1
}
wait_port "$troika_port"
wait_port "$threads_port"
wait_port "$flask_port"

# One wrk run, summarised: p50, p99, requests/s, errors (socket errors + non-2xx).
run() {
  local name=$1 conns=$2 url=$3 out
  out=$(wrk -t2 -c"$conns" -d"${secs}s" --timeout 5s --latency "$url" 2>&1) || true
  local p50 p99 rps errs non2xx
  p50=$(awk '/^ +50%/ {print $2}' <<<"$out")
  p99=$(awk '/^ +99%/ {print $2}' <<<"$out")
  rps=$(awk '/^Requests\/sec/ {print $2}' <<<"$out")
  errs=$(grep -o 'Socket errors:.*' <<<"$out" || echo "Socket errors: none")
  non2xx=$(awk '/Non-2xx/ {print $5}' <<<"$out")
  printf '%-44s %6s conns  p50 %-9s p99 %-9s %10s req/s  non-2xx %-6s %s\n' \
    "$name" "$conns" "${p50:-?}" "${p99:-?}" "${rps:-?}" "${non2xx:-0}" "$errs"
}

echo "== machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "== troika serve (release; process pool unless marked threads) vs py_flask_app.py ($(python3 --version)), wrk ${secs}s per row"
t=http://127.0.0.1:$troika_port
tt=http://127.0.0.1:$threads_port
f=http://127.0.0.1:$flask_port
run "troika  GET /"                                    1000 "$t/"
run "flask   GET /"                                      50 "$f/"
# What the cores can do right now: the trial-division check, 200 times on 2 threads,
# without HTTP (the ceiling for the trial row; the machine may be shared).
printf '112272535095293\n%.0s' $(seq 200) > "$work/seed200"
start=$(date +%s.%N)
"$bin" primes --algorithm trial --mode threads --input "$work/seed200" >/dev/null
end=$(date +%s.%N)
echo "   (ceiling now: troika primes, 200 x is_prime(112272535095293) trial on threads: $(echo "scale=1; 200 / ($end - $start)" | bc) checks/s, no HTTP)"
run "troika  GET /is_prime/<seed>?algorithm=trial"       50 "$t/is_prime/112272535095293?algorithm=trial"
run "troika  GET /is_prime/<seed>?algorithm=miller-rabin" 50 "$t/is_prime/112272535095293?algorithm=miller-rabin"
run "troika threads /is_prime/<seed>?algorithm=trial"    50 "$tt/is_prime/112272535095293?algorithm=trial"
run "troika threads /is_prime/<seed>?algorithm=m-r"      50 "$tt/is_prime/112272535095293?algorithm=miller-rabin"
# Last: Flask keeps working through a backlog long after wrk stops (the
# trial checks on its process pool, the 1000-connection queue), which would
# take the cores from whatever ran next.
run "flask   GET /is_prime/<seed> (trial)"               50 "$f/is_prime/112272535095293"
run "flask   GET /"                                    1000 "$f/"

# RSS over mixed valid and invalid load (issue: flat within 10 % over 60 s).
rss_secs=${RSS_SECS:-60}
if [ "$rss_secs" -gt 0 ]; then
  cat > "$work/mixed.lua" <<'LUA'
local paths = {
  "/is_prime/2,3,4,5,6,7,8,9,10,11", "/is_prime/112272535095293", "/is_prime/abc",
  "/is_prime/1,,2", "/is_prime/-5", "/is_prime/18446744073709551616", "/is_prime/",
  "/nope", "/healthz", "/is_prime/7?algorithm=bogus", "/is_prime/%D9%A1",
}
local i = 0
request = function()
  i = i + 1
  return wrk.format("GET", paths[(i % #paths) + 1])
end
LUA
  rss() { awk '/VmRSS/ {print $2}' "/proc/${pids[0]}/status"; }
  wrk -t2 -c50 -d5s -s "$work/mixed.lua" "$t" >/dev/null 2>&1   # warm up
  before=$(rss)
  out=$(wrk -t2 -c50 -d"${rss_secs}s" -s "$work/mixed.lua" "$t" 2>&1)
  after=$(rss)
  echo "troika  mixed valid/invalid load ${rss_secs}s: $(awk '/^Requests\/sec/ {print $2}' <<<"$out") req/s;" \
    "RSS ${before} kB -> ${after} kB ($(awk -v a="$before" -v b="$after" 'BEGIN {printf "%+.1f %%", (b - a) * 100 / a}'))"
fi
echo
echo "== troika /metrics after the run (pool and shedding)"
curl -s "$t/metrics" | grep -E '^troika_serve_(pool|shed|requests_total)' || true
rss=$(awk '/VmRSS/ {print $2, $3}' "/proc/${pids[0]}/status" 2>/dev/null || echo '?')
echo "== troika RSS at the end: $rss"
