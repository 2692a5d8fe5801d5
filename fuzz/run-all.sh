#!/usr/bin/env bash
# Runs every fuzz target for SECONDS (default 600) one after another, then minimizes each
# corpus. Logs go to fuzz/logs/<target>.log; the last line of each is libFuzzer's summary.
# Usage: fuzz/run-all.sh [seconds] [target...]
set -euo pipefail
cd "$(dirname "$0")"
secs="${1:-600}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(parse_list parse_json config http_response socks_reply chunked http_head judge_echo forwarded)
fi
mkdir -p logs
# Same profile as `fuzz run` below (release with debug assertions and overflow checks, ASan):
# `build --release` would build without them and `run` would then rebuild anyway.
cargo +nightly fuzz build
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t" "regressions/$t"
    echo "== $t: ${secs}s" | tee "logs/$t.log"
    # -timeout: an input taking > 10 s is a hang; -rss_limit_mb/-malloc_limit_mb: unbounded
    # allocation is a failure. Crashes land in artifacts/<t>/ and fail this script.
    cargo +nightly fuzz run "$t" "corpus/$t" -- -max_total_time="$secs" -timeout=10 \
        -rss_limit_mb=2048 -malloc_limit_mb=1024 -max_len=65536 -print_final_stats=1 >>"logs/$t.log" 2>&1
    tail -n 12 "logs/$t.log"
done
