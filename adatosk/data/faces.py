"""Face detection: a detector finds face boxes in one RGB frame, by a full search or near known boxes.

Detectors (OpenCV's Haar cascade, or MTCNN from facenet-pytorch if asked and installed) search a copy of the frame
downscaled to ``detect_size``; given the boxes of the previous frame they track instead, searching only a window
around each box for faces of about its size (a fraction of the cost). :class:`CropParams` configures detection,
tracking (:mod:`adatosk.data.tracking`) and cropping (``data.face_crop``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

import cv2
import numpy as np

HAAR_CASCADE = "haarcascade_frontalface_default.xml"
HAAR_SCALE_FACTOR = 1.1
HAAR_WINDOW = 24                     # the cascade's own window: no smaller face is found
TRACK_REACH = 0.5                    # tracking searches this many box sides around the previous box
TRACK_SIZE_RANGE = 1.3               # ... for faces between 1/1.3 and 1.3 times its size
# Keys of data.face_crop that configure the stage rather than the crop itself.
STAGE_KEYS = frozenset({"precropped", "videos_dir"})


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



# --- boxes: (x, y, w, h) from detectors, (cx, cy, w, h) in tracks -----------------------------------------------------

def xywh_to_cxcywh(boxes: np.ndarray) -> np.ndarray:
    return np.concatenate([boxes[:, :2] + boxes[:, 2:] / 2, boxes[:, 2:]], axis=1)


def box_iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one box [4] with boxes [M, 4], all (cx, cy, w, h): [M]."""
    lo = np.maximum(box[:2] - box[2:] / 2, boxes[:, :2] - boxes[:, 2:] / 2)
    hi = np.minimum(box[:2] + box[2:] / 2, boxes[:, :2] + boxes[:, 2:] / 2)
    inter = np.prod(np.clip(hi - lo, 0, None), axis=1)
    return inter / (np.prod(box[2:]) + np.prod(boxes[:, 2:], axis=1) - inter)

def merge_boxes(boxes: np.ndarray, extra: np.ndarray) -> np.ndarray:
    """``boxes`` [N, 4] and those of ``extra`` [M, 4] (x, y, w, h) that are not one of them (IoU below 0.5)."""
    kept = [np.asarray(boxes, dtype=np.float64).reshape(-1, 4)]
    for box in np.asarray(extra, dtype=np.float64).reshape(-1, 4):
        known = np.concatenate(kept)
        if not len(known) or box_iou(xywh_to_cxcywh(box[None])[0], xywh_to_cxcywh(known)).max() < 0.5:
            kept.append(box[None])
    return np.concatenate(kept)


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

