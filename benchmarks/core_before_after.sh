#!/usr/bin/env bash
# Two builds of troika's core compared in one run, interleaved so a shared
# machine's load falls on both alike. Each build is a directory holding:
#   troika                     (cargo build --release -p troika-cli)
#   process_pool_overhead      (cargo build --release -p troika-workloads --example process_pool_overhead)
#   ipc_roundtrip-*            (cargo test --release -p troika --test ipc_roundtrip --no-run)
#   process_pool-*, thread_pool-*  (cargo bench -p troika -p troika-workloads --no-run)
# `benchmarks/collect_build.sh DIR` copies them out of target/release.
#
#   benchmarks/core_before_after.sh BEFORE_DIR AFTER_DIR [ROUNDS]
#
# Prints, per round and build: `troika bench --repeat 5` (overhead and cpu
# workloads, JSON lines), the process-pool example's figures, the ipc round
# trips, and the criterion benches' estimates.
set -euo pipefail
before=$1 after=$2 rounds=${3:-2}

one() {
  local dir=$1 label=$2
  echo "=== $label: troika bench --repeat 5 (overhead, cpu)"
  "$dir/troika" bench --workload overhead --repeat 5 --json
  "$dir/troika" bench --workload cpu --modes threads,processes,async --repeat 5 --json
  echo "=== $label: process_pool_overhead"
  "$dir/process_pool_overhead"
  echo "=== $label: ipc round trips"
  "$(ls "$dir"/ipc_roundtrip-* | head -1)" --ignored --nocapture --test-threads=1 2>&1 | grep -E 'p50|round' || true
  for bench in process_pool thread_pool; do
    echo "=== $label: criterion $bench"
    "$(ls "$dir"/$bench-* | head -1)" --bench --noplot --warm-up-time 1 --measurement-time 3 2>&1 \
      | grep -E '^[a-z_/0-9 ]+$|time:|thrpt:' || true
  done
}

for round in $(seq "$rounds"); do
  echo "##### round $round"
  one "$before" before
  one "$after" after
done
