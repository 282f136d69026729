#!/usr/bin/env bash
# Stops the cluster `scripts/slurm/up.sh STATE_DIR` started: SIGTERM to slurmd, slurmctld and munged by
# their pid files, SIGKILL after 10 s.
set -uo pipefail
state="${1:?usage: down.sh STATE_DIR}"
pids=()
for f in "$state/slurmd.pid" "$state/slurmctld.pid" /run/munge/munged.pid; do
    [ -f "$f" ] && pids+=("$(cat "$f")")
done
[ ${#pids[@]} -eq 0 ] && exit 0
kill -TERM "${pids[@]}" 2>/dev/null
for _ in $(seq 100); do
    alive=0
    for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ $alive -eq 0 ] && exit 0
    sleep 0.1
done
kill -KILL "${pids[@]}" 2>/dev/null
exit 0
