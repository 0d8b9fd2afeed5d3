#!/usr/bin/env bash
# Two troika binaries compared on the payload workload (with procspawn and
# memcpy in the same run, --compare-rust) and the process pool's overhead
# workload, alternated A B A B so a shared machine's load falls on both alike.
# Each binary needs troika-rust-peers beside it (cargo build --release -p
# troika-cli -p troika-rust-peers; copy both out of target/release).
#
#   benchmarks/payload_before_after.sh OLD/troika NEW/troika [ROUNDS] [SIZES]
#
# Prints `uptime` before each run, then the runs' tables.
set -euo pipefail
old=$1 new=$2 rounds=${3:-2} sizes=${4:-8,65536,1048576,67108864}

for round in $(seq 1 "$rounds"); do
  for side in old new; do
    bin=${!side}
    echo "=== round $round: $side ($bin)"
    uptime
    "$bin" bench --workload payload --modes processes --compare-rust --payload-sizes "$sizes" --repeat 3
    uptime
    "$bin" bench --workload overhead --modes processes --repeat 3
  done
done
