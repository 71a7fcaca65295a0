"""The ``adatosk tables`` command: the paper's Tables 1-4 with our measured numbers beside the quoted ones.

Reads the grid of the config (``grid.main``: Table 1; ``grid.ablation``: Tables 2-4, see params/experiment/), every
run's ``metrics.json`` (``runs/<dataset>/<variant>/fold<k>/seed<s>``, written by ``adatosk evaluate``) and the
``adatosk flops`` report, and writes to ``--out``, each table as Markdown, CSV and LaTeX:

* ``table1``: UAR / WAR per dataset, parameters and GFLOPs; the paper's rows (all its baselines) quoted as printed,
  marked ``paper (quoted)``, beside our measured rows;
* ``table2`` (hard mask ratio x r: WAR and GFLOPs), ``table3`` (soft-mask strategies), ``table4`` (distance
  functions), on the ablation dataset;
* ``all_tokens``: every variant of the grid evaluated with its hard mask (as in Tables 1-4) and with every token
  visible (``eval_mask_ratio = 0``, ``evaluate.all_tokens``);
* ``soft_mask`` and ``soft_mask_slots``: what the soft mask does on the test views of every variant that has one
  (metrics.json ``soft_mask``, ``evaluate.soft_mask_stats``): UAR with the learned weights and with ``M_s := 1``,
  the masks' means, within-view spread and effective token share, the CA gate; per slot, the masks' means and the
  shares of excluded tokens and activated slots;
* ``per_class_<dataset>``: per-class recall of every Table 1 variant; ``confusion_<dataset>_<variant>.png``: the
  confusion matrix summed over runs, normalised per true class.

A measured cell is the mean and sample standard deviation, in percent (the unit of metrics.json), over the runs its
grid group asks for: every fold of the group's splits on that dataset times every seed of ``grid.<group>.seeds``;
the tables' notes say how many. A cell whose runs have not happened says ``not run`` (and a partial one how many
runs it has): no number is ever filled in. The summary for ``dvc metrics show`` goes to ``--metrics``.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from adatosk.grid import run_dir
from adatosk.metrics import UNIT

NOT_RUN = "not run"
QUOTED = "paper (quoted)"
MEASURED = "ours (measured)"
PAPER_DATASETS = ("dfew", "ferv39k", "mafw")
DATASET_TITLES = {"dfew": "DFEW", "ferv39k": "FERV39K", "mafw": "MAFW", "demo": "demo"}

# The paper's Table 1 as printed: method, backbone, #params (M), FLOPs (G), then UAR, WAR on DFEW, FERV39K, MAFW
# ("-": not reported). The last row is AdaTosk-dagger (its name was lost in the text extraction: "(Ours)").
PAPER_TABLE1: tuple[tuple[str, ...], ...] = (
    ("EC-STFL (MM'20)", "C3D / P3D", "78", "8", "45.35", "56.51", "-", "-", "-", "-"),
    ("Former-DFER (MM'21)", "Transformer", "18", "9", "53.69", "65.70", "37.20", "46.85", "31.16", "43.27"),
    ("T-ESFL (MM'22)", "Transformer", "-", "-", "-", "-", "-", "-", "33.28", "48.18"),
    ("Freq-HD (MM'23)", "VGG13-LSTM", "-", "9", "-", "-", "32.79", "44.54", "-", "-"),
    ("M3DFEL (CVPR'23)", "ResNet-18-3D", "-", "2", "56.10", "69.25", "35.94", "47.67", "-", "-"),
    ("IAL (AAAI'23)", "ResNet-18", "19", "10", "55.71", "69.24", "35.82", "48.54", "-", "-"),
    ("DFER-CLIP (BMVC'23)", "CLIP-ViT-B/32", "90", "-", "59.61", "71.25", "41.27", "51.65", "39.89", "52.55"),
    ("CLIPER (ICME'24)", "CLIP-ViT-B/16", "88", "-", "57.56", "70.84", "41.23", "51.34", "-", "-"),
    ("EmoCLIP (FG'24)", "CLIP-ViT-B/32", "-", "-", "58.04", "62.12", "31.41", "36.18", "34.24", "41.46"),
    ("A3lign-DFER (ArXiv'24)", "CLIP-ViT-L/14", "-", "-", "64.09", "74.20", "41.87", "51.77", "42.07", "53.24"),
    ("VideoMAE (NeurIPS'22)", "ViT-B/16", "86", "82", "63.60", "74.60", "-", "-", "42.87", "53.51"),
    ("MAE-DFER (MM'23)", "ViT-B/16", "85", "50", "62.59", "74.88", "43.12", "52.07", "41.62", "54.31"),
    ("SVFAP (TAC'24)", "ViT-B/16", "78", "44", "62.63", "74.81", "42.14", "52.29", "41.19", "54.28"),
    ("HICMAE (Fusion'24)", "ViT-B/16", "81", "46", "63.76", "75.01", "-", "-", "42.65", "56.17"),
    ("MMA-DFER (CVPRW'24)", "ViT-B/16", "-", "-", "67.01", "77.51", "-", "-", "44.11", "58.52"),
    ("AdaTosk (Ours)", "ViT-B/16", "74", "44", "64.93", "75.95", "44.34", "54.24", "42.26", "56.81"),
    ("AdaTosk† (Ours)", "ViT-B/16", "72", "40", "66.76", "77.54", "46.28", "56.52", "44.15", "57.92"),
)
# Our Table 1 rows: variant -> label.
TABLE1_VARIANTS = {"videomae": "VideoMAE", "adatosk": "AdaTosk", "adatosk_dagger": "AdaTosk†"}

# Table 2 (DFEW): hard mask ratio -> quoted WAR and GFLOPs for r = 0, 2, 4, 6.
EXCLUSIONS = (0, 2, 4, 6)
PAPER_TABLE2: dict[float, tuple[tuple[str, ...], tuple[str, ...]]] = {
    0.25: (("76.74", "76.68", "76.57", "76.08"), ("136.15", "118.54", "99.75", "68.79")),
    0.5: (("77.06", "77.02", "76.97", "76.45"), ("84.32", "72.24", "60.05", "42.13")),
    0.7: (("77.63", "77.54", "-", "-"), ("57.73", "40.12", "-", "-")),
}


@dataclass(frozen=True)
class AblationRow:
    label: str
    variant: str
    expect: Mapping[str, Any]          # model keys the row stands for (checked against the run's config)
    paper: tuple[str, str]             # quoted UAR, WAR


# Table 3 (DFEW). Rows 3-6 lost their score names in the text; the text orders them "redundant score or semantic
# score", so rows 3 and 5 are taken as redundancy, rows 4 and 6 as semantic.
TABLE3 = (
    AblationRow("CA", "adatosk_ca", {"soft_mask": "ca"}, ("65.55", "76.64")),
    AblationRow("CS (redundancy + semantic)", "adatosk_cs", {"soft_mask": "cs", "scores": "both"}, ("66.03", "77.11")),
    AblationRow("CS (redundancy)", "adatosk_cs_redundancy", {"soft_mask": "cs", "scores": "redundancy"},
                ("65.78", "76.67")),
    AblationRow("CS (semantic)", "adatosk_cs_semantic", {"soft_mask": "cs", "scores": "semantic"}, ("65.95", "76.93")),
    AblationRow("CA + CS (redundancy)", "adatosk_ca_cs_redundancy", {"soft_mask": "ca+cs", "scores": "redundancy"},
                ("66.41", "77.07")),
    AblationRow("CA + CS (semantic)", "adatosk_ca_cs_semantic", {"soft_mask": "ca+cs", "scores": "semantic"},
                ("66.62", "77.31")),
    AblationRow("CA + CS (redundancy + semantic)", "adatosk_dagger", {"soft_mask": "ca+cs", "scores": "both"},
                ("66.76", "77.54")),
)
TABLE4 = (
    AblationRow("classification", "adatosk_dagger_diff_classification", {"diff": "classification"},
                ("61.86", "72.67")),
    AblationRow("cosine", "adatosk_dagger_diff_cosine", {"diff": "cosine"}, ("62.77", "73.52")),
    AblationRow("L2", "adatosk_dagger_diff_l2", {"diff": "l2"}, ("64.83", "75.68")),
    AblationRow("L1", "adatosk_dagger", {"diff": "l1"}, ("66.76", "77.54")),
)


PAPER_SETTING = (0.7, 2)  # AdaTosk-dagger's (hard mask ratio, r) in the paper


def table2_variant(mask_ratio: float, r: int) -> str:
    """The grid's variant of a Table 2 cell; the paper's setting (70%, r=2) is AdaTosk-dagger itself."""
    return "adatosk_dagger" if (mask_ratio, r) == PAPER_SETTING else f"adatosk_dagger_m{round(mask_ratio * 100)}_r{r}"


@dataclass
class Table:
    name: str
    title: str
    columns: list[str]
    rows: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def markdown(self) -> str:
        lines = [f"### {self.title}", "", "| " + " | ".join(self.columns) + " |",
                 "|" + "|".join("---" for _ in self.columns) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in self.rows]
        return "\n".join(lines + [""] + [f"{note}  " for note in self.notes]) + "\n"

    def csv(self) -> str:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(self.columns)
        writer.writerows(self.rows)
        return buffer.getvalue()

    def latex(self) -> str:
        def tex(text: str) -> str:
            for char, escaped in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"),
                                  ("#", r"\#"), ("±", r"$\pm$"), ("†", r"$^\dagger$")):
                text = text.replace(char, escaped)
            return text

        lines = [f"% {self.title}", r"\begin{tabular}{l" + "r" * (len(self.columns) - 1) + "}", r"\toprule",
                 " & ".join(tex(c) for c in self.columns) + r" \\", r"\midrule"]
        lines += [" & ".join(tex(c) for c in row) + r" \\" for row in self.rows]
        lines += [r"\bottomrule", r"\end{tabular}"] + [f"% {note}" for note in self.notes]
        return "\n".join(lines) + "\n"


# --- measured numbers ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Runs:
    """The runs a grid group asks of one dataset: each of its folds trained with each of its seeds."""
    folds: tuple[int, ...]
    seeds: tuple[int, ...]

    @property
    def count(self) -> int:
        return len(self.folds) * len(self.seeds)

    def describe(self) -> str:
        def listed(name: str, values: tuple[int, ...]) -> str:
            return f"{name}{'s' if len(values) > 1 else ''} {', '.join(map(str, values))}"

        return f"{listed('fold', self.folds)} x {listed('seed', self.seeds)} = {self.count} run{'s' * (self.count > 1)}"


def group_runs(group: Mapping[str, Any]) -> dict[str, Runs]:
    """dataset -> the runs of a grid group (``grid.main``, ``grid.ablation``) on it."""
    seeds = tuple(int(s) for s in group.get("seeds", [0]))
    folds: dict[str, list[int]] = {}
    for split in group["splits"]:
        folds.setdefault(str(split["dataset"]), []).append(int(split["fold"]))
    return {dataset: Runs(tuple(f), seeds) for dataset, f in folds.items()}


@dataclass(frozen=True)
class Cell:
    """The evaluated runs of one (dataset, variant) out of the ``expected`` its grid group asks for."""
    metrics: tuple[dict[str, Any], ...]
    expected: int

    def values(self, key: str, all_tokens: bool = False) -> list[float]:
        """``key`` (uar, war) of every run, in percent; with ``all_tokens`` the runs' every-token evaluation."""
        scores = [m.get("all_tokens") for m in self.metrics] if all_tokens else self.metrics
        return [float(m[key]) for m in scores if m is not None]

    def text(self, key: str, all_tokens: bool = False) -> str:
        return summary_text(self.values(key, all_tokens), self.expected)


def summary_text(values: Sequence[float], expected: int, digits: int = 2) -> str:
    """``mean ± std`` (sample std over runs) with ``digits`` decimals; ``not run`` without values; a partial cell
    counts its runs."""
    if not values:
        return NOT_RUN
    mean = float(np.mean(values))
    text = f"{mean:.{digits}f}"
    if len(values) > 1:
        text += f" ± {float(np.std(values, ddof=1)):.{digits}f}"
    return text if len(values) == expected else f"{text} ({len(values)}/{expected} runs)"


class Results:
    """Reads and checks the evaluated runs under ``runs_root``."""

    def __init__(self, runs_root: str | Path, variants: Mapping[str, Mapping[str, Any]]) -> None:
        self.root = str(runs_root)
        self.variants = variants

    def cell(self, dataset: str, variant: str, runs: Runs) -> Cell:
        found = []
        for fold in runs.folds:
            for seed in runs.seeds:
                path = Path(run_dir(self.root, dataset, variant, fold, seed)) / "metrics.json"
                if path.is_file():
                    found.append(self._read(path, (dataset, variant, fold, seed)))
        return Cell(tuple(found), runs.count)

    @staticmethod
    def _read(path: Path, run: tuple[str, str, int, int]) -> dict[str, Any]:
        metrics = json.loads(path.read_text(encoding="utf-8"))
        if metrics.get("unit") != UNIT:
            raise ValueError(f"{path} gives no rates in {UNIT} (unit: {metrics.get('unit')!r}): it was written by an "
                             "older `adatosk evaluate`, whose rates were fractions; evaluate the run again")
        claimed = tuple(metrics.get(k) for k in ("data", "variant", "fold", "seed"))
        if claimed != run:
            raise ValueError(f"{path} holds the metrics of data={claimed[0]} variant={claimed[1]} fold={claimed[2]} "
                             f"seed={claimed[3]}, not of the run its directory names")
        return metrics

    def check_variant(self, variant: str, expect: Mapping[str, Any], where: str) -> None:
        """The grid's variant must be what the table row says it is (params/experiment/variants.yaml)."""
        model = self.variants.get(variant)
        if model is None:
            return
        wrong = {k: model.get(k) for k, v in expect.items() if model.get(k) != v}
        if wrong:
            raise ValueError(f"{where}: variants.{variant} has {wrong}, but the row stands for {dict(expect)}")


def load_flops(path: Path) -> dict[str, dict[str, Any]]:
    if not path.is_file():
        return {}
    return {row["name"]: row for row in json.loads(path.read_text(encoding="utf-8"))["rows"]}


def flops_row(flops: Mapping[str, dict[str, Any]], variant: str,
              variants: Mapping[str, Mapping[str, Any]]) -> dict[str, Any] | None:
    """The FLOPs report's row of ``variant``, if it was counted on the variant's own config."""
    row = flops.get(variant)
    model = variants.get(variant)
    if row is None or model is None:
        return row
    family, _, arch = row["timm_name"].partition("_")
    counted = {"family": family, "arch": arch, **row["kwargs"]}
    same = all(model.get(k) == v for k, v in counted.items() if k in model)
    return row if same else None


def _number(row: dict[str, Any] | None, key: str, digits: int) -> str:
    return NOT_RUN if row is None else f"{row[key]:.{digits}f}"


def backbone(model: Mapping[str, Any] | None) -> str:
    arch = str((model or {}).get("arch", ""))
    return {"vit_base_patch16_160": "ViT-B/16", "vit_tiny_patch16_64": "ViT-Ti/16 (demo)"}.get(arch, arch or "?")


def title_of(dataset: str) -> str:
    return DATASET_TITLES.get(dataset, dataset)


def runs_note(runs: Mapping[str, Runs]) -> str:
    return "; ".join(f"{title_of(d)}: {r.describe()}" for d, r in runs.items())


# --- the tables ---------------------------------------------------------------------------------------------------

def table1(results: Results, grid: Mapping[str, Any], flops: Mapping[str, dict[str, Any]]) -> Table:
    runs = group_runs(grid["main"])
    datasets = list(PAPER_DATASETS) + [d for d in runs if d not in PAPER_DATASETS]
    columns = ["Method", "Backbone", "#Params (M)", "GFLOPs"]
    columns += [f"{title_of(d)} {m} (%)" for d in datasets for m in ("UAR", "WAR")] + ["Source"]
    table = Table("table1", "Table 1: comparison on DFEW, FERV39K and MAFW (UAR / WAR, %)", columns)
    for quoted in PAPER_TABLE1:
        extra = ["-"] * (2 * (len(datasets) - len(PAPER_DATASETS)))
        table.rows.append(list(quoted) + extra + [QUOTED])
    for variant, label in TABLE1_VARIANTS.items():
        if variant not in grid["main"]["variants"]:
            continue
        row = flops_row(flops, variant, results.variants)
        cells = [results.cell(d, variant, runs[d]) if d in runs else None for d in datasets]
        table.rows.append([label, backbone(results.variants.get(variant)), _number(row, "params_inference_m", 1),
                           _number(row, "gflops_inference", 2)]
                          + [c.text(m) if c else NOT_RUN for c in cells for m in ("uar", "war")] + [MEASURED])
    table.notes = [
        "Quoted rows: the paper's Table 1 as printed ('-': not reported). Measured rows: mean ± sample std over the "
        f"runs of each cell ({runs_note(runs) or 'none in the grid'}); params and GFLOPs per inference view from "
        "`adatosk flops` (fvcore, one multiply-add = one FLOP) at the grid's model size.",
    ]
    return table


def table2(results: Results, grid: Mapping[str, Any], flops: Mapping[str, dict[str, Any]], dataset: str,
           runs: Runs) -> Table:
    columns = ["Hard mask", "Metric", "Source"] + [f"r={r}" for r in EXCLUSIONS]
    table = Table("table2", f"Table 2: hard mask ratio and excluded tokens r ({title_of(dataset)}; WAR in %)", columns)
    ran = set(grid["ablation"]["variants"]) | set(grid["main"]["variants"])
    dagger = results.variants.get("adatosk_dagger") or {}
    dagger_setting = (dagger.get("mask_ratio", PAPER_SETTING[0]), dagger.get("r", PAPER_SETTING[1]))
    fraction = dagger.get("exclude_fraction")  # wins over r (r = fraction x N_v)
    paper_setting = dagger_setting == PAPER_SETTING and fraction is None
    for ratio, (paper_war, paper_gflops) in PAPER_TABLE2.items():
        names = [table2_variant(ratio, r) for r in EXCLUSIONS]
        # AdaTosk-dagger stands for (70%, r=2) only if it runs that setting (the demo gives it its own token budget)
        names = [None if n == "adatosk_dagger" and not paper_setting else n for n in names]
        for name, r in zip(names, EXCLUSIONS):
            if name is not None:
                results.check_variant(name, {"mask_ratio": ratio, "r": r}, f"Table 2 ({ratio:.0%}, r={r})")
        ours_war = [results.cell(dataset, n, runs).text("war") if n in ran else NOT_RUN for n in names]
        ours_gflops = [_number(flops_row(flops, n, results.variants), "gflops_inference", 2) if n else NOT_RUN
                       for n in names]
        label = f"{ratio:.0%}"
        table.rows += [[label, "WAR", QUOTED, *paper_war], [label, "WAR", MEASURED, *ours_war],
                       [label, "GFLOPs", QUOTED, *paper_gflops], [label, "GFLOPs", MEASURED, *ours_gflops]]
    table.notes = ["(70%, r=2) is AdaTosk†. The paper leaves r=4 and r=6 out at 70% (the exclusion outgrows the "
                   "visible tokens). Our GFLOPs count what the code runs per inference view (adatosk flops). "
                   f"Measured WAR: mean ± sample std over {runs.describe()}."]
    if not paper_setting:
        exclusion = f"r={dagger_setting[1]}" if fraction is None else f"exclude_fraction={fraction:g} (of N_v)"
        table.notes.append(f"This experiment runs AdaTosk† at hard mask {dagger_setting[0]:.0%}, {exclusion}, so no "
                           "run of it fills the (70%, r=2) cell.")
    return table


def ablation_table(name: str, title: str, rows: Sequence[AblationRow], first: str, results: Results,
                   grid: Mapping[str, Any], dataset: str, runs: Runs) -> Table:
    columns = [first, "UAR (%, paper, quoted)", "WAR (%, paper, quoted)", "UAR (%, ours)", "WAR (%, ours)"]
    table = Table(name, f"{title} ({title_of(dataset)})", columns)
    ran = set(grid["ablation"]["variants"]) | set(grid["main"]["variants"])
    for row in rows:
        results.check_variant(row.variant, row.expect, f"{name} row {row.label!r}")
        cell = results.cell(dataset, row.variant, runs) if row.variant in ran else None
        table.rows.append([row.label, *row.paper, *(cell.text(m) if cell else NOT_RUN for m in ("uar", "war"))])
    table.notes = [f"Ours: mean ± sample std over {runs.describe()}."]
    return table


def grid_cells(grid: Mapping[str, Any]) -> list[tuple[str, str, Runs]]:
    """(dataset, variant, runs) of every variant the grid trains, Table 1's first; a variant of both groups once."""
    cells: dict[tuple[str, str], Runs] = {}
    for group in ("main", "ablation"):
        for dataset, runs in group_runs(grid[group]).items():
            for variant in grid[group]["variants"]:
                cells.setdefault((dataset, variant), runs)
    return [(dataset, variant, runs) for (dataset, variant), runs in cells.items()]


def evaluation_hard_mask(model: Mapping[str, Any] | None) -> float | None:
    """The hard-mask ratio a variant is evaluated with: VideoMAE none; AdaTosk eval_mask_ratio, else mask_ratio."""
    if model is None:
        return None
    if model.get("family") == "videomae":
        return 0.0
    ratio = model.get("eval_mask_ratio")
    return model.get("mask_ratio") if ratio is None else ratio


def all_tokens_table(results: Results, grid: Mapping[str, Any]) -> Table:
    columns = ["Dataset", "Variant", "Hard mask at test", "UAR (%)", "WAR (%)", "UAR (%, all tokens)",
               "WAR (%, all tokens)", "Runs"]
    table = Table("all_tokens", "Evaluation with the hard mask and with every token (eval_mask_ratio = 0)", columns)
    for dataset, variant, runs in grid_cells(grid):
        cell = results.cell(dataset, variant, runs)
        ratio = evaluation_hard_mask(results.variants.get(variant))
        table.rows.append([title_of(dataset), variant, "?" if ratio is None else f"{ratio:.0%}",
                           *(cell.text(m, all_tokens=a) for a in (False, True) for m in ("uar", "war")),
                           runs.describe()])
    table.notes = ["The same test clips and temporal views: with the variant's evaluation hard mask (its mask views "
                   "averaged), and with every token visible (one view; a variant without hard mask at test scores "
                   "the same twice). Mean ± sample std over the runs."]
    return table


# The soft-mask tables (metrics.json `soft_mask`, adatosk.mask_stats): (column, key path in `soft_mask`, decimals)
SOFT_MASK_COLUMNS = (
    ("mean M_ca", ("m_ca", "mean"), 3), ("M_ca spread", ("m_ca", "spread"), 3),
    ("mean M_cs", ("m_cs", "mean"), 3), ("M_cs spread", ("m_cs", "spread"), 3),
    ("M_s spread", ("m_s", "spread"), 3), ("effective share (M_s)", ("m_s", "effective_share"), 3),
    ("gate s", ("gate", "s"), 2), ("gate b", ("gate", "b"), 2),
)
# per-slot rows: (quantity, key path of a [T'] list, scale, decimals)
SOFT_MASK_SLOT_ROWS = (
    ("M_ca", ("m_ca", "per_slot"), 1.0, 3), ("M_cs", ("m_cs", "per_slot"), 1.0, 3),
    ("M_s", ("m_s", "per_slot"), 1.0, 3),
    ("excluded (%)", ("excluded_share",), 100.0, 1), ("activated (%)", ("activated_share",), 100.0, 1),
)
ABSENT = "-"  # a quantity the variant has no module for


def nested(mapping: Mapping[str, Any], path: Sequence[str]) -> Any:
    """``mapping[path[0]][path[1]]...``, None where a key is missing."""
    for key in path:
        if not isinstance(mapping, Mapping) or key not in mapping:
            return None
        mapping = mapping[key]
    return mapping


def soft_mask_cells(results: Results, grid: Mapping[str, Any]) -> list[tuple[str, str, Runs, list[dict]]]:
    """(dataset, variant, runs, the ``soft_mask`` of every evaluated run's metrics.json, with its UAR under
    ``uar``) of the grid's variants that have at least one run with soft-mask statistics."""
    cells = []
    for dataset, variant, runs in grid_cells(grid):
        stats = [dict(m["soft_mask"], uar=m["uar"]) for m in results.cell(dataset, variant, runs).metrics
                 if "soft_mask" in m]
        if stats:
            cells.append((dataset, variant, runs, stats))
    return cells


def present_text(values: Sequence[float | None], expected: int, digits: int) -> str:
    """:func:`summary_text` of the runs' values; ``-`` when no run has the quantity (a variant without the module)."""
    present = [float(v) for v in values if v is not None]
    return summary_text(present, expected, digits) if present else ABSENT


def soft_mask_table(results: Results, grid: Mapping[str, Any]) -> Table:
    columns = ["Dataset", "Variant", "UAR (%)", "UAR (%, M_s := 1)", "UAR - UAR(M_s := 1)"]
    columns += [name for name, _, _ in SOFT_MASK_COLUMNS] + ["Runs"]
    table = Table("soft_mask", "What the soft mask does at test time (evaluate.soft_mask_stats)", columns)
    for dataset, variant, runs, stats in soft_mask_cells(results, grid):
        uniform = [s["uniform"]["uar"] for s in stats]
        learned = [s["uar"] for s in stats]
        table.rows.append([title_of(dataset), variant, summary_text(learned, runs.count),
                           summary_text(uniform, runs.count),
                           summary_text([a - b for a, b in zip(learned, uniform)], runs.count)]
                          + [present_text([nested(s, path) for s in stats], runs.count, digits)
                             for _, path, digits in SOFT_MASK_COLUMNS] + [runs.describe()])
    table.notes = [
        "Mean ± sample std over the runs evaluated with soft-mask statistics, on the test views of Tables 1-4 (the "
        "variant's hard mask, every mask view). UAR (M_s := 1): the same views with M_ca and M_cs replaced by 1 on "
        "the kept tokens (the CS exclusion unchanged): the pooling is the plain mean of the kept tokens; the "
        "difference is taken per run. Means: over every kept token. Spread: within a view, std / mean of the "
        "weights over its kept tokens, averaged over views. Effective share: (sum M_s)^2 / (n sum M_s^2) over the "
        "n kept tokens of a view, averaged (1: the same weight on every token). Gate: the CA cosine gate's "
        "M_ca = sigmoid(s cos + b). '-': the variant has no such module.",
    ]
    if not table.rows:
        table.notes.append("No run of the grid has soft-mask statistics (evaluate.soft_mask_stats=true, a variant "
                           "with CA or CS).")
    return table


def soft_mask_slot_table(results: Results, grid: Mapping[str, Any]) -> Table:
    cells = soft_mask_cells(results, grid)
    slots = max((s["slots"] for *_, stats in cells for s in stats), default=0)
    columns = ["Dataset", "Variant", "Quantity"] + [f"slot {t + 1}" for t in range(slots)]
    table = Table("soft_mask_slots", "The soft mask per temporal slot (evaluate.soft_mask_stats)", columns)
    for dataset, variant, runs, stats in cells:
        for quantity, path, scale, digits in SOFT_MASK_SLOT_ROWS:
            per_run = [nested(s, path) or [] for s in stats]  # [runs][T']
            if not any(per_run):
                continue
            table.rows.append([title_of(dataset), variant, quantity] + [
                present_text([scale * r[t] if t < len(r) and r[t] is not None else None for r in per_run],
                             runs.count, digits) for t in range(slots)])
    table.notes = [
        "Mean ± sample std over the runs. M_ca, M_cs, M_s: mean over the kept (not excluded) tokens of the slot. "
        "excluded: share of the slot's visible tokens the CS mask excludes. activated: share of the test views in "
        "which the CA mask takes the slot as one of its top-K key slots (Eq. 5; slot 1 never is)."]
    return table


def per_class_tables(results: Results, grid: Mapping[str, Any]) -> list[Table]:
    tables = []
    for dataset, runs in group_runs(grid["main"]).items():
        cells = {v: results.cell(dataset, v, runs) for v in grid["main"]["variants"]}
        names = next((list(m["class_names"]) for c in cells.values() for m in c.metrics), None)
        if names is None:
            continue
        table = Table(f"per_class_{dataset}", f"Per-class recall on {title_of(dataset)} (%)", ["Variant"] + names)
        for variant, cell in cells.items():
            recalls = [[m["per_class_recall"][k] for m in cell.metrics if m["per_class_recall"][k] is not None]
                       for k in range(len(names))]
            table.rows.append([variant] + [summary_text(r, runs.count) for r in recalls])
        table.notes = [f"Mean ± sample std over {runs.describe()}."]
        tables.append(table)
    return tables


def confusion_plots(results: Results, grid: Mapping[str, Any], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from adatosk.io import atomic_path

    written = []
    for dataset, runs in group_runs(grid["main"]).items():
        for variant in grid["main"]["variants"]:
            cell = results.cell(dataset, variant, runs)
            if not cell.metrics:
                continue
            counts = np.sum([np.asarray(m["confusion_matrix"], dtype=float) for m in cell.metrics], axis=0)
            rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1.0)
            names = cell.metrics[0]["class_names"]
            fig, ax = plt.subplots(figsize=(1.0 + 0.6 * len(names), 0.8 + 0.6 * len(names)))
            ax.imshow(rates, cmap="Blues", vmin=0.0, vmax=1.0)
            for i, j in np.ndindex(rates.shape):
                ax.text(j, i, f"{rates[i, j]:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if rates[i, j] > 0.5 else "black")
            ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
            ax.set_yticks(range(len(names)), names)
            ax.set_xlabel("predicted")
            ax.set_ylabel("true")
            ax.set_title(f"{variant} on {dataset} ({len(cell.metrics)}/{runs.count} runs)", fontsize=9)
            fig.tight_layout()
            path = out / f"confusion_{dataset}_{variant}.png"
            with atomic_path(path) as tmp:
                fig.savefig(tmp, format="png", dpi=120)
            plt.close(fig)
            written.append(path)
    return written


def metrics_summary(results: Results, grid: Mapping[str, Any]) -> dict[str, Any]:
    """Measured mean / sample std (%) per dataset and variant over its runs, with the hard mask and with every token,
    for ``dvc metrics show``; variants without an evaluated run are absent."""
    summary: dict[str, Any] = {}
    for dataset, variant, runs in grid_cells(grid):
        cell = results.cell(dataset, variant, runs)
        if not cell.metrics:
            continue
        entry: dict[str, Any] = {"unit": UNIT, "runs": len(cell.metrics), "of": runs.count}
        for all_tokens, suffix in ((False, ""), (True, "_all_tokens")):
            for key in ("uar", "war"):
                values = cell.values(key, all_tokens)
                entry[key + suffix] = round(float(np.mean(values)), 2) if values else None
                entry[f"{key}{suffix}_std"] = round(float(np.std(values, ddof=1)), 2) if len(values) > 1 else None
        summary.setdefault(dataset, {})[variant] = entry
    return summary


def build_tables(results: Results, grid: Mapping[str, Any], flops: Mapping[str, dict[str, Any]]) -> list[Table]:
    tables = [table1(results, grid, flops)]
    for dataset, runs in group_runs(grid["ablation"]).items():
        tables += [
            table2(results, grid, flops, dataset, runs),
            ablation_table("table3", "Table 3: soft mask strategies", TABLE3, "Soft mask strategy", results, grid,
                           dataset, runs),
            ablation_table("table4", "Table 4: distance functions of the class-agnostic soft mask", TABLE4,
                           "Distance", results, grid, dataset, runs),
        ]
    return tables + [all_tokens_table(results, grid), soft_mask_table(results, grid),
                     soft_mask_slot_table(results, grid)] + per_class_tables(results, grid)


def write_tables(tables: Sequence[Table], out: Path) -> list[Path]:
    from adatosk.io import write_text_atomic

    written = []
    for table in tables:
        for suffix, text in ((".md", table.markdown()), (".csv", table.csv()), (".tex", table.latex())):
            path = out / f"{table.name}{suffix}"
            write_text_atomic(path, text)
            written.append(path)
    return written


# --- the `adatosk tables` command ---------------------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    from adatosk.cli import add_config_arguments

    parser.add_argument("--runs", default=None, metavar="DIR",
                        help="the runs' root (default: the config's output_root)")
    parser.add_argument("--efficiency", default="results/efficiency", metavar="DIR",
                        help="where `adatosk flops` wrote flops.json")
    parser.add_argument("--out", default="results/tables", metavar="DIR")
    parser.add_argument("--metrics", default="results/metrics.json", metavar="FILE",
                        help="the measured summary for `dvc metrics show`")
    parser.add_argument("--print", action="store_true", dest="print_tables",
                        help="print Tables 1-4 and the all-token evaluation to the terminal")
    add_config_arguments(parser)


def main(args: argparse.Namespace) -> int:
    from adatosk.config import load_config, to_container
    from adatosk.io import write_json_atomic

    cfg = to_container(load_config(args.overrides, args.config))
    if "grid" not in cfg:
        raise KeyError("the config has no `grid` (params/experiment/demo.yaml or paper.yaml define it)")
    results = Results(args.runs or cfg["output_root"], cfg.get("variants") or {})
    flops = load_flops(Path(args.efficiency) / "flops.json")
    tables = build_tables(results, cfg["grid"], flops)
    out = Path(args.out)
    written = write_tables(tables, out) + confusion_plots(results, cfg["grid"], out)
    write_json_atomic(Path(args.metrics), metrics_summary(results, cfg["grid"]))
    if args.print_tables:
        for table in tables:
            if table.name.startswith("table") or table.name == "all_tokens":
                print(table.markdown())
    print(f"wrote {len(written)} files to {out} and {args.metrics}")
    return 0
