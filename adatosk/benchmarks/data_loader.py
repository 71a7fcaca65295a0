"""Data-loader throughput (the ``bench-data`` command): clips per second per worker.

Rows: (a) training clips from the packed uint8 cache with the training augmentation, (b) training clips decoded
from JPEG frame folders (or videos) with the same augmentation, (c) test clips (all temporal views) from the
cache, and (d) for reference, MAE-DFER-style loading: PIL decode and resize of each frame, timm's RandAugment per
PIL frame (when the config's augmentation has RandAugment), then crop, flip and normalise on tensors.

Per worker = one process with one torch and one OpenCV thread, as in a DataLoader worker; the rate is given per
wall-clock second and per CPU second of that process (the two agree on an idle machine; on a shared one the CPU
rate is what a worker with a core of its own achieves). ``--workers N`` also times a DataLoader with N worker
processes over (a) and reports its total wall-clock rate.

Data: without ``--manifest``, a synthetic set written to a temporary directory (DFEW-like: JPEG folders of
224x224 frames and the packed cache at ``--size``), so the command runs anywhere; with ``--manifest`` the
configured dataset (``cfg.data``; fold ``cfg.data.fold``, its training split).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
import torch

from adatosk.data.cache import pack_clip
from adatosk.data.dataset import ClipDataset, data_loader, worker_init_fn
from adatosk.data.sampling import train_indices
from adatosk.data.video import frame_files

SOURCE_SIZE = 224  # DFEW's pre-cropped frames


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from adatosk.cli import add_config_arguments

    add_config_arguments(parser)
    parser.add_argument("--manifest", nargs="?", const="auto", default=None, metavar="CSV",
                        help="bench the configured dataset: this manifest, or {data.manifest_dir}/manifest.csv "
                             "without a value (default: a synthetic set in a temporary directory)")
    parser.add_argument("--size", type=int, default=None, help="frame side (default 160; with --manifest: img_size)")
    parser.add_argument("--frames", type=int, default=None,
                        help="frames per clip (default 16; with --manifest: num_frames)")
    parser.add_argument("--clips", type=int, default=200, help="clips timed per row (default 200)")
    parser.add_argument("--source-frames", type=int, default=80, help="frames per synthetic clip (default 80)")
    parser.add_argument("--workers", type=int, default=0, help="also time a DataLoader with this many workers")
    parser.add_argument("--json", default=None, metavar="FILE", help="also write the results as JSON")


def synthetic_dataset(directory: Path, data_cfg: dict[str, Any], n_clips: int, n_frames: int) -> pd.DataFrame:
    """JPEG folders of 224x224 frames under ``root`` and their packed cache at ``img_size``: the manifest."""
    rng = np.random.default_rng(0)
    rows = []
    for k in range(n_clips):
        clip_id = f"{k:05d}"
        texture = cv2.resize(rng.integers(0, 256, (28, 28, 3), dtype=np.uint8), (2 * SOURCE_SIZE,) * 2,
                             interpolation=cv2.INTER_CUBIC)
        shifts = np.cumsum(rng.integers(-2, 3, (n_frames, 2)), axis=0) % SOURCE_SIZE
        frames = np.stack([texture[y:y + SOURCE_SIZE, x:x + SOURCE_SIZE] for y, x in shifts])
        folder = Path(data_cfg["root"]) / clip_id
        folder.mkdir(parents=True)
        for t, frame in enumerate(frames):
            cv2.imwrite(str(folder / f"{t + 1:05d}.jpg"), frame[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90])
        size = data_cfg["img_size"]
        packed = np.stack([cv2.resize(f, (size, size), interpolation=cv2.INTER_AREA) for f in frames])
        pack_clip(packed, Path(data_cfg["cache_dir"]) / f"{clip_id}.npy")
        rows.append(dict(clip_id=clip_id, path=clip_id, n_frames=n_frames, label=k % 7, label_name=str(k % 7),
                         fold=1, split="train"))
    return pd.DataFrame(rows)


def reference_name(dataset: ClipDataset) -> str:
    """The row name of :func:`mae_dfer_reference` for ``dataset``'s augmentation."""
    return f"(d) reference: PIL{' + timm RandAugment' if dataset.augment.rand_augment else ''} per frame"


def mae_dfer_reference(dataset: ClipDataset) -> Callable[[int], torch.Tensor]:
    """MAE-DFER-style loading of sample i from its JPEG folder: PIL per frame, and timm's RandAugment per frame
    where the dataset's augmentation has one (the same policy string)."""
    from PIL import Image
    from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
    from timm.data.auto_augment import rand_augment_transform
    from torchvision.transforms import functional as TF

    policy = dataset.augment.rand_augment
    rand_augment = rand_augment_transform(policy.config_str, {}) if policy else (lambda image: image)

    def load(i: int) -> torch.Tensor:
        files = frame_files(dataset.root / dataset.paths[i])
        rng = dataset.rng(i)
        index = train_indices(len(files), rng, num_frames=dataset.num_frames, stride=dataset.stride,
                              window=dataset.train_window)
        size = (dataset.size, dataset.size)
        images = [rand_augment(Image.open(files[k]).convert("RGB").resize(size, Image.BILINEAR)) for k in index]
        video = TF.normalize(torch.stack([TF.to_tensor(image) for image in images]), IMAGENET_DEFAULT_MEAN,
                             IMAGENET_DEFAULT_STD)  # [T, 3, S, S]
        top, left, h, w = dataset.augment.sample(rng, *size).box
        video = torch.nn.functional.interpolate(video[:, :, top:top + h, left:left + w], size=size,
                                                mode="bilinear", align_corners=False)
        return video.flip(-1).permute(1, 0, 2, 3)

    return load


def time_rate(load: Callable[[int], Any], n_items: int, n_clips: int) -> dict[str, float]:
    """Clips per second over ``n_clips`` calls ``load(i % n_items)`` after two warm-up calls: per wall-clock second
    and per CPU second of this process (the latter is what a worker achieves on a core of its own)."""
    for i in range(2):
        load(i % n_items)
    start, start_cpu = time.perf_counter(), time.process_time()
    for i in range(n_clips):
        load(i % n_items)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - start_cpu
    return dict(clips_per_s=n_clips / seconds, ms_per_clip=1000 * seconds / n_clips,
                clips_per_cpu_s=n_clips / cpu_seconds)


def time_loader(dataset: ClipDataset, workers: int, n_clips: int) -> dict[str, float]:
    """Total clips per second of a DataLoader with ``workers`` processes (batch 8), after one warm-up batch."""
    sampler = torch.utils.data.RandomSampler(dataset, replacement=True, num_samples=n_clips + 8 * workers)
    loader = data_loader(dataset, batch_size=8, sampler=sampler, num_workers=workers, worker_init_fn=worker_init_fn,
                         persistent_workers=False)
    iterator = iter(loader)
    for _ in range(workers):
        next(iterator)
    count, start = 0, time.perf_counter()
    for batch in iterator:
        count += len(batch["label"])
    seconds = time.perf_counter() - start
    return dict(clips_per_s=count / seconds, ms_per_clip=1000 * seconds / count)


def main(args: argparse.Namespace) -> int:
    from adatosk.config import load_config, to_container

    cfg = load_config(args.overrides, args.config)
    data_cfg = to_container(cfg.data)
    with tempfile.TemporaryDirectory(prefix="adatosk-bench-data-") as tmp:
        if args.manifest is None:
            data_cfg.update(root=f"{tmp}/frames", cache_dir=f"{tmp}/cache", img_size=args.size or 160,
                            num_frames=args.frames or 16)
            n_items = max(8, min(args.clips, 32))
            manifest = synthetic_dataset(Path(tmp), data_cfg, n_items, args.source_frames)
            fold, source = 1, f"synthetic: {n_items} clips of {args.source_frames} JPEG frames {SOURCE_SIZE}px"
        else:
            data_cfg.update({k: v for k, v in (("img_size", args.size), ("num_frames", args.frames)) if v})
            path = Path(data_cfg["manifest_dir"]) / "manifest.csv" if args.manifest == "auto" else Path(args.manifest)
            manifest, fold, source = path, int(data_cfg["fold"]), str(path)
        uncached = {**data_cfg, "cache_dir": f"{tmp}/no-cache"}
        train = ClipDataset(manifest, data_cfg, fold=fold, split="train", train=True)
        from_frames = ClipDataset(manifest, uncached, fold=fold, split="train", train=True)
        test = ClipDataset(manifest, data_cfg, fold=fold, split="train", train=False,
                           temporal_views=int(cfg.evaluate.temporal_views))
        rows = {}
        torch.set_num_threads(1)
        cv2.setNumThreads(1)
        n_items = len(train)
        rows["(a) cache + train augmentation"] = time_rate(lambda i: train[i], n_items, args.clips)
        rows["(b) frames + train augmentation"] = time_rate(lambda i: from_frames[i], n_items, args.clips)
        rows[f"(c) cache, test ({test.temporal_views} views)"] = time_rate(lambda i: test[i], n_items, args.clips)
        if from_frames.paths and (from_frames.root / from_frames.paths[0]).is_dir():
            rows[reference_name(from_frames)] = time_rate(
                mae_dfer_reference(from_frames), n_items, max(args.clips // 4, 10))
        if args.workers > 0:
            total = time_loader(train, args.workers, args.clips)
            rows[f"(a) DataLoader, {args.workers} workers, total"] = total
    result = dict(data=source, size=data_cfg["img_size"], frames=data_cfg["num_frames"], clips=args.clips,
                  threads_per_worker=1, rows=rows)
    print(f"data-loader throughput: {result['frames']}x{result['size']}x{result['size']} clips, {source}")
    width = max(len(name) for name in rows)
    print(f"{'':{width}}  clips/s  ms/clip  clips/CPU-s")
    for name, row in rows.items():
        per_cpu = f"{row['clips_per_cpu_s']:11.1f}" if "clips_per_cpu_s" in row else f"{'-':>11}"
        print(f"{name:{width}}  {row['clips_per_s']:7.1f}  {row['ms_per_clip']:7.2f}  {per_cpu}")
    if args.json:
        from adatosk.io import write_json_atomic

        write_json_atomic(args.json, result)
    return 0
