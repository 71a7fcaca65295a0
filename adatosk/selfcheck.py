"""The ``adatosk selfcheck`` command: the GPU path of the package checked end to end in minutes, as one table.

Checks, each one row (ok / FAIL, seconds, what was measured):

1. ``amp_train_<variant>`` for AdaTosk-dagger and the VideoMAE baseline: AdamW steps on one fixed random batch under
   ``torch.autocast`` (bf16 on GPU, ``train.amp``'s reading; fp32 on CPU), as the training engine runs them. It
   checks that the logits come out in the autocast dtype, every loss is finite, the loss on the batch falls, and
   reports clips/s (timed between ``torch.cuda.synchronize`` calls) and the peak of
   ``torch.cuda.max_memory_allocated``.
2. ``torchrun_epoch``: a small demo set generated in a temporary directory, then one epoch of ``adatosk train`` on it
   under ``torchrun --standalone --nproc_per_node 1`` (nccl on GPU, gloo on CPU) with the demo's tiny model; it
   checks the run's ``log.jsonl`` has the epoch and its finite loss, and ``checkpoint/last`` exists.
3. ``bench``: ``adatosk bench`` in-process on the device (AdaTosk-dagger against the baseline), the measured
   inference and training throughput ratios and the issue's targets.

``--device cuda`` runs ViT-B/16 at 16x160x160 (the paper's size); ``--device cpu`` runs the tiny sizes with gloo,
so that a test runs the whole command on a CPU machine. The table is printed and the rows written as JSON
(``--out``). Exit status 0 when every check passes, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

REPO_PARAMS = Path(__file__).resolve().parents[1] / "params"


@dataclass(frozen=True)
class Sizes:
    """What one device's checks run at."""

    arch: str            # flops.ARCHS key of the AMP steps and the bench
    frames: int          # clip length of the AMP steps and the bench
    batch: int           # clips per AMP step
    steps: int           # timed AMP steps (after one warm-up step)
    bench_batch: int
    bench_iters: int
    torchrun_timeout: int  # seconds


SIZES = {
    "cuda": Sizes(arch="base", frames=16, batch=8, steps=10, bench_batch=8, bench_iters=10, torchrun_timeout=300),
    "cpu": Sizes(arch="tiny", frames=8, batch=2, steps=3, bench_batch=2, bench_iters=1, torchrun_timeout=300),
}
AMP_VARIANTS = ("adatosk_dagger", "videomae")
LEARNING_RATE = 5e-4  # the AMP steps fit one fixed batch: the loss must fall within a few steps


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def amp_train_check(variant: str, device: torch.device, sizes: Sizes) -> dict[str, Any]:
    """AdamW steps of ``variant`` on one fixed batch under the engine's autocast; see the module docstring."""
    from adatosk.config import load_config, to_container
    from adatosk.flops import ARCHS
    from adatosk.models import create_model_from_config
    from adatosk.train.distributed import amp_settings

    arch, size = ARCHS[sizes.arch]
    cfg = to_container(load_config([f"model={variant}", f"model.arch={arch}", f"model.img_size={size}",
                                    f"model.num_frames={sizes.frames}"]).model)
    torch.manual_seed(0)
    model = create_model_from_config(cfg, 7).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE)
    amp = amp_settings("bf16", device)
    video = torch.randn(sizes.batch, 3, sizes.frames, size, size, device=device)  # [B, 3, T, H, W]
    target = torch.randint(0, 7, (sizes.batch,), device=device)
    losses, dtypes = [], set()

    def step() -> None:
        with amp.autocast(device):
            out = model(video, target)
        dtypes.add(str(out.logits.dtype).removeprefix("torch."))
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(out.loss.detach()))

    step()  # warm-up: allocation, kernels chosen
    _synchronize(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    for _ in range(sizes.steps):
        step()
    _synchronize(device)
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    expected = str(amp.dtype).removeprefix("torch.")
    problems = []
    if dtypes != {expected}:
        problems.append(f"logits in {sorted(dtypes)}, expected {expected}")
    if not all(map(math.isfinite, losses)):
        problems.append(f"a loss is not finite: {losses}")
    elif not sum(losses[-2:]) / 2 < losses[0]:  # two: a new random tube mask each step makes the loss noisy
        problems.append(f"the loss did not fall on a fixed batch: {losses[0]:.4f} -> {losses[-2:]}")
    return {"ok": not problems, "problems": problems,
            "measured": {"model": f"{variant} {arch} {sizes.frames}x{size}x{size}", "autocast": expected,
                         "batch": sizes.batch,
                         "clips_per_s": round(sizes.steps * sizes.batch / seconds, 2),
                         "loss_first": round(losses[0], 4), "loss_last": round(losses[-1], 4),
                         "peak_gib": None if peak is None else round(peak, 2)}}


def torchrun_epoch_check(device: torch.device, sizes: Sizes, workdir: Path) -> dict[str, Any]:
    """One epoch of ``adatosk train`` on a generated demo set under a 1-process ``torchrun``."""
    from adatosk.config import load_config, to_container
    from adatosk.data.demo import generate
    from adatosk.data.manifest import build_manifest, write_manifest

    overrides = [f"data.root={workdir / 'data'}", f"data.manifest_dir={workdir / 'manifests'}",
                 f"data.cache_dir={workdir / 'cache'}", f"output_root={workdir / 'runs'}", f"device={device.type}",
                 "model=tiny", "train.epochs=1", "train.warmup_epochs=0", "train.batch_size=4",
                 "train.num_workers=0", "train.eval_every=0", "train.amp=bf16", "evaluate.batch_size=4"]
    cfg = load_config(overrides)
    small = {"subjects": 5, "clips_per_class": 3, "raw_videos": 0, "frames": [32, 36], "frame_size": 64}
    generate(cfg.data.root, {**to_container(cfg.data.generator), **small}, num_folds=len(cfg.data.folds))
    write_manifest(build_manifest(cfg.data), Path(cfg.data.manifest_dir) / "manifest.csv")
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1",
                "-m", "adatosk", "train", *overrides]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if REPO_PARAMS.is_dir():
        env.setdefault("ADATOSK_PARAMS", str(REPO_PARAMS))
    start = time.perf_counter()
    proc = subprocess.run(launcher, env=env, capture_output=True, text=True, timeout=sizes.torchrun_timeout)
    seconds = time.perf_counter() - start
    run_dir = Path(cfg.run_dir)
    log = run_dir / "log.jsonl"
    rows = [json.loads(line) for line in log.read_text().splitlines()] if log.is_file() else []
    problems = []
    if proc.returncode != 0:
        problems.append(f"torchrun exited {proc.returncode}: {(proc.stdout + proc.stderr).strip()[-600:]}")
    elif len(rows) != 1 or not math.isfinite(float(rows[0].get("loss", math.nan))):
        problems.append(f"{log} should hold one epoch with a finite loss, holds {rows}")
    elif not (run_dir / "checkpoint" / "last").exists():
        problems.append(f"no checkpoint/last in {run_dir}")
    return {"ok": not problems, "problems": problems,
            "measured": {"backend": "nccl" if device.type == "cuda" else "gloo", "seconds": round(seconds, 1),
                         "steps": rows[0].get("steps") if rows else None,
                         "loss": round(float(rows[0]["loss"]), 4) if rows else None}}


def bench_check(device: torch.device, sizes: Sizes) -> dict[str, Any]:
    """``adatosk bench`` on ``device``: AdaTosk-dagger's throughput ratios to the baseline and the targets."""
    from adatosk.benchmarks import efficiency
    from adatosk.config import load_config

    parser = argparse.ArgumentParser()
    efficiency.add_arguments(parser)
    args = parser.parse_args(["--device", device.type, "--arch", sizes.arch, "--frames", str(sizes.frames),
                              "--batch", str(sizes.bench_batch),
                              "--warmup", "1", "--iters", str(sizes.bench_iters), "--variants", "adatosk_dagger",
                              "--no-reference"])
    result = efficiency.run(args, load_config(args.overrides, args.config))
    rows = {row["name"]: row for row in result["rows"]}
    dagger = rows["adatosk_dagger"]
    ratios = {field: dagger.get(f"{field}_ratio") for field in ("infer_clips_per_s", "train_clips_per_s")}
    missed = [f"{t['field']} {t['target']}: {t['ratio']:.2f}" for t in result["targets"]
              if not t["met"] and t["ratio"] is not None]
    return {"ok": all(r is not None for r in ratios.values()), "problems": [],
            "measured": {**{f"{k}_x_baseline": None if v is None else round(v, 2) for k, v in ratios.items()},
                         "targets_missed": missed, "dtype": result["setup"]["dtype"]}}


def run_checks(device: torch.device, workdir: Path) -> list[dict[str, Any]]:
    sizes = SIZES[device.type]
    checks: list[tuple[str, Callable[[], dict[str, Any]]]] = [
        *((f"amp_train_{v}", lambda v=v: amp_train_check(v, device, sizes)) for v in AMP_VARIANTS),
        ("torchrun_epoch", lambda: torchrun_epoch_check(device, sizes, workdir / "torchrun")),
        ("bench", lambda: bench_check(device, sizes)),
    ]
    rows = []
    for name, check in checks:
        print(f"selfcheck: {name} ...", file=sys.stderr, flush=True)
        start = time.perf_counter()
        try:
            row = check()
        except Exception as error:  # a failed check is a row of the table; the others still run
            row = {"ok": False, "problems": [f"{type(error).__name__}: {error}"], "measured": {},
                   "traceback": traceback.format_exc(limit=8)}
        rows.append({"check": name, **row, "seconds": round(time.perf_counter() - start, 1)})
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rows


def environment(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {"torch": torch.__version__, "device": str(device),
                            "cuda_available": torch.cuda.is_available()}
    if device.type == "cuda":
        info.update(gpu=torch.cuda.get_device_name(device), cuda=torch.version.cuda,
                    bf16_supported=torch.cuda.is_bf16_supported(),
                    nccl_available=torch.distributed.is_nccl_available())
    return info


def format_table(env: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    lines = ["selfcheck: " + ", ".join(f"{k} {v}" for k, v in env.items()), "",
             "| check | result | seconds | measured |", "| --- | --- | --- | --- |"]
    for row in rows:
        measured = ", ".join(f"{k} {v}" for k, v in row["measured"].items())
        result = "ok" if row["ok"] else "FAIL: " + "; ".join(row["problems"])
        lines.append(f"| {row['check']} | {result} | {row['seconds']} | {measured} |")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"),
                        help="cuda: ViT-B, bf16 autocast, nccl (a GPU machine); cpu: tiny sizes, fp32, gloo")
    parser.add_argument("--out", default="selfcheck.json", metavar="FILE", help="the rows as JSON")


def main(args: argparse.Namespace) -> int:
    from adatosk.errors import AdatoskError
    from adatosk.io import write_json_atomic

    if args.device == "cuda" and not torch.cuda.is_available():
        raise AdatoskError("no CUDA device is visible to torch (use --device cpu on a machine without a GPU)")
    device = torch.device(args.device)
    env = environment(device)
    with tempfile.TemporaryDirectory(prefix="adatosk_selfcheck_") as tmp:
        rows = run_checks(device, Path(tmp))
    print(format_table(env, rows), flush=True)
    write_json_atomic(args.out, {"environment": env, "checks": rows})
    return 0 if all(row["ok"] for row in rows) else 1
