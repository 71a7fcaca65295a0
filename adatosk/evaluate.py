"""The ``adatosk evaluate`` command: multi-view test of a checkpoint on the test split of one fold.

Each test clip is seen in ``temporal_views x mask_views`` views (method.md, "Inference"): the loader yields the
temporal clips, and view ``v = t * mask_views + m`` draws its tube mask from a generator seeded by
``(evaluate.mask_seed, clip index, v)``, so that a second run gives the same numbers. A model with
``eval_mask_ratio == 0`` sees every token: one mask view. The softmax outputs of all views are averaged. With
``evaluate.all_tokens`` the same clips are also scored with every token visible (``eval_mask_ratio = 0``). With
``evaluate.soft_mask_stats``, a model with a soft mask (AdaTosk-dagger and the ablations with CA or CS) records the
soft-mask statistics of its views (:class:`adatosk.mask_stats.SoftMaskRecorder`, summed over ranks) and scores the
same views once more with the learned weights replaced by 1 (:func:`adatosk.mask_stats.uniform_soft_mask`).

Under torchrun each rank predicts every ``world_size``-th clip and rank 0 gathers the predictions. Writes
``run_dir/metrics.json`` (uar, war, per_class_recall in percent, confusion_matrix, class_names, n_clips, views,
all_tokens, seed, ...; ``experiment``, ``model`` and ``img_size``: what the checkpoint's model.json says trained it,
e.g. ``demo`` and ``adatosk_vit_tiny_patch16_64`` for the demo's tiny model; ``trained_on``: the machine it
records, adatosk/train/machine.py, null for a checkpoint written before it did; ``soft_mask``: the recorder's summary,
mask values and shares in [0, 1], plus ``uniform``: uar and war in percent under ``M_s := 1``) and
``run_dir/predictions.csv`` (clip_id, label, pred, probs = the averaged probabilities, space-separated in class
order).
"""

from __future__ import annotations

import argparse
import csv
import io
import logging
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig
from torch import nn
from torch.utils.data import Dataset, Subset

from adatosk.cli import add_config_arguments, add_run_arguments, run_selection
from adatosk.config import load_config
from adatosk.data.dataset import ClipDataset, data_loader
from adatosk.data.manifest import read_manifest
from adatosk.errors import AdatoskError
from adatosk.io import locked_directory, write_json_atomic, write_text_atomic
from adatosk.mask_stats import SoftMaskRecorder, soft_mask_modules, uniform_soft_mask
from adatosk.metrics import confusion_matrix, recognition_metrics
from adatosk.models.checkpoint import load_model
from adatosk.models.masking import tube_mask
from adatosk.progress import progress
from adatosk.train.distributed import (
    Amp,
    DistContext,
    all_gather_objects,
    all_reduce_sum,
    amp_settings,
    cleanup,
    init_distributed,
)
from adatosk.train.rng import derive_seed, torch_settings

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    add_run_arguments(parser)
    parser.add_argument("--checkpoint", default=None, metavar="DIR",
                        help="a save_model directory or file (default: run_dir/checkpoint/last)")


def main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    cfg = load_config(args.overrides, args.config, run_selection(args))
    ctx = init_distributed(cfg.device)
    try:
        with torch_settings(bool(cfg.train.deterministic), cfg.train.threads):
            metrics = evaluate(cfg, ctx, checkpoint=args.checkpoint)
    finally:
        cleanup()
    if ctx.is_main:
        log.info("fold %s seed %s: UAR %.2f%%  WAR %.2f%%  (%d clips, %d views)", cfg.data.fold, cfg.seed,
                 metrics["uar"], metrics["war"], metrics["n_clips"], metrics["views"]["total"])
        if "all_tokens" in metrics:
            log.info("  every token visible: UAR %.2f%%  WAR %.2f%%", metrics["all_tokens"]["uar"],
                     metrics["all_tokens"]["war"])
        if "soft_mask" in metrics:
            log.info("  soft mask replaced by 1 on the kept tokens: UAR %.2f%%  WAR %.2f%%",
                     metrics["soft_mask"]["uniform"]["uar"], metrics["soft_mask"]["uniform"]["war"])
    return 0


def mask_views_of(ratio: float, mask_views: int) -> int:
    """Tube masks per temporal clip at hard-mask ``ratio``: one view when nothing is masked."""
    return mask_views if ratio > 0 else 1


def view_masks(model: nn.Module, indices: torch.Tensor, view: int, mask_seed: int, device: torch.device,
               ratio: float | None = None) -> torch.Tensor:
    """The visible tube masks ``[B, N]`` of view ``view`` of the clips ``indices`` at hard-mask ``ratio`` (default:
    the model's ``eval_mask_ratio``); ratio 0 shows every token."""
    ratio = model.eval_mask_ratio if ratio is None else ratio
    if ratio == 0:
        return torch.ones(len(indices), model.num_patches, dtype=torch.bool, device=device)
    masks = [tube_mask(1, model.num_patches, ratio,
                       generator=torch.Generator().manual_seed(derive_seed(mask_seed, int(i), view)))
             for i in indices]
    return torch.cat(masks).to(device)  # [B, N]


@dataclass(frozen=True)
class ScoringPass:
    """One scoring of the test clips: every view at hard-mask ``ratio``, each forward inside ``context()`` (e.g. a
    :class:`SoftMaskRecorder`, or :func:`uniform_soft_mask`; default: nothing)."""

    ratio: float
    context: Callable[[], AbstractContextManager] = nullcontext


@torch.inference_mode()
def predict(model: nn.Module, dataset: Dataset, *, passes: Sequence[ScoringPass], mask_views: int, mask_seed: int,
            batch_size: int, num_workers: int, ctx: DistContext, amp: Amp) -> tuple[np.ndarray, list[np.ndarray]]:
    """(dataset indices [N], view-averaged probabilities [N, K] per pass of ``passes``) of every clip, on every rank.
    The clips are read once for all passes; a pass at the same ratio sees the same masks."""
    model.eval()
    shard = Subset(dataset, list(range(ctx.rank, len(dataset), ctx.world_size)))
    loader = data_loader(shard, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                         pin_memory=ctx.device.type == "cuda")
    indices, probs = [], [[] for _ in passes]
    for batch in progress(loader, desc="evaluate", disable=not ctx.is_main, dynamic_ncols=True, leave=False):
        video = batch["video"].to(ctx.device, non_blocking=True)  # [B, V, 3, T, H, W]
        if video.ndim != 6:
            raise ValueError(f"a test clip must be [V, 3, T, H, W] (train=False), got {tuple(video.shape[1:])}")
        for scoring, out in zip(passes, probs):
            views = mask_views_of(scoring.ratio, mask_views)
            total = 0.0
            with scoring.context():
                for t in range(video.shape[1]):
                    for m in range(views):
                        visible = view_masks(model, batch["index"], t * views + m, mask_seed, ctx.device,
                                             scoring.ratio)
                        with amp.autocast(ctx.device):
                            logits = model(video[:, t], visible=visible)  # [B, K]
                        total = total + logits.float().softmax(dim=-1)
            out.append((total / (video.shape[1] * views)).cpu())
        indices.append(batch["index"].cpu())
    empty = np.zeros((0, model.num_classes), np.float32)
    local = (torch.cat(indices).numpy() if indices else np.zeros(0, np.int64),
             [torch.cat(p).numpy() if p else empty for p in probs])
    gathered = all_gather_objects(local)
    all_indices = np.concatenate([g[0] for g in gathered])
    order = np.argsort(all_indices, kind="stable")
    return all_indices[order], [np.concatenate([g[1][k] for g in gathered])[order] for k in range(len(passes))]


def load_test_split(cfg: DictConfig) -> Dataset:
    manifest = read_manifest(Path(cfg.data.manifest_dir) / "manifest.csv")
    return ClipDataset(manifest, cfg.data, fold=cfg.data.fold, split="test", train=False,
                       temporal_views=cfg.evaluate.temporal_views)


def score(model: nn.Module, dataset: Dataset, cfg: DictConfig, ctx: DistContext, amp: Amp, class_names: list[str],
          all_tokens: bool = False, soft_mask_stats: bool = False) -> tuple[dict, np.ndarray, np.ndarray]:
    """(metrics dict, dataset indices, probabilities) of ``model`` on ``dataset`` with cfg.evaluate's views at the
    model's ``eval_mask_ratio``; with ``all_tokens`` the metrics also hold ``all_tokens``: the same clips scored
    with every token visible (one mask view; the model's own views again when it masks nothing). With
    ``soft_mask_stats`` a model with a soft mask also gets ``soft_mask``: the soft-mask statistics of those views
    (summed over ranks) and ``uniform``: UAR / WAR of the same views with ``M_s := 1`` on the kept tokens."""
    ratio = float(model.eval_mask_ratio)
    recorder = SoftMaskRecorder(model) if soft_mask_stats and soft_mask_modules(model) else None
    passes = {"main": ScoringPass(ratio, (lambda: recorder) if recorder is not None else nullcontext)}
    if all_tokens and ratio > 0:
        passes["all_tokens"] = ScoringPass(0.0)
    if recorder is not None:
        passes["uniform"] = ScoringPass(ratio, lambda: uniform_soft_mask(model))
    indices, probs = predict(model, dataset, passes=list(passes.values()), mask_views=cfg.evaluate.mask_views,
                             mask_seed=cfg.evaluate.mask_seed, batch_size=cfg.evaluate.batch_size,
                             num_workers=cfg.train.num_workers, ctx=ctx, amp=amp)
    scored = dict(zip(passes, probs))
    labels = np.asarray(dataset.labels)[indices]

    def view_metrics(ratio: float, p: np.ndarray) -> dict:
        metrics = recognition_metrics(confusion_matrix(labels, p.argmax(axis=1), len(class_names)), class_names)
        temporal, masks = int(cfg.evaluate.temporal_views), mask_views_of(ratio, int(cfg.evaluate.mask_views))
        metrics["views"] = {"temporal": temporal, "mask": masks, "total": temporal * masks}
        metrics["eval_mask_ratio"] = ratio
        return metrics

    metrics = view_metrics(ratio, scored["main"])
    metrics["n_clips"] = int(len(indices))
    metrics["mask_seed"] = int(cfg.evaluate.mask_seed)
    if all_tokens:
        every = "all_tokens" if "all_tokens" in passes else "main"  # a model that masks nothing: its own views
        metrics["all_tokens"] = view_metrics(passes[every].ratio, scored[every])
    if recorder is not None:
        uniform = view_metrics(ratio, scored["uniform"])
        metrics["soft_mask"] = {**recorder.summary(reduce=all_reduce_sum),
                                "uniform": {"uar": uniform["uar"], "war": uniform["war"]}}
    return metrics, indices, scored["main"]


def evaluate(cfg: DictConfig, ctx: DistContext, checkpoint: str | None = None) -> dict:
    """Score the run's checkpoint on its fold's test split and write metrics.json and predictions.csv. The main rank
    holds the run directory's lock throughout: not beside an ``adatosk train`` that rewrites the run."""
    run_dir = Path(cfg.run_dir)
    checkpoint = Path(checkpoint) if checkpoint else run_dir / "checkpoint" / "last"
    if not checkpoint.exists():
        raise FileNotFoundError(f"no checkpoint at {checkpoint}: train first (adatosk train) or pass --checkpoint")
    with locked_directory(run_dir, "`adatosk evaluate`") if ctx.is_main else nullcontext():
        model, meta = load_model(checkpoint, device=ctx.device, class_names=cfg.data.class_names)
        class_names = list(meta["class_names"])
        check_clip_size(meta, checkpoint, cfg)
        dataset = load_test_split(cfg)
        metrics, indices, probs = score(model, dataset, cfg, ctx, amp_settings(cfg.train.amp, ctx.device),
                                        class_names, all_tokens=bool(cfg.evaluate.all_tokens),
                                        soft_mask_stats=bool(cfg.evaluate.soft_mask_stats))
        metrics.update(checkpoint=str(checkpoint), experiment=meta.get("experiment"), model=meta.get("model"),
                       img_size=int(meta["model_cfg"]["img_size"]), data=cfg.data.name, fold=int(cfg.data.fold),
                       seed=int(cfg.seed), variant=cfg.model.variant,
                       trained_on=(meta.get("extra") or {}).get("machine"))
        if ctx.is_main:
            write_json_atomic(run_dir / "metrics.json", metrics)
            write_predictions(run_dir / "predictions.csv", clip_ids(dataset, indices),
                              np.asarray(dataset.labels)[indices], probs)
    return metrics


def check_clip_size(meta: dict, checkpoint: Path, cfg: DictConfig) -> None:
    """Refuse to score a checkpoint on clips of another size than it was trained on (a run of another experiment,
    e.g. the paper's 16 x 160 x 160 model read with the demo's 64 px clips)."""
    trained = {key: meta["model_cfg"].get(key) for key in ("img_size", "num_frames")}
    read = {key: cfg.data.get(key) for key in trained}
    if trained != read:
        raise AdatoskError(f"the model was trained on clips of {trained} (experiment {meta.get('experiment')}), the "
                           f"config reads {read} (experiment {cfg.get('experiment')}): evaluate with the run's "
                           "experiment (e.g. experiment=paper)", checkpoint)


def clip_ids(dataset: Dataset, indices: np.ndarray) -> list[str]:
    return [str(dataset.clip_ids[i]) for i in indices]


def write_predictions(path: Path, ids: list[str], labels: np.ndarray, probs: np.ndarray) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["clip_id", "label", "pred", "probs"])
    for clip_id, label, p in zip(ids, labels, probs):
        writer.writerow([clip_id, int(label), int(p.argmax()), " ".join(f"{v:.6f}" for v in p)])
    write_text_atomic(path, buffer.getvalue())
