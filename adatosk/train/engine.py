"""The ``adatosk train`` command: the training recipe of method.md, in one process or many under torchrun.

Usage: ``adatosk train [--config params.yaml] [overrides...] [--resume | --restart | --replace] [--max-steps N]``.
Launch on several processes with ``torchrun --nproc_per_node P -m adatosk train ...``: ``train.batch_size`` is
the global batch, split evenly over the ranks.

Resume: every finished epoch is checkpointed to ``run_dir/train_state.pt`` (model, optimiser, scheduler, grad
scaler, epoch, every rank's RNG states, the log history; tensors and plain values only, read back with
``torch.load(weights_only=True)``, so a crafted file cannot run code). When that file exists, ``adatosk train``
continues from it automatically (so a resubmitted SLURM job picks up where the last one stopped, and a finished
run returns at once) if it is the same run. A run's identity (:mod:`adatosk.train.identity`) is its config (model,
data, recipe, seed, experiment, ``--max-steps``) and the content of its inputs: the manifest, the clips it reads
(size and modification time of each packed clip, or of its frames or video) and the ``model.pretrained`` weights.
The package's source code is recorded, not compared: a code edit alone never discards epochs (pass ``--restart``
after a change that alters what is computed). A state whose inputs changed is not resumed: the run trains afresh
from the new inputs. A state or finished run (``checkpoint/last``) of another config is refused unless
``--restart`` (always start afresh) or ``--replace`` (replace a run of another config or inputs, resume this
one's: for pipelines, which rerun training only when its params or inputs changed) says to replace it;
``--resume`` insists on continuing. Whatever starts afresh leaves the earlier run in run_dir (state, logs,
checkpoints, metrics) until the new run has trained its first epoch: it is removed then, just before the new
state replaces the old one.

Before anything in run_dir is touched, the config is validated (:func:`adatosk.config.load_config`) and every
clip of the split is checked (:meth:`ClipDataset.validate`: a corrupt packed clip fails here, naming it, not in
epoch 2). While it trains, run_dir is locked (``flock``; released by the kernel however the process ends): a
second ``adatosk train`` on it fails at once. Temporary files that a killed run left are removed at the start.
The data order is a function of (seed, epoch) (DistributedSampler, per-epoch loader and dataset seeds), so with
``train.deterministic`` a resumed run equals an uninterrupted one bit for bit on CPU (same world size and
thread count).

Per-epoch logs ``log.jsonl`` and ``log.csv`` are rewritten atomically from the history saved in
``train_state.pt`` *after* that state is saved: a row never claims an epoch whose checkpoint is missing.
At the end the last epoch's model goes to ``checkpoint/last`` (the reported one) and the best epoch's to
``checkpoint/best``: highest validation UAR when ``train.eval_every > 0`` (the test split of the fold, as
MAE-DFER), otherwise lowest training loss.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import logging
import math
import pickle
import re
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Dataset
from torch.utils.data.distributed import DistributedSampler

from adatosk.cli import add_config_arguments, add_run_arguments, run_selection
from adatosk.config import load_config, to_container
from adatosk.data.dataset import ClipDataset, data_loader
from adatosk.data.manifest import read_manifest
from adatosk.errors import AdatoskError, ConfigError, first_line
from adatosk.evaluate import load_test_split, score
from adatosk.io import atomic_path, locked_directory, remove_stale_temporaries, write_text_atomic
from adatosk.models import create_model_from_config
from adatosk.models.checkpoint import META_FILE, save_model
from adatosk.progress import progress
from adatosk.train.distributed import (
    Amp,
    DistContext,
    all_gather_objects,
    all_reduce_sum,
    amp_settings,
    barrier,
    broadcast_object,
    cleanup,
    init_distributed,
    sync_buffers,
)
from adatosk.train.identity import differences, run_identity
from adatosk.train.machine import describe_machine
from adatosk.train.mixup import VideoMixup
from adatosk.train.optim import build_optimizer, build_scheduler, scaled_lr
from adatosk.train.rng import capture_rng, derive_seed, restore_rng, seed_everything, seed_worker, torch_settings

log = logging.getLogger(__name__)

STATE_FILE = "train_state.pt"
STATE_KEYS = ("epoch", "identity", "model", "optimizer", "scheduler", "scaler", "rng", "threads", "history", "best")



def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    add_run_arguments(parser)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--resume", action="store_true",
                      help=f"continue from run_dir/{STATE_FILE}, which must exist (default: continue from it "
                           "when it exists, start afresh otherwise)")
    mode.add_argument("--restart", action="store_true",
                      help=f"ignore an existing {STATE_FILE} and start afresh; the earlier run is replaced once this "
                           "one has trained its first epoch")
    mode.add_argument("--replace", action="store_true",
                      help="continue this run's state, but replace (once this run has trained its first epoch) a run "
                           "of another config instead of refusing it: for pipelines, which rerun training only after "
                           "its params or inputs changed")
    parser.add_argument("--max-steps", type=int, default=None, metavar="N",
                        help="train for at most N optimiser steps in total (smoke tests); the lr schedule and the "
                             "epoch count shrink to those N steps")


def main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    cfg = load_config(args.overrides, args.config, run_selection(args))
    if not args.config:
        check_experiment(cfg, args.overrides)
    mode = "require" if args.resume else "never" if args.restart else "replace" if args.replace else "auto"
    train(cfg, resume=mode, max_steps=args.max_steps)
    return 0


def train(cfg: DictConfig, *, resume: str = "auto", max_steps: int | None = None) -> list[dict]:
    """Train ``cfg``'s model on its fold; returns the per-epoch history (also in run_dir/log.jsonl)."""
    ctx = init_distributed(cfg.device)
    try:
        with torch_settings(bool(cfg.train.deterministic), cfg.train.threads):
            return Trainer(cfg, ctx, max_steps).fit(resume)
    finally:
        cleanup()


def build_model(cfg: DictConfig) -> nn.Module:
    return create_model_from_config(cfg.model, num_classes=cfg.data.num_classes)


def build_train_split(cfg: DictConfig) -> Dataset:
    manifest = read_manifest(Path(cfg.data.manifest_dir) / "manifest.csv")
    return ClipDataset(manifest, cfg.data, fold=cfg.data.fold, split="train", train=True, seed=cfg.seed)


class Trainer:
    def __init__(self, cfg: DictConfig, ctx: DistContext, max_steps: int | None = None) -> None:
        tc = cfg.train
        self.cfg, self.ctx, self.device = cfg, ctx, ctx.device
        self.machine = describe_machine(self.device, ctx.world_size)
        self.run_dir = Path(cfg.run_dir)

        seed_everything(cfg.seed)  # identical initial weights on every rank
        self.model = build_model(cfg).to(self.device)
        self.train_set = build_train_split(cfg)
        self.val_set = None
        if tc.eval_every > 0:
            self.val_set = load_test_split(cfg)
        for split in (self.train_set, self.val_set):  # a corrupt clip fails now, naming it, not in epoch 2
            if isinstance(split, ClipDataset):
                split.validate()

        if tc.batch_size % ctx.world_size:
            raise ConfigError(f"train.batch_size={tc.batch_size} (global) does not split over {ctx.world_size} "
                              "processes")
        per_rank = tc.batch_size // ctx.world_size
        self.sampler = DistributedSampler(self.train_set, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True,
                                          seed=cfg.seed)
        self.loader = data_loader(self.train_set, batch_size=per_rank, sampler=self.sampler,
                                  num_workers=tc.num_workers, pin_memory=self.device.type == "cuda",
                                  drop_last=True, worker_init_fn=seed_worker, generator=torch.Generator())
        self.steps_per_epoch = len(self.loader)
        if self.steps_per_epoch == 0:
            raise ConfigError(f"the train split of fold {cfg.data.fold} ({len(self.train_set)} clips) is smaller "
                              f"than one batch of {per_rank} clips per process: lower train.batch_size")
        self.total_steps = tc.epochs * self.steps_per_epoch
        if max_steps is not None:
            self.total_steps = min(self.total_steps, max_steps)
        self.num_epochs = math.ceil(self.total_steps / self.steps_per_epoch)

        self.lr = scaled_lr(tc.base_lr, tc.batch_size)
        layer_decay = tc.layer_decay if cfg.model.pretrained not in (None, "scratch") else None  # no checkpoint
        self.optimizer = build_optimizer(self.model, self.lr, tc.weight_decay, tuple(tc.betas), layer_decay)
        self.scheduler = build_scheduler(self.optimizer, self.lr, tc.min_lr, tc.warmup_epochs * self.steps_per_epoch,
                                         self.total_steps)
        self.amp: Amp = amp_settings(tc.amp, self.device)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp.use_scaler)
        self.mixup = VideoMixup(cfg.data.num_classes, tc.mixup, tc.cutmix, tc.mixup_prob, tc.mixup_switch_prob,
                                tc.label_smoothing, rng=np.random.default_rng([cfg.seed, ctx.rank]))
        seed_everything(derive_seed(cfg.seed, ctx.rank))  # per-rank drop path and training masks
        self.history: list[dict] = []
        self.best: dict | None = None
        self.start_epoch = 0
        splits = [split for split in (self.train_set, self.val_set) if isinstance(split, ClipDataset)]
        identity = run_identity(self.cfg, splits, self.total_steps) if ctx.is_main else None
        self.run_identity = broadcast_object(identity)  # one decision for all ranks

    # --- resume -----------------------------------------------------------------------------------------------
    def load_state(self, resume: str) -> None:
        """Restore the state in run_dir when it is this run's (a state of other inputs is left for a fresh start to
        replace); refuse a run of another config (or a finished one without its state) unless ``resume`` is
        ``"never"`` (``--restart``) or ``"replace"`` (``--replace``)."""
        path = self.run_dir / STATE_FILE
        if resume == "never":
            return
        finished = (self.run_dir / "checkpoint" / "last" / META_FILE).is_file()
        if not path.exists():
            if resume == "require":
                raise AdatoskError(f"--resume: there is no {STATE_FILE} to continue from", self.run_dir)
            if finished and resume != "replace":
                raise AdatoskError(f"holds a finished run (checkpoint/last) without its {STATE_FILE}: pass --restart "
                                   "to train it again from scratch, or set output_root to train elsewhere",
                                   self.run_dir)
            return
        state = read_state(path)
        old, new = state["identity"], self.run_identity
        config = differences(old.get("config", {}), new["config"])
        inputs = differences(old.get("inputs", {}), new["inputs"], opaque=True)
        if resume == "require" and (config or inputs):
            raise ConfigError(f"--resume: belongs to another run ({', '.join(filter(None, (config, inputs)))})", path)
        if config and resume != "replace":
            which = "a finished" if finished else "an unfinished"
            raise ConfigError(f"holds {which} run of another config ({config}): pass --restart to replace it (it "
                              "stays until the new run has trained its first epoch), or set output_root to train "
                              "elsewhere", self.run_dir)
        if config or inputs:
            if self.ctx.is_main:
                log.warning("%s: a run of %s; training afresh (the old run stays until this one has trained its "
                            "first epoch)", path, f"another config ({config})" if config else f"other {inputs}")
            return
        if old.get("code") != new["code"] and self.ctx.is_main:
            log.info("%s was written by other package code: resuming (code is recorded, not part of a run's "
                     "identity; pass --restart to retrain after a change that alters what is computed)", path)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.start_epoch, self.history, self.best = state["epoch"], state["history"], state["best"]
        if len(state["rng"]) == self.ctx.world_size:
            restore_rng(state["rng"][self.ctx.rank], self.device, self.mixup.rng)
        else:
            log.warning("%s was written by %d processes, this run has %d: resuming, but not bit-exactly", path,
                        len(state["rng"]), self.ctx.world_size)
        if state["threads"] != torch.get_num_threads():
            log.warning("%s was written with %d threads, this run uses %d: resuming, but not bit-exactly on CPU",
                        path, state["threads"], torch.get_num_threads())
        if self.ctx.is_main:
            log.info("resuming %s after epoch %d/%d", self.run_dir, self.start_epoch, self.num_epochs)

    def save_state(self, epoch: int) -> None:
        """Collective: gathers every rank's RNG states; rank 0 writes the file atomically."""
        rng = all_gather_objects(capture_rng(self.device, self.mixup.rng))
        if not self.ctx.is_main:
            return
        state = {
            "epoch": epoch, "identity": self.run_identity, "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(), "rng": rng, "threads": torch.get_num_threads(),
            "history": self.history, "best": self.best,
        }
        save_atomic(state, self.run_dir / STATE_FILE)

    def write_config(self) -> None:
        write_text_atomic(self.run_dir / "config.yaml", OmegaConf.to_yaml(self.cfg))

    # --- training ---------------------------------------------------------------------------------------------
    def fit(self, resume: str = "auto") -> list[dict]:
        with contextlib.ExitStack() as stack:
            if self.ctx.is_main:  # one writer per run directory, for the whole run
                stack.enter_context(locked_directory(self.run_dir, "`adatosk train`"))
                remove_stale_temporaries(self.run_dir)
            barrier()
            return self._fit(resume)

    def _fit(self, resume: str) -> list[dict]:
        self.load_state(resume)
        if self.ctx.is_main and self.start_epoch > 0:  # a resubmitted job's runner may have removed the logs
            write_logs(self.run_dir, self.history)
            self.write_config()
        network = self.model
        if self.ctx.distributed:
            network = DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=bool(self.cfg.train.find_unused_parameters))
        for epoch in range(self.start_epoch, self.num_epochs):
            start = time.perf_counter()
            row = {"epoch": epoch + 1, **self.train_one_epoch(network, epoch)}
            if self.val_set is not None and ((epoch + 1) % self.cfg.train.eval_every == 0
                                             or epoch + 1 == self.num_epochs):
                row.update(self.validate())
            row["time"] = round(time.perf_counter() - start, 3)
            if epoch == 0 and self.ctx.is_main:  # a fresh run's first epoch: what an earlier run left goes now
                clear_run_dir(self.run_dir)
                self.write_config()
            self.history.append(row)
            self.update_best(row)
            self.save_state(epoch + 1)
            if self.ctx.is_main:
                write_logs(self.run_dir, self.history)
                log.info(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
            barrier()
        if self.ctx.is_main:
            self.save_checkpoint("last", self.history[-1])
        barrier()
        return self.history

    def train_one_epoch(self, network: nn.Module, epoch: int) -> dict:
        steps = min(self.steps_per_epoch, self.total_steps - epoch * self.steps_per_epoch)
        self.sampler.set_epoch(epoch)
        self.train_set.set_epoch(epoch)
        self.loader.generator.manual_seed(derive_seed(self.cfg.seed, self.ctx.rank, epoch))  # worker seeds
        network.train()
        clip_grad = self.cfg.train.clip_grad
        sums = torch.zeros(4, dtype=torch.float64, device=self.device)  # clip-weighted loss, loss_cls, loss_rec; clips
        bar = progress(total=steps, desc=f"epoch {epoch + 1}/{self.num_epochs}", disable=not self.ctx.is_main,
                       dynamic_ncols=True, leave=False)
        for step, batch in zip(range(steps), self.loader):  # range first: stops without fetching a spare batch
            video = batch["video"].to(self.device, non_blocking=True)  # [B, 3, T, H, W]
            labels = batch["label"].to(self.device, non_blocking=True)  # [B]
            video, target = self.mixup(video, labels)  # target [B, K]
            with self.amp.autocast(self.device):
                out = network(video, target)
            loss = out.loss.float()
            if all_reduce_sum((~torch.isfinite(loss)).float()).item():
                raise FloatingPointError(f"non-finite loss at epoch {epoch + 1}, step {step + 1} (run {self.run_dir})")
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            if clip_grad:
                self.scaler.unscale_(self.optimizer)
                nn.utils.clip_grad_norm_(self.model.parameters(), clip_grad)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            lr = max(g["lr"] for g in self.optimizer.param_groups)  # the lr of this step (the head's group)
            self.scheduler.step()
            n = video.shape[0]
            sums += torch.stack([loss.detach() * n, out.loss_cls.detach().float() * n,
                                 out.loss_rec.detach().float() * n, torch.tensor(float(n), device=self.device)])
            bar.update()
            bar.set_postfix(loss=f"{loss.item():.4f}")
        bar.close()
        loss, loss_cls, loss_rec, clips = all_reduce_sum(sums).tolist()
        return {"steps": steps, "lr": lr, "loss": loss / clips,
                "loss_cls": loss_cls / clips, "loss_rec": loss_rec / clips}

    def validate(self) -> dict:
        sync_buffers(self.model)
        metrics, _, _ = score(self.model, self.val_set, self.cfg, self.ctx, self.amp, list(self.cfg.data.class_names))
        return {"val_uar": metrics["uar"], "val_war": metrics["war"]}

    # --- checkpoints ------------------------------------------------------------------------------------------
    def update_best(self, row: dict) -> None:
        if self.val_set is not None:
            if "val_uar" not in row:
                return
            key, value, better = "val_uar", row["val_uar"], lambda new, old: new > old
        else:
            key, value, better = "loss", row["loss"], lambda new, old: new < old
        if self.best is None or better(value, self.best["value"]):
            self.best = {"epoch": row["epoch"], "metric": key, "value": value}
            if self.ctx.is_main:
                self.save_checkpoint("best", row)

    def save_checkpoint(self, name: str, row: dict) -> None:
        save_model(self.run_dir / "checkpoint" / name, self.model, to_container(self.cfg.model),
                   int(self.cfg.data.num_classes), list(self.cfg.data.class_names),
                   experiment=self.cfg.get("experiment"),
                   extra={"epoch": row["epoch"], "data": self.cfg.data.name, "fold": int(self.cfg.data.fold),
                          "stride": int(self.cfg.data.sampling.stride), "log": row, "best": self.best,
                          "machine": self.machine})


def check_experiment(cfg: DictConfig, overrides: list[str]) -> None:
    """Refuse to train the default experiment's tiny demo model on another dataset unless ``experiment=demo`` was
    given on purpose: its run directory is the one the dataset's paper-size run uses."""
    chosen = any(o.split("=", 1)[0].lstrip("+~").split("@")[0] == "experiment" for o in overrides)
    if cfg.get("experiment") == "demo" and cfg.data.name != "demo" and not chosen:
        raise ConfigError(f"data={cfg.data.name} under the default experiment 'demo' would train the demo's tiny model "
                          f"({cfg.model.arch} at {cfg.model.img_size} px) into {cfg.run_dir}, where the paper-size "
                          "run of this dataset goes: add experiment=paper (the paper's ViT-B/16 at 160 px and recipe), "
                          "or experiment=demo for a quick check on purpose (its results say experiment: demo)")


def read_state(path: Path) -> dict:
    """The training state in ``path``, unpickled with ``weights_only=True``: a file that holds code or objects other
    than tensors and plain values is refused, a corrupt one is named."""
    hint = "remove it or pass --restart to start afresh"
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:  # weights_only refuses globals (code) and opcodes a state never has
        called = re.search(r"\bGLOBAL\s+([\w.]+)", str(error))  # torch's wordings differ between versions
        if called:
            raise AdatoskError(f"refused to load: it holds a call of {called.group(1)}, which no training state "
                               f"holds (not written by adatosk train): {hint}", path) from None
        detail = re.search(r"WeightsUnpickler error:\s*(\S[^\n]*)", str(error))
        raise AdatoskError(f"corrupt training state ({detail.group(1) if detail else first_line(error)}): {hint}",
                           path) from None
    except Exception as error:  # a truncated zip: torch raises RuntimeError, EOFError, ValueError
        raise AdatoskError(f"corrupt training state ({first_line(error)}): {hint}", path) from None
    missing = [k for k in STATE_KEYS if k not in state] if isinstance(state, dict) else list(STATE_KEYS)
    if missing:
        raise AdatoskError(f"not a training state of adatosk train (it lacks {missing}): {hint}", path)
    return state


def clear_run_dir(run_dir: Path) -> None:
    """Remove what an earlier run left in ``run_dir`` but its state (which the new state replaces atomically), so
    that no stale model or metrics outlive a fresh start."""
    for name in ("log.jsonl", "log.csv", "metrics.json", "predictions.csv"):
        (run_dir / name).unlink(missing_ok=True)
    shutil.rmtree(run_dir / "checkpoint", ignore_errors=True)


def save_atomic(obj: object, path: Path) -> None:
    """``torch.save`` to a temporary file renamed onto ``path``: a crash leaves the previous file intact."""
    with atomic_path(path) as tmp:
        try:
            torch.save(obj, tmp)
        except RuntimeError as error:  # torch's zip writer reports a failed write (a full disk) as RuntimeError
            raise AdatoskError(f"cannot write: {error}", path) from error


def write_logs(run_dir: Path, history: list[dict]) -> None:
    """Rewrite log.jsonl and log.csv atomically from the whole history (one row per finished epoch)."""
    write_text_atomic(run_dir / "log.jsonl", "".join(json.dumps(row) + "\n" for row in history))
    columns = list(dict.fromkeys(k for row in history for k in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(history)
    write_text_atomic(run_dir / "log.csv", buffer.getvalue())
