"""Recognition metrics of the DFER benchmarks, all derived from one confusion matrix.

UAR (unweighted average recall) = mean over classes of per-class recall; WAR (weighted average recall) =
overall accuracy. A class with no test sample has no recall: it is left out of UAR and listed in
``missing_classes`` rather than counted as 0 or 100. Every rate is in percent, as the paper's tables give them (the
dict says so: ``unit``), so that a run's metrics.json, the training log and the tables read alike.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

UNIT = "percent"  # of every rate recognition_metrics returns


def confusion_matrix(labels: Sequence[int] | np.ndarray, preds: Sequence[int] | np.ndarray,
                     num_classes: int) -> np.ndarray:
    """Counts ``[K, K]``: row = true class, column = predicted class."""
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    preds = np.asarray(preds, dtype=np.int64).reshape(-1)
    if labels.shape != preds.shape:
        raise ValueError(f"{labels.size} labels but {preds.size} predictions")
    for name, values in (("label", labels), ("prediction", preds)):
        if values.size and (values.min() < 0 or values.max() >= num_classes):
            raise ValueError(f"a {name} lies outside 0..{num_classes - 1}: {sorted(set(values.tolist()))}")
    return np.bincount(labels * num_classes + preds, minlength=num_classes * num_classes).reshape(
        num_classes, num_classes)


def recognition_metrics(cm: np.ndarray, class_names: Sequence[str] | None = None) -> dict:
    """UAR, WAR, per-class recall (None for a class without samples), all in percent, and the matrix itself,
    JSON-ready."""
    cm = np.asarray(cm, dtype=np.int64)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"a confusion matrix must be square, got shape {cm.shape}")
    num_classes = cm.shape[0]
    class_names = list(class_names) if class_names is not None else [str(k) for k in range(num_classes)]
    if len(class_names) != num_classes:
        raise ValueError(f"{len(class_names)} class names for a {num_classes}-class confusion matrix")
    support = cm.sum(axis=1)  # [K] samples per true class
    total = int(support.sum())
    if total == 0:
        raise ValueError("the confusion matrix is empty: no sample was evaluated")
    present = support > 0
    recall = 100.0 * np.diag(cm)[present] / support[present]
    per_class: list[float | None] = [None] * num_classes
    for k, r in zip(np.flatnonzero(present), recall):
        per_class[k] = float(r)
    return {
        "unit": UNIT,
        "uar": float(recall.mean()),
        "war": float(100.0 * np.trace(cm) / total),
        "per_class_recall": per_class,
        "support": support.tolist(),
        "missing_classes": [name for name, p in zip(class_names, present) if not p],
        "confusion_matrix": cm.tolist(),
        "class_names": class_names,
    }
