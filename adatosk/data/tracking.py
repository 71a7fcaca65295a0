"""Face tracks: per-frame detections linked into the main face's track, smoothed into square crop boxes.

Faces are searched for (:mod:`adatosk.data.faces`) on every ``detect_every``-th frame; in the frames between,
each face is tracked by a search near its previous box. Boxes are linked into tracks by IoU with the previous box,
and the main track (largest summed box side: big and long-lived, joined by other tracks in the time it leaves free)
is kept. Frames where it has no detection take the box interpolated from their neighbours; a clip whose main track
misses more than ``max_missing`` of its frames is excluded (:class:`NoFaceError`). Box centres and sizes are
smoothed over time (moving median, then moving mean, over ``smooth_window`` frames), squared, expanded by ``margin``
and cropped (zero padding past the frame border) to ``size`` x ``size``.

Frames are taken one at a time from any iterable (a decoding stream: :func:`adatosk.data.video.iter_video`):
:func:`track_faces` keeps only the boxes (and the few frames since the last full search), so a long video is
tracked in one pass and cropped in a second (:func:`crop_frames`) without being held in memory.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from adatosk.data.faces import CropParams, box_iou, make_detector, merge_boxes, xywh_to_cxcywh

MIN_SEGMENT = 5                      # detections a track needs to join the main track in a time it leaves free


class NoFaceError(ValueError):
    """No face track covers enough of the video; ``detected_fraction`` says how much it covers."""

    def __init__(self, message: str, detected_fraction: float):
        super().__init__(message)
        self.detected_fraction = detected_fraction


@dataclass
class FaceBoxes:
    """The main face of a video, frame by frame."""

    boxes: np.ndarray                # [T, 4] float crop boxes in frame pixels: centre x, centre y, side, side
    detected: np.ndarray             # [T] bool: the main track was detected in this frame (else interpolated)
    detected_fraction: float         # detected frames / frames


@dataclass
class FaceTrack(FaceBoxes):
    """The main face of a video, cropped frame by frame."""

    crops: np.ndarray                # [T, S, S, 3] uint8 RGB


def detect_faces(frames: Iterable[np.ndarray], detector: Callable[..., np.ndarray],
                 detect_every: int) -> list[np.ndarray]:
    """Face boxes [N, 4] (cx, cy, w, h) of every frame: a full search on every ``detect_every``-th frame; in the
    frames after it, a search near the previous frame's boxes (none once they are lost); and from a full search
    that finds a face the frame before it did not have, a search back through the frames since the last full one
    (so a face that appears, or is lost and found again, is found from its first frame, as by a full search).
    Holds at most ``detect_every - 1`` earlier frames."""
    every = max(1, detect_every)
    none = np.zeros((0, 4))
    detections: list[np.ndarray] = []  # x, y, w, h
    recent: deque[np.ndarray] = deque(maxlen=every - 1)  # the frames since the last full search
    for t, frame in enumerate(frames):
        previous = detections[-1] if detections else none
        if t % every:
            detections.append(detector(frame, near=previous) if len(previous) else none)
        else:
            boxes = np.asarray(detector(frame), dtype=np.float64).reshape(-1, 4)
            detections.append(boxes)
            near = merge_boxes(previous, boxes)[len(previous):]  # the faces that are new in this frame
            for back, earlier in zip(range(t - 1, -1, -1), reversed(recent)):
                if not len(near):
                    break
                near = np.asarray(detector(earlier, near=near), dtype=np.float64).reshape(-1, 4)
                detections[back] = merge_boxes(detections[back], near)
        recent.append(frame)
    return [xywh_to_cxcywh(np.asarray(boxes, dtype=np.float64).reshape(-1, 4)) for boxes in detections]


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


def track_faces(frames: Iterable[np.ndarray], params: CropParams | None = None,
                detector: Callable[..., np.ndarray] | None = None) -> FaceBoxes:
    """Detect, track and smooth the main face of ``frames`` (uint8 RGB [H, W, 3] each, taken one at a time).

    Raises :class:`NoFaceError` if no face is found, or the main track misses more than ``params.max_missing`` of
    the frames. ``detector`` (``(frame, near=None)`` -> [N, 4] x, y, w, h) defaults to ``make_detector(params)``.
    """
    params = params or CropParams()
    detector = detector or make_detector(params)
    detections = detect_faces(frames, detector, params.detect_every)
    if not detections:
        raise ValueError("no frames to track a face in")
    track = main_track(detections, params.iou_threshold, params.max_gap)
    detected = ~np.isnan(track[:, 0])
    fraction = float(detected.mean())
    if fraction == 0.0:
        raise NoFaceError(f"no face found in any of the {len(track)} frames", fraction)
    if 1.0 - fraction > params.max_missing:
        raise NoFaceError(f"the main face track covers {fraction:.0%} of the {len(track)} frames "
                          f"(at least {1 - params.max_missing:.0%} needed)", fraction)
    boxes = square_boxes(smooth_boxes(fill_missing(track), params.smooth_window), params.margin)
    return FaceBoxes(boxes=boxes, detected=detected, detected_fraction=fraction)


def crop_frames(frames: Iterable[np.ndarray], boxes: np.ndarray, size: int) -> Iterator[np.ndarray]:
    """The crop ``[size, size, 3]`` of each frame by its box (``boxes`` [T, 4] of :func:`track_faces`), one at a
    time; raises ``ValueError`` if ``frames`` and ``boxes`` differ in length."""
    for frame, box in zip(frames, boxes, strict=True):
        yield crop_square(frame, box, size)


def crop_face_track(frames: np.ndarray, params: CropParams | None = None,
                    detector: Callable[..., np.ndarray] | None = None) -> FaceTrack:
    """:func:`track_faces` and :func:`crop_frames` of the frames of an array (uint8 RGB [T, H, W, 3])."""
    params = params or CropParams()
    if frames.ndim != 4 or frames.shape[-1] != 3 or len(frames) == 0:
        raise ValueError(f"expected frames [T>0, H, W, 3], got {list(frames.shape)}")
    faces = track_faces(frames, params, detector)
    crops = np.stack(list(crop_frames(frames, faces.boxes, params.size)))
    return FaceTrack(boxes=faces.boxes, detected=faces.detected, detected_fraction=faces.detected_fraction,
                     crops=crops)
