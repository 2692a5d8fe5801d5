#!/bin/sh
# The allocator question (issue 15, item 5): is mimalloc or jemalloc worth adopting over
# the system allocator (glibc)? Builds `proxy-checker` from HEAD in a git worktree with
# each as the global allocator, then runs `bench/run.py`'s throughput and in-flight
# scenarios with it side by side with this checkout's build (alternating runs against the
# same farm), and prints both reports. ~20 minutes on 2 cores.
#
# Usage: sh bench/allocators.sh [REPS]   (default 3)
set -eu
reps=${1:-3}
root=$(git rev-parse --show-toplevel)
target=${TMPDIR:-/tmp}/pc-alloc-target
cd "$root"
cargo build --release --workspace --quiet
for alloc in mimalloc jemalloc; do
    wt=${TMPDIR:-/tmp}/pc-alloc-$alloc
    git worktree remove --force "$wt" 2>/dev/null || true
    git worktree add --force --detach "$wt" HEAD >/dev/null
    case $alloc in
        mimalloc)
            crate=mimalloc@0.1
            decl='#[global_allocator] static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;'
            ;;
        jemalloc)
            crate=tikv-jemallocator@0.6
            decl='#[global_allocator] static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;'
            ;;
    esac
    (cd "$wt" && cargo add --quiet -p proxy-checker "$crate" &&
        printf '\n%s\n' "$decl" >> crates/proxy-checker/src/bin/proxy-checker/main.rs &&
        CARGO_TARGET_DIR="$target" cargo build --release --quiet -p proxy-checker --bin proxy-checker)
    cp "$target/release/proxy-checker" "$target/proxy-checker-$alloc"
    git worktree remove --force "$wt"
    echo "## $alloc (baseline) vs the system allocator (this build)"
    python3 bench/run.py --only throughput inflight --reps "$reps" --baseline "$target/proxy-checker-$alloc"
done
