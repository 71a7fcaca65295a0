"""Helpers shared by the tests (imported as ``helpers``: pytest puts tests/ on the path)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from adatosk.cli import main as cli_main
from adatosk.config import load_config, to_container
from adatosk.data.classes import CLASS_NAMES, DFER_CLIP_CLASS_NAMES, class_names
from adatosk.data.demo import generate
from adatosk.data.manifest import build_manifest, write_manifest
from adatosk.data.video import read_video, write_video
from adatosk.models import create_model_from_config
from adatosk.models.checkpoint import save_model
from adatosk.models.registry import create_model

# ------------------------------------------------------------------ the repository and its virtual environment

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
sys.path.insert(0, str(REPO))  # workflow/ (import workflow.dvc_stages)

# ------------------------------------------------------------------------------- tiny models, faces and videos

DATA = Path(__file__).parent / "data"
CLASSES = CLASS_NAMES["dfew"]
IMG_SIZE, NUM_FRAMES = 64, 8


def tiny_model_cfg(variant: str) -> dict:
    """cfg.model of ``variant`` at the tiny width, 64x64, 8 frames."""
    return to_container(load_config([f"model={variant}", "model.arch=vit_tiny_patch16_64",
                                     f"model.img_size={IMG_SIZE}", f"model.num_frames={NUM_FRAMES}"]).model)


def train_tiny_checkpoint(directory: Path, variant: str = "adatosk_dagger", steps: int = 3) -> Path:
    """A tiny model (64x64, 8 frames) after a few AdamW steps on random clips, saved with save_model."""
    cfg = tiny_model_cfg(variant)
    torch.manual_seed(0)
    model = create_model_from_config(cfg, len(CLASSES)).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for _ in range(steps):
        video = torch.randn(4, 3, NUM_FRAMES, IMG_SIZE, IMG_SIZE)
        loss = model(video, torch.randint(0, len(CLASSES), (4,))).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return save_model(directory, model, cfg, len(CLASSES), CLASSES)


def spliced_face_video(path: Path) -> Path:
    """A real face in 42% of the frames: 36 frames of single_face.mp4 (half size), 100 black ones, the 36 again."""
    face = read_video(DATA / "single_face.mp4")[:36, ::2, ::2]  # [36, 180, 320, 3]
    return write_video(path, np.concatenate([face, np.zeros((100, *face.shape[1:]), np.uint8), face]))


def looped_face_video(path: Path, seconds: float, fps: int = 30) -> Path:
    """single_face.mp4 at half size (320x180) played forwards and backwards until it lasts ``seconds``."""
    face = read_video(DATA / "single_face.mp4")[:, ::2, ::2]
    cycle = np.concatenate([np.arange(len(face)), np.arange(len(face) - 2, 0, -1)])
    return write_video(path, face[cycle[np.arange(round(seconds * fps)) % len(cycle)]], fps=fps)


def peak_numpy_bytes(function: Callable[[], Any]) -> tuple[Any, int]:
    """``function()`` and the peak of the memory Python and numpy allocated while it ran (tracemalloc)."""
    tracemalloc.start()
    try:
        result = function()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def from_dfer_clip_label(layout: str, label: int) -> int:
    """DFER-CLIP's 0-based label -> our 0-based label of the same class (the inverse of to_dfer_clip_label)."""
    return class_names(layout).index(DFER_CLIP_CLASS_NAMES[layout][label])


def damaged_video(path: Path) -> Path:
    """single_face.mp4 with 20 KB zeroed in its middle: FFmpeg's decoder gives up after 32 of its 72 frames."""
    data = bytearray((DATA / "single_face.mp4").read_bytes())
    middle = len(data) // 2
    data[middle:middle + 20_000] = bytes(20_000)
    path.write_bytes(bytes(data))
    return path


# ------------------------------------------------------------------------------- micro models (test_models.py)

# a micro AdaTosk: 8 frames of 32x32 -> T' = 4 slots x N = 16 positions, width 32; r = 2 per transition, the
# exclusion after the encoder; the soft-mask switches at their (measured) defaults
MICRO = dict(img_size=32, patch_size=8, num_frames=8, embed_dim=32, depth=2, num_heads=2, decoder_dim=16,
             decoder_num_heads=2, head_hidden_dim=48, mask_ratio=0.5, top_k=2, r=2, exclude_fraction=None,
             exclude_at=None)


def micro(name: str = "adatosk_vit_tiny_patch16_64", num_classes: int = 5, **kwargs) -> torch.nn.Module:
    args = dict(MICRO, **kwargs)
    if name.startswith("videomae"):
        args = {k: v for k, v in args.items() if k in ("img_size", "patch_size", "num_frames", "embed_dim", "depth",
                                                       "num_heads", "head_init_scale")}
    return create_model(name, num_classes, **args)


def clip(batch: int = 2, frames: int = 8, size: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 3, frames, size, size, generator=torch.Generator().manual_seed(seed))

# ------------------------------------------------------------------- training on the demo data (test_train.py)

def demo_overrides(root: Path) -> list[str]:
    """Write a small demo set (21 clips; fold 1 = 14 train / 7 test) under ``root``; return the run overrides."""
    data = [f"data.root={root / 'data'}", f"data.manifest_dir={root / 'manifests'}", f"data.cache_dir={root / 'cache'}"]
    if not (root / "manifests" / "manifest.csv").exists():
        cfg = load_config(data)
        small = {"subjects": 5, "clips_per_class": 3, "test_only_clips_per_class": 0, "raw_videos": 0,
                 "frames": [16, 20], "frame_size": 64}
        generate(cfg.data.root, {**to_container(cfg.data.generator), **small}, num_folds=len(cfg.data.folds))
        write_manifest(build_manifest(cfg.data), Path(cfg.data.manifest_dir) / "manifest.csv")
    return data + [
        "model=tiny", "model.img_size=64", "model.num_frames=8", f"output_root={root / 'runs'}",
        "train.batch_size=4", "train.num_workers=0", "train.threads=1", "train.epochs=2", "train.warmup_epochs=1",
        "evaluate.batch_size=4",
    ]

# -------------------- hand-made runs for `adatosk tables` (test_tables.py; class_names: CLASSES, DFEW's seven)

def random_scores(rng):
    """UAR, WAR, per-class recall (%) and the confusion matrix of a random evaluation, as `adatosk evaluate` writes."""
    cm = rng.integers(0, 6, size=(7, 7)) + np.diag(rng.integers(5, 20, size=7))
    recall = 100 * np.diag(cm) / cm.sum(axis=1)
    return {"unit": "percent", "uar": float(recall.mean()), "war": float(100 * np.trace(cm) / cm.sum()),
            "per_class_recall": recall.tolist(), "confusion_matrix": cm.tolist(), "class_names": CLASSES}


def write_run(root, dataset, variant, fold, seed=0, all_tokens=True):
    """A run's metrics.json, with its every-token evaluation (`evaluate.all_tokens`) unless told otherwise."""
    rng = np.random.default_rng([fold, seed, len(variant)])
    metrics = {**random_scores(rng), "data": dataset, "fold": fold, "seed": seed, "variant": variant}
    if all_tokens:
        metrics["all_tokens"] = random_scores(rng)
    path = root / dataset / variant / f"fold{fold}" / f"seed{seed}" / "metrics.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(metrics))
    return metrics


def render(tmp_path, cfg, runs, flops=None, expect=0):
    efficiency = tmp_path / "efficiency"
    efficiency.mkdir(exist_ok=True)
    if flops is not None:
        (efficiency / "flops.json").write_text(json.dumps({"rows": flops}))
    config = tmp_path / "params.yaml"
    import yaml

    config.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "tables"
    code = cli_main(["tables", "--config", str(config), "--runs", str(runs), "--efficiency", str(efficiency),
                     "--out", str(out), "--metrics", str(tmp_path / "metrics.json"),
                     "--plots", str(tmp_path / "plots")])
    assert code == expect
    return out

# ------------------------------------------------- commands in copies of the repository (test_pipeline_dag.py)

def env_for(root: Path) -> dict:
    env = dict(os.environ, DVC_NO_ANALYTICS="1", PYTHONPATH=str(root), PATH=f"{BIN}:{os.environ['PATH']}",
               GIT_AUTHOR_NAME="adatosk test", GIT_AUTHOR_EMAIL="test@adatosk.invalid",
               GIT_COMMITTER_NAME="adatosk test", GIT_COMMITTER_EMAIL="test@adatosk.invalid")
    env.pop("ADATOSK_PARAMS", None)
    return env


def run(args, cwd: Path, check=True, timeout=600) -> subprocess.CompletedProcess:
    result = subprocess.run([str(a) for a in args], cwd=cwd, env=env_for(cwd), capture_output=True, text=True,
                            timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, args))} failed ({result.returncode}):\n{result.stdout[-4000:]}\n"
                             f"{result.stderr[-6000:]}")
    return result


def copy_repo(dest: Path, experiment: str | None = None) -> Path:
    """The repository's tracked and unignored files in a fresh git repository at ``dest`` (one commit), with
    params.yaml composed for ``experiment`` (default: the config's)."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, capture_output=True,
                           check=True).stdout.decode().split("\0")
    for name in filter(None, files):
        src = REPO / name
        if src.is_file() and not name.startswith("tests/"):
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    run(["git", "init", "-q", "-b", "main"], dest)
    compose(dest, [f"experiment={experiment}"] if experiment else [])
    run(["git", "add", "-A"], dest)
    run(["git", "commit", "-q", "-m", "copy"], dest)
    return dest


def compose(root: Path, overrides=()) -> None:
    run([BIN / "python", "workflow/scripts/compose_params.py", *overrides], root)

# ----------------------------------------------------------------------------- `make pull` (test_make_pull.py)

def make_pull(root: Path):
    """`make pull` with this test's virtual environment (`-o`: the stamp is current, build no .venv)."""
    venv = BIN.parent
    return run(["make", "-o", f"{venv}/.installed", "pull", f"VENV={venv}"], root, timeout=300)

# --------------------------------------------------------------------- the smoke experiment (test_pipeline.py)

SMOKE = """# @package _global_
# The demo at test size (tests/test_pipeline.py).
defaults:
  - demo
  - _self_

model: {img_size: 64, num_frames: 8}
data:
  root: generated/demo          # outside data/, which holds the licensed data (data.dvc)
  folds: [1, 2]
  generator: {subjects: 4, clips_per_class: 4, test_only_clips_per_class: 0, frames: [16, 20], frame_size: 64,
               raw_videos: 0}
train: {epochs: 1, warmup_epochs: 0, batch_size: 4, num_workers: 0}
evaluate: {batch_size: 4}
grid:
  main:
    splits: [{dataset: demo, fold: 1}, {dataset: demo, fold: 2}]
    variants: [videomae, adatosk_dagger]
  ablation: {splits: [], variants: []}
  figures: {splits: [{dataset: demo, fold: 1}], variants: [adatosk_dagger]}
  efficiency: {flops: {variants: [adatosk_dagger]}, bench: {variants: [adatosk_dagger], iters: 1}}
"""


def make_smoke_repo(dest: Path, overrides=()) -> Path:
    copy_repo(dest)
    (dest / "params/experiment/smoke.yaml").write_text(SMOKE)
    config = dest / "params/config.yaml"
    text = config.read_text()
    assert "  - experiment: demo\n" in text
    config.write_text(text.replace("  - experiment: demo\n", "  - experiment: smoke\n"))
    compose(dest, overrides)
    run(["git", "add", "-A"], dest)
    run(["git", "commit", "-q", "-m", "smoke experiment"], dest)
    return dest
