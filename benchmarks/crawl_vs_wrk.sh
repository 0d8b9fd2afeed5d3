#!/usr/bin/env bash
# troika crawl against wrk, the same work in the same run, several rounds
# alternated, medians (issue 16 item 5).
#
#   benchmarks/crawl_vs_wrk.sh [ROUNDS]        (default 6)
#
# Equal work: both sides open CONC (default 1000) new connections to the
# same nginx (100 ms pages, `echo_sleep 0.1`) inside their timed interval
# and keep them alive; wrk (`-t 2`) runs SECS seconds (default 5); the
# crawl fetches CONC x 10 x SECS pages, which is what the server can give
# CONC connections in SECS seconds, so a crawl at wrk's rate lasts as long
# as wrk. Each side's rate is what it counts over its own interval: wrk's
# completed requests over its run (the requests in flight when it stops are
# not counted), the crawl's pages over its wall time (from before it opens
# its first connection to its last line). Each round warms the server up
# with CONC connections for 1 s, rests 1 s, then runs the sides in an order
# that rotates round by round, with a 1 s rest between them.
#
# BUILDS="PATH..." (default: this checkout's release build) runs each of
# several troika binaries once a round, for an A/B comparison; an entry
# VAR=VALUE,VAR2=VALUE2:PATH runs PATH with those environment variables.
#
# Per side the script also reports CPU time (user + system, from
# /usr/bin/time) per request, and the nginx worker's CPU per request
# (from /proc/PID/stat), and the load average before each round.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-6}
conc=${CONC:-1000}
secs=${SECS:-5}
pages=$((conc * 10 * secs))
if [ -z "${BUILDS:-}" ]; then
  cargo build --release --quiet -p troika-cli
  BUILDS=./target/release/troika
fi
read -r -a builds <<<"$BUILDS"
command -v wrk >/dev/null || { echo "wrk is not installed (apt-get install wrk)" >&2; exit 2; }
. benchmarks/nginx_pages.sh
[ -f "$echo_module" ] || { echo "nginx's echo module is not installed (apt-get install nginx libnginx-mod-http-echo)" >&2; exit 2; }

work=$(mktemp -d)
cleanup() {
  nginx -p "$work" -c "$work/nginx.conf" -s stop 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
server="http://127.0.0.1:$port"
start_nginx_pages "$work" "$port"
for _ in $(seq 100); do
  curl -fs "$server/page/0" >/dev/null 2>&1 && break
  sleep 0.1
done
master=$(cat "$work/nginx.pid")
worker=$(pgrep -P "$master" | head -1)
# The nginx worker's CPU time so far, in clock ticks.
server_ticks() { awk '{print $14 + $15}' "/proc/$worker/stat"; }
hz=$(getconf CLK_TCK)
for i in $(seq 0 $((pages - 1))); do echo "$server/page/$i"; done >"$work/urls"

echo "== $(nproc) cores; nginx (1 worker) at $server, 100 ms pages; $conc connections;"
echo "== wrk -t 2 -d ${secs}s, crawl of $pages pages; $rounds rounds; builds: ${builds[*]}"
sides=(wrk "${!builds[@]}")
declare -A ratios
printf '%-6s %-5s %-10s %12s %12s %12s %8s\n' round load side "req/s" "cpu us/req" "srv us/req" "% wrk"
for round in $(seq 1 "$rounds"); do
  wrk -c "$conc" -t 2 -d 1s "$server/page/0" >/dev/null 2>&1 || true
  sleep 1
  load=$(cut -d' ' -f1 /proc/loadavg)
  # Rotate the order of the sides round by round.
  n=${#sides[@]}
  declare -A rate=()
  for k in $(seq 0 $((n - 1))); do
    side=${sides[$(((k + round) % n))]}
    s0=$(server_ticks)
    if [ "$side" = wrk ]; then
      out=$(/usr/bin/time -f 'cpu %U %S' wrk -c "$conc" -t 2 -d "${secs}s" "$server/page/0" 2>&1)
      r=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
      done_n=$(awk '/requests in/ {print $1}' <<<"$out")
      name=wrk
    else
      entry=${builds[$side]}
      vars=()
      if [[ $entry == *:* ]]; then
        IFS=, read -r -a vars <<<"${entry%%:*}"
        entry=${entry#*:}
      fi
      out=$(env "${vars[@]}" /usr/bin/time -f 'cpu %U %S' "$entry" crawl --concurrency "$conc" --input "$work/urls" 2>&1 >/dev/null || true)
      r=$(sed -n 's/.*(\([0-9.]*\) pages\/s).*/\1/p' <<<"$out")
      done_n=$(sed -n 's/.*: \([0-9]*\) pages (.*/\1/p' <<<"$out")
      errors=$(sed -n 's/.*, \([0-9]*\) errors,.*/\1/p' <<<"$out")
      [ "${errors:-0}" = 0 ] || echo "   (build $side: $errors errors)"
      name="b$side"
    fi
    s1=$(server_ticks)
    cpu=$(awk '/^cpu / {print $2 + $3}' <<<"$out")
    rate[$name]=${r:-0}
    cpu_us=$(awk -v c="$cpu" -v n="${done_n:-1}" 'BEGIN {printf "%.1f", 1e6 * c / n}')
    srv_us=$(awk -v t=$((s1 - s0)) -v hz="$hz" -v n="${done_n:-1}" 'BEGIN {printf "%.1f", 1e6 * t / hz / n}')
    printf '%-6s %-5s %-10s %12s %12s %12s\n' "$round" "$load" "$name" "${r:-?}" "$cpu_us" "$srv_us"
    sleep 1
  done
  for b in "${!builds[@]}"; do
    pct=$(awk -v r="${rate[b$b]}" -v w="${rate[wrk]}" 'BEGIN {printf "%.1f", (w > 0) ? 100 * r / w : 0}')
    ratios[$b]="${ratios[$b]:-} $pct"
    printf '%-6s %-5s %-10s %12s %12s %12s %8s\n' "$round" "$load" "b$b/wrk" "" "" "" "$pct"
  done
done
echo
for b in "${!builds[@]}"; do
  median=$(tr ' ' '\n' <<<"${ratios[$b]}" | grep . | sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}')
  echo "b$b (${builds[$b]}): % of wrk by round:${ratios[$b]}; median $median"
done
