"""Helpers shared by the tests (imported as ``helpers``: pytest puts tests/ on the path)."""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from adatosk.config import load_config, to_container
from adatosk.data.classes import CLASS_NAMES, DFER_CLIP_CLASS_NAMES, class_names
from adatosk.data.video import read_video, write_video
from adatosk.models import create_model_from_config
from adatosk.models.checkpoint import save_model

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
