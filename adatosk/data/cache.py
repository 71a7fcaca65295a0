"""The packed clip cache: one ``.npy`` file per clip, uint8 ``[T, H, W, 3]`` RGB, memory-mapped on read.

The face-crop stage writes each clip once with :func:`pack_clip` (or :func:`pack_frames`, frame by frame, for a clip
too long to hold in memory); the loader maps it with :func:`open_clip`,
so a training step reads only the 16 frames it samples, with no JPEG decode.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterable
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


def pack_frames(frames: Iterable[np.ndarray], count: int, path: str | os.PathLike[str]) -> Path:
    """Write ``count`` frames (uint8 ``[H, W, 3]`` RGB each, all of one size), taken one at a time, to ``path``
    (``.npy``, the bytes :func:`pack_clip` writes) atomically; return the path. Memory holds one frame."""
    path = Path(path)
    frames = iter(frames)
    first = next(frames, None)
    if first is None:
        raise CorruptClipError("cannot pack these frames: there are none", path)
    shape = (count, *first.shape)
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)), "fortran_order": False, "shape": shape}
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.lib.format.write_array_header_1_0(handle, header)
            written = 0
            for frame in itertools.chain([first], frames):
                frame = np.ascontiguousarray(frame)
                _check_frames(frame[None], path, "cannot pack these frames")
                if written == count or frame.shape != first.shape:
                    raise CorruptClipError(f"cannot pack these frames: expected {count} frames of shape "
                                           f"{list(first.shape)}, got frame {written} of shape {list(frame.shape)}",
                                           path)
                handle.write(frame.tobytes())
                written += 1
        if written != count:
            raise CorruptClipError(f"cannot pack these frames: expected {count} frames, got {written}", path)
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
