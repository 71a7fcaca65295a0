"""Decode clips into uint8 RGB arrays ``[T, H, W, 3]``: video files and folders of frame images.

Videos are decoded with PyAV (FFmpeg, frame- and slice-threaded: 1.5-2x decord's speed on the test clips); decord,
then OpenCV, are tried only when PyAV cannot read a file. A file that no decoder reads raises :class:`VideoDecodeError`
naming the file and each decoder's complaint.

A frame folder is refused (:class:`VideoDecodeError` naming the folder or file) when an image cannot be decoded or
is truncated (a JPEG without its end marker, a PNG without its end chunk: a decoder would fill the missing part with
flat grey), when frames differ in size, and, read as a whole clip, when the frame numbers have a gap.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np

from adatosk.errors import AdatoskError

VIDEO_EXTENSIONS = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv",
                              ".gif"})
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp"})


class VideoDecodeError(AdatoskError, RuntimeError):
    """A video or frame folder that cannot be decoded; the message names the path."""


# What a complete image file ends with (after any trailing padding).
IMAGE_END = {".jpg": b"\xff\xd9", ".jpeg": b"\xff\xd9", ".png": b"IEND\xaeB`\x82"}


def _read_decord(path: Path) -> np.ndarray:
    import decord

    reader = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)
    return reader.get_batch(list(range(len(reader)))).asnumpy()


def _read_pyav(path: Path) -> np.ndarray:
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        return np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(stream)])


def _read_opencv(path: Path) -> np.ndarray:
    capture = cv2.VideoCapture(str(path))
    frames = []
    try:
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    finally:
        capture.release()
    if not frames:
        raise ValueError("no frames decoded")
    return np.stack(frames)


# Tried in this order; the first that returns frames wins.
DECODERS: tuple[tuple[str, Callable[[Path], np.ndarray]], ...] = (
    ("pyav", _read_pyav),
    ("decord", _read_decord),
    ("opencv", _read_opencv),
)


def read_video(path: str | os.PathLike[str]) -> np.ndarray:
    """All frames of a video file: uint8 RGB ``[T, H, W, 3]`` (PyAV, else decord, else OpenCV)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"video not found: {path}")
    errors = []
    for name, decode in DECODERS:
        try:
            frames = decode(path)
        except Exception as error:  # each backend has its own error types; the next backend gets its chance
            errors.append(f"{name}: {type(error).__name__}: {str(error).strip()[:200]}")
            continue
        if frames.ndim == 4 and len(frames) > 0 and frames.shape[-1] == 3:
            return np.ascontiguousarray(frames, dtype=np.uint8)
        errors.append(f"{name}: decoded an array of shape {list(frames.shape)}")
    raise VideoDecodeError("cannot decode the video: " + "; ".join(errors), path)


def _natural_key(name: str) -> list[int | str]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def frame_files(folder: str | os.PathLike[str]) -> list[Path]:
    """The image files of a frame folder in natural order (``2.jpg`` before ``10.jpg``)."""
    folder = Path(folder)
    files = [p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")]
    return sorted(files, key=lambda p: _natural_key(p.name))


def _read_image(file: Path) -> np.ndarray | None:
    """A BGR image, or None if the file cannot be decoded or is truncated."""
    data = file.read_bytes()
    end = IMAGE_END.get(file.suffix.lower())
    if end is not None and not data.rstrip(b"\0").endswith(end):
        return None
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)


def read_frame_files(files: Sequence[Path]) -> np.ndarray:
    """Frame images (all of one size) in the order of ``files``: uint8 RGB ``[T, H, W, 3]``."""
    images = [_read_image(Path(file)) for file in files]  # BGR
    unreadable = [Path(file).name for file, image in zip(files, images) if image is None]
    if unreadable:
        raise VideoDecodeError(f"cannot decode frame images (unreadable or truncated): {unreadable}",
                               Path(files[0]).parent)
    first_of_size: dict[tuple[int, int], str] = {}  # (w, h) -> the first file of that size
    for file, image in zip(files, images):
        first_of_size.setdefault(image.shape[1::-1], file.name)
    if len(first_of_size) > 1:
        sizes = {name: size for size, name in first_of_size.items()}
        raise VideoDecodeError(f"frames differ in size (w, h): {sizes}", Path(files[0]).parent)
    return np.ascontiguousarray(np.stack(images)[..., ::-1])


def read_frames_dir(folder: str | os.PathLike[str]) -> np.ndarray:
    """The frames of a folder of images (all of one size): uint8 RGB ``[T, H, W, 3]``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"frame folder not found: {folder}")
    files = frame_files(folder)
    if not files:
        raise VideoDecodeError(f"no frame images ({', '.join(sorted(IMAGE_EXTENSIONS))})", folder)
    check_frame_numbers(files)
    return read_frame_files(files)


def check_frame_numbers(files: Sequence[Path]) -> None:
    """Refuse a gap in the numbering of a folder's frames (the last number in each name; names without one are
    not checked): a lost middle frame would otherwise pass unnoticed."""
    numbers = [re.findall(r"\d+", Path(file).stem) for file in files]
    if not all(numbers):
        return
    last = [int(found[-1]) for found in numbers]
    for before, after, name_before, name_after in zip(last, last[1:], files, files[1:]):
        if after != before + 1:
            raise VideoDecodeError(f"frames are missing: the numbering jumps from {Path(name_before).name} to "
                                   f"{Path(name_after).name}", Path(files[0]).parent)


def read_clip(path: str | os.PathLike[str]) -> np.ndarray:
    """A clip stored either as a folder of frame images or as a video file: uint8 RGB ``[T, H, W, 3]``."""
    path = Path(path)
    return read_frames_dir(path) if path.is_dir() else read_video(path)


def video_fps(path: str | os.PathLike[str]) -> float | None:
    """The frame rate a video file declares (None if it declares none)."""
    capture = cv2.VideoCapture(str(path))
    try:
        fps = float(capture.get(cv2.CAP_PROP_FPS))
    finally:
        capture.release()
    return fps if math.isfinite(fps) and fps > 0 else None


def write_video(path: str | os.PathLike[str], frames: np.ndarray, fps: int = 30) -> Path:
    """Encode uint8 RGB ``[T, H, W, 3]`` (even H and W) as an H.264 video with PyAV; return the path."""
    import av

    path = Path(path)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")))
        container.mux(stream.encode())
    return path
