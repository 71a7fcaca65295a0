#!/usr/bin/env bash
# Epilog of tools/slurm/start.sh's cluster (slurmd runs it as root when a job ends): kill what the job left behind.
# proctrack/linuxproc knows a job's processes only by parentage, so a process whose parent exited first (a
# background child of the batch script, or a step's process when its parent is killed) is re-parented to init and
# outlives the job. Such processes still carry the job's SLURM_JOB_ID in their environment. Only bash builtins
# run in the loop: a forked helper would carry the same variable. Always exits 0 (a failing epilog drains the node).
job=${SLURM_JOB_ID:-}
[[ -n $job ]] || exit 0
for environ in /proc/[0-9]*/environ; do
    pid=${environ#/proc/}
    pid=${pid%/environ}
    [[ $pid == "$$" ]] && continue
    mapfile -d '' variables 2>/dev/null <"$environ" || continue
    for variable in "${variables[@]}"; do
        if [[ $variable == "SLURM_JOB_ID=$job" ]]; then
            kill -9 "$pid" 2>/dev/null
            break
        fi
    done
done
exit 0
