#!/usr/bin/env bash
# Single-node SLURM for CI (Debian 12, root, no systemd).
#
#   bash .ci/slurm.sh setup    install (idempotent), write config, start daemons, wait for an idle node
#   bash .ci/slurm.sh stop     stop slurmd, slurmctld, munged (by their pid files)
#   bash .ci/slurm.sh status   sinfo + the node's gres
#
# The node declares one fake GPU (gres gpu:1, no device file) so that jobs asking for
# `--gpus=1` are scheduled; nothing is bound to a real device.
# Partitions: "ci" (default) and "gpu", both on the one node (the test routes the attribution
# jobs to "gpu" as a cluster with a GPU partition would). No accounting database: use `squeue` as the status command
# and submit without an account (see tests/slurm/config.yaml).
set -euo pipefail

PARTITION=${SLURM_CI_PARTITION:-ci}
HOST=$(hostname -s)
CONF_DIR=/etc/slurm              # the plugin's nested srun loses SLURM_CONF: keep the default path
STATE=/var/spool/slurmctld
SPOOL=/var/spool/slurmd
LOGS=/var/log/slurm
RUN=/run/slurm
MUNGE_PID=/run/munge/munged.pid
WAIT_S=${SLURM_CI_WAIT_S:-90}

log() { echo "[slurm.sh] $*" >&2; }

install_packages() {
    if command -v slurmctld >/dev/null && command -v slurmd >/dev/null \
        && command -v sbatch >/dev/null && command -v munged >/dev/null; then
        log "packages already installed"
        return
    fi
    log "installing slurmctld slurmd slurm-client munge"
    export DEBIAN_FRONTEND=noninteractive
    # never let the packages' maintainer scripts start services (no init system here)
    local own_policy=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod +x /usr/sbin/policy-rc.d
        own_policy=1
    fi
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends \
        slurmctld slurmd slurm-client munge >/dev/null
    if [ "$own_policy" = 1 ]; then rm -f /usr/sbin/policy-rc.d; fi
}

write_config() {
    local cpus mem_mb
    # The node is declared at least 16 CPUs / 64 GB (SlurmdParameters=config_overrides keeps a
    # node that has less from being drained), so that the cluster profile's real requests
    # (--cpus-per-gpu=4, --mem=16000, ...) are schedulable on a small CI machine. Nothing is
    # enforced (no cgroups): jobs simply share the real cores and memory.
    cpus=$(nproc)
    mem_mb=$(awk '/^MemTotal:/ {printf "%d", $2 / 1024 * 0.9}' /proc/meminfo)
    cpus=${SLURM_CI_CPUS:-$(( cpus > 16 ? cpus : 16 ))}
    mem_mb=${SLURM_CI_MEM_MB:-$(( mem_mb > 65536 ? mem_mb : 65536 ))}
    mkdir -p "$CONF_DIR" "$STATE" "$SPOOL" "$LOGS" "$RUN"
    cat > "$CONF_DIR/slurm.conf" <<EOF
# written by .ci/slurm.sh: single-node CI cluster, do not use in production
ClusterName=ci
SlurmctldHost=${HOST}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=${STATE}
SlurmdSpoolDir=${SPOOL}
SlurmctldPidFile=${RUN}/slurmctld.pid
SlurmdPidFile=${RUN}/slurmd.pid
SlurmctldLogFile=${LOGS}/slurmctld.log
SlurmdLogFile=${LOGS}/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/pgid
TaskPlugin=task/none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
GresTypes=gpu
ReturnToService=2
MinJobAge=600
KillWait=5
SlurmdTimeout=60
InactiveLimit=0
MpiDefault=none
SlurmdParameters=config_overrides
NodeName=${HOST} NodeAddr=127.0.0.1 CPUs=${cpus} RealMemory=${mem_mb} Gres=gpu:1 State=UNKNOWN
PartitionName=${PARTITION} Nodes=${HOST} Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=${HOST} Default=NO MaxTime=INFINITE State=UP
EOF
    cat > "$CONF_DIR/gres.conf" <<EOF
# fake GPU. SLURM 22.05 drops a file-less GPU ("Removing file-less GPU ... from final GRES
# list") and the node goes INVAL (0 < 1): point it at /dev/null. With TaskPlugin=task/none
# nothing is constrained; jobs get CUDA_VISIBLE_DEVICES=0 and no real device.
NodeName=${HOST} Name=gpu File=/dev/null Count=1
EOF
    log "wrote $CONF_DIR/slurm.conf (CPUs=$cpus RealMemory=$mem_mb, partitions $PARTITION, gpu) and gres.conf"
}

# a live process (PID 1 here may not reap daemons' exited parents: a zombie counts as gone)
alive() { [ -r "/proc/$1/status" ] && ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status" 2>/dev/null; }
# pidfile [name]: the pid in it is alive and (a pid file left by a killed daemon may name a
# reused pid) runs the program `name`, by default the pid file's base name
pid_alive() {
    local pid name=${2:-$(basename "$1" .pid)}
    [ -s "$1" ] || return 1
    pid=$(cat "$1")
    alive "$pid" && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$name" ]
}

start_munge() {
    if pid_alive "$MUNGE_PID"; then log "munged already running"; return; fi
    mkdir -p /run/munge /var/log/munge /var/lib/munge /etc/munge
    if [ ! -s /etc/munge/munge.key ]; then
        if command -v mungekey >/dev/null; then mungekey --create --force >/dev/null
        else dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none; fi
    fi
    chmod 0400 /etc/munge/munge.key
    # munged refuses root-owned keys/dirs without --force
    chown -R root:root /etc/munge /run/munge /var/log/munge /var/lib/munge
    munged --force
    for _ in $(seq 50); do munge -n >/dev/null 2>&1 && return; sleep 0.2; done
    log "munged did not come up"; return 1
}

node_state() { sinfo -h -N -n "$HOST" -o '%T' 2>/dev/null | head -n1; }

start_slurm() {
    if pid_alive "$RUN/slurmctld.pid"; then log "slurmctld already running: reconfiguring"
        scontrol reconfigure || true
    else
        # -c: start from a clean state (no jobs or node reasons left from an earlier run)
        slurmctld -c
    fi
    if ! pid_alive "$RUN/slurmd.pid"; then slurmd; fi

    local deadline=$((SECONDS + WAIT_S)) state="" fixed_gres=0
    while [ $SECONDS -lt $deadline ]; do
        state=$(node_state || true)
        case "$state" in
            idle|mixed|allocated)
                if [ "$fixed_gres" = 0 ] && ! scontrol show node "$HOST" | grep -q 'Gres=gpu:1'; then
                    # Gres= on the NodeName line is not always applied (field notes)
                    scontrol update nodename="$HOST" gres=gpu:1 || true
                    fixed_gres=1
                    continue
                fi
                log "node $HOST is $state ($((SECONDS - start_s)) s)"
                return 0 ;;
            down*|drain*|fail*)
                scontrol update nodename="$HOST" state=resume 2>/dev/null || true ;;
        esac
        sleep 1
    done
    log "node $HOST not idle after ${WAIT_S}s (state: '${state}')"
    tail -n 30 "$LOGS/slurmctld.log" "$LOGS/slurmd.log" >&2 || true
    return 1
}

stop_pidfile() {  # name pidfile
    local pidfile=$2 pid
    pid_alive "$pidfile" || return 0
    pid=$(cat "$pidfile")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 100); do alive "$pid" || { log "stopped $1"; rm -f "$pidfile"; return 0; }; sleep 0.1; done
    log "$1 ($pid) ignored SIGTERM: killing"
    kill -9 "$pid" 2>/dev/null || true
}

stop_all() {
    stop_pidfile slurmd "$RUN/slurmd.pid"
    stop_pidfile slurmctld "$RUN/slurmctld.pid"
    stop_pidfile munged "$MUNGE_PID"
}

start_s=$SECONDS
case "${1:-}" in
    setup)
        install_packages
        write_config
        start_munge
        start_slurm
        sinfo
        log "setup done in $((SECONDS - start_s)) s"
        ;;
    stop)
        stop_all ;;
    status)
        sinfo && scontrol show node "$HOST" | grep -E 'State|Gres|CfgTRES' ;;
    *)
        echo "usage: $0 setup|stop|status" >&2; exit 2 ;;
esac
