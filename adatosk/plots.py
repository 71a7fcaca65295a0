"""The plots of ``adatosk tables``: data files for ``dvc plots`` and the confusion-matrix images.

Written per grid cell (dataset, variant), over the cell's evaluated runs, into ``--plots`` (dvc.yaml's top-level
``plots:`` declares the folders, so that ``dvc plots show`` and ``dvc plots diff <exp> <exp>`` draw them):

* ``loss/``, ``validation/``, ``lr/``: ``<dataset>_<variant>.csv``, the training curves per epoch (the runs'
  ``log.csv``), averaged over the cell's runs: loss, loss_cls, loss_rec; val_uar, val_war (%); the learning rate;
* ``confusion/``: ``<dataset>_<variant>.csv``, one row per test clip of every run (``predictions.csv``: its true and
  predicted class names) for DVC's confusion template.

The confusion matrices as images (summed over runs, normalised per true class) go to ``<tables>/confusion/``.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from adatosk.io import atomic_path, write_text_atomic

if TYPE_CHECKING:
    from adatosk.results import Results, Runs

# folder -> the log.csv columns drawn on one plot (dvc.yaml's `plots:` names the same)
CURVES: dict[str, tuple[str, ...]] = {"loss": ("loss", "loss_cls", "loss_rec"), "validation": ("val_uar", "val_war"),
                                      "lr": ("lr",)}


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def csv_text(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows(rows)
    return buffer.getvalue()


def mean_curves(logs: Sequence[Sequence[Mapping[str, str]]], columns: Sequence[str]) -> list[list[Any]]:
    """Per epoch: the epoch and the mean of each column over the runs that logged it (empty: none did)."""
    by_epoch: dict[int, list[Mapping[str, str]]] = {}
    for log in logs:
        for row in log:
            by_epoch.setdefault(int(row["epoch"]), []).append(row)
    table = []
    for epoch in sorted(by_epoch):
        means = []
        for column in columns:
            values = [float(row[column]) for row in by_epoch[epoch] if row.get(column) not in (None, "")]
            means.append(f"{np.mean(values):.6g}" if values else "")
        if any(means):
            table.append([epoch, *means])
    return table


def confusion_rows(predictions: Sequence[Sequence[Mapping[str, str]]], names: Sequence[str]) -> list[list[str]]:
    """(actual, predicted) class names of every test clip of every run."""
    return [[names[int(row["label"])], names[int(row["pred"])]] for run in predictions for row in run]


def write_plot_data(results: Results, cells: Sequence[tuple[str, str, Runs]], out: Path) -> list[Path]:
    """The curves and confusion data of every cell with an evaluated run."""
    written = []
    for dataset, variant, runs in cells:
        cell = results.cell(dataset, variant, runs)
        if not cell.metrics:
            continue
        name = f"{dataset}_{variant}.csv"
        logs = [read_csv(p) for p in results.run_files(dataset, variant, runs, "log.csv")]
        for folder, columns in CURVES.items():
            rows = mean_curves(logs, columns)
            if rows:
                write_text_atomic(out / folder / name, csv_text(["epoch", *columns], rows))
                written.append(out / folder / name)
        predictions = [read_csv(p) for p in results.run_files(dataset, variant, runs, "predictions.csv")]
        if predictions:
            rows = confusion_rows(predictions, cell.metrics[0]["class_names"])
            write_text_atomic(out / "confusion" / name, csv_text(["actual", "predicted"], rows))
            written.append(out / "confusion" / name)
    return written


def confusion_images(results: Results, cells: Sequence[tuple[str, str, Runs]], out: Path) -> list[Path]:
    """``out/<dataset>_<variant>.png``: the confusion matrix of each cell's runs (metrics.json counts, summed),
    normalised per true class."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for dataset, variant, runs in cells:
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
        path = out / f"{dataset}_{variant}.png"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=120)
        plt.close(fig)
        written.append(path)
    return written
