#!/usr/bin/env bash
# Run troika's bench and the Python peers (benchmarks/peers) in one go, on the
# same machine, and print both so the ratios come from one run.
#
#   benchmarks/side_by_side.sh [N]     (N: py_primes.py calls, default 100)
set -euo pipefail
cd "$(dirname "$0")/.."
calls=${1:-100}
peers=${PEERS:-$PWD/benchmarks/peers}

cargo build --release --quiet
echo "== machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo
echo "== troika bench (cpu: 100 x is_prime(112272535095293); overhead: 100000 trivial tasks)"
./target/release/troika bench
echo
if command -v python3 >/dev/null && [ -d "$peers" ]; then
  echo "== Python peers ($(python3 --version))"
  echo "-- py_primes.py $calls (the CPU experiment)"
  python3 "$peers/py_primes.py" "$calls"
  echo "-- py_overhead.py 20000"
  python3 "$peers/py_overhead.py" 20000
  echo "-- py_thread_roundtrip.py 10000"
  python3 "$peers/py_thread_roundtrip.py" 10000
else
  echo "(python3 or $peers not found: Python peers skipped)"
fi
