"""Speed and face coverage of the face-crop stage's tracking (``adatosk face-crop --bench VIDEO``)."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from adatosk.data.faces import CropParams, box_iou, make_detector
from adatosk.data.tracking import NoFaceError, crop_face_track
from adatosk.data.video import read_video
from adatosk.progress import machine_load

BENCH_DETECT_EVERY = (1, 5, 10, 15)  # 1: a full search in every frame, the reference of the box IoU


def benchmark(videos: Sequence[str | os.PathLike[str]], params: CropParams, repeat: int = 3) -> list[dict[str, Any]]:
    """Speed and face coverage of :func:`crop_face_track` on each video, one row per ``detect_every`` (those of
    ``BENCH_DETECT_EVERY`` and ``params``'), best time of ``repeat`` runs. ``coverage``: the frames where the main
    track was found; ``iou_vs_every_frame``: mean IoU of the crop boxes with those of a full search in every frame."""
    rows = []
    for video in videos:
        decode = []
        for _ in range(repeat):
            start = time.perf_counter()
            frames = read_video(video)
            decode.append(time.perf_counter() - start)
        n, reference = len(frames), None
        for every in sorted({*BENCH_DETECT_EVERY, params.detect_every}):
            setting = replace(params, detect_every=every, max_missing=1.0)  # measure any coverage, exclude none
            detector = make_detector(setting)
            crop, boxes = [], None
            for _ in range(repeat):
                start = time.perf_counter()
                try:
                    track = crop_face_track(frames, setting, detector)
                    boxes, coverage = track.boxes, track.detected_fraction
                except NoFaceError as error:
                    coverage = error.detected_fraction
                crop.append(time.perf_counter() - start)
            if every == 1:
                reference = boxes
            agreement = None if boxes is None or reference is None else \
                float(np.mean([box_iou(a, b[None])[0] for a, b in zip(boxes, reference)]))
            rows.append({"video": str(video), "frames": n, "resolution": f"{frames.shape[2]}x{frames.shape[1]}",
                         "detect_every": every, "configured": every == params.detect_every,
                         "decode_fps": round(n / min(decode), 1), "crop_fps": round(n / min(crop), 1),
                         "total_fps": round(n / (min(decode) + min(crop)), 1), "coverage": round(coverage, 4),
                         "iou_vs_every_frame": None if agreement is None else round(agreement, 4),
                         "detector": params.detector, "detect_size": params.detect_size})
    return rows


def format_bench(rows: Sequence[Mapping[str, Any]]) -> str:
    """The benchmark rows as a Markdown table, under a line with the machine's load."""
    lines = [f"face-crop speed ({rows[0]['detector']}, detect_size {rows[0]['detect_size']}; {machine_load()})", "",
             "| video | frames | detect_every | decode frames/s | crop frames/s | total frames/s | coverage | "
             "box IoU vs every frame |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for row in rows:
        every = f"{row['detect_every']}" + (" (configured)" if row["configured"] else "") \
            + (" (full search every frame)" if row["detect_every"] == 1 else "")
        iou = "-" if row["iou_vs_every_frame"] is None else f"{row['iou_vs_every_frame']:.3f}"
        lines.append(f"| {Path(row['video']).name} ({row['resolution']}) | {row['frames']} | {every} | "
                     f"{row['decode_fps']} | {row['crop_fps']} | {row['total_fps']} | {row['coverage']:.1%} | {iou} |")
    return "\n".join(lines)
