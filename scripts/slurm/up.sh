#!/usr/bin/env bash
# Starts a one-node Slurm cluster on localhost (munged, slurmctld, slurmd), as root, without systemd.
#
#   scripts/slurm/up.sh STATE_DIR        then: export SLURM_CONF=STATE_DIR/slurm.conf
#
# Installs nothing: needs the Debian packages slurmctld slurmd slurm-client munge. Waits until the node
# is idle (at most 60 s). `scripts/slurm/down.sh STATE_DIR` stops the daemons again.
set -euo pipefail
state="${1:?usage: up.sh STATE_DIR}"
here="$(cd "$(dirname "$0")" && pwd)"
mkdir -p "$state/state" "$state/spool"
state="$(cd "$state" && pwd)"
cpus="$(nproc)"
memory="$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 / 2 ))"
sed -e "s|@STATE_DIR@|$state|g" -e "s|@CPUS@|$cpus|g" -e "s|@MEMORY@|$memory|g" "$here/slurm.conf.in" >"$state/slurm.conf"
export SLURM_CONF="$state/slurm.conf"

# munge: a key owned by munge, mode 0400, and its run directory.
[ -f /etc/munge/munge.key ] || mungekey --create --force
chown munge:munge /etc/munge/munge.key
chmod 0400 /etc/munge/munge.key
install -d -o munge -g munge -m 0755 /run/munge
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    runuser -u munge -- /usr/sbin/munged
fi
for _ in $(seq 100); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.1; done

/usr/sbin/slurmctld -f "$SLURM_CONF"
/usr/sbin/slurmd -f "$SLURM_CONF" -N localhost
for _ in $(seq 600); do
    if [ "$(sinfo -h -N -o %t 2>/dev/null)" = "idle" ]; then
        echo "slurm: up (SLURM_CONF=$SLURM_CONF)"
        exit 0
    fi
    sleep 0.1
done
echo "slurm: the node did not become idle within 60 s; logs in $state" >&2
sinfo -N >&2 || true
exit 1
