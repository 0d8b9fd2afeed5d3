#!/usr/bin/env bash
# troika crawl and the Python peer crawlers (benchmarks/peers/py_crawler.py:
# asyncio+aiohttp with a Semaphore, and ThreadPoolExecutor+requests) against
# the same local page server, in one run, so the ratios come from one machine
# state. Pages take 100 ms, so the limit is concurrency / 0.1 s pages/s.
# Its wrk column runs 5 s whatever the crawl's length; for the crawl against
# wrk on equal work, rounds alternated, see benchmarks/crawl_vs_wrk.sh.
#
#   benchmarks/crawl_side_by_side.sh [CONCURRENCY...]   (default: 10 100)
#
# PAGES_PER_SLOT (default 20) sets the pages fetched per unit of concurrency;
# MODES (default "async threads") the troika crawl modes run; PYTHON=0 skips
# the Python crawlers.
# The page server: SERVER=URL uses one you started (it must answer
# /page/<n>?delay_ms=100); otherwise nginx with the echo module (Debian:
# nginx-light libnginx-mod-http-echo) is started when installed, as it is fast
# enough not to be the bottleneck on 2 cores, else benchmarks/peers/delay_server.py
# (aiohttp, one core: it saturates near 1000 pages/s). PY_SERVER=1 forces it.
set -euo pipefail
cd "$(dirname "$0")/.."
peers=${PEERS:-$PWD/benchmarks/peers}
per_slot=${PAGES_PER_SLOT:-20}
levels=("$@")
[ ${#levels[@]} -eq 0 ] && levels=(10 100)

[ "${PYTHON:-1}" = 0 ] || python3 -c 'import aiohttp, requests' 2>/dev/null || pip3 install -q aiohttp requests
# TROIKA=PATH runs that binary instead of building this checkout's (to set
# an older build beside a newer one, alternating runs).
if [ -n "${TROIKA:-}" ]; then
  troika=$TROIKA
else
  cargo build --release --quiet -p troika-cli
  troika=./target/release/troika
fi

server_pid=
nginx_dir=
cleanup() {
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null || true
  [ -n "$nginx_dir" ] && nginx -p "$nginx_dir" -c "$nginx_dir/nginx.conf" -s stop 2>/dev/null || true
}
trap cleanup EXIT
. benchmarks/nginx_pages.sh
if [ -z "${SERVER:-}" ]; then
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  SERVER="http://127.0.0.1:$port"
  if [ -z "${PY_SERVER:-}" ] && command -v nginx >/dev/null && [ -f "$echo_module" ]; then
    nginx_dir=$(mktemp -d)
    start_nginx_pages "$nginx_dir" "$port"
    server_kind="nginx + echo_sleep"
  else
    python3 "$peers/delay_server.py" "$port" &
    server_pid=$!
    server_kind="delay_server.py (aiohttp)"
  fi
  for _ in $(seq 100); do
    curl -fs "$SERVER/page/0?delay_ms=0" >/dev/null 2>&1 && break
    sleep 0.1
  done
fi

echo "== machine: $(nproc) cores; server: $SERVER, ${server_kind:-yours} (100 ms pages)"
for conc in "${levels[@]}"; do
  n=$((conc * per_slot))
  limit=$((conc * 10))
  urls=$(mktemp)
  for i in $(seq 0 $((n - 1))); do echo "$SERVER/page/$i?delay_ms=100"; done >"$urls"
  echo
  echo "-- concurrency $conc, $n pages (limit $limit pages/s)"
  # Warm the server up with as many connections first: wrk, which runs
  # last, meets a server that has already served them all, so the crawlers
  # should too (a fresh nginx worker is slower to accept its first 1,000).
  # Then a second's rest: wrk leaves $conc requests behind in the server,
  # which would still be sleeping and closing while the first crawler ran.
  if command -v wrk >/dev/null; then
    wrk -c "$conc" -t 2 -d 1s "$SERVER/page/0?delay_ms=100" >/dev/null 2>&1 || true
    sleep 1
  fi
  async_rate=
  for mode in ${MODES:-async threads}; do
    summary=$(/usr/bin/time -f "(time: peak RSS %M KB)" "$troika" crawl --mode "$mode" --concurrency "$conc" --input "$urls" 2>&1 >/dev/null | tail -2 | tr '\n' ' ')
    echo "troika crawl --mode $mode: $summary"
    if [ "$mode" = async ]; then
      async_rate=$(sed -n 's/.*(\([0-9.]*\) pages\/s).*/\1/p' <<<"$summary")
    fi
  done
  if [ "${PYTHON:-1}" != 0 ]; then
    python3 "$peers/py_crawler.py" "$SERVER" "$n" "$conc" | sed 's/^/python /'
  fi
  if [ -n "$async_rate" ]; then
    echo "troika async: $(awk -v r="$async_rate" -v l="$limit" 'BEGIN {printf "%.1f", 100 * r / l}') % of the limit"
  fi
  if command -v wrk >/dev/null; then
    rps=$(wrk -c "$conc" -t 2 -d 5s "$SERVER/page/0?delay_ms=100" | awk '/Requests\/sec/ {print $2}')
    echo "wrk -c $conc (the server's ceiling with $conc connections): $rps requests/s"
    if [ -n "$async_rate" ] && [ -n "$rps" ]; then
      echo "troika async: $(awk -v r="$async_rate" -v w="$rps" 'BEGIN {printf "%.1f", 100 * r / w}') % of wrk"
    fi
  fi
  rm -f "$urls"
done
