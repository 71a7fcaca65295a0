"""The clip dataset: manifest rows of one fold and split -> sampled, augmented, normalised clips.

Each clip is read from the packed cache ``{cache_dir}/{clip_id}.npy`` when it exists, else from its frame folder
or video file ``{frames base}/{path}`` (``data.root``, or ``data.crops_dir`` for raw videos:
:func:`adatosk.data.manifest.frames_base`); only the sampled frames are gathered (or decoded, for frame folders).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
import torch

from adatosk.data.cache import open_clip
from adatosk.data.manifest import frames_base, read_manifest
from adatosk.data.sampling import single_frame, test_indices, train_indices
from adatosk.data.transforms import ClipAugment, normalize_clip, resize_clip
from adatosk.data.video import VideoDecodeError, frame_files, read_frame_files, read_video
from adatosk.data.workers import worker_context
from adatosk.errors import AdatoskError

MANIFEST_COLUMNS = ("clip_id", "path", "label", "fold", "split")


def worker_init_fn(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: one OpenCV thread per worker (torch already runs one thread in a worker)."""
    cv2.setNumThreads(1)


def data_loader(dataset: torch.utils.data.Dataset, *, num_workers: int = 0,
                **kwargs: Any) -> torch.utils.data.DataLoader:
    """A DataLoader whose worker processes start from a forkserver (:mod:`adatosk.data.workers`), so that they
    cannot deadlock on thread pools this process has run; ``kwargs`` as for ``torch.utils.data.DataLoader``."""
    context = worker_context(__name__) if num_workers > 0 else None
    return torch.utils.data.DataLoader(dataset, num_workers=num_workers, multiprocessing_context=context, **kwargs)


class ClipReadError(AdatoskError, RuntimeError):
    """A clip that cannot be read: ``path`` is its file, the message names the clip."""


@dataclass
class LoadReport:
    """Clips that could not be read (lenient mode): clip_id -> "file: error", and how many reads were replaced."""
    corrupt: dict[str, str] = field(default_factory=dict)
    replaced: int = 0

    def __len__(self) -> int:
        return len(self.corrupt)

    def to_dict(self) -> dict[str, Any]:
        return {"corrupt": dict(self.corrupt), "replaced": self.replaced}


class _CacheSource:
    """A packed clip, memory-mapped: reading gathers only the requested frames."""

    def __init__(self, path: Path):
        self.frames = open_clip(path)

    def __len__(self) -> int:
        return len(self.frames)

    def read(self, indices: np.ndarray) -> np.ndarray:
        return np.asarray(self.frames[indices])


class _FolderSource:
    """A folder of frame images: reading decodes only the requested frames."""

    def __init__(self, files: list[Path]):
        self.files = files

    def __len__(self) -> int:
        return len(self.files)

    def read(self, indices: np.ndarray) -> np.ndarray:
        unique, inverse = np.unique(indices, return_inverse=True)  # each frame decoded once
        return read_frame_files([self.files[k] for k in unique])[inverse]


class _VideoSource:
    """A video file, decoded whole (clips are short; pack them for speed)."""

    def __init__(self, path: Path):
        self.frames = read_video(path)

    def __len__(self) -> int:
        return len(self.frames)

    def read(self, indices: np.ndarray) -> np.ndarray:
        return self.frames[indices]


class ClipDataset(torch.utils.data.Dataset):
    """Clips of one fold and split of a manifest, as MAE-DFER samples and augments them.

    ``__getitem__(i) -> dict(video, label, index)``: ``video`` is an ImageNet-normalised FloatTensor ``[3, T, S, S]``
    (``train=True``: random window + :class:`ClipAugment`) or ``[V, 3, T, S, S]`` (``train=False``: ``temporal_views``
    views, resized only); ``index`` is the dataset index of the clip returned (``i`` unless lenient mode replaced it).

    Reproducibility: all randomness of sample ``i`` (window, augmentation) comes from a generator seeded by
    ``(seed, epoch, i)``; no global RNG is used. Call :meth:`set_epoch` at the start of every epoch, before
    ``iter(loader)`` (workers prefetch as soon as the iterator exists): a resumed run that sets the same seed and
    epoch and visits the same indices gets bit-identical clips, whatever the number of workers and whether they
    persist. The order of indices is the sampler's business. Test clips are deterministic.

    Errors: in strict mode an unreadable or corrupt clip raises :class:`ClipReadError` naming the file. In lenient
    mode (``strict=False``) it is recorded in :attr:`report`, a warning naming the file is issued, and the next
    readable clip (i + 1, i + 2, ...) is returned instead. DataLoader workers record into their own copy of the
    report, so in workers the warnings are the record; :meth:`validate` checks every clip up front in the calling
    process and fills the report there.

    Workers: no file is held open between items (memory maps are opened per item in the process that reads); pass
    ``worker_init_fn=worker_init_fn`` to the DataLoader so that each worker runs one OpenCV thread.
    """

    def __init__(
        self,
        manifest: pd.DataFrame | str | os.PathLike[str],
        data_cfg: Any,
        *,
        fold: int,
        split: str,
        train: bool,
        temporal_views: int = 2,
        strict: bool = True,
        seed: int = 0,
    ):
        if not isinstance(manifest, pd.DataFrame):
            manifest = read_manifest(manifest)
        missing = [c for c in MANIFEST_COLUMNS if c not in manifest.columns]
        if missing:
            raise AdatoskError(f"manifest lacks columns {missing}; it has {list(manifest.columns)}")
        rows = manifest[(manifest["fold"].astype(int) == int(fold)) & (manifest["split"] == split)]
        if rows.empty:
            folds, splits = sorted(manifest["fold"].unique()), sorted(manifest["split"].unique())
            raise AdatoskError(f"no clips of fold {fold}, split {split!r} in the manifest (folds {folds}, splits "
                               f"{splits})")
        self.clip_ids = rows["clip_id"].astype(str).tolist()
        self.paths = rows["path"].astype(str).tolist()
        self.labels = [int(label) for label in rows["label"]]
        self.num_classes = int(data_cfg["num_classes"])
        bad = sorted({label for label in self.labels if not 0 <= label < self.num_classes})
        if bad:
            raise AdatoskError(f"labels {bad} outside [0, {self.num_classes}) in fold {fold}, split {split!r}")

        self.root = frames_base(data_cfg)  # the manifest's paths are relative to it
        self.cache_dir = Path(data_cfg["cache_dir"])
        self.num_frames = int(data_cfg["num_frames"])
        self.size = int(data_cfg["img_size"])
        sampling = data_cfg.get("sampling") or {}
        self.stride = int(sampling.get("stride", 4))
        self.train_window = int(sampling.get("train_window", self.num_frames * self.stride))
        self.single_frame = bool(sampling.get("single_frame", False))
        self.train, self.temporal_views, self.strict, self.seed = train, temporal_views, strict, seed
        self.augment = ClipAugment.from_config(data_cfg.get("augment"), self.size) if train else None
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()  # seen by (persistent) workers too
        self.report = LoadReport()

    def __len__(self) -> int:
        return len(self.clip_ids)

    @property
    def epoch(self) -> int:
        return int(self._epoch)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose window/augmentation draws :meth:`__getitem__` makes (see the class docstring).

        The epoch lives in shared memory, so DataLoader workers, persistent ones included, see it."""
        self._epoch.fill_(int(epoch))

    def rng(self, index: int) -> np.random.Generator:
        """The generator of sample ``index`` in the current epoch."""
        return np.random.default_rng([self.seed, self.epoch, index])

    def cache_path(self, index: int) -> Path:
        return self.cache_dir / f"{self.clip_ids[index]}.npy"

    def _source(self, index: int, decode: bool = True) -> _CacheSource | _FolderSource | _VideoSource | None:
        """The clip's reader; with ``decode=False`` a video file is only checked to be a non-empty file (None)."""
        cache = self.cache_path(index)
        if cache.exists():
            return _CacheSource(cache)
        path = self.root / self.paths[index]
        if path.is_dir():
            files = frame_files(path)
            if not files:
                raise VideoDecodeError(f"no frame images in {path}")
            return _FolderSource(files)
        if path.is_file():
            if not decode:
                if path.stat().st_size == 0:
                    raise VideoDecodeError(f"empty video file {path}")
                return None
            return _VideoSource(path)
        raise FileNotFoundError(f"neither the packed clip {cache} nor the frames/video {path} exist")

    def _load(self, index: int, rng: np.random.Generator) -> torch.Tensor:
        source = self._source(index)
        if self.train:
            indices = train_indices(len(source), rng, num_frames=self.num_frames, stride=self.stride,
                                    window=self.train_window)
            if self.single_frame:
                indices = single_frame(indices, rng)
            return self.augment(resize_clip(source.read(indices), self.size), rng)  # [3, T, S, S]
        views = test_indices(len(source), num_frames=self.num_frames, stride=self.stride,
                             num_views=self.temporal_views)  # [V, T]
        if self.single_frame:
            views = single_frame(views, rng)
        frames = resize_clip(source.read(views.reshape(-1)), self.size)
        return normalize_clip(frames).unflatten(1, views.shape).transpose(0, 1).contiguous()  # [V, 3, T, S, S]

    def _failure(self, index: int, error: Exception) -> ClipReadError:
        cache = self.cache_path(index)
        where = cache if cache.exists() else self.root / self.paths[index]
        return ClipReadError(f"clip {self.clip_ids[index]} unreadable: {type(error).__name__}: {error}", where)

    def _read(self, index: int, rng: np.random.Generator) -> torch.Tensor:
        try:
            return self._load(index, rng)
        except Exception as error:  # any decoder / file-system / format error: one wrapper naming the clip's file
            raise self._failure(index, error) from error

    def __getitem__(self, index: int) -> dict[str, Any]:
        rng = self.rng(index)
        if self.strict:
            return dict(video=self._read(index, rng), label=self.labels[index], index=index)
        for offset in range(len(self)):
            candidate = (index + offset) % len(self)
            if self.clip_ids[candidate] in self.report.corrupt:
                continue
            try:
                video = self._read(candidate, rng)
            except ClipReadError as error:
                self.report.corrupt[self.clip_ids[candidate]] = str(error)
                warnings.warn(f"skipping unreadable clip: {error}", RuntimeWarning, stacklevel=2)
                continue
            self.report.replaced += candidate != index
            return dict(video=video, label=self.labels[candidate], index=candidate)
        raise ClipReadError(f"no readable clip in the dataset; e.g. {next(iter(self.report.corrupt.values()))}")

    def validate(self) -> LoadReport:
        """Check every clip's source cheaply and record those that fail: a packed clip's header and size, a frame
        folder's listing, a video file's presence (videos are not decoded; neither are frame images).

        Strict mode raises on the first failure; lenient mode records all of them in :attr:`report`."""
        for index in range(len(self)):
            try:
                self._source(index, decode=False)
            except Exception as error:
                if self.strict:
                    raise self._failure(index, error) from error
                self.report.corrupt[self.clip_ids[index]] = str(self._failure(index, error))
        return self.report
