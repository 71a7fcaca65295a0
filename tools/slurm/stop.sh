#!/usr/bin/env bash
# Stops the one-node cluster of tools/slurm/start.sh by the PIDs it recorded (slurmd, slurmctld, then munged;
# `--keep-munge` leaves munged running). A full stop first cancels the jobs still queued or running, so that each
# ends through the epilog (tools/slurm/epilog.sh) rather than outliving slurmd; a restart (`--keep-munge`, what
# start.sh does after a configuration change) keeps them in slurmctld's saved state. Idempotent: a daemon that is
# not running is skipped.
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

cancel_jobs() {                 # scancel every job, then wait up to 30 s for the last to leave COMPLETING
    local jobs i
    kill -0 "$(cat "$STATE_DIR/slurmctld.pid" 2>/dev/null)" 2>/dev/null || return 0
    jobs=$(squeue -h -o %A 2>/dev/null) || return 0
    [[ -n $jobs ]] || return 0
    # shellcheck disable=SC2086 # one argument per job id
    scancel $jobs
    for ((i = 0; i < 60; i++)); do
        squeue -h -t RUNNING,COMPLETING,SUSPENDED -o %A 2>/dev/null | grep -q . || break
        sleep 0.5
    done
    echo "slurm: cancelled job(s) ${jobs//$'\n'/ }"
}

[[ ${1:-} == --keep-munge ]] || cancel_jobs
for name in "${daemons[@]}"; do
    stop_daemon "$name"
done
