"""The evaluated runs of a grid, read and checked, and the table they are printed in.

A grid group (``grid.main``: Table 1; ``grid.ablation``: Tables 2-4) asks each of its variants for every fold of
its splits times every seed; a :class:`Cell` holds the ``metrics.json`` of those runs of one (dataset, variant) that
exist. Its text is the mean, sample std and 95% t interval of the mean (adatosk/stats.py), and its n.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adatosk import stats
from adatosk.grid import run_dir
from adatosk.metrics import UNIT

NOT_RUN = "not run"
DATASET_TITLES = {"dfew": "DFEW", "ferv39k": "FERV39K", "mafw": "MAFW", "demo": "demo"}
PAPER_EXPERIMENT = "paper"                # params/experiment/paper.yaml: the paper-size runs
PAPER_ARCH = "vit_base_patch16_160"


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


def title_of(dataset: str) -> str:
    return DATASET_TITLES.get(dataset, dataset)


def grid_cells(grid: Mapping[str, Any]) -> list[tuple[str, str, Runs]]:
    """(dataset, variant, runs) of every variant the grid trains, Table 1's first; a variant of both groups once."""
    cells: dict[tuple[str, str], Runs] = {}
    for group in ("main", "ablation"):
        for dataset, runs in group_runs(grid[group]).items():
            for variant in grid[group]["variants"]:
                cells.setdefault((dataset, variant), runs)
    return [(dataset, variant, runs) for (dataset, variant), runs in cells.items()]


def main_cells(grid: Mapping[str, Any]) -> list[tuple[str, str, Runs]]:
    """(dataset, variant, runs) of Table 1's grid group."""
    return [(dataset, variant, runs) for dataset, runs in group_runs(grid["main"]).items()
            for variant in grid["main"]["variants"]]
