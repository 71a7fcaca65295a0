"""One run of the experiment grid, picked out of a composed config (``params.yaml``).

``params.yaml`` holds one ``data`` and one ``model`` (the single run that ``dvc exp run -S model=...`` switches)
and, for the pipeline, every dataset and model variant of the grid as full configs: ``datasets.<name>`` and
``variants.<name>`` (params/experiment/variants.yaml, demo.yaml, paper.yaml). A pipeline stage names its run with
dotted overrides, e.g. ``adatosk train --config params.yaml select.dataset=dfew select.fold=2
select.variant=adatosk``, and :func:`select_run` turns the config into that run's config: ``data`` and
``model`` replaced, ``data.fold`` and ``seed`` set and ``run_dir`` rebuilt. A stage's DVC params are then exactly the
keys its run reads (``datasets.dfew``, ``variants.adatosk``, ``train``, ...), so changing one variant reruns only its
stages; the run's seed is in its command (``select.seed=1``), so adding a seed to the grid adds stages.
"""

from __future__ import annotations

import re
from pathlib import PurePath

from omegaconf import DictConfig, OmegaConf, open_dict

# The run directory of a (dataset, variant, fold, seed); params/config.yaml's `run_dir` interpolates the same pattern
# (tests/test_pipeline_dag.py checks that the two agree).
RUN_DIR = "{output_root}/{dataset}/{variant}/fold{fold}/seed{seed}"
SELECT_KEYS = ("dataset", "fold", "variant", "seed")
NAME = re.compile(r"[A-Za-z0-9_.-]+")   # dataset and variant names: they are paths and shell words of the pipeline


def run_dir(output_root: str, dataset: str, variant: str, fold: int, seed: int) -> str:
    return RUN_DIR.format(output_root=output_root, dataset=dataset, variant=variant, fold=fold, seed=seed)


def select_run(cfg: DictConfig, where: str = "the config") -> DictConfig:
    """Apply ``cfg.select`` (dataset, fold, variant, seed; null keys change nothing) in place and return ``cfg``."""
    select = cfg.get("select") or {}
    dataset, fold, variant, seed = (select.get(k) for k in SELECT_KEYS)
    if all(value is None for value in (dataset, fold, variant, seed)):
        return cfg
    for key, name in (("dataset", dataset), ("variant", variant)):
        if name is not None and not NAME.fullmatch(str(name)):
            raise ValueError(f"{where}: select.{key}={name!r} is not a name ([A-Za-z0-9_.-]+)")
    # entries are resolved where they stand, before `data` / `model` change: a composed (not yet resolved) config's
    # entries refer to them (`datasets.demo: ${data}`, `variants.*.arch: ${model.arch}`)
    data = _resolved_entry(cfg, "datasets", dataset, where) if dataset is not None else None
    model = _resolved_entry(cfg, "variants", variant, where) if variant is not None else None
    with open_dict(cfg):
        if data is not None:
            others = (set(cfg.datasets or {}) | {(cfg.get("data") or {}).get("name")}) - {dataset, None}
            cfg.data = data
            _check_name(cfg.data, "name", "datasets", dataset, where)
            _check_paths(cfg.data, dataset, others, where)
        if fold is not None:
            folds = list(cfg.data.get("folds") or [])
            if int(fold) not in folds:
                raise ValueError(f"{where}: select.fold={fold} is not a fold of dataset {cfg.data.name!r} "
                                 f"(data.folds = {folds})")
            cfg.data.fold = int(fold)
        if model is not None:
            cfg.model = model
            _check_name(cfg.model, "variant", "variants", variant, where)
        if seed is not None:
            cfg.seed = int(seed)
        for key in ("img_size", "num_frames"):
            if cfg.data.get(key) != cfg.model.get(key):
                raise ValueError(f"{where}: data.{key}={cfg.data.get(key)} differs from model.{key}="
                                 f"{cfg.model.get(key)} of the selected run: the clip cache is made for one size")
        cfg.run_dir = run_dir(cfg.output_root, cfg.data.name, cfg.model.variant, cfg.data.fold, cfg.seed)
    return cfg


def _resolved_entry(cfg: DictConfig, group: str, name: str, where: str) -> dict:
    entries = cfg.get(group) or {}
    if name not in entries:
        raise KeyError(f"{where}: select names {group}.{name}, but {group} has only {sorted(entries)} "
                       f"(they come from params/experiment/*.yaml)")
    return OmegaConf.to_container(entries[name], resolve=True)


def _check_paths(data: DictConfig, dataset: str, others: set[str], where: str) -> None:
    """A dataset's directories must not name another dataset: ``manifests/${data.name}`` composed under
    ``datasets.<name>`` resolves to the single `data`'s name (params/data/*.yaml: use ``${.name}``)."""
    for key in ("manifest_dir", "cache_dir"):
        path = str(data.get(key))
        named = sorted(others & set(PurePath(path).parts))
        if named:
            raise ValueError(f"{where}: datasets.{dataset}.{key} is {path!r}, a directory of dataset {named[0]!r}: "
                             f"params/data/{dataset}.yaml must build it from ${{.name}}, not ${{data.name}}")


def _check_name(node: DictConfig, key: str, group: str, name: str, where: str) -> None:
    if node.get(key) != name:
        raise ValueError(f"{where}: {group}.{name}.{key} is {node.get(key)!r}; it must be {name!r} (the run directory "
                         "and the tables use the entry's name)")
