#!/usr/bin/env bash
# An offline first check: a loopback "internet" (proxy lists, a judge, 300 proxies of every
# protocol and of the kinds public lists hold: working, slow, dead, captive portals,
# wrong credentials, hostile), then one `proxy-checker check` against it. No network needed.
# Usage: ./demo.sh   (or: make demo)
set -euo pipefail
cd "$(dirname "$0")"
cargo build --release --quiet -p proxy-checker -p proxy-farm
dir=$(mktemp -d)
target/release/proxy-farm --demo --out "$dir" > "$dir/farm.json" &
farm=$!
trap 'kill "$farm" 2>/dev/null || true; rm -rf "$dir"' EXIT
for _ in $(seq 1 100); do
  [ -s "$dir/check.json" ] && [ -s "$dir/farm.json" ] && break
  sleep 0.1
done
[ -s "$dir/check.json" ] || { echo "the farm did not start" >&2; exit 1; }
echo "== proxy-checker check --config check.json (the farm's list and judge, on loopback)"
target/release/proxy-checker check --config "$dir/check.json" --output-dir "$dir/out" --log-level error
echo
echo "== the live ones, per protocol (--output-dir):"
wc -l "$dir"/out/*.txt | sed "s#$dir/out/##"
echo
echo "Every dead proxy above has one reason; the farm knows the truth for each of them"
echo "(truth.json). Next: point --source at real lists and drop --allow-private; see README."
