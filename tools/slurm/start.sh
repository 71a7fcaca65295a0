#!/usr/bin/env bash
# A one-node SLURM cluster on this Debian machine, to run `snakemake --profile slurm` against a real controller
# (tests/test_slurm_cluster.py; workflow/README.md). Run as root; idempotent: a second call keeps a running cluster
# whose configuration is unchanged. Stop it with tools/slurm/stop.sh.
#
# Debian's slurm-wlm (22.05 on bookworm): munged, slurmctld and slurmd as plain background processes (no systemd),
# their PIDs in $STATE_DIR. No accounting database: the profile polls job states with squeue (slurm/config.yaml),
# so slurmctld keeps finished jobs for MinJobAge seconds. The node has this machine's CPUs and memory
# (`slurmd -C`), 8 GPUs of type `fake` as a GRES backed by character-device clones of /dev/null (Slurm drops
# file-less GPUs), one `nvme` GRES and the feature `adatosk_gpu` (for slurm/cluster.yaml's `gpu_model`, `gres` and
# `constraint`). tools/slurm/epilog.sh, installed as the Epilog, kills what a job leaves behind (proctrack/linuxproc
# tracks a job's processes only by parentage). Partitions: the cpu_partition and
# gpu_partition of slurm/cluster.yaml, and `preempt`, a higher tier whose jobs preempt theirs (PreemptMode=REQUEUE
# unless changed with `scontrol update PartitionName=... PreemptMode=CANCEL`).
set -euo pipefail

REPO=$(cd "$(dirname "$0")/../.." && pwd)
STATE_DIR=${ADATOSK_SLURM_STATE:-/run/adatosk-slurm}
CONF_DIR=/etc/slurm
LOG_DIR=/var/log/slurm
SPOOL_DIR=/var/spool/slurm-adatosk
GPUS=8
GPU_TYPE=fake
FEATURE=adatosk_gpu
MIN_JOB_AGE=900                 # seconds slurmctld keeps a finished job for squeue (the profile's status command)

step() { echo "slurm: $*"; }

if [[ $(id -u) -ne 0 ]]; then
    echo "tools/slurm/start.sh: run as root (it installs packages and starts SLURM's daemons)" >&2
    exit 1
fi

alive() {                       # alive NAME: the daemon recorded in $STATE_DIR/NAME.pid is running
    local pid
    pid=$(cat "$STATE_DIR/$1.pid" 2>/dev/null) || return 1
    [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null
}

cluster_value() {               # cluster_value KEY: a plain value of slurm/cluster.yaml
    sed -n "s/^$1:[[:space:]]*\"\{0,1\}\([^\"#[:space:]]*\).*/\1/p" "$REPO/slurm/cluster.yaml"
}

install_packages() {
    local missing=()
    for pkg in munge slurmctld slurmd slurm-client; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
    done
    if [[ ${#missing[@]} -eq 0 ]]; then
        step "packages present ($(dpkg-query -W -f='${Version}' slurmctld))"
        return
    fi
    step "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

make_munge_key() {
    if [[ -s /etc/munge/munge.key ]]; then
        step "munge key present"
        return
    fi
    step "creating the munge key"
    mkdir -p /etc/munge
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
    chown munge:munge /etc/munge/munge.key
    chmod 400 /etc/munge/munge.key
}

start_munge() {
    if alive munged; then
        step "munged running (pid $(cat "$STATE_DIR/munged.pid"))"
        return
    fi
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    chown munge:munge /run/munge /var/log/munge /var/lib/munge
    runuser -u munge -- /usr/sbin/munged --pid-file=/run/munge/munged.pid
    cp /run/munge/munged.pid "$STATE_DIR/munged.pid"
    step "munged started (pid $(cat "$STATE_DIR/munged.pid"))"
}

make_gpu_devices() {
    local i
    for ((i = 0; i < GPUS; i++)); do
        [[ -c /dev/adatosk-gpu$i ]] || mknod -m 666 "/dev/adatosk-gpu$i" c 1 3    # 1,3: /dev/null
    done
    step "$GPUS GPU devices /dev/adatosk-gpu[0-$((GPUS - 1))] (clones of /dev/null)"
}

CONFIG_CHANGED=0
write_config() {                # writes slurm.conf and gres.conf; CONFIG_CHANGED=1 when they differ from before
    local host shape cpus memory cpu_part gpu_part tmp gres="gpu:$GPU_TYPE:$GPUS,nvme:1"
    host=$(hostname -s)
    shape=$(slurmd -C | head -1)
    cpus=$(sed -n 's/.* CPUs=\([0-9]*\).*/\1/p' <<<"$shape")
    memory=$(sed -n 's/.* RealMemory=\([0-9]*\).*/\1/p' <<<"$shape")
    cpu_part=$(cluster_value cpu_partition)
    gpu_part=$(cluster_value gpu_partition)
    mkdir -p "$CONF_DIR" "$LOG_DIR" "$SPOOL_DIR/ctld" "$SPOOL_DIR/d"
    tmp=$(mktemp)
    cat >"$tmp" <<EOF
# Written by tools/slurm/start.sh: a one-node cluster for adatosk's tests.
ClusterName=adatosk
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
DefMemPerCPU=1000
GresTypes=gpu,nvme
SchedulerType=sched/backfill
EnforcePartLimits=ALL
JobRequeue=1
ReturnToService=2
MinJobAge=$MIN_JOB_AGE
KillWait=5
Epilog=$CONF_DIR/adatosk-epilog.sh
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MpiDefault=none
StateSaveLocation=$SPOOL_DIR/ctld
SlurmdSpoolDir=$SPOOL_DIR/d
SlurmctldPidFile=$STATE_DIR/slurmctld.pidfile
SlurmdPidFile=$STATE_DIR/slurmd.pidfile
SlurmctldLogFile=$LOG_DIR/adatosk-slurmctld.log
SlurmdLogFile=$LOG_DIR/adatosk-slurmd.log
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$memory Gres=$gres Feature=$FEATURE State=UNKNOWN
PartitionName=$cpu_part Nodes=$host Default=YES MaxTime=INFINITE State=UP PriorityTier=1
PartitionName=$gpu_part Nodes=$host MaxTime=INFINITE State=UP PriorityTier=1
PartitionName=preempt Nodes=$host MaxTime=INFINITE State=UP PriorityTier=10 PreemptMode=OFF
EOF
    printf 'NodeName=%s Name=gpu Type=%s File=/dev/adatosk-gpu[0-%d]\nNodeName=%s Name=nvme Count=1\n' \
        "$host" "$GPU_TYPE" $((GPUS - 1)) "$host" >"$tmp.gres"
    install -m 755 "$REPO/tools/slurm/epilog.sh" "$tmp.epilog"
    if cmp -s "$tmp" "$CONF_DIR/slurm.conf" && cmp -s "$tmp.gres" "$CONF_DIR/gres.conf" \
        && cmp -s "$tmp.epilog" "$CONF_DIR/adatosk-epilog.sh"; then
        rm -f "$tmp" "$tmp.gres" "$tmp.epilog"
        step "slurm.conf unchanged (node $host: $cpus CPUs, $memory MB, $GPUS GPUs; partitions $cpu_part, $gpu_part)"
        return
    fi
    mv "$tmp" "$CONF_DIR/slurm.conf"
    mv "$tmp.gres" "$CONF_DIR/gres.conf"
    mv "$tmp.epilog" "$CONF_DIR/adatosk-epilog.sh"
    chmod 644 "$CONF_DIR/slurm.conf" "$CONF_DIR/gres.conf"
    step "slurm.conf written (node $host: $cpus CPUs, $memory MB, $GPUS GPUs; partitions $cpu_part, $gpu_part)"
    CONFIG_CHANGED=1
}

start_daemon() {                # start_daemon NAME ARGS...: NAME in the foreground (-D) as a background process
    local name=$1
    shift
    if alive "$name"; then
        step "$name running (pid $(cat "$STATE_DIR/$name.pid"))"
        return
    fi
    setsid "/usr/sbin/$name" -D "$@" >>"$LOG_DIR/adatosk-$name.out" 2>&1 </dev/null &
    echo $! >"$STATE_DIR/$name.pid"
    step "$name started (pid $!)"
}

wait_until_idle() {
    local i
    for ((i = 0; i < 60; i++)); do
        if sinfo -h -N -o '%T' 2>/dev/null | grep -qE '^(idle|mixed|allocated)'; then
            step "node up: $(sinfo -h -o '%P %D %c %m %G %f' | tr '\n' ';')"
            return
        fi
        sleep 1
    done
    echo "tools/slurm/start.sh: the node did not come up in 60 s; see $LOG_DIR/adatosk-slurmctld.log and" \
        "$LOG_DIR/adatosk-slurmd.log" >&2
    exit 1
}

mkdir -p "$STATE_DIR"
install_packages
make_munge_key
start_munge
make_gpu_devices
write_config
if [[ $CONFIG_CHANGED == 1 ]] && { alive slurmctld || alive slurmd; }; then
    step "configuration changed: restarting the daemons"
    "$REPO/tools/slurm/stop.sh" --keep-munge
fi
start_daemon slurmctld -i
start_daemon slurmd
wait_until_idle
