#!/usr/bin/env bash
# Runs a command on a faked cache topology: in a private mount namespace, the sysfs files that gemm-common
# reads to size its blocks (size, ways_of_associativity, shared_cpu_list of every
# /sys/devices/system/cpu/cpu*/cache/index*) are bind-mounted over with the given values. Nothing outside
# the command sees them. Needs root (or unprivileged user namespaces: it then runs under `unshare -rm`).
#
#   scripts/repro/fake-caches.sh L1D L2 L3 [L1_WAYS] [SHARED_CPUS] -- COMMAND...
#   scripts/repro/fake-caches.sh 64K 1M 32M -- cargo test --workspace
#   scripts/repro/fake-caches.sh 32K 256K 8M 8 0-1 -- target/release/wspace run pipelines/quick.toml
#
# SHARED_CPUS (a cpu list, default: each cache private to its cpu) is what gemm divides L1 and L2 by.
set -euo pipefail
[ $# -ge 4 ] || { sed -n 2,10p "$0" >&2; exit 2; }
l1=$1 l2=$2 l3=$3
shift 3
ways="" shared=""
[ "$1" != "--" ] && { ways=$1; shift; }
[ "$1" != "--" ] && { shared=$1; shift; }
[ "$1" = "--" ] || { echo "fake-caches: expected -- before the command" >&2; exit 2; }
shift

if [ "${WSPACE_FAKE_CACHES_INSIDE:-}" != 1 ]; then
  if [ "$(id -u)" = 0 ]; then
    exec env WSPACE_FAKE_CACHES_INSIDE=1 unshare -m --propagation private "$0" "$l1" "$l2" "$l3" ${ways:+"$ways"} ${shared:+"$shared"} -- "$@"
  fi
  exec env WSPACE_FAKE_CACHES_INSIDE=1 unshare -rm --propagation private "$0" "$l1" "$l2" "$l3" ${ways:+"$ways"} ${shared:+"$shared"} -- "$@"
fi

fake=$(mktemp -d /tmp/wspace-fake-caches.XXXXXX)
n=0
for idx in /sys/devices/system/cpu/cpu[0-9]*/cache/index[0-9]*; do
  [ -r "$idx/level" ] || continue
  level=$(cat "$idx/level") type=$(cat "$idx/type")
  case "$level/$type" in
    1/Data) size=$l1 ;;
    2/*) size=$l2 ;;
    3/*) size=$l3 ;;
    *) continue ;;
  esac
  n=$((n + 1))
  printf '%s\n' "$size" >"$fake/$n.size"
  mount --bind "$fake/$n.size" "$idx/size"
  if [ -n "$ways" ] && [ "$level" = 1 ]; then
    printf '%s\n' "$ways" >"$fake/$n.ways"
    mount --bind "$fake/$n.ways" "$idx/ways_of_associativity"
  fi
  cpu=${idx#/sys/devices/system/cpu/cpu}
  printf '%s\n' "${shared:-${cpu%%/*}}" >"$fake/$n.shared"
  mount --bind "$fake/$n.shared" "$idx/shared_cpu_list"
done
[ "$n" -gt 0 ] || { echo "fake-caches: no cache entries under /sys/devices/system/cpu" >&2; exit 1; }
echo "fake-caches: L1d $l1${ways:+ ($ways-way)}, L2 $l2, L3 $l3, shared by ${shared:-one cpu each} ($n entries)" >&2
"$@"
