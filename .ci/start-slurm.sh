#!/usr/bin/env bash
# Start a single-node SLURM cluster WITH accounting on this machine: munge, MariaDB, slurmdbd,
# slurmctld and slurmd (node name `localhost`, partition `debug`), as root, without systemd.
#
#   .ci/start-slurm.sh        # installs the Debian packages if missing; idempotent; prints the state
#   .ci/stop-slurm.sh         # stops what this started (by pid file)
#
# Configs: .ci/slurm/slurm.conf (the node and partition lines are appended here: CPUs, sockets and
# RealMemory from `slurmd -C`, so RealMemory never exceeds what slurmd sees; GPUs, if `nvidia-smi -L`
# lists any, become `Gres=gpu:N` with /etc/slurm/gres.conf), .ci/slurm/slurmdbd.conf.
# Logs: /var/log/slurm/{slurmctld,slurmd,slurmdbd}.log, /var/log/slurm/mariadbd.log.
# Every wait is bounded; on failure the script exits non-zero with the relevant log's tail.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
CONF=$HERE/slurm
NODE=localhost
t0=$(date +%s%N)

say() { echo "start-slurm: $*"; }
fail() {
  echo "start-slurm: ERROR: $1" >&2
  [ -n "${2:-}" ] && [ -f "$2" ] && { echo "--- tail $2" >&2; tail -n 20 "$2" >&2; }
  exit 1
}
# wait_for SECONDS WHAT CMD...: poll CMD every 0.2 s until it succeeds, at most SECONDS
wait_for() {
  local limit=$1 what=$2; shift 2
  local deadline=$(( $(date +%s) + limit ))
  until "$@" >/dev/null 2>&1; do
    [ "$(date +%s)" -ge "$deadline" ] && { echo "start-slurm: $what not ready after ${limit} s" >&2; return 1; }
    sleep 0.2
  done
}
alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
munge_ok() { munge -n </dev/null | unmunge; }
db_ok() { mariadb-admin --connect-timeout=2 ping; }
dbd_ok() { (exec 3<>/dev/tcp/127.0.0.1/6819) 2>/dev/null; }
node_ready() { timeout 5 sinfo -h -n "$NODE" -o '%T' | grep -Eq '^(idle|mixed|allocated|completing)'; }
acct_ok() { timeout 10 sacct -n -X -S now-1minutes -o JobID; }

[ "$(id -u)" = 0 ] || fail "run as root (the daemons run as root/munge/mysql here)"

# ---- packages (Debian 12: Slurm 22.05, munge 0.5.15, MariaDB 10.11)
need=0
for b in sinfo sbatch sacct slurmctld slurmd slurmdbd munged mariadbd; do
  command -v "$b" >/dev/null 2>&1 || [ -x "/usr/sbin/$b" ] || need=1
done
if [ $need = 1 ]; then
  say "installing slurmctld slurmd slurm-client munge slurmdbd mariadb-server (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  timeout 300 apt-get update -q >/dev/null || fail "apt-get update failed"
  timeout 600 apt-get install -y -q --no-install-recommends \
    slurmctld slurmd slurm-client munge slurmdbd mariadb-server >/var/log/lem-slurm-apt.log 2>&1 \
    || fail "apt-get install failed" /var/log/lem-slurm-apt.log
fi
install -d -m 755 /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /etc/slurm

# ---- munge (Debian's postinst creates the key; make one if missing). /run/munge is not created
# without systemd's tmpfiles, and munged must run as user munge.
if ! munge_ok >/dev/null 2>&1; then
  if [ ! -s /etc/munge/munge.key ]; then
    dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
    chown munge:munge /etc/munge/munge.key; chmod 400 /etc/munge/munge.key
  fi
  install -d -o munge -g munge -m 755 /run/munge
  alive /run/munge/munged.pid || runuser -u munge -- /usr/sbin/munged --force
  wait_for 10 munged munge_ok || fail "munged did not start" /var/log/munge/munged.log
  say "munged up"
fi

# ---- slurm.conf: the template + this machine's node line (+ GPUs as GRES)
hw=$(slurmd -C | head -n 1 | tr ' ' '\n' | grep -E '^(CPUs|Boards|SocketsPerBoard|CoresPerSocket|ThreadsPerCore|RealMemory)=' | tr '\n' ' ')
echo "$hw" | grep -q 'RealMemory=' || fail "slurmd -C did not report this machine's resources"
ngpu=0
if command -v nvidia-smi >/dev/null 2>&1; then
  ngpu=$(timeout 20 nvidia-smi -L 2>/dev/null | grep -c '^GPU ' || true)
fi
new=$(mktemp)
cp "$CONF/slurm.conf" "$new"
if [ "$ngpu" -gt 0 ]; then
  echo "GresTypes=gpu" >>"$new"
  echo "NodeName=$NODE ${hw}Gres=gpu:$ngpu State=UNKNOWN" >>"$new"
  echo "NodeName=$NODE Name=gpu File=/dev/nvidia[0-$((ngpu - 1))]" >/etc/slurm/gres.conf
else
  echo "NodeName=$NODE ${hw}State=UNKNOWN" >>"$new"
  rm -f /etc/slurm/gres.conf
fi
echo "PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP" >>"$new"
if ! cmp -s "$new" /etc/slurm/slurm.conf; then
  # a changed config (e.g. a GPU appeared): restart the slurm daemons on the new one
  for f in /run/slurmd.pid /run/slurmctld.pid; do
    if alive "$f"; then say "config changed: stopping $(basename "$f" .pid)"; kill "$(cat "$f")"; fi
  done
  for f in /run/slurmd.pid /run/slurmctld.pid; do
    wait_for 15 "exit of $(basename "$f" .pid)" bash -c "! kill -0 \$(cat $f 2>/dev/null) 2>/dev/null" || true
  done
  install -m 644 "$new" /etc/slurm/slurm.conf
fi
rm -f "$new"

# ---- accounting: MariaDB + slurmdbd (without it submitit hangs on a job killed hard)
if ! db_ok >/dev/null 2>&1; then
  [ -d /var/lib/mysql/mysql ] || mariadb-install-db --user=mysql >/var/log/slurm/mariadb-install.log 2>&1 \
    || fail "mariadb-install-db failed" /var/log/slurm/mariadb-install.log
  install -d -o mysql -g mysql -m 755 /run/mysqld
  # setsid: not in the caller's process group; stdio closed so a caller's pipes are not held open
  setsid /usr/sbin/mariadbd --user=mysql --bind-address=127.0.0.1 --pid-file=/run/mysqld/mysqld.pid \
    </dev/null >/var/log/slurm/mariadbd.log 2>&1 &
  wait_for 30 MariaDB db_ok || fail "MariaDB did not start" /var/log/slurm/mariadbd.log
  say "MariaDB up"
fi
mariadb -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db;
  CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurmpw';
  GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;"
if ! dbd_ok; then
  install -m 600 -o root "$CONF/slurmdbd.conf" /etc/slurm/slurmdbd.conf   # 600, owned by SlurmUser
  alive /run/slurmdbd.pid || /usr/sbin/slurmdbd
  wait_for 30 slurmdbd dbd_ok || fail "slurmdbd did not start" /var/log/slurm/slurmdbd.log
  say "slurmdbd up"
fi
cluster=$(sed -n 's/^ClusterName=//p' /etc/slurm/slurm.conf)
if ! timeout 10 sacctmgr -n -P list cluster format=cluster | grep -qx "$cluster"; then
  timeout 10 sacctmgr -i add cluster "$cluster" >/dev/null || fail "sacctmgr add cluster $cluster failed"
fi

# ---- controller + node daemon (-N: the node name must match NodeName=; the hostname is not it)
alive /run/slurmctld.pid || { /usr/sbin/slurmctld && say "slurmctld started"; }
wait_for 30 slurmctld bash -c 'timeout 5 scontrol ping | grep -q UP' \
  || fail "slurmctld did not start" /var/log/slurm/slurmctld.log
alive /run/slurmd.pid || { /usr/sbin/slurmd -N "$NODE" && say "slurmd started"; }
if ! wait_for 30 "node $NODE" node_ready; then
  # a node left down/drained by an earlier run: return it to service once
  timeout 10 scontrol update nodename="$NODE" state=resume 2>/dev/null || true
  wait_for 15 "node $NODE" node_ready || fail "node $NODE not up: $(sinfo -h -N -o '%N %T %E' 2>&1)" \
    /var/log/slurm/slurmd.log
fi
wait_for 30 "accounting (sacct)" acct_ok || fail "sacct does not answer" /var/log/slurm/slurmctld.log

sinfo -N -o '%N %P %T %c %m %G'
timeout 10 sacctmgr -n list cluster format=cluster,controlhost,controlport
echo "start-slurm: SLURM up with accounting in $(( ($(date +%s%N) - t0) / 1000000 )) ms (stop: .ci/stop-slurm.sh)"
