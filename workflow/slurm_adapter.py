"""What `snakemake --profile slurm` adds to the SLURM executor plugin: a check of the jobs against the cluster's
nodes before anything is submitted, and three work-arounds for snakemake-executor-plugin-slurm (the version pinned
in pyproject.toml; the Snakefile applies both at ``onstart``, in the submitting process only).

* Jobs larger than every node of their partition would pend forever (``PD (PartitionConfig)`` or ``Resources``)
  on a cluster that does not enforce partition limits: :func:`check_cluster_fits` compares slurm/cluster.yaml's
  GPUs, CPUs, memory and runtime with ``sinfo`` and names the key to change.
* ``sacct`` reports a cancelled job as ``CANCELLED by <uid>``, which the plugin does not count as a failure: it
  would wait for that job forever. :func:`job_state` strips the ``by <uid>``.
* A job preempted under ``PreemptMode=CANCEL`` stays ``PREEMPTED``, which the plugin also waits on forever: it is
  reported as ``FAILED`` (with a warning naming job and cause), so that Snakemake resubmits it (the profile's
  ``retries``) and training continues from its ``train_state.pt``. Under ``PreemptMode=REQUEUE`` SLURM requeues
  the job itself (pending again, the same job id), which needs no help: such a job goes from COMPLETING to
  PENDING and is never seen PREEMPTED (tests/test_slurm_cluster.py), so it is not resubmitted beside itself.
* Without ``slurm_account`` the plugin guesses one with a malformed ``sacct`` call (``sacct: invalid option --
  '1'``); the account is omitted instead, and SLURM charges the user's default account.
"""

from __future__ import annotations

import importlib
import logging
import re
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

PLUGIN = "snakemake_executor_plugin_slurm"
CLUSTER_FILE = "slurm/cluster.yaml"
SINFO_FORMAT = "%P|%N|%c|%m|%G|%l"


@dataclass(frozen=True)
class Node:
    """One node of a partition as ``sinfo`` reports it."""

    partition: str
    name: str
    cpus: int
    mem_mb: int
    gpus: dict[str, int]            # GPU type ("" when untyped) -> count
    max_minutes: float              # the partition's MaxTime (inf: unlimited)


def parse_minutes(text: str) -> float:
    """SLURM's time limit (``infinite``, ``M``, ``M:S``, ``H:M:S``, ``D-H[:M[:S]]``) in minutes."""
    if text.lower() in ("infinite", "unlimited"):
        return float("inf")
    days, _, clock = text.rpartition("-")
    parts = [int(p) for p in clock.split(":")]
    if days:
        hours, minutes, seconds = (parts + [0, 0])[:3]
    elif len(parts) == 3:
        hours, minutes, seconds = parts
    else:
        hours, (minutes, seconds) = 0, (parts + [0])[:2]
    return int(days or 0) * 1440 + hours * 60 + minutes + seconds / 60


def parse_gpus(gres: str) -> dict[str, int]:
    """``gpu:a100:4(S:0-1),shard:8`` -> ``{"a100": 4}``; ``gpu:2`` -> ``{"": 2}``; ``(null)`` -> ``{}``."""
    gpus: dict[str, int] = {}
    for entry in gres.split(","):
        fields = re.sub(r"\(.*\)", "", entry).split(":")
        if fields[0] != "gpu" or len(fields) < 2 or not fields[-1].isdigit():
            continue
        model = fields[1] if len(fields) == 3 else ""
        gpus[model] = gpus.get(model, 0) + int(fields[-1])
    return gpus


def parse_sinfo(text: str) -> list[Node]:
    """Rows of ``sinfo -h -N -o '%P|%N|%c|%m|%G|%l'`` (the default partition is marked ``*``)."""
    nodes = []
    for line in text.splitlines():
        if not line.strip():
            continue
        partition, name, cpus, mem, gres, limit = line.strip().split("|")
        nodes.append(Node(partition.rstrip("*"), name, int(cpus), int(mem.rstrip("+")), parse_gpus(gres),
                          parse_minutes(limit)))
    return nodes


def run_sinfo() -> str:
    return subprocess.run(["sinfo", "-h", "-N", "-o", SINFO_FORMAT], capture_output=True, text=True, check=True,
                          timeout=60).stdout


def misfits(config: Mapping[str, Any], nodes: list[Node]) -> list[str]:
    """Why the jobs of slurm/cluster.yaml's ``config`` fit no node of their partition: one line per key to change."""
    problems = []
    partitions = sorted({node.partition for node in nodes})
    for kind in ("cpu", "gpu"):
        partition = config[f"{kind}_partition"]
        members = [node for node in nodes if node.partition == partition]
        if not members:
            problems.append(f"{kind}_partition is '{partition}', a partition this cluster does not have "
                            f"(it has: {', '.join(partitions)})")
            continue
        gpus = config["gpus_per_job"] if kind == "gpu" else 0
        model = config.get("gpu_model") or ""
        most_gpus = max(sum(n for m, n in node.gpus.items() if not model or m == model) for node in members)
        limits = [
            (f"{kind}_cpus", config[f"{kind}_cpus"], max(node.cpus for node in members), "CPUs"),
            (f"{kind}_mem_mb", config[f"{kind}_mem_mb"], max(node.mem_mb for node in members), "MB of memory"),
            (f"{kind}_runtime", config[f"{kind}_runtime"], members[0].max_minutes, "minutes of MaxTime"),
            ("gpus_per_job", gpus, most_gpus, f"{model} GPUs".lstrip()),
        ]
        for key, wanted, most, unit in limits:
            if wanted > most:
                problems.append(f"{key} is {wanted}, but the largest node of partition '{partition}' has "
                                f"{most:g} {unit}: set {key} to at most {most:g}")
    return problems


def check_cluster_fits(config: Mapping[str, Any], sinfo: Callable[[], str] = run_sinfo) -> None:
    """Raise ValueError naming the slurm/cluster.yaml keys whose jobs no node of the cluster can run."""
    try:
        text = sinfo()
    except (OSError, subprocess.SubprocessError) as error:
        raise ValueError(f"cannot check {CLUSTER_FILE} against the cluster: sinfo failed: {error}") from error
    problems = misfits(config, parse_sinfo(text))
    if problems:
        raise ValueError(f"{CLUSTER_FILE}: jobs that no node of the cluster can run would pend forever:\n  "
                         + "\n  ".join(problems)
                         + f"\n(edit {CLUSTER_FILE} or override with --config key=value)")


def job_state(job_id: str, state: str, logger: logging.Logger, warned: set[str]) -> str:
    """The plugin's name for a SLURM state: ``CANCELLED by 0`` -> ``CANCELLED``; ``PREEMPTED`` -> ``FAILED``."""
    state = re.sub(r"^CANCELLED by \S+$", "CANCELLED", state)
    if state != "PREEMPTED":
        return state
    if job_id not in warned:
        warned.add(job_id)
        logger.warning(f"SLURM job {job_id} was preempted and cancelled (the partition's PreemptMode=CANCEL): "
                       "reported as FAILED, so that Snakemake resubmits it (retries); training resumes from "
                       "its train_state.pt")
    return "FAILED"


def omitted_account(logger: logging.Logger) -> None:
    """The plugin's account guess, replaced: no account (``-A``) at all, SLURM's default account for the user."""
    logger.info(f"slurm_account is empty in {CLUSTER_FILE}: jobs are submitted without -A (your default account)")
    return None


def adapt_plugin() -> None:
    """Install :func:`job_state` and :func:`omitted_account` into the SLURM executor plugin."""
    plugin = importlib.import_module(PLUGIN)
    for name in ("query_job_status", "get_account"):
        if not callable(getattr(plugin, name, None)):
            raise ImportError(f"{PLUGIN} has no {name}(): workflow/slurm_adapter.py supports the version pinned in "
                              "pyproject.toml")
    if getattr(plugin.query_job_status, "adapted", False):
        return
    query = plugin.query_job_status
    warned: set[str] = set()

    async def query_job_status(command: str, logger: logging.Logger) -> tuple[dict[str, str] | None, Any]:
        states, duration = await query(command, logger)
        if states is not None:
            states = {job: job_state(job, state, logger, warned) for job, state in states.items()}
        return states, duration

    query_job_status.adapted = True
    plugin.query_job_status = query_job_status
    plugin.get_account = omitted_account
