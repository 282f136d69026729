#!/usr/bin/env bash
# Crash safety, measured: N times (default 50) start a multi-stage run, `kill -9` its whole process
# group at a random moment, then `wspace gc`; `wspace fsck` must find nothing (no corrupt, partial or
# orphaned entry) and the next run must complete with the right output.
#
#   scripts/kill-test.sh [N] [path/to/wspace]      (default: target/debug/wspace; build it first)
set -euo pipefail
n=${1:-50}
bin=$(realpath "${2:-target/debug/wspace}")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
# a → (b, c) → d → e: each stage sleeps, writes several files, and reads its inputs.
cat > p.toml <<'TOML'
[stages.a]
kind = "command"
run = "sleep 0.2; echo $WSPACE_PARAM_I > $WSPACE_OUT/i; seq 1 5000 > $WSPACE_OUT/big"
params = { i = 0 }
[stages.b]
kind = "command"
inputs = { a = "a" }
run = "sleep 0.3; mkdir $WSPACE_OUT/sub; cat $WSPACE_IN_A/i $WSPACE_IN_A/i > $WSPACE_OUT/sub/b; wc -l < $WSPACE_IN_A/big > $WSPACE_OUT/n"
[stages.c]
kind = "command"
inputs = { a = "a" }
run = "sleep 0.25; cat $WSPACE_IN_A/i > $WSPACE_OUT/c"
[stages.d]
kind = "command"
inputs = { b = "b", c = "c" }
run = "sleep 0.2; cat $WSPACE_IN_B/sub/b $WSPACE_IN_C/c $WSPACE_IN_B/n > $WSPACE_OUT/d"
[stages.e]
kind = "command"
inputs = { d = "d" }
run = "sleep 0.1; wc -l < $WSPACE_IN_D/d > $WSPACE_OUT/e"
TOML
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
