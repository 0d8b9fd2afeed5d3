#!/usr/bin/env bash
# `troika run` against xargs -P and GNU parallel, in one run: N jobs of `true`
# two at a time (issue 13: troika at or below xargs). With RSS_MB set, also
# troika's peak RSS for 8 jobs printing RSS_MB MiB each (issue 13: under 100 MB
# for 1024; the output is spooled to $TMPDIR, so it needs 8 x RSS_MB free there).
#
#   benchmarks/run_side_by_side.sh [N]      (default 1000; needs `parallel` for the GNU row)
#   RSS_MB=1024 benchmarks/run_side_by_side.sh
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-1000}
cargo build --release --quiet
troika=./target/release/troika
time_of() { local start end; start=$(date +%s.%N); "$@" >/dev/null 2>&1; end=$(date +%s.%N); echo "$end - $start" | bc; }
seq "$n" > /tmp/troika-run-inputs.$$
trap 'rm -f /tmp/troika-run-inputs.$$' EXIT
x=$(time_of sh -c "xargs -P 2 -n 1 true < /tmp/troika-run-inputs.$$")
t=$(time_of sh -c "$troika run -j 2 -- true < /tmp/troika-run-inputs.$$")
printf '%-14s %8.3f s\n' "xargs -P 2" "$x" "troika run" "$t"
if command -v parallel >/dev/null; then
  g=$(time_of sh -c "parallel -j 2 true < /tmp/troika-run-inputs.$$")
  printf '%-14s %8.3f s\n' "GNU parallel" "$g"
  echo "troika / xargs = $(echo "scale=2; $t / $x" | bc); GNU parallel / troika = $(echo "scale=2; $g / $t" | bc)"
else
  echo "troika / xargs = $(echo "scale=2; $t / $x" | bc) (GNU parallel not installed)"
fi
if [ -n "${RSS_MB:-}" ]; then
  peak=$( { /usr/bin/time -f '%M' "$troika" run -j 8 -- sh -c "head -c ${RSS_MB}M /dev/zero" ::: 1 2 3 4 5 6 7 8 >/dev/null; } 2>&1 | tail -1)
  printf 'troika run -j 8, 8 x %s MiB of output: peak RSS %s kB\n' "$RSS_MB" "$peak"
fi
