"""Face crops and the packed clip cache: the ``adatosk face-crop`` stage, and face tracks of in-memory videos.

Raw videos (DFEW ``Clip/original``, MAFW ``data/clips``, any folder of user videos; ``data.face_crop.videos_dir``)
go through :func:`crop_face_track`: faces are searched for (OpenCV's Haar cascade, or MTCNN from facenet-pytorch
if asked and installed) on a downscaled copy of every ``detect_every``-th frame; in the frames between, each face
is tracked by a search restricted to a window around its previous box and to about its size (a fraction of the
cost). Boxes are linked into tracks by IoU with the previous box, and the main track (largest summed box side: big
and long-lived, joined by other tracks in the time it leaves free) is kept. Frames where it has no detection take
the box interpolated from their neighbours; a clip whose main track misses more than ``max_missing`` of its frames
is excluded (:class:`NoFaceError`). Box centres and sizes are smoothed over time (moving median, then moving mean,
over ``smooth_window`` frames), squared, expanded by ``margin`` and cropped (zero padding past the frame border) to
``size`` x ``size``. Crops are written as JPEG in DFEW's layout,
``{data.crops_dir}/<clip>/<clip>_NNNNN.jpg`` (outside ``data.root``; the manifest reads them there), in a folder
marked as ours so that frames it did not write are never overwritten.

Datasets that ship crops (DFEW ``Clip/clip_224x224``, FERV39K ``2_ClipsforFaceCrop``, MAFW ``data/faces``, the
demo) set ``data.face_crop.precropped: true``: their frame folders are read as they are.

Either way every clip is packed: all its frames resized straight to ``data.img_size``, uint8 ``[T, S, S, 3]`` in
``{data.cache_dir}/{clip_id}.npy`` (:func:`adatosk.data.cache.pack_clip`). The clip id is the clip's folder (or
video) path relative to its root, without suffix, ``/`` replaced by ``_`` (DFEW ``00001``, FERV39K
``Action_Sad_0010``, MAFW ``00025``), as in the manifest.

The stage runs clips in parallel (``--jobs``) and is resumable: ``{cache_dir}/face_crop_log.jsonl`` gets one line
per finished clip (clip, frames, detected fraction, status, seconds, and the size and modification time of its
source and outputs); a clip is done when its line says ok or excluded and neither its source nor (ok) its cache file
and frame folder changed since: a changed, replaced or lost file makes the clip due again. The report
(``{cache_dir}/face_crop_report.json``) lists the excluded and failed clips; the command prints one line per failed
clip (``adatosk face-crop: <clip source>: <what is wrong>``) and exits 1 when any failed, after doing all others.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from adatosk.data.cache import CorruptClipError, pack_clip
from adatosk.data.video import VIDEO_EXTENSIONS, VideoDecodeError, frame_files, read_frames_dir, read_video
from adatosk.progress import available_cores, machine_load

HAAR_CASCADE = "haarcascade_frontalface_default.xml"
HAAR_SCALE_FACTOR = 1.1
HAAR_WINDOW = 24                     # the cascade's own window: no smaller face is found
TRACK_REACH = 0.5                    # tracking searches this many box sides around the previous box
TRACK_SIZE_RANGE = 1.3               # ... for faces between 1/1.3 and 1.3 times its size
MIN_SEGMENT = 5                      # detections a track needs to join the main track in a time it leaves free
OURS_MARKER = ".adatosk_face_crop"   # in a frames_dir written by this stage
LOG_NAME = "face_crop_log.jsonl"
REPORT_NAME = "face_crop_report.json"
# Keys of data.face_crop that configure the stage rather than the crop itself.
STAGE_KEYS = frozenset({"precropped", "videos_dir"})


class NoFaceError(ValueError):
    """No face track covers enough of the video; ``detected_fraction`` says how much it covers."""

    def __init__(self, message: str, detected_fraction: float):
        super().__init__(message)
        self.detected_fraction = detected_fraction


@dataclass(frozen=True)
class CropParams:
    """How faces are detected, tracked and cropped (``data.face_crop`` minus the stage keys)."""

    detector: str = "haar"           # haar | mtcnn (facenet-pytorch, optional)
    detect_size: int = 320           # detect on frames downscaled so that the longer side is at most this
    detect_every: int = 10           # full search on every k-th frame; the frames between track the faces
    min_face: float = 0.1            # smallest face side, as a fraction of the frame's shorter side
    min_neighbors: int = 5           # Haar: neighbouring detections a face needs (higher: fewer false faces)
    iou_threshold: float = 0.3       # a detection continues a track if its IoU with the track's last box is this
    max_gap: int = 15                # frames a track may go undetected before it ends
    max_missing: float = 0.5         # a clip whose main track misses more than this fraction of its frames is out
    smooth_window: int = 7           # frames of the moving median and mean of box centres and sizes
    margin: float = 0.25             # crop side = (1 + margin) x the larger side of the face box
    size: int = 224                  # side of the written crops
    jpeg_quality: int = 95

    @classmethod
    def from_config(cls, face_crop_cfg: Mapping[str, Any] | None) -> CropParams:
        """From ``data.face_crop`` (stage keys ignored, unknown keys an error)."""
        given = {k: v for k, v in dict(face_crop_cfg or {}).items() if k not in STAGE_KEYS}
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(given) - known)
        if unknown:
            raise KeyError(f"unknown data.face_crop keys {unknown}; known: {sorted(known | STAGE_KEYS)}")
        return cls(**given)


@dataclass
class FaceTrack:
    """The main face of a video, cropped frame by frame."""

    crops: np.ndarray                # [T, S, S, 3] uint8 RGB
    boxes: np.ndarray                # [T, 4] float crop boxes in frame pixels: centre x, centre y, side, side
    detected: np.ndarray             # [T] bool: the main track was detected in this frame (else interpolated)
    detected_fraction: float         # detected frames / frames


# --- detectors: RGB frame [H, W, 3] -> face boxes [N, 4] (x, y, w, h) in frame pixels --------------------------------

class FaceDetector:
    """Detects on a copy of the frame downscaled to ``detect_size``; boxes are returned in frame pixels.

    Given ``near`` (the boxes of the previous frame), it tracks instead: it searches only a window around each box
    (``TRACK_REACH`` box sides either way) for faces of about its size (``TRACK_SIZE_RANGE``), on the same
    downscaled frame, which costs a fraction of a full search.
    """

    def __init__(self, params: CropParams):
        self.params = params

    def __call__(self, frame: np.ndarray, near: np.ndarray | None = None) -> np.ndarray:
        scale = min(1.0, self.params.detect_size / max(frame.shape[:2]))
        small = frame if scale == 1.0 else cv2.resize(frame, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        prepared = self.prepare(small)
        min_side = max(1, round(self.params.min_face * min(small.shape[:2])))
        if near is None:
            return np.asarray(self.detect(prepared, min_side, None), dtype=np.float64).reshape(-1, 4) / scale
        found = np.zeros((0, 4))
        height, width = small.shape[:2]
        for x, y, w, h in np.asarray(near, dtype=np.float64).reshape(-1, 4) * scale:
            side = max(w, h)
            x0, y0 = max(0, int(x - TRACK_REACH * side)), max(0, int(y - TRACK_REACH * side))
            x1, y1 = min(width, int(x + w + TRACK_REACH * side) + 1), min(height, int(y + h + TRACK_REACH * side) + 1)
            sizes = (max(min_side, int(side / TRACK_SIZE_RANGE)), int(side * TRACK_SIZE_RANGE) + 1)
            boxes = np.asarray(self.detect(prepared[y0:y1, x0:x1], *sizes), dtype=np.float64).reshape(-1, 4)
            found = merge_boxes(found, boxes + [x0, y0, 0, 0])  # a face inside two overlapping windows is kept once
        return found / scale

    def prepare(self, small: np.ndarray) -> np.ndarray:
        """The downscaled RGB frame as :meth:`detect` takes it (once per frame, before any window is cut)."""
        return small

    def detect(self, image: np.ndarray, min_side: int, max_side: int | None) -> np.ndarray:
        """Face boxes [N, 4] (x, y, w, h) in ``image`` with a side between ``min_side`` and ``max_side``."""
        raise NotImplementedError


class HaarDetector(FaceDetector):
    """OpenCV's frontal-face Haar cascade (ships with opencv-python-headless)."""

    def __init__(self, params: CropParams):
        super().__init__(params)
        path = os.path.join(cv2.data.haarcascades, HAAR_CASCADE)
        self.cascade = cv2.CascadeClassifier(path)
        if self.cascade.empty():
            raise RuntimeError(f"cannot load the Haar cascade {path}")

    def prepare(self, small: np.ndarray) -> np.ndarray:
        return cv2.equalizeHist(cv2.cvtColor(small, cv2.COLOR_RGB2GRAY))

    def detect(self, image: np.ndarray, min_side: int, max_side: int | None) -> np.ndarray:
        side = max(min_side, HAAR_WINDOW)
        if max_side is not None and max_side < side:
            return np.zeros((0, 4))
        largest = (max_side, max_side) if max_side is not None else (0, 0)  # (0, 0): no upper limit
        return self.cascade.detectMultiScale(image, scaleFactor=HAAR_SCALE_FACTOR,
                                             minNeighbors=self.params.min_neighbors, minSize=(side, side),
                                             maxSize=largest)


class MtcnnDetector(FaceDetector):
    """MTCNN from facenet-pytorch (==2.5.3; its weights ship inside the package), on the CPU."""

    def __init__(self, params: CropParams):
        super().__init__(params)
        try:
            from facenet_pytorch import MTCNN
        except ImportError as error:
            raise ImportError("data.face_crop.detector=mtcnn needs facenet-pytorch==2.5.3, which is not installed; "
                              "install it or use detector=haar") from error
        self.mtcnn = MTCNN(keep_all=True, device="cpu")

    def detect(self, image: np.ndarray, min_side: int, max_side: int | None) -> np.ndarray:
        self.mtcnn.min_face_size = min_side
        corners, _ = self.mtcnn.detect(image)  # [N, 4] x1, y1, x2, y2, or None
        if corners is None:
            return np.zeros((0, 4))
        corners = np.asarray(corners, dtype=np.float64)
        boxes = np.concatenate([corners[:, :2], corners[:, 2:] - corners[:, :2]], axis=1)
        return boxes if max_side is None else boxes[boxes[:, 2:].max(axis=1) <= max_side]


DETECTORS: dict[str, type[FaceDetector]] = {"haar": HaarDetector, "mtcnn": MtcnnDetector}


def make_detector(params: CropParams) -> FaceDetector:
    if params.detector not in DETECTORS:
        raise ValueError(f"unknown data.face_crop.detector {params.detector!r}; expected one of {sorted(DETECTORS)}")
    return DETECTORS[params.detector](params)


# --- tracking and smoothing; boxes as (centre x, centre y, w, h) ------------------------------------------------------

def _xywh_to_cxcywh(boxes: np.ndarray) -> np.ndarray:
    return np.concatenate([boxes[:, :2] + boxes[:, 2:] / 2, boxes[:, 2:]], axis=1)


def box_iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one box [4] with boxes [M, 4], all (cx, cy, w, h): [M]."""
    lo = np.maximum(box[:2] - box[2:] / 2, boxes[:, :2] - boxes[:, 2:] / 2)
    hi = np.minimum(box[:2] + box[2:] / 2, boxes[:, :2] + boxes[:, 2:] / 2)
    inter = np.prod(np.clip(hi - lo, 0, None), axis=1)
    return inter / (np.prod(box[2:]) + np.prod(boxes[:, 2:], axis=1) - inter)


def main_track(detections: Sequence[np.ndarray | None], iou_threshold: float, max_gap: int) -> np.ndarray:
    """Link per-frame detections (``None``: frame not probed; else [N, 4] cx, cy, w, h) into tracks greedily by IoU
    with each track's last box, and return the main track as [T, 4] with NaN where it is absent.

    The main track is the one of largest summed box side (big and long-lived beats small, or big but brief), joined
    by the next best tracks of at least ``MIN_SEGMENT`` detections that lie in the time no chosen track spans: a
    face that leaves the picture for longer than ``max_gap`` frames and comes back stays in the main track."""
    tracks: list[dict[int, np.ndarray]] = []
    for t, boxes in enumerate(detections):
        if boxes is None or len(boxes) == 0:
            continue
        live = [k for k, track in enumerate(tracks) if t - max(track) <= max_gap + 1]
        pairs = sorted(((iou, k, j) for k in live for j, iou in enumerate(box_iou(tracks[k][max(tracks[k])], boxes))
                        if iou >= iou_threshold), reverse=True)
        used_tracks, used_boxes = set(), set()
        for _, k, j in pairs:
            if k not in used_tracks and j not in used_boxes:
                tracks[k][t] = boxes[j]
                used_tracks.add(k)
                used_boxes.add(j)
        tracks += [{t: boxes[j]} for j in range(len(boxes)) if j not in used_boxes]
    out = np.full((len(detections), 4), np.nan)
    chosen: list[dict[int, np.ndarray]] = []
    for track in sorted(tracks, key=lambda track: sum(float(np.sqrt(np.prod(b[2:]))) for b in track.values()),
                        reverse=True):
        if not chosen or (len(track) >= MIN_SEGMENT
                          and all(max(track) < min(other) or min(track) > max(other) for other in chosen)):
            chosen.append(track)
    for track in chosen:
        for t, box in track.items():
            out[t] = box
    return out


def fill_missing(boxes: np.ndarray) -> np.ndarray:
    """Boxes [T, 4] with NaN rows -> every row filled: linear interpolation between detected neighbours, the
    nearest detection before the first and after the last."""
    known = np.flatnonzero(~np.isnan(boxes[:, 0]))
    if len(known) == 0:
        raise ValueError("no box to interpolate from")
    t = np.arange(len(boxes))
    return np.stack([np.interp(t, known, boxes[known, c]) for c in range(boxes.shape[1])], axis=1)


def smooth_boxes(boxes: np.ndarray, window: int) -> np.ndarray:
    """Moving median then moving mean over ``window`` frames (edges padded by repetition): [T, 4] -> [T, 4]."""
    if window <= 1 or len(boxes) < 2:
        return boxes
    half = window // 2
    windows = np.lib.stride_tricks.sliding_window_view(np.pad(boxes, ((half, half), (0, 0)), mode="edge"),
                                                       2 * half + 1, axis=0)  # [T, 4, W]
    median = np.median(windows, axis=-1)
    windows = np.lib.stride_tricks.sliding_window_view(np.pad(median, ((half, half), (0, 0)), mode="edge"),
                                                       2 * half + 1, axis=0)
    return windows.mean(axis=-1)


def square_boxes(boxes: np.ndarray, margin: float) -> np.ndarray:
    """Square crop boxes: side = (1 + margin) x the larger side, same centre: [T, 4] -> [T, 4]."""
    side = boxes[:, 2:].max(axis=1) * (1.0 + margin)
    return np.stack([boxes[:, 0], boxes[:, 1], side, side], axis=1)


def crop_square(frame: np.ndarray, box: np.ndarray, size: int) -> np.ndarray:
    """Crop ``box`` (cx, cy, side, side) from ``frame`` [H, W, 3], zero-padded past the border, resized to
    [size, size, 3]."""
    side = max(1, int(round(box[2])))
    x0, y0 = int(round(box[0] - side / 2)), int(round(box[1] - side / 2))
    height, width = frame.shape[:2]
    inside = frame[max(y0, 0):min(y0 + side, height), max(x0, 0):min(x0 + side, width)]
    if inside.size == 0:
        return np.zeros((size, size, 3), dtype=frame.dtype)
    pads = (max(-y0, 0), max(y0 + side - height, 0), max(-x0, 0), max(x0 + side - width, 0))
    if any(pads):
        inside = cv2.copyMakeBorder(inside, *pads, cv2.BORDER_CONSTANT, value=(0, 0, 0))
    interpolation = cv2.INTER_AREA if side > size else cv2.INTER_LINEAR
    return cv2.resize(inside, (size, size), interpolation=interpolation)


def merge_boxes(boxes: np.ndarray, extra: np.ndarray) -> np.ndarray:
    """``boxes`` [N, 4] and those of ``extra`` [M, 4] (x, y, w, h) that are not one of them (IoU below 0.5)."""
    kept = [np.asarray(boxes, dtype=np.float64).reshape(-1, 4)]
    for box in np.asarray(extra, dtype=np.float64).reshape(-1, 4):
        known = np.concatenate(kept)
        if not len(known) or box_iou(_xywh_to_cxcywh(box[None])[0], _xywh_to_cxcywh(known)).max() < 0.5:
            kept.append(box[None])
    return np.concatenate(kept)


def detect_faces(frames: np.ndarray, detector: Callable[..., np.ndarray], detect_every: int) -> list[np.ndarray]:
    """Face boxes [N, 4] (cx, cy, w, h) of every frame: a full search on every ``detect_every``-th frame; in the
    frames after it, a search near the previous frame's boxes (none once they are lost); and from a full search
    that finds a face the frame before it did not have, a search back through the frames since the last full one
    (so a face that appears, or is lost and found again, is found from its first frame, as by a full search)."""
    every = max(1, detect_every)
    none = np.zeros((0, 4))
    detections: list[np.ndarray] = []  # x, y, w, h
    for t, frame in enumerate(frames):
        previous = detections[-1] if detections else none
        if t % every:
            detections.append(detector(frame, near=previous) if len(previous) else none)
            continue
        boxes = np.asarray(detector(frame), dtype=np.float64).reshape(-1, 4)
        detections.append(boxes)
        near = merge_boxes(previous, boxes)[len(previous):]  # the faces that are new in this frame
        for back in range(t - 1, t - every, -1):
            if back < 0 or not len(near):
                break
            near = np.asarray(detector(frames[back], near=near), dtype=np.float64).reshape(-1, 4)
            detections[back] = merge_boxes(detections[back], near)
    return [_xywh_to_cxcywh(np.asarray(boxes, dtype=np.float64).reshape(-1, 4)) for boxes in detections]


def crop_face_track(frames: np.ndarray, params: CropParams | None = None,
                    detector: Callable[..., np.ndarray] | None = None) -> FaceTrack:
    """Detect, track, smooth and crop the main face of ``frames`` (uint8 RGB [T, H, W, 3]).

    Raises :class:`NoFaceError` if no face is found, or the main track misses more than ``params.max_missing`` of
    the frames. ``detector`` (``(frame, near=None)`` -> [N, 4] x, y, w, h) defaults to ``make_detector(params)``.
    """
    params = params or CropParams()
    detector = detector or make_detector(params)
    if frames.ndim != 4 or frames.shape[-1] != 3 or len(frames) == 0:
        raise ValueError(f"expected frames [T>0, H, W, 3], got {list(frames.shape)}")
    track = main_track(detect_faces(frames, detector, params.detect_every), params.iou_threshold, params.max_gap)
    detected = ~np.isnan(track[:, 0])
    fraction = float(detected.mean())
    if fraction == 0.0:
        raise NoFaceError(f"no face found in any of the {len(frames)} frames", fraction)
    if 1.0 - fraction > params.max_missing:
        raise NoFaceError(f"the main face track covers {fraction:.0%} of the {len(frames)} frames "
                          f"(at least {1 - params.max_missing:.0%} needed)", fraction)
    boxes = square_boxes(smooth_boxes(fill_missing(track), params.smooth_window), params.margin)
    crops = np.stack([crop_square(frame, box, params.size) for frame, box in zip(frames, boxes)])
    return FaceTrack(crops=crops, boxes=boxes, detected=detected, detected_fraction=fraction)


# --- the stage: clips, one clip's work, the resumable parallel run ---------------------------------------------------

@dataclass(frozen=True)
class ClipTask:
    clip_id: str
    source: str                      # frame folder (precropped) or video file
    frames_out: str | None           # folder to write the crops into (raw videos), else None
    cache: str                       # packed cache file
    img_size: int
    params: CropParams

    @property
    def key(self) -> str:
        """What the outputs depend on: a changed source, size or crop (raw videos) makes a done clip stale."""
        crop = asdict(self.params) if self.frames_out else None
        blob = json.dumps([self.source, self.frames_out, self.img_size, crop], sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def stamp(path: str | os.PathLike[str] | None) -> str | None:
    """What changes when a file or folder's content does: size and modification time of the file, or of each
    (non-hidden) file in the folder, hashed; None for a path that does not exist."""
    if path is None or not os.path.exists(path):
        return None
    if os.path.isfile(path):
        info = os.stat(path)
        return f"{info.st_size}:{info.st_mtime_ns}"
    entries = sorted((entry.name, entry.stat().st_size, entry.stat().st_mtime_ns) for entry in os.scandir(path)
                     if entry.is_file() and not entry.name.startswith("."))
    return hashlib.sha256(json.dumps(entries).encode()).hexdigest()[:16]


def _output_stamps(task: ClipTask) -> list[str | None]:
    return [stamp(task.cache), stamp(task.frames_out)]


def clip_id_of(path: Path, root: Path) -> str:
    """``root/Action/Sad/0010`` -> ``Action_Sad_0010``; ``root/00025.mp4`` -> ``00025`` (the manifest's clip ids)."""
    relative = path.relative_to(root)
    return (relative.with_suffix("") if path.is_file() else relative).as_posix().replace("/", "_")


def find_clips(root: Path, precropped: bool) -> dict[str, Path]:
    """clip id -> frame folder (``precropped``: every folder under ``root`` holding frame images) or video file."""
    if not root.is_dir():
        what = "frame folders (data.frames_dir)" if precropped else "raw videos (data.face_crop.videos_dir)"
        raise FileNotFoundError(f"the directory of {what} {root} does not exist (run `adatosk verify`)")
    clips: dict[str, Path] = {}
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        folder = Path(folder)
        if precropped:
            found = [folder] if folder != root and frame_files(folder) else []
        else:
            found = [folder / f for f in sorted(files) if Path(f).suffix.lower() in VIDEO_EXTENSIONS
                     and not f.startswith(".")]
        for path in found:
            clip_id = clip_id_of(path, root)
            if clip_id in clips:
                raise ValueError(f"two clips have the id {clip_id}: {clips[clip_id]} and {path}")
            clips[clip_id] = path
    if not clips:
        raise FileNotFoundError(f"no clips ({'frame folders' if precropped else 'videos'}) found under {root}")
    return clips


def _write_frames(folder: Path, clip_id: str, crops: np.ndarray, quality: int) -> None:
    """Write crops as ``<folder>/<clip_id>_NNNNN.jpg`` (1-based); the folder appears complete or not at all."""
    tmp = folder.parent / f".{folder.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        for t, crop in enumerate(crops):
            ok, data = cv2.imencode(".jpg", crop[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
            if not ok:
                raise RuntimeError(f"cannot encode frame {t} of {clip_id} as JPEG")
            (tmp / f"{clip_id}_{t + 1:05d}.jpg").write_bytes(data.tobytes())
        if folder.exists():
            shutil.rmtree(folder)
        tmp.rename(folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


_DETECTORS: dict[CropParams, FaceDetector] = {}  # one detector per worker process and params


def process_clip(task: ClipTask) -> dict[str, Any]:
    """Crop (raw video) or read (precropped) one clip, write its frames and cache; return its log record."""
    from adatosk.data.transforms import resize_clip

    start = time.perf_counter()
    record: dict[str, Any] = {"clip": task.clip_id, "source": task.source, "key": task.key,
                              "source_stamp": stamp(task.source)}
    try:
        if task.frames_out is None:
            frames = read_frames_dir(task.source)
            fraction = None
        else:
            if task.params not in _DETECTORS:
                _DETECTORS[task.params] = make_detector(task.params)
            face = crop_face_track(read_video(task.source), task.params, _DETECTORS[task.params])
            _write_frames(Path(task.frames_out), task.clip_id, face.crops, task.params.jpeg_quality)
            frames, fraction = face.crops, face.detected_fraction
        pack_clip(resize_clip(frames, task.img_size), task.cache)
        record.update(frames=len(frames), detected_fraction=fraction, status="ok")
    except NoFaceError as error:
        record.update(frames=None, detected_fraction=error.detected_fraction, status="excluded", reason=str(error))
    except (VideoDecodeError, CorruptClipError) as error:
        within = "" if error.path in (None, task.source) else f"{error.path}: "
        record.update(frames=None, detected_fraction=None, status="failed", reason=within + error.what)
    except FileNotFoundError as error:
        record.update(frames=None, detected_fraction=None, status="failed", reason=str(error))
    if record["status"] != "ok":  # no stale outputs of an earlier run may stay behind
        Path(task.cache).unlink(missing_ok=True)
        if task.frames_out:
            shutil.rmtree(task.frames_out, ignore_errors=True)
    record["output_stamps"] = _output_stamps(task)
    record["seconds"] = round(time.perf_counter() - start, 3)
    return record


def read_log(path: Path) -> dict[str, dict[str, Any]]:
    """The last record of every clip in a JSON-lines log (a torn last line, from a killed run, is ignored)."""
    records: dict[str, dict[str, Any]] = {}
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            records[record["clip"]] = record
    return records


def _is_done(task: ClipTask, record: dict[str, Any] | None) -> bool:
    """The log's record says the clip is done with this task's settings, from the source as it is now, and (ok)
    into the outputs as they are now."""
    if record is None or record.get("key") != task.key or record.get("source_stamp") != stamp(task.source):
        return False
    if record["status"] == "excluded":
        return True
    return record["status"] == "ok" and record.get("output_stamps") == _output_stamps(task)


def _claim_frames_dir(frames_root: Path) -> None:
    """Refuse to write crops into a folder holding frames this stage did not write (e.g. a dataset's own crops)."""
    if frames_root.is_dir() and any(p for p in frames_root.iterdir() if not p.name.startswith(".")) \
            and not (frames_root / OURS_MARKER).exists():
        raise FileExistsError(f"{frames_root} holds frame folders not written by `adatosk face-crop` (a dataset's own "
                              "crops?); set data.crops_dir to a new folder for the crops of the raw videos")
    frames_root.mkdir(parents=True, exist_ok=True)
    (frames_root / OURS_MARKER).touch()


def plan(data_cfg: Mapping[str, Any]) -> list[ClipTask]:
    """One task per clip of the dataset: its frame folders (precropped) or raw videos."""
    from adatosk.data.manifest import frames_dir

    face_cfg = dict(data_cfg.get("face_crop") or {})
    params = CropParams.from_config(face_cfg)
    root = Path(data_cfg["root"])
    frames_root = root / frames_dir(data_cfg)
    precropped = bool(face_cfg.get("precropped", False))
    if precropped:
        sources = find_clips(frames_root, precropped=True)
    else:
        if not face_cfg.get("videos_dir"):
            raise ValueError("data.face_crop.precropped is false but data.face_crop.videos_dir is not set")
        sources = find_clips(root / str(face_cfg["videos_dir"]), precropped=False)
    cache_dir = Path(data_cfg["cache_dir"])
    return [ClipTask(clip_id=clip_id, source=str(source),
                     frames_out=None if precropped else str(frames_root / clip_id),
                     cache=str(cache_dir / f"{clip_id}.npy"), img_size=int(data_cfg["img_size"]), params=params)
            for clip_id, source in sorted(sources.items())]


def _init_worker() -> None:
    cv2.setNumThreads(1)  # parallelism comes from the processes


def _run_tasks(tasks: Sequence[ClipTask], jobs: int) -> Iterator[dict[str, Any]]:
    if jobs <= 1 or len(tasks) <= 1:
        yield from map(process_clip, tasks)
        return
    # Workers fork from a fresh server process: a fork of this process, once OpenCV's or torch's thread pools
    # run in it, can deadlock in the child.
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__, "adatosk.data.transforms"])
    with context.Pool(jobs, initializer=_init_worker) as pool:
        yield from pool.imap_unordered(process_clip, tasks, chunksize=1)


def run(data_cfg: Mapping[str, Any], jobs: int = 1, force: bool = False,
        report_path: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Process every clip not done yet; write the log and the report; return the report."""
    from adatosk.io import locked_directory, remove_stale_temporaries, write_json_atomic
    from adatosk.progress import progress

    tasks = plan(data_cfg)  # never empty
    precropped = tasks[0].frames_out is None
    cache_dir = Path(data_cfg["cache_dir"])
    with locked_directory(cache_dir, "`adatosk face-crop`"):
        remove_stale_temporaries(cache_dir)  # what a killed run of this stage left
        log_path = cache_dir / LOG_NAME
        if force:
            log_path.unlink(missing_ok=True)
        if not precropped:
            _claim_frames_dir(Path(str(tasks[0].frames_out)).parent)
        records = read_log(log_path)
        todo = [task for task in tasks if not _is_done(task, records.get(task.clip_id))]
        start = time.perf_counter()
        with open(log_path, "a", encoding="utf-8") as log, \
                progress(total=len(todo), desc="face-crop", unit="clip") as bar:
            for record in _run_tasks(todo, jobs):
                log.write(json.dumps(record) + "\n")
                log.flush()
                records[record["clip"]] = record
                bar.update()
        seconds = time.perf_counter() - start
        current = [records[task.clip_id] for task in tasks]
        done_frames = sum(records[task.clip_id].get("frames") or 0 for task in todo)
        report = {
            "dataset": data_cfg["name"],
            "precropped": precropped,
            "clips": len(tasks),
            "processed": len(todo),
            "skipped_done": len(tasks) - len(todo),
            "ok": sum(r["status"] == "ok" for r in current),
            "excluded": [{k: r.get(k) for k in ("clip", "source", "detected_fraction", "reason")}
                         for r in current if r["status"] == "excluded"],
            "failed": [{k: r.get(k) for k in ("clip", "source", "reason")}
                       for r in current if r["status"] == "failed"],
            "seconds": round(seconds, 2),
            "frames_per_second": round(done_frames / seconds, 1) if done_frames else None,
            "crop_params": None if precropped else asdict(tasks[0].params),
            "log": str(log_path),
        }
        write_json_atomic(report_path or cache_dir / REPORT_NAME, report)
        return report


# --- benchmark ------------------------------------------------------------------------------------------------------

BENCH_DETECT_EVERY = (1, 5, 10, 15)  # 1: a full search in every frame, as the stage did before tracking


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
            + (" (before: full search every frame)" if row["detect_every"] == 1 else "")
        iou = "-" if row["iou_vs_every_frame"] is None else f"{row['iou_vs_every_frame']:.3f}"
        lines.append(f"| {Path(row['video']).name} ({row['resolution']}) | {row['frames']} | {every} | "
                     f"{row['decode_fps']} | {row['crop_fps']} | {row['total_fps']} | {row['coverage']:.1%} | {iou} |")
    return "\n".join(lines)


# --- the `adatosk face-crop` command ----------------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    from adatosk.cli import add_config_arguments

    parser.add_argument("--jobs", type=int, default=available_cores(),
                        help="parallel processes (default: the cores this process may use)")
    parser.add_argument("--force", action="store_true", help="redo every clip, even those the log says are done")
    parser.add_argument("--report", default=None, metavar="FILE",
                        help=f"the JSON report of excluded/failed clips (default: {{data.cache_dir}}/{REPORT_NAME})")
    parser.add_argument("--bench", default=None, action="append", metavar="VIDEO",
                        help="only measure the face-crop speed and face coverage on VIDEO, per detect_every, and "
                             "print a table (repeat the option for more videos)")
    parser.add_argument("--bench-json", default=None, metavar="FILE", help="with --bench: also write the rows as JSON")
    parser.add_argument("--repeat", type=int, default=3, help="with --bench: runs, the best is reported")
    add_config_arguments(parser)


def main(args: argparse.Namespace) -> int:
    from adatosk.config import load_config, to_container
    from adatosk.io import write_json_atomic

    cfg = load_config(args.overrides, args.config)
    data_cfg = to_container(cfg.data)
    if args.bench:
        rows = benchmark(args.bench, CropParams.from_config(data_cfg.get("face_crop")), args.repeat)
        print(format_bench(rows))
        if args.bench_json:
            write_json_atomic(args.bench_json, rows)
        return 0
    report = run(data_cfg, jobs=args.jobs, force=args.force, report_path=args.report)
    print(f"face-crop {report['dataset']}: {report['clips']} clips, {report['processed']} processed, "
          f"{report['skipped_done']} already done; {report['ok']} ok, {len(report['excluded'])} excluded (no face), "
          f"{len(report['failed'])} failed; {report['seconds']} s"
          + (f", {report['frames_per_second']} frames/s" if report["frames_per_second"] else ""))
    for entry in report["failed"]:
        print(f"adatosk face-crop: {entry['source']}: {entry['reason']}", file=sys.stderr)
    return 1 if report["failed"] else 0
