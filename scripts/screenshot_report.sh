#!/usr/bin/env bash
# Render `troika bench --report` in headless Chromium and save a screenshot,
# to see the report as a reader does.
#
#   scripts/screenshot_report.sh [OUT.png] [bench options...]
# Needs Debian's chromium (`apt-get install chromium`); installs it if missing
# and running as root.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-target/report.png}
shift || true
if ! command -v chromium >/dev/null; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "chromium is not installed (apt-get install chromium)" >&2
    exit 1
  fi
fi
cargo build --release --quiet
report=$(realpath -m target/report.html)
./target/release/troika bench --report "$report" "$@"
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
  --disable-background-networking --disable-component-update --disable-sync \
  --user-data-dir="$profile" --hide-scrollbars --window-size=940,4000 \
  --screenshot="$(realpath -m "$out")" "file://$report" 2>/dev/null
echo "screenshot: $out"
