#!/usr/bin/env bash
# Stop the single-node SLURM cluster started by .ci/start-slurm.sh: cancel its jobs, then stop
# slurmd, slurmctld, slurmdbd, MariaDB and munged by their pid files (never by process name),
# waiting (bounded) for each to exit. Idempotent: a daemon that is not running is skipped.
set -uo pipefail
[ "$(id -u)" = 0 ] || { echo "stop-slurm: run as root" >&2; exit 1; }
if [ -s /run/slurmctld.pid ] && kill -0 "$(cat /run/slurmctld.pid)" 2>/dev/null; then
  jobs=$(timeout 10 squeue -h -o '%A' 2>/dev/null | tr '\n' ' ')
  if [ -n "${jobs// }" ]; then
    echo "stop-slurm: cancelling jobs $jobs"
    # shellcheck disable=SC2086
    timeout 10 scancel --full $jobs || true
    sleep 2
  fi
fi
status=0
for f in /run/slurmd.pid /run/slurmctld.pid /run/slurmdbd.pid /run/mysqld/mysqld.pid /run/munge/munged.pid; do
  [ -s "$f" ] || continue
  p=$(cat "$f")
  if kill "$p" 2>/dev/null; then
    for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.2; done   # at most 20 s
    if kill -0 "$p" 2>/dev/null; then
      echo "stop-slurm: $f ($p) still running after 20 s" >&2; status=1; continue
    fi
    echo "stop-slurm: stopped $(basename "$f" .pid) ($p)"
  fi
  rm -f "$f"
done
exit $status
