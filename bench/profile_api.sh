#!/usr/bin/env bash
# Profiles `/get-proxy` under load: `serve` (release) with a 20,000-proxy snapshot from the
# farm, wrk -t1 -c256 for 20 s, `perf record -g` of serve for 12 s of it. Leaves
# /tmp/perf.data (read with `perf report -i /tmp/perf.data --no-children`) and the wrk
# output in /tmp/prof_wrk.txt. Needs perf and wrk; build first (cargo build --release).
# QUERY='?limit=10&format=json' profiles that answer instead of the default one.
set -euo pipefail
rel="$(cd "$(dirname "$0")/.." && pwd)/target/release"
tmp=$(mktemp -d)
key=bench-key-0123456789abcdef
"$rel/proxy-farm" --working 20000 --out "$tmp" --threads 1 > "$tmp/farm.json" &
farm=$!
sleep 1
list=$(python3 -c "import json,sys;print(json.load(open(sys.argv[1]))['list_url'])" "$tmp/farm.json")
judge=$(python3 -c "import json,sys;print(json.load(open(sys.argv[1]))['judge_url'])" "$tmp/farm.json")
cat > "$tmp/c.json" <<JSON
{"sources": ["$list"], "aggregation": {"interval_secs": 86400, "allow_private_sources": true},
 "checker": {"judge_url": "$judge", "allow_private": true, "concurrency_total": 25000},
 "api": {"listen": "127.0.0.1:18099", "api_keys": ["$key"], "rate_limit_per_minute": 10000000,
         "rate_limit_per_ip_per_minute": 10000000},
 "storage": {"type": "file", "path": "$tmp/snap.json"}, "log": {"level": "warn", "format": "json"}}
JSON
"$rel/proxy-checker" serve --config "$tmp/c.json" > "$tmp/serve.log" 2>&1 &
serve=$!
for _ in $(seq 1 300); do curl -sf localhost:18099/ready > /dev/null && break; sleep 0.2; done
kill "$farm"
wrk -t1 -c256 -d3s -H "X-Api-Key: $key" http://127.0.0.1:18099/get-proxy > /dev/null
wrk -t1 -c256 -d20s --latency -H "X-Api-Key: $key" "http://127.0.0.1:18099/get-proxy${QUERY:-}" > /tmp/prof_wrk.txt &
load=$!
sleep 2
perf record -F 499 -g -p "$serve" -o /tmp/perf.data -- sleep 12 2> /tmp/perf_rec.log
wait "$load"
kill "$serve"
grep -E "Requests/sec|99%" /tmp/prof_wrk.txt
