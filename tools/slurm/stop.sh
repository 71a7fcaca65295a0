#!/usr/bin/env bash
# Stops the one-node cluster of tools/slurm/start.sh by the PIDs it recorded (slurmd, slurmctld, then munged;
# `--keep-munge` leaves munged running). Idempotent: a daemon that is not running is skipped.
set -euo pipefail

STATE_DIR=${ADATOSK_SLURM_STATE:-/run/adatosk-slurm}
daemons=(slurmd slurmctld munged)
[[ ${1:-} == --keep-munge ]] && daemons=(slurmd slurmctld)

stop_daemon() {                 # stop_daemon NAME: SIGTERM to its recorded PID, SIGKILL after 20 s
    local name=$1 pid i
    pid=$(cat "$STATE_DIR/$name.pid" 2>/dev/null) || { echo "slurm: $name not started here"; return; }
    if ! kill -0 "$pid" 2>/dev/null; then
        rm -f "$STATE_DIR/$name.pid"
        echo "slurm: $name not running"
        return
    fi
    kill "$pid"
    for ((i = 0; i < 40; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.5
    done
    if kill -0 "$pid" 2>/dev/null; then
        kill -9 "$pid"
        echo "slurm: $name (pid $pid) killed after 20 s"
    else
        echo "slurm: $name stopped (pid $pid)"
    fi
    rm -f "$STATE_DIR/$name.pid"
}

for name in "${daemons[@]}"; do
    stop_daemon "$name"
done
