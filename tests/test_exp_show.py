"""`dvc exp show` lists the headline results: one metrics file (results/metrics.json, the tables stage's), a handful
of numbers per dataset x variant and the efficiency figures, at most ~40 columns for the demo's grid."""

import json
from pathlib import Path

import numpy as np
import yaml
from helpers import REPO

from adatosk import tables
from adatosk.config import load_config, to_container
from adatosk.results import Results

MAX_COLUMNS = 40


def leaves(tree, prefix=""):
    """The dotted keys of every value, as `dvc exp show` makes them columns."""
    if isinstance(tree, dict):
        return [k for key, value in tree.items() for k in leaves(value, f"{prefix}{key}.")]
    return [prefix.rstrip(".")]


def leaves_values(tree):
    if isinstance(tree, dict):
        return [v for value in tree.values() for v in leaves_values(value)]
    return [tree]


def test_results_metrics_json_is_the_only_metrics_file():
    dvc = yaml.safe_load((REPO / "dvc.yaml").read_text())
    declared = [(name, m) for name, stage in dvc["stages"].items() for m in stage.get("metrics", [])]
    assert declared == [("tables", "results/metrics.json")]
    assert "results/metrics.json" in dvc["stages"]["tables"]["cmd"]


def write_run(root: Path, variant: str, seed: int) -> dict:
    rng = np.random.default_rng([seed, len(variant)])
    metrics = {"unit": "percent", "uar": float(rng.uniform(40, 70)), "war": float(rng.uniform(40, 70)),
               "data": "demo", "variant": variant, "fold": 1, "seed": seed}
    path = root / "demo" / variant / "fold1" / f"seed{seed}" / "metrics.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(metrics))
    return metrics


def test_the_demo_grid_summary_fits_in_the_column_budget(tmp_path):
    """The demo's 4 variants x 3 seeds with FLOPs and timings of Table 1's variants: <= 40 metric columns, each a
    number (no strings such as unit or checkpoint)."""
    cfg = to_container(load_config())
    grid = cfg["grid"]
    grid["main"]["seeds"] = grid["ablation"]["seeds"] = [0, 1, 2]
    variants = grid["main"]["variants"] + grid["ablation"]["variants"]
    made = {v: [write_run(tmp_path, v, s) for s in (0, 1, 2)] for v in variants}
    model = {k: v for k, v in cfg["variants"]["adatosk_dagger"].items()
             if k not in ("variant", "family", "arch", "pretrained")}
    flops = {v: {"name": v, "timm_name": f"{cfg['variants'][v]['family']}_{cfg['variants'][v]['arch']}",
                 "kwargs": {k: cfg["variants"][v].get(k) for k in model if k in cfg["variants"][v]},
                 "params_inference_m": 5.5, "gflops_inference": 1.25} for v in grid["main"]["variants"]}
    bench = {v: {"name": v, "infer_clips_per_s": 10.0, "train_clips_per_s": 3.0} for v in grid["main"]["variants"]}
    results = Results(tmp_path, cfg["variants"])
    summary = tables.metrics_summary(results, grid, flops, bench)
    columns = leaves(summary)
    assert len(columns) <= MAX_COLUMNS, columns
    assert all(isinstance(v, (int, float)) for v in leaves_values(summary))
    cell = summary["results"]["demo"]["adatosk_ca"]
    uar = [m["uar"] for m in made["adatosk_ca"]]
    assert (cell["n"], cell["uar"], cell["uar_std"]) == (3, round(np.mean(uar), 2), round(np.std(uar, ddof=1), 2))
    assert summary["efficiency"]["adatosk_dagger"] == {"params_m": 5.5, "gflops": 1.25, "infer_clips_per_s": 10.0,
                                                       "train_clips_per_s": 3.0}
