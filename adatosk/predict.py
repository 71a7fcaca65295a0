"""The ``adatosk predict`` command: classify the facial expressions of raw videos with a trained checkpoint.

Each video is decoded, its main face tracked and cropped by the face-crop stage's code
(:mod:`adatosk.data.tracking`), and cut into sliding windows that are the test loader's temporal views
(:func:`adatosk.data.sampling.test_indices`): ``num_frames`` frames taken every ``stride`` frames, one window
spanning ``num_frames * stride`` frames, consecutive windows at most ``hop`` frames apart, the first starting on
frame 0 and the last ending on the video's last frame; a video shorter than one window is padded with its last
frame. Frames are resized to the model's ``img_size`` and ImageNet-normalised as the test loader does. Each window
is classified in eval mode under ``mask_views`` tube masks seeded by ``(mask_seed, window, view)`` (the evaluation
code's :func:`adatosk.evaluate.view_masks`); the softmax outputs of its views are averaged, and the video's
probabilities are the mean over its windows.

Only the frames the windows sample are tracked and cropped (a stride-th of the video). The video is decoded twice as
a stream (:func:`track_video` keeps the face boxes only; :func:`window_crops` crops window by window), so memory is
bounded by a batch of windows, not by the length of the video. A face need not be in every frame: a window is
classified when the main face track was detected in at least ``1 - data.face_crop.max_missing`` (half) of its
frames; the others are listed as without a face, and the video's probabilities are the mean over the windows with a
face. ``adatosk explain`` draws a window with the same definitions (:class:`VideoFaces`, :func:`classify_windows`).

Exit status: 0 when every video was classified; 3 when no window of a video has a face; 4 when a video cannot be
read; 2 when the checkpoint cannot be loaded. The other videos are still classified.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from adatosk.data.cache import CorruptClipError
from adatosk.data.faces import CropParams
from adatosk.data.sampling import test_indices
from adatosk.data.tracking import NoFaceError, crop_square, track_faces
from adatosk.data.transforms import normalize_clip, resize_clip
from adatosk.data.video import VideoDecodeError, iter_video, read_video, video_info, write_video
from adatosk.evaluate import mask_views_of, view_masks
from adatosk.models.checkpoint import load_model
from adatosk.progress import machine_load
from adatosk.train.distributed import Amp, amp_settings, resolve_device

EXIT_BAD_CHECKPOINT = 2
EXIT_NO_FACE = 3
EXIT_UNREADABLE = 4


@dataclass(frozen=True)
class Window:
    """One sliding window of a video: the sampled frame indices and the span of frames it stands for."""

    index: int
    frames: np.ndarray    # [num_frames] int64, video frame indices (the last frame repeated in a short video)
    start_frame: int      # first frame of the span
    end_frame: int        # last frame of the span (inclusive): the last sampled frame + stride - 1, clipped


def plan_windows(n_frames: int, *, num_frames: int, stride: int = 4, hop: int | None = None) -> list[Window]:
    """The sliding windows over a video of ``n_frames`` frames (see the module docstring).

    ``hop`` (frames, default half a window; rounded down to a multiple of ``stride``) is the largest distance between
    the starts of consecutive windows; the windows are the test loader's views, evenly placed from the start to the
    end of the strided sequence.
    """
    window = num_frames * stride
    hop = window // 2 if hop is None else hop
    if not stride <= hop <= window:
        raise ValueError(f"hop must be between the stride ({stride}) and the window ({window} frames), got {hop}")
    strided = max(num_frames, math.ceil(n_frames / stride))  # length of the (padded) strided sequence
    span = strided - num_frames
    num_views = 1 + math.ceil(span / (hop // stride))
    views = test_indices(n_frames, num_frames=num_frames, stride=stride, num_views=num_views)  # [V, T]
    return [Window(i, frames, int(frames[0]), min(int(frames[-1]) + stride - 1, n_frames - 1))
            for i, frames in enumerate(views)]


def window_clip(frames: np.ndarray | Mapping[int, np.ndarray], window: Window) -> torch.Tensor:
    """The model input of one window: ``frames`` uint8 ``[S, S, 3]`` by frame index (an array ``[T_video, S, S, 3]``
    or the crops :func:`window_crops` holds; already at the model's img_size) -> ImageNet-normalised
    ``[3, num_frames, S, S]``, as the test loader builds it."""
    return normalize_clip(np.stack([frames[int(t)] for t in window.frames]))


@torch.inference_mode()
def classify_windows(model: nn.Module, frames: np.ndarray | Mapping[int, np.ndarray], windows: list[Window], *,
                     mask_views: int = 2, mask_seed: int = 0, batch_size: int = 8, device: torch.device | str = "cpu",
                     amp: Amp | None = None) -> np.ndarray:
    """Probabilities ``[W, K]`` of every window, averaged over the seeded mask views (the model in eval mode)."""
    model.eval()
    device = torch.device(device)
    amp = amp or amp_settings("none", device)
    views = mask_views_of(model.eval_mask_ratio, mask_views)
    probs = []
    for start in range(0, len(windows), batch_size):
        batch = windows[start:start + batch_size]
        video = torch.stack([window_clip(frames, w) for w in batch]).to(device)  # [B, 3, T, S, S]
        indices = torch.tensor([w.index for w in batch])
        total = torch.zeros(len(batch), model.num_classes, device=device)
        for view in range(views):
            visible = view_masks(model, indices, view, mask_seed, device)
            with amp.autocast(device):
                logits = model(video, visible=visible)  # [B, K]
            total += logits.float().softmax(dim=-1)
        probs.append((total / views).cpu())
    return torch.cat(probs).numpy()


@dataclass
class VideoFaces:
    """The sliding windows of a video and its main face in the frames they sample (boxes only, no pixels)."""

    path: Path
    n_frames: int
    windows: list[Window]
    sampled: np.ndarray       # [F] int64, ascending: the frames some window samples
    boxes: np.ndarray         # [F, 4] crop boxes of the main face in those frames (cx, cy, side, side)
    detected: np.ndarray      # [F] bool: the main face track was detected in the frame
    min_fraction: float       # a window has a face when it is detected in this fraction of its frames

    def face_fraction(self, window: Window) -> float:
        """The fraction of the frames ``window`` samples (a padded frame counted each time) showing the face."""
        return float(self.detected[np.searchsorted(self.sampled, window.frames)].mean())

    @property
    def with_face(self) -> list[Window]:
        """The windows that are classified: those with the face in ``min_fraction`` of their frames."""
        return [w for w in self.windows if self.face_fraction(w) >= self.min_fraction]

    @property
    def detected_fraction(self) -> float:
        return float(self.detected.mean())


def track_video(path: str | Path, *, num_frames: int, stride: int = 4, hop: int | None = None,
                crop_params: CropParams | None = None) -> VideoFaces:
    """Decode ``path`` as a stream and track the main face in the frames its windows sample (every ``stride``-th
    frame, and the last one when a short video is padded with it; ``crop_params.detect_every`` counts these
    frames), keeping only the boxes: memory holds a few frames whatever the length. No frame is refused here;
    ``NoFaceError`` if the face is in none of them."""
    crop_params = crop_params or CropParams()
    kept: list[int] = []
    count = 0

    def sampled_frames() -> Iterator[np.ndarray]:
        nonlocal count
        last = None
        # RGB for every stride-th frame, and for all frames a short video (which pads with its last) can have
        for t, frame in enumerate(iter_video(path, wanted=lambda t: t % stride == 0 or t < num_frames * stride)):
            if t % stride == 0:
                kept.append(t)
                yield frame
            last, count = frame, t + 1
        if math.ceil(count / stride) < num_frames and (count - 1) % stride:  # the padding frame of a short video
            kept.append(count - 1)
            yield last

    faces = track_faces(sampled_frames(), replace(crop_params, max_missing=1.0))
    windows = plan_windows(count, num_frames=num_frames, stride=stride, hop=hop)
    sampled = np.unique(np.concatenate([w.frames for w in windows]))
    if not np.array_equal(sampled, kept):
        raise RuntimeError(f"the windows of {path} sample other frames than were tracked")
    return VideoFaces(Path(path), count, windows, sampled, faces.boxes, faces.detected,
                      1.0 - crop_params.max_missing)


def window_crops(faces: VideoFaces, windows: list[Window], img_size: int, crop_size: int,
                 batch_size: int) -> Iterator[tuple[list[Window], dict[int, np.ndarray]]]:
    """Decode ``faces.path`` again and yield ``windows`` (ordered by start) in batches of ``batch_size``, each with
    the face crops of its frames: frame index -> uint8 ``[img_size, img_size, 3]`` (cropped at ``crop_size`` by the
    face-crop stage's code, then resized as the cache is). Holds the crops of one batch of windows at a time."""
    batches = [windows[start:start + batch_size] for start in range(0, len(windows), batch_size)]
    box_of = dict(zip(faces.sampled.tolist(), faces.boxes))
    needed = set(np.concatenate([w.frames for w in windows]).tolist()) if windows else set()
    held: dict[int, np.ndarray] = {}
    frames = iter_video(faces.path, wanted=needed.__contains__)
    for t, frame in enumerate(frames):
        if not batches:
            break
        if t in needed:
            held[t] = resize_clip(crop_square(frame, box_of[t], crop_size)[None], img_size)[0]
        while batches and int(batches[0][-1].frames.max()) <= t:
            yield batches[0], held
            batches.pop(0)
            first = int(batches[0][0].frames[0]) if batches else t + 1
            held = {k: crop for k, crop in held.items() if k >= first}
    frames.close()


def predict_video(model: nn.Module, meta: dict, path: str | Path, *, stride: int = 4, hop: int | None = None,
                  mask_views: int = 2, mask_seed: int = 0, batch_size: int = 8, device: torch.device | str = "cpu",
                  amp: Amp | None = None, crop_params: CropParams | None = None) -> dict[str, Any]:
    """Per-window and whole-video class probabilities of one video file (JSON-ready); windows without a face get
    ``probs`` None. Raises ``NoFaceError`` when no window has a face."""
    cfg = meta["model_cfg"]
    crop_params = crop_params or CropParams()
    faces = track_video(path, num_frames=int(cfg["num_frames"]), stride=stride, hop=hop, crop_params=crop_params)
    with_face = faces.with_face
    if not with_face:
        raise NoFaceError(f"no window has the face in {faces.min_fraction:.0%} of its frames (the face is in "
                          f"{faces.detected_fraction:.0%} of the {len(faces.sampled)} sampled frames)",
                          faces.detected_fraction)
    probs: dict[int, np.ndarray] = {}
    for batch, crops in window_crops(faces, with_face, int(cfg["img_size"]), crop_params.size, batch_size):
        probs.update(zip((w.index for w in batch),
                         classify_windows(model, crops, batch, mask_views=mask_views, mask_seed=mask_seed,
                                          batch_size=batch_size, device=device, amp=amp)))
    names = list(meta["class_names"])
    fps = video_info(path).fps

    def seconds(frame: int) -> float | None:
        return None if fps is None else round(frame / fps, 3)

    mean = np.mean(list(probs.values()), axis=0)
    return {
        "video": str(path), "n_frames": faces.n_frames, "fps": fps,
        "detected_fraction": round(faces.detected_fraction, 4), "face_windows": len(with_face),
        "windows": [{"index": w.index, "start_frame": w.start_frame, "end_frame": w.end_frame,
                     "start_time": seconds(w.start_frame), "end_time": seconds(w.end_frame + 1),
                     "frames": w.frames.tolist(), "face": w.index in probs,
                     "face_fraction": round(faces.face_fraction(w), 4),
                     "probs": _named(names, probs[w.index]) if w.index in probs else None,
                     "pred": names[int(probs[w.index].argmax())] if w.index in probs else None}
                    for w in faces.windows],
        "probs": _named(names, mean), "pred": names[int(mean.argmax())],
    }


def _named(names: list[str], probs: np.ndarray) -> dict[str, float]:
    return {name: round(float(p), 6) for name, p in zip(names, probs)}


def format_text(result: dict[str, Any]) -> str:
    """A per-window table of one video's prediction, for the terminal."""
    names = list(result["probs"])
    width = max(7, *(len(n) for n in names))
    fps = f"{result['fps']:g} fps" if result["fps"] else "fps unknown"
    lines = [f"{result['video']}: {result['n_frames']} frames ({fps}), face in "
             f"{result['detected_fraction']:.0%} of the sampled frames, {len(result['windows'])} window(s), "
             f"{result['face_windows']} with a face",
             f"  {'window':<8}{'frames':<13}{'time (s)':<15}" + "".join(f"{n:>{width + 1}}" for n in names)
             + "  prediction"]

    def row(label: str, frames: str, times: str, probs: dict[str, float] | None, pred: str | None) -> str:
        start = f"  {label:<8}{frames:<13}{times:<15}"
        if probs is None:  # a window without a face
            return start + "".join(f"{'-':>{width + 1}}" for _ in names) + "  no face"
        return start + "".join(f"{probs[n]:>{width + 1}.3f}" for n in names) + f"  {pred}"

    for w in result["windows"]:
        times = "" if w["start_time"] is None else f"{w['start_time']:.2f}-{w['end_time']:.2f}"
        lines.append(row(str(w["index"]), f"{w['start_frame']}-{w['end_frame']}", times, w["probs"], w["pred"]))
    lines.append(row("video", f"0-{result['n_frames'] - 1}", "", result["probs"], result["pred"]))
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("videos", nargs="+", metavar="VIDEO", help="video files (any format decord/PyAV/OpenCV read)")
    parser.add_argument("--checkpoint", required=True, metavar="DIR",
                        help="a save_model directory (e.g. runs/<data>/<variant>/fold1/checkpoint/last) or its file")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--amp", default="none", choices=("none", "bf16", "fp16"), help="mixed precision on GPU")
    parser.add_argument("--stride-frames", type=int, default=None, metavar="S",
                        help="temporal stride between sampled frames (default: the data.sampling.stride the checkpoint "
                             "was trained with; 4 if it does not say)")
    parser.add_argument("--hop-frames", type=int, default=None, metavar="H",
                        help="largest distance in frames between consecutive window starts, a multiple of the stride "
                             "(default: half a window)")
    parser.add_argument("--mask-views", type=int, default=2, help="seeded tube masks per window (as evaluate; 2)")
    parser.add_argument("--mask-seed", type=int, default=0, help="seed of the tube masks (as evaluate.mask_seed)")
    parser.add_argument("--batch-size", type=int, default=8, help="windows per forward pass")
    parser.add_argument("--bench-seconds", type=float, default=None, metavar="S",
                        help="benchmark instead of predicting: loop each VIDEO to S seconds (a temporary file), time "
                             "decode, face crop and classification of it and print a table")
    parser.add_argument("--repeat", type=int, default=3, help="with --bench-seconds: runs, the best is reported")


def loop_video(path: str | Path, seconds: float, out: Path) -> Path:
    """``path`` repeated from its start until it lasts ``seconds``, written to ``out`` (at its frame rate)."""
    frames = read_video(path)
    fps = video_info(path).fps or 30.0
    return write_video(out, frames[np.arange(round(seconds * fps)) % len(frames)], fps=round(fps))


def benchmark(model: nn.Module, meta: dict, videos: list[str], seconds: float, repeat: int, **options: Any) -> str:
    """A Markdown table of the time :func:`predict_video` takes on each video looped to ``seconds`` (best of
    ``repeat``), split into decode, face tracking (with decode) and the rest (a second decode, crops, model)."""
    lines = [f"predict speed ({meta['model_cfg'].get('variant')} {meta.get('model')}, {torch.get_num_threads()} "
             f"torch threads, {machine_load()})", "",
             "| video | seconds | frames | windows (with a face) | decode (s) | decode + face tracking (s) | "
             "predict_video total (s) |", "| --- | --- | --- | --- | --- | --- | --- |"]
    with tempfile.TemporaryDirectory() as tmp:
        for video in videos:
            looped = loop_video(video, seconds, Path(tmp) / f"{Path(video).stem}_looped.mp4")
            times: dict[str, list[float]] = {"decode": [], "face": [], "total": []}
            for _ in range(repeat):
                start = time.perf_counter()
                sum(1 for _ in iter_video(looped))
                times["decode"].append(time.perf_counter() - start)
                start = time.perf_counter()
                track_video(looped, num_frames=int(meta["model_cfg"]["num_frames"]), stride=options["stride"],
                            hop=options["hop"])
                times["face"].append(time.perf_counter() - start)
                start = time.perf_counter()
                result = predict_video(model, meta, looped, **options)
                times["total"].append(time.perf_counter() - start)
            lines.append(f"| {Path(video).name} looped | {seconds:g} | {result['n_frames']} | "
                         f"{len(result['windows'])} ({result['face_windows']}) | {min(times['decode']):.2f} | "
                         f"{min(times['face']):.2f} | {min(times['total']):.2f} |")
    return "\n".join(lines)


def sampling_stride(meta: dict, given: int | None) -> int:
    """``given`` (``--stride-frames``), else the ``data.sampling.stride`` the checkpoint was trained with (``adatosk
    train`` records it), else MAE-DFER's 4."""
    return given if given is not None else int(meta.get("extra", {}).get("stride", 4))


def main(args: argparse.Namespace) -> int:
    if (args.stride_frames is not None and args.stride_frames < 1) or args.mask_views < 1 or args.batch_size < 1:
        print("adatosk predict: --stride-frames, --mask-views and --batch-size must be >= 1", file=sys.stderr)
        return EXIT_BAD_CHECKPOINT
    device = resolve_device(args.device)
    try:
        model, meta = load_model(args.checkpoint, device=device)  # any variant: its config is inside
    except (FileNotFoundError, ValueError, KeyError) as error:
        print(f"adatosk predict: cannot load checkpoint {args.checkpoint}: {error}", file=sys.stderr)
        return EXIT_BAD_CHECKPOINT
    stride = sampling_stride(meta, args.stride_frames)
    window = int(meta["model_cfg"]["num_frames"]) * stride
    if args.hop_frames is not None and not stride <= args.hop_frames <= window:
        print(f"adatosk predict: --hop-frames must be between the stride ({stride}) and the window of "
              f"{window} frames ({meta['model_cfg']['num_frames']} frames x stride {stride})",
              file=sys.stderr)
        return EXIT_BAD_CHECKPOINT
    amp = amp_settings(args.amp, device)
    if args.bench_seconds:
        print(benchmark(model, meta, args.videos, args.bench_seconds, args.repeat, stride=stride, hop=args.hop_frames,
                        mask_views=args.mask_views, mask_seed=args.mask_seed, batch_size=args.batch_size,
                        device=device, amp=amp))
        return 0
    results, status = [], 0
    for video in args.videos:
        try:
            result = predict_video(model, meta, video, stride=stride, hop=args.hop_frames,
                                   mask_views=args.mask_views, mask_seed=args.mask_seed,
                                   batch_size=args.batch_size, device=device, amp=amp)
        except NoFaceError as error:
            message, code = f"{video}: no face found ({error})", EXIT_NO_FACE
        except (VideoDecodeError, CorruptClipError, FileNotFoundError, IsADirectoryError) as error:
            message, code = f"{video}: cannot read the video ({error})", EXIT_UNREADABLE
        else:
            results.append(result)
            if not args.json:
                print(format_text(result), flush=True)
            continue
        print(f"adatosk predict: {message}", file=sys.stderr, flush=True)
        results.append({"video": str(video), "error": message})
        status = status or code
    if args.json:
        print(json.dumps({"checkpoint": str(args.checkpoint), "model": meta.get("model"),
                          "variant": meta["model_cfg"].get("variant"), "class_names": list(meta["class_names"]),
                          "num_frames": int(meta["model_cfg"]["num_frames"]), "stride": stride,
                          "mask_views": args.mask_views, "mask_seed": args.mask_seed,
                          "eval_mask_ratio": float(model.eval_mask_ratio), "videos": results}, indent=2))
    return status
