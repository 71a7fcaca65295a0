"""The packed clip cache: one ``.npy`` file per clip, uint8 ``[T, H, W, 3]`` RGB, memory-mapped on read.

The face-crop stage writes each clip once with :func:`pack_clip`; the loader maps it with :func:`open_clip`,
so a training step reads only the 16 frames it samples, with no JPEG decode.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from adatosk.errors import AdatoskError
from adatosk.io import atomic_path


class CorruptClipError(AdatoskError, ValueError):
    """A packed clip that cannot be read, or is not a uint8 ``[T, H, W, 3]`` array; ``path`` is the file."""


def _check_frames(frames: np.ndarray, path: Path, what: str) -> None:
    if frames.dtype != np.uint8:
        raise CorruptClipError(f"{what}: expected dtype uint8, got {frames.dtype}", path)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] < 1:
        raise CorruptClipError(f"{what}: expected shape [T>=1, H, W, 3], got {list(frames.shape)}", path)


def pack_clip(frames: np.ndarray, path: str | os.PathLike[str]) -> Path:
    """Write ``frames`` (uint8 ``[T, H, W, 3]`` RGB) to ``path`` (``.npy``) atomically; return the path."""
    path = Path(path)
    frames = np.ascontiguousarray(frames)
    _check_frames(frames, path, "cannot pack these frames")
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:  # a file object: np.save on a name would append ".npy" to the temp name
            np.save(handle, frames, allow_pickle=False)
    return path


def open_clip(path: str | os.PathLike[str]) -> np.ndarray:
    """Memory-map a packed clip read-only: uint8 ``[T, H, W, 3]``. Raises :class:`CorruptClipError` naming the file
    if it is truncated, not an ``.npy`` file, or has the wrong dtype/shape; ``FileNotFoundError`` if absent."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"packed clip not found: {path}")
    try:
        frames = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:  # bad header, or data shorter than the header says
        raise CorruptClipError(f"corrupt packed clip: {error}", path) from error
    if not isinstance(frames, np.ndarray):
        raise CorruptClipError("corrupt packed clip: not a single array", path)
    _check_frames(frames, path, "corrupt packed clip")
    return frames
