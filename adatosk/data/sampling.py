"""Frame sampling as in MAE-DFER: which frame indices of a clip of ``n_frames`` frames a training or test view uses.

Pure functions of ``(n_frames, rng)`` returning int64 index arrays; the loader gathers those frames.

* Training: a random window of ``window`` (64) frames and ``num_frames`` (16) evenly spaced frames in it (stride
  4). A clip no longer than the window gives ``n_frames // stride`` evenly spaced frames over the whole clip,
  padded with its last frame.
* Test: every ``stride``-th frame of the clip, padded with the last frame to ``num_frames``, cut into
  ``num_views`` windows of ``num_frames`` evenly placed from the start to the end of that sequence.

FERV39K uses stride 1 (window 16); DFEW and MAFW stride 4 (window 64).
"""

from __future__ import annotations

import numpy as np


def _check(n_frames: int, num_frames: int, stride: int) -> None:
    if n_frames < 1:
        raise ValueError(f"a clip needs at least one frame, got n_frames={n_frames}")
    if num_frames < 1 or stride < 1:
        raise ValueError(f"num_frames and stride must be >= 1, got {num_frames} and {stride}")


def _pad(index: np.ndarray, num_frames: int, last: int) -> np.ndarray:
    """Append copies of the clip's last frame ``last`` until there are ``num_frames`` indices."""
    return np.concatenate([index.astype(np.int64), np.full(num_frames - len(index), last, dtype=np.int64)])


def train_indices(
    n_frames: int, rng: np.random.Generator, *, num_frames: int = 16, stride: int = 4, window: int = 64,
) -> np.ndarray:
    """``num_frames`` indices for one training clip: [num_frames] int64, non-decreasing, in [0, n_frames)."""
    _check(n_frames, num_frames, stride)
    if window < num_frames:
        raise ValueError(f"train_window ({window}) must hold num_frames ({num_frames}) frames")
    if n_frames <= window:
        # the whole clip: n // stride evenly spaced frames (the end point n is clipped to the last frame), padded
        count = min(n_frames // stride, num_frames)
        index = np.linspace(0, n_frames, num=count)
        return _pad(np.clip(index, 0, n_frames - 1), num_frames, n_frames - 1)
    # MAE-DFER draws the window's end in [window, n); we allow it to end on the last frame as well
    start = int(rng.integers(0, n_frames - window + 1))
    index = np.linspace(start, start + window, num=num_frames)
    return np.clip(index, start, start + window - 1).astype(np.int64)


def test_indices(n_frames: int, *, num_frames: int = 16, stride: int = 4, num_views: int = 2) -> np.ndarray:
    """Frame indices of the ``num_views`` temporal test views: [num_views, num_frames] int64.

    View v starts at ``int(v * (L - num_frames) / (num_views - 1))`` of the strided sequence of length L, so the first
    view starts at the first frame and the last view ends on the last sampled frame (one view: centred).
    """
    _check(n_frames, num_frames, stride)
    if num_views < 1:
        raise ValueError(f"num_views must be >= 1, got {num_views}")
    strided = np.arange(0, n_frames, stride, dtype=np.int64)
    strided = _pad(strided, max(num_frames, len(strided)), n_frames - 1)
    span = len(strided) - num_frames
    if num_views == 1:
        starts = [span // 2]
    else:
        starts = [int(v * span / (num_views - 1)) for v in range(num_views)]
    return np.stack([strided[s:s + num_frames] for s in starts])


def single_frame(indices: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One random frame of each view repeated over the view: ``indices`` ``[T]`` or ``[V, T]`` -> same shape.

    The frame is drawn uniformly from the view's distinct frames (padding does not favour the last one). This is
    the control of the demo's difficulty check (``data.sampling.single_frame``): a model that sees one random
    frame 16 times cannot use the clip's dynamics, so its UAR is what a single frame tells."""
    views = np.atleast_2d(indices)
    distinct = [np.unique(view) for view in views]
    picks = [frames[rng.integers(len(frames))] for frames in distinct]
    return np.repeat(np.asarray(picks, dtype=np.int64)[:, None], views.shape[1], axis=1).reshape(indices.shape)
