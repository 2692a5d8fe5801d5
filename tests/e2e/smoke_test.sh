#!/usr/bin/env bash
# End-to-end smoke test: the real binaries (farm + serve), every endpoint with curl.
# Usage: tests/e2e/smoke_test.sh [path/to/proxy-checker] [path/to/proxy-farm]
set -euo pipefail
BIN=${1:-target/release/proxy-checker}
FARM=${2:-target/release/proxy-farm}
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
fail() { echo "SMOKE FAIL: $*" >&2; exit 1; }

"$FARM" --working 40 --refused 10 --out "$work" > "$work/farm.json" &
pids+=($!)
for _ in $(seq 1 100); do [ -s "$work/farm.json" ] && break; sleep 0.05; done
field() { python3 -c "import json,sys; print(json.load(open('$work/farm.json'))['$1'])"; }
list=$(field list_url); judge=$(field judge_url)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
key=smoke-test-key-0123456789
cat > "$work/config.json" <<JSON
{"sources": ["$list"], "aggregation": {"allow_private_sources": true}, "checker": {"judge_url": "$judge", "allow_private": true, "timeout_ms": 3000, "connect_timeout_ms": 1000},
 "api": {"listen": "127.0.0.1:$port", "api_keys": ["$key"]}, "storage": {"type": "sqlite", "path": "$work/pool.sqlite3"},
 "log": {"level": "info", "format": "json"}}
JSON
"$BIN" check-config "$work/config.json" >/dev/null || fail "check-config"
"$BIN" serve --config "$work/config.json" > "$work/serve.log" 2>&1 &
serve=$!
pids+=("$serve")
base="http://127.0.0.1:$port"
for _ in $(seq 1 200); do curl -fsS "$base/ready" >/dev/null 2>&1 && break; sleep 0.05; done

expect() { # expect STATUS METHOD PATH [curl args...]
  local want=$1 method=$2 path=$3; shift 3
  local got
  got=$(curl -s -o "$work/body" -w '%{http_code}' -X "$method" "$@" "$base$path")
  [ "$got" = "$want" ] || fail "$method $path: status $got, want $want: $(head -c 300 "$work/body")"
}
K=(-H "X-Api-Key: $key")
expect 200 GET /health;            grep -qx ok "$work/body" || fail "/health body"
expect 200 GET /ready
expect 200 GET /metrics;           grep -q '^proxychecker_alive_proxies 40' "$work/body" || fail "alive gauge"
expect 200 GET '/judge?pc_nonce=n1'; grep -q '"pc_nonce":"n1"' "$work/body" || fail "judge echo"
expect 200 GET /openapi.json;      grep -q '"openapi"' "$work/body" || fail "openapi"
expect 401 GET /get-proxy
expect 401 GET /get-proxy -H "X-Api-Key: wrong-wrong-wrong-wrong"
expect 200 GET /get-proxy "${K[@]}"; [ "$(wc -l < "$work/body")" = 1 ] || fail "one proxy"
expect 200 GET "/get-proxy?api_key=$key&limit=5"; [ "$(wc -l < "$work/body")" = 5 ] || fail "limit=5"
expect 200 GET '/get-proxy?all=1' "${K[@]}"; [ "$(wc -l < "$work/body")" = 40 ] || fail "all=1"
expect 200 GET '/get-proxy?format=json&order=fastest&limit=3' "${K[@]}"; grep -q '"latency_ms"' "$work/body" || fail "json"
expect 200 GET '/get-proxy?format=csv&order=random&limit=2' "${K[@]}"; head -1 "$work/body" | grep -q '^proxy,protocol' || fail "csv"
expect 200 GET '/get-proxy?protocol=http,https&max_latency_ms=5000' "${K[@]}"
expect 503 GET '/get-proxy?protocol=socks5' "${K[@]}"; grep -q no_proxy "$work/body" || fail "503 body"
expect 400 GET '/get-proxy?limit=zero' "${K[@]}"; grep -q '"parameter":"limit"' "$work/body" || fail "400 body"
expect 200 GET /stat "${K[@]}";    grep -q '"alive":40' "$work/body" || fail "stat"
expect 202 POST /reload "${K[@]}"; grep -q '"round_id":2' "$work/body" || fail "reload id"
expect 404 GET /nowhere

kill -TERM "$serve"
wait "$serve" && code=0 || code=$?
[ "$code" = 0 ] || fail "serve exited $code on SIGTERM"
grep -q '"message":"round finished"' "$work/serve.log" || fail "no round summary in the log"
echo "smoke test: all endpoints OK"
