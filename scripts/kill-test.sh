#!/usr/bin/env bash
# Crash and stop safety, measured: N times (default 50) start a multi-stage run and signal it at a random
# moment.
# - KILL (default): `kill -9` its whole process group, then `wspace gc`; `wspace fsck` must find nothing
#   (no corrupt, partial or orphaned entry).
# - INT: SIGINT to its process group (what Ctrl-C does); TERM: SIGTERM to the runner alone. The run must
#   exit 0 (it had finished), 130 or 143; no process of its session may be left; and `wspace fsck` must
#   find nothing, with no `gc` in between.
# Either way the next run must complete with the right output.
#
#   scripts/kill-test.sh [N] [path/to/wspace] [KILL|INT|TERM]    (default: target/debug/wspace; build it first)
set -euo pipefail
n=${1:-50}
bin=$(realpath "${2:-target/debug/wspace}")
sig=${3:-KILL}
case "$sig" in KILL|INT|TERM) ;; *) echo "kill-test: the signal is KILL, INT or TERM, not $sig" >&2; exit 2 ;; esac
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
    case "$sig" in
        KILL) target="-$pid" ;;
        INT) target="-$pid" ;;
        TERM) target="$pid" ;;
    esac
    if kill "-$sig" -- "$target" 2>/dev/null; then mid=$((mid + 1)); fi
    code=0
    wait "$pid" 2>/dev/null || code=$?
    if [ "$sig" = KILL ]; then
        "$bin" gc > gc.log 2>&1 || { echo "run $i: gc failed"; cat gc.log; exit 1; }
    else
        case "$code" in 0|130|143) ;; *) echo "run $i: exit $code after SIG$sig"; exit 1 ;; esac
        # Zombies (state Z) are dead: only an init that does not reap leaves them.
        alive=$(ps -s "$pid" -o pid=,stat=,args= | awk '$2 !~ /^Z/' || true)
        if [ -n "$alive" ]; then echo "run $i: processes outlived the run:"; echo "$alive"; exit 1; fi
    fi
    if ! "$bin" fsck > fsck.log 2>&1; then echo "run $i: fsck found problems:"; cat fsck.log; exit 1; fi
    "$bin" run p.toml --set "a.i=$i" -j 2 > run.log 2>&1 || { echo "run $i: the rerun failed"; cat run.log; exit 1; }
    out=$("$bin" show p.toml d --set "a.i=$i" --format json | sed 's/.*"output":"\([^"]*\)".*/\1/')
    [ "$(cat "$out/d")" = "$(printf '%s\n%s\n%s\n5000' "$i" "$i" "$i")" ] || { echo "run $i: wrong output"; exit 1; }
done
"$bin" fsck
case "$sig" in
    KILL) echo "kill-test: $n runs killed with kill -9 ($mid while still running); after each, gc + fsck found nothing and the rerun completed with the right output" ;;
    *) echo "kill-test: $n runs sent SIG$sig ($mid while still running); after each, nothing of the run was alive, fsck found nothing (no gc) and the rerun completed with the right output" ;;
esac
