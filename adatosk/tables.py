"""The ``adatosk tables`` command: the paper's Tables 1-4 with our measured numbers beside the quoted ones.

Reads the grid of the config (``grid.main``: Table 1; ``grid.ablation``: Tables 2-4, see params/experiment/), every
run's ``metrics.json`` (``runs/<dataset>/<variant>/fold<k>/seed<s>``, written by ``adatosk evaluate``), the
``adatosk flops`` report and the paper's quoted numbers (adatosk/paper.py), and writes to ``--out``, each table as
Markdown, CSV and LaTeX:

* ``table1``: UAR / WAR per dataset, parameters and GFLOPs; the paper's rows (all its baselines) quoted as printed,
  marked ``paper (quoted)``, beside our measured rows, each followed by ``ours - paper``: the difference and the
  reproduction verdict;
* ``table2`` (hard mask ratio x r: WAR and GFLOPs), ``table3`` (soft-mask strategies), ``table4`` (distance
  functions), on the ablation dataset, with ``ours - paper`` likewise;
* ``reproduction`` (an experiment with ``grid.main.reference``, the demo's): this run's UAR per variant against
  the committed reference distribution, inside or outside the range it predicts;
* ``comparisons``: paired differences over the same folds and seeds, Table 1's variants with each other and every
  ablation variant with AdaTosk-dagger, with their 95% interval and whether it spans 0;
* ``all_tokens``: every variant of the grid evaluated with its hard mask (as in Tables 1-4) and with every token
  visible (``eval_mask_ratio = 0``, ``evaluate.all_tokens``);
* ``soft_mask`` and ``soft_mask_slots``: what the soft mask does on the test views of every variant that has one
  (metrics.json ``soft_mask``, ``evaluate.soft_mask_stats``): UAR with the learned weights and with ``M_s := 1``,
  the masks' means, within-view spread and effective token share, the CA gate; per slot, the masks' means and the
  shares of excluded tokens and activated slots;
* ``per_class_<dataset>``: per-class recall of every Table 1 variant; ``confusion/<dataset>_<variant>.png``: the
  confusion matrix summed over runs, normalised per true class.

A measured cell is the mean, sample standard deviation and 95% t interval of the mean (adatosk/stats.py), in
percent (the unit of metrics.json), over the runs its grid group asks for: every fold of the group's splits on that
dataset times every seed of ``grid.<group>.seeds``; each cell says its n. A cell whose runs have not happened says
``not run`` (and a partial one how many runs it has): no number is ever filled in. Runs that are not the paper's
experiment (metrics.json ``experiment``, the model size) are labelled as such beside the paper's numbers. The
headline summary for ``dvc exp show`` goes to ``--metrics``, the data of ``dvc plots`` to ``--plots``
(adatosk/plots.py).
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

from adatosk import paper, stats
from adatosk.grid import run_dir
from adatosk.metrics import UNIT
from adatosk.plots import confusion_images, write_plot_data

NOT_RUN = "not run"
NO_TEST_CLIPS = "no test clips"
QUOTED = "paper (quoted)"
MEASURED = "ours (measured)"
VERSUS = "ours - paper"
DATASET_TITLES = {"dfew": "DFEW", "ferv39k": "FERV39K", "mafw": "MAFW", "demo": "demo"}
PAPER_EXPERIMENT = "paper"                # params/experiment/paper.yaml: the paper-size runs
PAPER_ARCH = "vit_base_patch16_160"

# Our Table 1 rows: variant -> label; the paired comparisons of Table 1 (first minus second).
TABLE1_VARIANTS = {"videomae": "VideoMAE", "adatosk": "AdaTosk", "adatosk_dagger": "AdaTosk†"}
TABLE1_PAIRS = (("adatosk_dagger", "adatosk"), ("adatosk_dagger", "videomae"), ("adatosk", "videomae"))
ABLATION_BASE = "adatosk_dagger"          # every ablation row is compared with it


def table2_variant(mask_ratio: float, r: int) -> str:
    """The grid's variant of a Table 2 cell; the paper's setting (70%, r=2) is AdaTosk-dagger itself."""
    return "adatosk_dagger" if (mask_ratio, r) == paper.SETTING else f"adatosk_dagger_m{round(mask_ratio * 100)}_r{r}"


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

    def by_run(self, key: str, all_tokens: bool = False) -> dict[tuple[int, int], float]:
        """(fold, seed) -> ``key`` (uar, war) of the run, in percent; with ``all_tokens`` its every-token
        evaluation."""
        scores = {(m["fold"], m["seed"]): m.get("all_tokens") if all_tokens else m for m in self.metrics}
        return {run: float(m[key]) for run, m in scores.items() if m is not None}

    def values(self, key: str, all_tokens: bool = False) -> list[float]:
        return list(self.by_run(key, all_tokens).values())

    def text(self, key: str, all_tokens: bool = False) -> str:
        return summary_text(self.values(key, all_tokens), self.expected)

    def not_paper_size(self, model: Mapping[str, Any] | None) -> str | None:
        """Why the runs are not the paper's experiment (metrics.json ``experiment``, the variant's arch), or None."""
        experiments = {m.get("experiment") for m in self.metrics}
        reasons = []
        if None in experiments:
            reasons.append("experiment unknown")
        named = sorted(str(e) for e in experiments - {None, PAPER_EXPERIMENT})
        if named:
            reasons.append(f"experiment {', '.join(named)}")
        arch = (model or {}).get("arch")
        if arch is not None and arch != PAPER_ARCH:
            reasons.append(f"model {arch}")
        return "; ".join(reasons) or None


def summary_text(values: Sequence[float], expected: int, digits: int = 2) -> str:
    """``mean ± std [low, high] (n=k)``: sample std over the runs and the 95% t interval of the mean (n >= 2);
    ``not run`` without values; a partial cell says ``n=k of expected``."""
    if not values:
        return NOT_RUN
    est = stats.estimate(values)
    text = f"{est.mean:.{digits}f}"
    if est.has_interval:
        text += f" ± {est.std:.{digits}f} [{est.low:.{digits}f}, {est.high:.{digits}f}]"
    return f"{text} (n={est.n})" if est.n == expected else f"{text} (n={est.n} of {expected})"


def versus_paper(values: Sequence[float], quoted: str, not_comparable: str | None) -> str:
    """Measured mean minus the quoted value and whether the quoted value lies inside the measured 95% interval;
    ``not comparable`` (with why) for runs that are not the paper's experiment or data."""
    if quoted == paper.NOT_REPORTED:
        return paper.NOT_REPORTED
    if not values:
        return NOT_RUN
    est = stats.estimate(values)
    verdict = f"not comparable: {not_comparable}" if not_comparable else stats.reproduction(est, float(quoted))
    return f"{est.mean - float(quoted):+.2f} ({verdict})"


VERDICT_NOTE = (
    "ours - paper: the measured mean minus the quoted value, with the verdict: reproduced (the quoted value lies "
    "inside the measured 95% interval), not reproduced, too few runs (fewer than 2: no interval), or not comparable: "
    "the runs are not the paper's (other data; a model other than ViT-B/16 at 160 px; an experiment other than "
    "`paper`; experiment unknown: their metrics.json do not say, written by an older `adatosk evaluate`).")


def data_mismatch(dataset: str, quoted_dataset: str) -> str | None:
    return None if dataset == quoted_dataset else f"{title_of(dataset)} data"


def join_reasons(*reasons: str | None) -> str | None:
    return "; ".join(r for r in reasons if r) or None


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

    def run_files(self, dataset: str, variant: str, runs: Runs, name: str) -> list[Path]:
        """The runs' files ``name`` (log.csv, predictions.csv) that exist."""
        paths = [Path(run_dir(self.root, dataset, variant, fold, seed)) / name
                 for fold in runs.folds for seed in runs.seeds]
        return [path for path in paths if path.is_file()]

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


def load_rows(path: Path) -> dict[str, dict[str, Any]]:
    """name -> row of an ``adatosk flops`` or ``adatosk bench`` report (empty if it was not written)."""
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
    datasets = list(paper.DATASETS) + [d for d in runs if d not in paper.DATASETS]
    columns = ["Method", "Backbone", "#Params (M)", "GFLOPs"]
    columns += [f"{title_of(d)} {m} (%)" for d in datasets for m in ("UAR", "WAR")] + ["Source"]
    table = Table("table1", "Table 1: comparison on DFEW, FERV39K and MAFW (UAR / WAR, %)", columns)
    for quoted in paper.TABLE1:
        extra = [paper.NOT_REPORTED] * (2 * (len(datasets) - len(paper.DATASETS)))
        table.rows.append(list(quoted) + extra + [QUOTED])
    labelled = []
    for variant, label in TABLE1_VARIANTS.items():
        if variant not in grid["main"]["variants"]:
            continue
        model = results.variants.get(variant)
        row = flops_row(flops, variant, results.variants)
        cells = {d: results.cell(d, variant, runs[d]) for d in datasets if d in runs}
        measured, versus = [], []
        for dataset in datasets:
            cell = cells.get(dataset)
            # a run of another experiment in a column of the paper's datasets says what it is
            other = cell.not_paper_size(model) if cell and cell.metrics and dataset in paper.DATASETS else None
            if other:
                labelled.append(f"{label} on {title_of(dataset)}: {other}")
            for metric in ("uar", "war"):
                measured.append(NOT_RUN if cell is None else cell.text(metric) + (f" ({other})" if other else ""))
                versus.append(versus_paper(cell.values(metric) if cell else [],
                                           paper.table1_score(variant, dataset, metric), other))
        table.rows.append([label, backbone(model), _number(row, "params_inference_m", 1),
                           _number(row, "gflops_inference", 2)] + measured + [MEASURED])
        table.rows.append([label, "", "", ""] + versus + [VERSUS])
    table.notes = [
        "Quoted rows: the paper's Table 1 as printed ('-': not reported). Measured rows: mean ± sample std [95% t "
        f"interval of the mean] (n runs) over the runs of each cell ({runs_note(runs) or 'none in the grid'}); "
        "params and GFLOPs per inference view from `adatosk flops` (fvcore, one multiply-add = one FLOP) at the "
        "grid's model size.",
        VERDICT_NOTE,
    ]
    if labelled:
        table.notes.append("Not the paper's experiment: " + "; ".join(labelled) + ".")
    return table


def table2(results: Results, grid: Mapping[str, Any], flops: Mapping[str, dict[str, Any]], dataset: str,
           runs: Runs) -> Table:
    columns = ["Hard mask", "Metric", "Source"] + [f"r={r}" for r in paper.EXCLUSIONS]
    table = Table("table2", f"Table 2: hard mask ratio and excluded tokens r ({title_of(dataset)}; WAR in %)", columns)
    ran = set(grid["ablation"]["variants"]) | set(grid["main"]["variants"])
    dagger = results.variants.get("adatosk_dagger") or {}
    dagger_setting = (dagger.get("mask_ratio", paper.SETTING[0]), dagger.get("r", paper.SETTING[1]))
    fraction = dagger.get("exclude_fraction")  # wins over r (r = fraction x N_v)
    paper_setting = dagger_setting == paper.SETTING and fraction is None
    for ratio in paper.MASK_RATIOS:
        quoted = [paper.TABLE2.get((ratio, r), (paper.NOT_REPORTED, paper.NOT_REPORTED)) for r in paper.EXCLUSIONS]
        names = [table2_variant(ratio, r) for r in paper.EXCLUSIONS]
        # AdaTosk-dagger stands for (70%, r=2) only if it runs that setting (the demo gives it its own token budget)
        names = [None if n == "adatosk_dagger" and not paper_setting else n for n in names]
        for name, r in zip(names, paper.EXCLUSIONS):
            if name is not None:
                results.check_variant(name, {"mask_ratio": ratio, "r": r}, f"Table 2 ({ratio:.0%}, r={r})")
        cells = [results.cell(dataset, n, runs) if n in ran else None for n in names]
        ours_war = [cell.text("war") if cell else NOT_RUN for cell in cells]
        versus = [ablation_versus(results, cell, name, dataset, "war", war)
                  for cell, name, (war, _) in zip(cells, names, quoted)]
        ours_gflops = [_number(flops_row(flops, n, results.variants), "gflops_inference", 2) if n else NOT_RUN
                       for n in names]
        label = f"{ratio:.0%}"
        table.rows += [[label, "WAR", QUOTED, *(war for war, _ in quoted)], [label, "WAR", MEASURED, *ours_war],
                       [label, "WAR", VERSUS, *versus],
                       [label, "GFLOPs", QUOTED, *(gflops for _, gflops in quoted)],
                       [label, "GFLOPs", MEASURED, *ours_gflops]]
    table.notes = ["(70%, r=2) is AdaTosk†. The paper leaves r=4 and r=6 out at 70% (the exclusion outgrows the "
                   "visible tokens). Our GFLOPs count what the code runs per inference view (adatosk flops). "
                   f"Measured WAR: mean ± sample std [95% t interval] (n runs) over {runs.describe()}.", VERDICT_NOTE]
    if not paper_setting:
        exclusion = f"r={dagger_setting[1]}" if fraction is None else f"exclude_fraction={fraction:g} (of N_v)"
        table.notes.append(f"This experiment runs AdaTosk† at hard mask {dagger_setting[0]:.0%}, {exclusion}, so no "
                           "run of it fills the (70%, r=2) cell.")
    return table


def ablation_versus(results: Results, cell: Cell | None, variant: str | None, dataset: str, metric: str,
                    quoted: str) -> str:
    """:func:`versus_paper` of an ablation cell, whose quoted values are the paper's on DFEW."""
    why = join_reasons(data_mismatch(dataset, paper.ABLATION_DATASET),
                       cell.not_paper_size(results.variants.get(variant)) if cell and cell.metrics else None)
    return versus_paper(cell.values(metric) if cell else [], quoted, why)


def ablation_table(name: str, title: str, rows: Sequence[paper.AblationRow], first: str, results: Results,
                   grid: Mapping[str, Any], dataset: str, runs: Runs) -> Table:
    columns = [first, "UAR (%, paper, quoted)", "WAR (%, paper, quoted)", "UAR (%, ours)", "WAR (%, ours)",
               "UAR: ours - paper", "WAR: ours - paper"]
    table = Table(name, f"{title} ({title_of(dataset)})", columns)
    ran = set(grid["ablation"]["variants"]) | set(grid["main"]["variants"])
    for row in rows:
        results.check_variant(row.variant, row.expect, f"{name} row {row.label!r}")
        cell = results.cell(dataset, row.variant, runs) if row.variant in ran else None
        table.rows.append([row.label, *row.quoted, *(cell.text(m) if cell else NOT_RUN for m in ("uar", "war")),
                           *(ablation_versus(results, cell, row.variant, dataset, m, q)
                             for m, q in zip(("uar", "war"), row.quoted))])
    table.notes = [f"Ours: mean ± sample std [95% t interval of the mean] (n runs) over {runs.describe()}.",
                   VERDICT_NOTE]
    return table


def quoted_score(variant: str, dataset: str, metric: str) -> str:
    """The paper's UAR or WAR of one of our variants on ``dataset`` (Table 1, else Tables 2-4 on DFEW); ``-``."""
    score = paper.table1_score(variant, dataset, metric)
    if score != paper.NOT_REPORTED or dataset != paper.ABLATION_DATASET:
        return score
    for row in paper.TABLE3 + paper.TABLE4:
        if row.variant == variant:
            return row.quoted[("uar", "war").index(metric)]
    war = {table2_variant(ratio, r): war for (ratio, r), (war, _) in paper.TABLE2.items()}.get(variant)
    return war if war is not None and metric == "war" else paper.NOT_REPORTED


def ablation_table_of(variant: str) -> str:
    for name, rows in (("Table 3", paper.TABLE3), ("Table 4", paper.TABLE4)):
        if any(row.variant == variant for row in rows):
            return name
    return "Table 2" if any(table2_variant(*cell) == variant for cell in paper.TABLE2) else "ablation"


def compared_pairs(grid: Mapping[str, Any]) -> list[tuple[str, str, str, str, Runs]]:
    """(table, dataset, variant, baseline, runs) of every paired comparison: Table 1's variants with each other,
    every ablation variant with AdaTosk-dagger, over the runs of their grid group."""
    pairs = []
    for dataset, runs in group_runs(grid["main"]).items():
        pairs += [("Table 1", dataset, a, b, runs) for a, b in TABLE1_PAIRS
                  if {a, b} <= set(grid["main"]["variants"])]
    for dataset, runs in group_runs(grid["ablation"]).items():
        pairs += [(ablation_table_of(v), dataset, v, ABLATION_BASE, runs) for v in grid["ablation"]["variants"]
                  if v != ABLATION_BASE]
    return pairs


def difference_text(value: float) -> str:
    return f"{value:+.2f}"


def comparisons_table(results: Results, grid: Mapping[str, Any]) -> Table:
    columns = ["Table", "Dataset", "Difference", "Metric", "Pairs", "Mean ± std (pp)", "95% CI (pp)", "Verdict",
               "Paper (pp)"]
    table = Table("comparisons", "Paired differences between variants (same folds and seeds)", columns)
    for name, dataset, variant, baseline, runs in compared_pairs(grid):
        cells = [results.cell(dataset, v, runs) for v in (variant, baseline)]
        for metric in ("uar", "war"):
            quoted = [quoted_score(v, dataset, metric) for v in (variant, baseline)]
            paper_diff = (paper.NOT_REPORTED if paper.NOT_REPORTED in quoted
                          else difference_text(float(quoted[0]) - float(quoted[1])))
            diff = stats.paired_difference(*(cell.by_run(metric) for cell in cells))
            if diff is None:
                measured = ["0", NOT_RUN, NOT_RUN, stats.TOO_FEW]
            else:
                spread = f" ± {diff.std:.2f}" if diff.std is not None else ""
                interval = (f"[{difference_text(diff.low)}, {difference_text(diff.high)}]" if diff.has_interval
                            else paper.NOT_REPORTED)
                measured = [f"{diff.n} of {runs.count}", difference_text(diff.mean) + spread, interval,
                            stats.significance(diff)]
            table.rows.append([name, title_of(dataset), f"{variant} - {baseline}", metric.upper(), *measured,
                               paper_diff])
    table.notes = [
        "Each difference is taken per run pair (same dataset, fold and seed: the same test clips), in percentage "
        "points; the interval is the 95% t interval of the mean difference over the pairs. not significant: the "
        "interval spans 0; too few runs: fewer than 2 pairs. Paper: the quoted values' difference (Table 1 on its "
        "dataset; Tables 2-4 on DFEW), '-' where either is not reported or the data is not the paper's."]
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
    for dataset, variant, runs, masks in soft_mask_cells(results, grid):
        uniform = [s["uniform"]["uar"] for s in masks]
        learned = [s["uar"] for s in masks]
        table.rows.append([title_of(dataset), variant, summary_text(learned, runs.count),
                           summary_text(uniform, runs.count),
                           summary_text([a - b for a, b in zip(learned, uniform)], runs.count)]
                          + [present_text([nested(s, path) for s in masks], runs.count, digits)
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
    slots = max((s["slots"] for *_, masks in cells for s in masks), default=0)
    columns = ["Dataset", "Variant", "Quantity"] + [f"slot {t + 1}" for t in range(slots)]
    table = Table("soft_mask_slots", "The soft mask per temporal slot (evaluate.soft_mask_stats)", columns)
    for dataset, variant, runs, masks in cells:
        for quantity, path, scale, digits in SOFT_MASK_SLOT_ROWS:
            per_run = [nested(s, path) or [] for s in masks]  # [runs][T']
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
            # a class without recall in runs that happened has no test clip there; NOT_RUN is for absent runs
            table.rows.append([variant] + [summary_text(r, runs.count) if r or not cell.metrics else NO_TEST_CLIPS
                                           for r in recalls])
        table.notes = [f"Mean ± sample std [95% t interval] (n runs) over {runs.describe()}; {NO_TEST_CLIPS}: the "
                       "class has no clip in the test split of the runs that happened."]
        tables.append(table)
    return tables


def main_cells(grid: Mapping[str, Any]) -> list[tuple[str, str, Runs]]:
    """(dataset, variant, runs) of Table 1's grid group."""
    return [(dataset, variant, runs) for dataset, runs in group_runs(grid["main"]).items()
            for variant in grid["main"]["variants"]]


EFFICIENCY_KEYS = (("params_m", "params_inference_m"), ("gflops", "gflops_inference"))
THROUGHPUT_KEYS = ("infer_clips_per_s", "train_clips_per_s")


def metrics_summary(results: Results, grid: Mapping[str, Any], flops: Mapping[str, dict[str, Any]],
                    bench: Mapping[str, dict[str, Any]]) -> dict[str, Any]:
    """The headline numbers for ``dvc exp show`` / ``dvc metrics show``, a handful per cell so experiments compare
    at a glance: ``results.<dataset>.<variant>``: UAR and WAR mean and sample std (%) and n runs, of every variant
    with an evaluated run; ``efficiency.<variant>``: params (M), GFLOPs per view and clips/s of Table 1's
    variants, where counted."""
    measured: dict[str, Any] = {}
    for dataset, variant, runs in grid_cells(grid):
        cell = results.cell(dataset, variant, runs)
        if not cell.metrics:
            continue
        entry: dict[str, Any] = {}
        for key in ("uar", "war"):
            est = stats.estimate(cell.values(key))
            entry.update({key: round(est.mean, 2), f"{key}_std": None if est.std is None else round(est.std, 2)})
        measured.setdefault(dataset, {})[variant] = {**entry, "n": len(cell.metrics)}
    efficiency: dict[str, Any] = {}
    for variant in TABLE1_VARIANTS:
        row, timing = flops_row(flops, variant, results.variants), bench.get(variant, {})
        entry = {name: round(row[key], 3) for name, key in EFFICIENCY_KEYS if row is not None}
        entry.update({key: round(timing[key], 2) for key in THROUGHPUT_KEYS if timing.get(key) is not None})
        if entry:
            efficiency[variant] = entry
    return {"results": measured, "efficiency": efficiency}


NOT_MEASURED = "reference not measured yet"


def reproduction_table(results: Results, grid: Mapping[str, Any]) -> Table | None:
    """This run against the committed reference (``grid.main.reference``: mean, std and n of each variant's UAR
    over seeds and machines): inside or outside the 95% range the reference predicts for the mean of this many
    runs. None without a reference (the paper's experiment has the paper's numbers instead)."""
    reference = grid["main"].get("reference")
    if not reference:
        return None
    dataset, metric = reference["dataset"], reference["metric"]
    columns = ["Variant", f"yours ({metric.upper()}, %)", "reference (mean ± std, n)", "95% range for yours",
               "verdict"]
    table = Table("reproduction", f"Does this run reproduce the reference? ({title_of(dataset)})", columns)
    variants = reference.get("variants") or {}
    for cell_dataset, variant, runs in grid_cells(grid):
        if cell_dataset != dataset or variant not in variants:
            continue
        entry = variants[variant]
        values = results.cell(dataset, variant, runs).values(metric)
        yours = f"{sum(values) / len(values):.2f} (n={len(values)})" if values else NOT_RUN
        if not entry or not entry.get("n") or entry["n"] < 2:
            table.rows.append([variant, yours, NOT_MEASURED, "-", NOT_MEASURED if values else NOT_RUN])
            continue
        low, high = stats.prediction_interval(entry["mean"], entry["std"], entry["n"], max(len(values), 1))
        verdict = NOT_RUN if not values else "inside" if low <= sum(values) / len(values) <= high else "outside"
        table.rows.append([variant, yours, f"{entry['mean']:.2f} ± {entry['std']:.2f} (n={entry['n']})",
                           f"{low:.2f} - {high:.2f}", verdict])
    machines = ", ".join(reference.get("machines") or []) or "none yet"
    table.notes = [f"Reference: make demo's runs over seeds {reference.get('seeds') or 'none yet'} on {machines}. "
                   "The range is the 95% prediction interval of the mean of as many new runs as yours (t with n-1 "
                   "degrees of freedom, std x sqrt(1/yours + 1/n)): outside means this machine or code differs "
                   "from the reference's by more than seeds and floating-point order explain."]
    return table


def build_tables(results: Results, grid: Mapping[str, Any], flops: Mapping[str, dict[str, Any]]) -> list[Table]:
    tables = [table1(results, grid, flops)]
    for dataset, runs in group_runs(grid["ablation"]).items():
        tables += [
            table2(results, grid, flops, dataset, runs),
            ablation_table("table3", "Table 3: soft mask strategies", paper.TABLE3, "Soft mask strategy", results,
                           grid, dataset, runs),
            ablation_table("table4", "Table 4: distance functions of the class-agnostic soft mask", paper.TABLE4,
                           "Distance", results, grid, dataset, runs),
        ]
    reproduction = reproduction_table(results, grid)
    tables += [reproduction] if reproduction else []
    return tables + [comparisons_table(results, grid), all_tokens_table(results, grid),
                     soft_mask_table(results, grid), soft_mask_slot_table(results, grid)] + per_class_tables(
                         results, grid)


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
                        help="where `adatosk flops` and `adatosk bench` wrote flops.json and bench.json")
    parser.add_argument("--out", default="results/tables", metavar="DIR")
    parser.add_argument("--plots", default="results/plots", metavar="DIR",
                        help="the data of `dvc plots` (training curves, confusion matrices)")
    parser.add_argument("--metrics", default="results/metrics.json", metavar="FILE",
                        help="the headline summary for `dvc exp show` and `dvc metrics show`")
    parser.add_argument("--print", action="store_true", dest="print_tables",
                        help="print Tables 1-4, the paired comparisons and the all-token evaluation")
    add_config_arguments(parser)


def main(args: argparse.Namespace) -> int:
    from adatosk.config import load_config, to_container
    from adatosk.io import write_json_atomic

    cfg = to_container(load_config(args.overrides, args.config))
    if "grid" not in cfg:
        raise KeyError("the config has no `grid` (params/experiment/demo.yaml or paper.yaml define it)")
    results = Results(args.runs or cfg["output_root"], cfg.get("variants") or {})
    flops = load_rows(Path(args.efficiency) / "flops.json")
    tables = build_tables(results, cfg["grid"], flops)
    out = Path(args.out)
    written = write_tables(tables, out) + confusion_images(results, main_cells(cfg["grid"]), out / "confusion")
    written += write_plot_data(results, grid_cells(cfg["grid"]), Path(args.plots))
    bench = load_rows(Path(args.efficiency) / "bench.json")
    write_json_atomic(Path(args.metrics), metrics_summary(results, cfg["grid"], flops, bench))
    if args.print_tables:
        for table in tables:
            if table.name.startswith("table") or table.name in ("reproduction", "comparisons", "all_tokens"):
                print(table.markdown())
    print(f"wrote {len(written)} files to {out}, {args.plots} and {args.metrics}")
    return 0
