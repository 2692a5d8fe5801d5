#!/usr/bin/env bash
# Writes a config and an env file with a generated API key, then tells you how to start.
# Interactive by default; `--yes` takes every default without asking.
set -euo pipefail
yes=0
[ "${1:-}" = "--yes" ] && yes=1
dir=${QUICKSTART_DIR:-.}

ask() { # ask VAR "question" default
  local var=$1 q=$2 def=$3 ans=""
  if [ $yes = 0 ]; then read -r -p "$q [$def]: " ans || true; fi
  printf -v "$var" '%s' "${ans:-$def}"
}

listen="" storage="" mode="" judge="" concurrency=""
ask listen "API listen address" "127.0.0.1:8080"
ask storage "Storage (file, sqlite, redis)" "file"
ask mode "Check mode (full-http, connect-only)" "full-http"
ask judge "Judge URLs, space-separated (keep an https:// one: tunnels are checked on it)" "http://httpbin.org/get https://httpbin.org/get"
ask concurrency "Checks in flight" "10000"
case "$storage" in
  file) store='{"type": "file", "path": "data/proxies.json"}' ;;
  sqlite) store='{"type": "sqlite", "path": "data/proxies.sqlite3"}' ;;
  redis) store='{"type": "redis", "redis_url": "redis://127.0.0.1:6379"}' ;;
  *) echo "storage must be file, sqlite or redis" >&2; exit 2 ;;
esac
judges=""
for j in $judge; do judges="$judges${judges:+, }\"$j\""; done
# 256 bits each, from the kernel's CSPRNG.
key=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
grafana=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
mkdir -p "$dir"
umask 077
cat > "$dir/config.json" <<JSON
{
  "sources": [
    "https://raw.githubusercontent.com/TheSpeedX/PROXY-List/master/http.txt",
    {"url": "https://raw.githubusercontent.com/TheSpeedX/PROXY-List/master/socks5.txt", "protocol": "socks5"}
  ],
  "checker": {"mode": "$mode", "judge_url": [$judges], "concurrency_total": $concurrency},
  "api": {"listen": "$listen"},
  "storage": $store,
  "log": {"level": "info", "format": "json"}
}
JSON
cat > "$dir/.env" <<ENV
PROXY_API_KEY=$key
# Grafana's admin password (docker compose --profile monitoring).
GRAFANA_ADMIN_PASSWORD=$grafana
ENV
echo "wrote $dir/config.json and $dir/.env (API key inside, mode 0600)"
echo "start:  set -a; . $dir/.env; set +a; proxy-checker serve --config $dir/config.json"
echo "query:  curl -H \"X-Api-Key: \$PROXY_API_KEY\" http://$listen/get-proxy"
