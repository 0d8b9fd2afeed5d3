#!/usr/bin/env bash
# Builds troika's release binaries and benches and copies them to DIR, for
# benchmarks/core_before_after.sh. Run it in a checkout of the build to keep.
#
#   benchmarks/collect_build.sh DIR
set -euo pipefail
dir=$1
mkdir -p "$dir"
cargo build --release -p troika-cli
cargo build --release -p troika-workloads --example process_pool_overhead
cp target/release/troika target/release/examples/process_pool_overhead "$dir/"
for exe in $( { cargo test --release -p troika --test ipc_roundtrip --no-run 2>&1;
                cargo bench -p troika -p troika-workloads --no-run 2>&1; } \
              | grep -o 'target/release/deps/[a-z_]*-[0-9a-f]*' ); do
  cp "$exe" "$dir/"
done
ls "$dir"
