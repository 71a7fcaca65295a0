"""DVC's resolved pipeline stages as Snakemake rule specifications (the Snakefile's only source of rules).

dvc.yaml is the one definition of the DAG. :func:`rule_specs` reads it through DVC's Python API (templating,
foreach and matrix resolved by DVC itself) and turns every stage with a command into a :class:`RuleSpec`:

* inputs: the stage's file and directory deps. A dep that is a parent directory of other stages' outputs (the
  ``tables`` stage's ``runs``) stands for those outputs: Snakemake links jobs through exact paths only.
* params: the values of the stage's DVC params (dotted key -> value, read from params.yaml); the Snakefile makes
  them the rule's ``params`` so that Snakemake's params trigger reruns exactly the jobs DVC would, and declares
  params.yaml itself as an ``ancient`` input (its mtime is no reason to rerun).
* outputs: outs, metrics and plots. Snakemake must know which are directories before they exist; an output whose
  last path component has no suffix is a directory (``checkpoint/last``, ``cache/demo/128``, ``results/tables``).
* shell: the stage's command; with ``meta.torchrun`` and GPUs per job, launched on all of them by torchrun.
* resources: ``meta.slurm`` (``gpu`` | ``cpu``) chooses the resource set of the Snakemake config (slurm/cluster.yaml).
* priority: ``meta.priority`` (an integer, default 0), Snakemake's job priority: of the jobs that are ready, the
  higher first (the data chain before the efficiency counts, Table 1's trainings before the ablations); under
  SLURM also the jobs' ``--nice`` (:func:`resources`).

Stages without a command (``data.dvc``: ``dvc add``-ed data) become no rule: their outputs are inputs that must be
present (``dvc pull``).
"""

from __future__ import annotations

import json
import os
import re
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from workflow.command_values import unsafe_command_values

PARAMS_FILE = "params.yaml"
RESOURCE_KINDS = ("cpu", "gpu")
GPU_PASSTHROUGH = ("gres", "constraint", "qos", "gpu_model")   # config keys given to GPU jobs as they are
NICE_STEP = 100                 # SLURM --nice per meta.priority step


@dataclass(frozen=True)
class RuleSpec:
    name: str                       # Snakemake rule name (an identifier)
    stage: str                      # DVC stage address, e.g. "train@split0-adatosk"
    cmd: str                        # the stage's command, as DVC runs it
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    directories: frozenset[str]     # the outputs that are directories
    params: Mapping[str, Any] = field(default_factory=dict)
    kind: str = "cpu"               # meta.slurm
    torchrun: bool = False          # meta.torchrun: launch on every GPU of the job
    gpus: int | None = None         # meta.gpus: GPUs of a gpu job if not the config's gpus_per_job
    priority: int = 0               # meta.priority: Snakemake's priority of the rule's jobs


def rule_name(address: str) -> str:
    """``train@split0-adatosk_dagger`` -> ``train__split0_adatosk_dagger`` (Snakemake rule names are identifiers)."""
    return re.sub(r"\W", "_", address.replace("@", "__"))


def is_directory(path: str) -> bool:
    return not PurePosixPath(path).suffix


def _relpath(path: str, root: str) -> str:
    return Path(os.path.relpath(path, root)).as_posix()


def _is_under(path: str, parent: str) -> bool:
    return path == parent or path.startswith(parent.rstrip("/") + "/")


def rule_specs(repo_root: str | os.PathLike[str] = ".") -> list[RuleSpec]:
    """One :class:`RuleSpec` per DVC stage with a command, in DVC's stage order."""
    from dvc.dependency.param import ParamsDependency
    from dvc.repo import Repo

    root = str(Path(repo_root).resolve())
    values = _load_params(Path(root) / PARAMS_FILE)
    unsafe = unsafe_command_values(_load_params(Path(root) / "dvc.yaml"), values)
    if unsafe:
        raise ValueError(f"{PARAMS_FILE}: values that dvc.yaml puts into shell commands are not names:\n  "
                         + "\n  ".join(unsafe))
    with Repo(root) as repo:
        stages = list(repo.index.stages)
        produced = [_relpath(out.fs_path, root) for stage in stages if stage.cmd for out in stage.outs]
        specs = []
        for stage in stages:
            if not stage.cmd:
                continue
            inputs, params = [], {}
            for dep in stage.deps:
                path = _relpath(dep.fs_path, root)
                if isinstance(dep, ParamsDependency):
                    if path != PARAMS_FILE:
                        raise ValueError(f"dvc.yaml: stage {stage.name} reads params from {path}; the "
                                         f"Snakefile supports {PARAMS_FILE} only")
                    params.update(_flatten_keys(values, dep.params))
                    continue
                inside = [out for out in produced if out != path and _is_under(out, path)]
                inputs += inside or [path]
            outputs = [_relpath(out.fs_path, root) for out in stage.outs]
            meta = stage.meta or {}
            kind = meta.get("slurm", "cpu")
            if kind not in RESOURCE_KINDS:
                raise ValueError(f"dvc.yaml: stage {stage.name}: meta.slurm is {kind!r}; expected one of "
                                 f"{RESOURCE_KINDS}")
            priority = meta.get("priority", 0)
            if not isinstance(priority, int) or isinstance(priority, bool):
                raise ValueError(f"dvc.yaml: stage {stage.name}: meta.priority is {priority!r}; expected an integer")
            specs.append(RuleSpec(
                name=rule_name(stage.name), stage=stage.name, cmd=stage.cmd,
                inputs=tuple(dict.fromkeys(inputs)), outputs=tuple(outputs),
                directories=frozenset(o for o in outputs if is_directory(o)), params=params, kind=kind,
                torchrun=bool(meta.get("torchrun", False)), gpus=meta.get("gpus"), priority=priority,
            ))
    return specs


def _load_params(path: Path) -> dict[str, Any]:
    import yaml

    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: compose it (dvc exp run, or python "
                                "workflow/scripts/compose_params.py)")
    return yaml.load(path.read_text(encoding="utf-8"), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def _flatten_keys(values: Mapping[str, Any], keys: Iterable[str] | None) -> dict[str, Any]:
    """The values of a stage's params (dotted keys, or the whole file without keys), keyed by those names."""
    out = {}
    for key in keys or values:
        node: Any = values
        for part in key.split("."):
            node = node[part]
        out[key] = node
    return out


def params_fingerprint(spec: RuleSpec) -> str:
    """The rule's params as one canonical string (what Snakemake stores and compares)."""
    return json.dumps(spec.params, sort_keys=True, default=str)


def gpu_count(spec: RuleSpec, config: Mapping[str, Any]) -> int:
    """GPUs of the rule's jobs: none for cpu stages and without GPUs (gpus_per_job 0, local CPU runs)."""
    if spec.kind != "gpu" or config["gpus_per_job"] == 0:
        return 0
    return spec.gpus if spec.gpus is not None else config["gpus_per_job"]


def shell_command(spec: RuleSpec, gpus: int) -> str:
    """The command a job runs: the DVC stage's, under torchrun on ``gpus`` processes when the stage asks."""
    cmd = spec.cmd
    if spec.torchrun and gpus > 0:
        program, *args = shlex.split(cmd)
        if program != "adatosk":
            raise ValueError(f"dvc.yaml: stage {spec.stage} has meta.torchrun but its command is not `adatosk ...`")
        cmd = shlex.join(["torchrun", "--standalone", f"--nproc-per-node={gpus}", "-m", "adatosk", *args])
    return cmd


def resources(spec: RuleSpec, config: Mapping[str, Any], top_priority: int = 0) -> dict[str, Any]:
    """Snakemake resources of a rule from the validated workflow config (workflow/schemas/config.schema.yaml).

    Every job is one task on one node with all its CPUs, memory and GPUs; torchrun starts the GPU processes
    inside it. The SLURM executor plugin would turn ``tasks`` of a GPU job into ``--ntasks-per-gpu`` (one task per
    GPU, each asking for all the CPUs): GPU jobs say ``tasks_per_gpu: 0`` instead, which drops that option, and
    ask for one task per node through ``slurm_extra`` (the plugin refuses ``--ntasks`` there). GPU jobs also carry
    the config's ``gres``, ``constraint``, ``qos`` and ``gpu_model`` where set. ``meta.priority`` becomes SLURM's
    ``--nice``, :data:`NICE_STEP` per step below ``top_priority`` (the pipeline's highest), so that of the jobs
    queued at once SLURM starts the higher-priority ones first, as Snakemake does locally.
    """
    kind = spec.kind
    out: dict[str, Any] = {
        "slurm_partition": config[f"{kind}_partition"],
        "runtime": config[f"{kind}_runtime"],
        "mem_mb": config[f"{kind}_mem_mb"],
        "cpus_per_task": config[f"{kind}_cpus"],
        "nodes": 1,
    }
    if config.get("slurm_account"):
        out["slurm_account"] = config["slurm_account"]
    extra = []
    gpus = gpu_count(spec, config)
    if gpus:
        out.update(gpu=gpus, tasks_per_gpu=0)
        out.update({key: config[key] for key in GPU_PASSTHROUGH if config.get(key)})
        extra.append("--ntasks-per-node=1")
    else:
        out["tasks"] = 1
    nice = NICE_STEP * (top_priority - spec.priority)
    if nice > 0:
        extra.append(f"--nice={nice}")
    if extra:
        out["slurm_extra"] = " ".join(extra)
    return out
