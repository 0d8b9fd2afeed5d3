#!/usr/bin/env bash
# troika's cluster executor against Celery and Dask, in one run, on this
# machine, 2 workers each, the same task counts, and one table at the end:
# trivial tasks/s, a trivial task's round trip p50/p99, and the wall time of
# the seeds' CPU experiment (CPU_TASKS x is_prime(112272535095293)) on the 2
# workers, with its parallel efficiency against a serial run of the same
# language.
#
#   benchmarks/cluster_side_by_side.sh [TASKS] [CPU_TASKS]   (default 2000 100)
#
# Celery uses a redis-server that this script starts on a free port of
# 127.0.0.1 without persistence (`--save ''`) and stops at the end; Dask runs
# a LocalCluster of 2 worker processes; troika runs
# `troika bench --modes cluster`, which starts its own local Redis and
# workers. Python packages are installed with pip only when missing
# (celery redis 'dask[distributed]').
#
# Environment: PEERS_ONLY=1 skips troika (no release build); TROIKA=PATH
# uses that troika binary instead of building target/release/troika.
set -euo pipefail
cd "$(dirname "$0")/.."
tasks=${1:-2000}
cpu_tasks=${2:-100}

work=$(mktemp -d "${TMPDIR:-/tmp}/troika-cluster-sbs.XXXXXX")
results="$work/results.jsonl"
: >"$results"
redis_pid=
cleanup() {
  if [ -n "$redis_pid" ]; then
    kill "$redis_pid" 2>/dev/null || true
    wait "$redis_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

echo "== machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "== $tasks trivial tasks and $cpu_tasks x is_prime(112272535095293), 2 workers per system"

# --- Python and its packages ------------------------------------------------
if ! python3 -c 'import celery, redis, distributed' 2>/dev/null; then
  echo "== pip install celery redis 'dask[distributed]' (missing)"
  python3 -m pip install -q celery redis 'dask[distributed]'
fi
python3 -c 'import celery, distributed, sys
print("== Python", sys.version.split()[0], "celery", celery.__version__, "distributed", distributed.__version__)'

# --- a local Redis for Celery -----------------------------------------------
if ! command -v redis-server >/dev/null; then
  echo "redis-server not found: apt-get install redis-server (.ci/run installs it)" >&2
  exit 1
fi
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
redis-server --bind 127.0.0.1 --port "$port" --save '' --appendonly no \
  --dir "$work" --logfile "$work/redis.log" &
redis_pid=$!
# Wait for the first PONG (an outer deadline of 30 s is the failure path).
python3 - "$port" <<'EOF'
import socket, sys, time
deadline = time.monotonic() + 30
while True:
    try:
        with socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=1) as s:
            s.sendall(b"PING\r\n")
            if s.recv(64).startswith(b"+PONG"):
                break
    except OSError:
        pass
    if time.monotonic() > deadline:
        sys.exit("redis-server did not answer PING within 30 s")
    time.sleep(0.02)
EOF
echo "== $(redis-server --version | cut -d' ' -f1-3) on 127.0.0.1:$port (no persistence)"

# --- the peers --------------------------------------------------------------
echo "-- serial Python is_prime(112272535095293), 10 calls, before any peer runs (the peers' efficiency baseline)"
python3 - "$cpu_tasks" <<'EOF' | tee -a "$results"
import json, sys, time
sys.path.insert(0, "benchmarks/peers")
from peer_common import PRIME, is_prime
t0 = time.perf_counter()
for _ in range(10):
    assert is_prime(PRIME)
per_call = (time.perf_counter() - t0) / 10
print(json.dumps({"peer": "python-serial", "workload": "cpu", "workers": 1,
                  "tasks": int(sys.argv[1]), "wall_s": round(per_call * int(sys.argv[1]), 3),
                  "estimated": True}))
EOF

# --- troika -----------------------------------------------------------------
if [ "${PEERS_ONLY:-0}" = 1 ]; then
  echo "-- troika skipped (PEERS_ONLY=1)"
else
  troika=${TROIKA:-}
  if [ -z "$troika" ]; then
    cargo build --release --quiet -p troika-cli
    troika=target/release/troika
  fi
  for run in "overhead $tasks" "cpu $cpu_tasks"; do
    set -- $run
    echo "-- troika bench --modes cluster --workload $1 --tasks $2 --workers 2 --json"
    if "$troika" bench --modes cluster --workload "$1" --tasks "$2" --workers 2 --json \
      >"$work/troika.out" 2>"$work/troika.err"; then
      cat "$work/troika.out"
      cat "$work/troika.out" >>"$results"
    else
      cat "$work/troika.err" >&2
      if grep -qi 'cluster' "$work/troika.err"; then
        echo "   (this troika has no cluster mode yet: its $1 row is left out)"
      else
        echo "   (troika bench failed: its $1 row is left out)"
      fi
    fi
  done
fi

# --- the peers, after troika (their processes may linger a moment) -----
echo "-- celery_peer.py $tasks $cpu_tasks (prefork, 2 processes; Redis broker and result backend)"
CELERY_PEER_URL="redis://127.0.0.1:$port/0" python3 benchmarks/peers/celery_peer.py "$tasks" "$cpu_tasks" | tee -a "$results"
echo "-- dask_peer.py $tasks $cpu_tasks (LocalCluster, 2 worker processes)"
python3 benchmarks/peers/dask_peer.py "$tasks" "$cpu_tasks" | tee -a "$results"


# --- one table ----------------------------------------------------------------
echo
python3 - "$results" <<'EOF'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip().startswith("{")]
def system(r):
    if "peer" in r:
        return r["peer"]
    return "troika " + r["mode"]
serial = {}
for r in rows:
    if r.get("workload") == "cpu" and (r.get("peer") == "python-serial" or r.get("mode") == "serial"):
        serial["python" if "peer" in r else "troika"] = r["wall_s"] / r["tasks"]
order, table = [], {}
for r in rows:
    s = system(r)
    if s == "python-serial" or r.get("mode") == "serial":
        continue
    if s not in table:
        order.append(s)
        table[s] = {}
    t = table[s]
    if r["workload"] == "overhead":
        t["tps"] = f'{r["tasks_per_s"]:,.0f}'
        t["rt"] = f'{r["p50_us"] / 1000:.2f} / {r["p99_us"] / 1000:.2f}'
    elif r["workload"] == "cpu":
        t["cpu"] = f'{r["wall_s"]:.2f}'
        if "efficiency" in r:
            eff = r["efficiency"]
        else:
            base = serial.get("python")
            eff = base * r["tasks"] / r["wall_s"] / r["workers"] if base else None
        t["eff"] = f"{eff:.2f}" if eff is not None else "-"
        t["cpu_tasks"] = r["tasks"]
head = ["system (2 workers)", "trivial tasks/s", "round trip p50 / p99 ms", "cpu wall s", "cpu efficiency"]
lines = [head] + [[s, table[s].get("tps", "-"), table[s].get("rt", "-"),
                   table[s].get("cpu", "-"), table[s].get("eff", "-")] for s in order]
widths = [max(len(l[i]) for l in lines) for i in range(len(head))]
for i, l in enumerate(lines):
    print("  ".join(c.ljust(w) if j == 0 else c.rjust(w) for j, (c, w) in enumerate(zip(l, widths))))
    if i == 0:
        print("  ".join("-" * w for w in widths))
if "python" in serial:
    print(f'(peers\' efficiency: against serial Python, {serial["python"]:.3f} s per is_prime call, from 10 calls;'
          ' troika\'s: against its own serial row)')
EOF
