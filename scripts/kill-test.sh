#!/usr/bin/env bash
# Crash safety, measured: N times (default 50) start a multi-stage run, `kill -9` its whole process
# group at a random moment, then `wspace gc`; `wspace fsck` must find nothing (no corrupt, partial or
# orphaned entry) and the next run must complete with the right output.
#
#   scripts/kill-test.sh [N] [path/to/wspace]      (default: target/debug/wspace; build it first)
set -euo pipefail
n=${1:-50}
bin=$(realpath "${2:-target/debug/wspace}")
repo=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
# a → (b, c) → d → e (tests/pipelines/kill.toml): each stage sleeps, writes several files, reads its inputs.
cp "$repo/tests/pipelines/kill.toml" p.toml
mid=0
for i in $(seq 1 "$n"); do
    setsid "$bin" run p.toml --set "a.i=$i" -j 2 > /dev/null 2>&1 &
    pid=$!
    sleep "$(awk -v r="$RANDOM" 'BEGIN { printf "%.3f", r / 32768 * 1.3 }')"
    if kill -9 -- "-$pid" 2>/dev/null; then mid=$((mid + 1)); fi
    wait "$pid" 2>/dev/null || true
    "$bin" gc > gc.log 2>&1 || { echo "run $i: gc failed"; cat gc.log; exit 1; }
    if ! "$bin" fsck > fsck.log 2>&1; then echo "run $i: fsck found problems after gc:"; cat fsck.log; exit 1; fi
    "$bin" run p.toml --set "a.i=$i" -j 2 > run.log 2>&1 || { echo "run $i: the rerun failed"; cat run.log; exit 1; }
    out=$("$bin" show p.toml d --set "a.i=$i" --format json | sed 's/.*"output":"\([^"]*\)".*/\1/')
    [ "$(cat "$out/d")" = "$(printf '%s\n%s\n%s\n5000' "$i" "$i" "$i")" ] || { echo "run $i: wrong output"; exit 1; }
done
"$bin" fsck
echo "kill-test: $n runs killed with kill -9 ($mid while still running); after each, gc + fsck found nothing and the rerun completed with the right output"
