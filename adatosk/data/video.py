"""Read and write clips: video files and folders of frame images, as uint8 RGB frames ``[H, W, 3]``.

Videos are decoded as a stream (:func:`iter_video`: one frame at a time, so memory does not grow with the length of
the video) with PyAV (FFmpeg, frame- and slice-threaded: 1.5-2x decord's speed on the test clips); decord, then
OpenCV, are tried only when PyAV cannot read a file. A file that no decoder reads, or that stops decoding part way
(a damaged file), raises :class:`VideoDecodeError` naming the file.

A frame folder is refused (:class:`VideoDecodeError` naming the folder or file) when an image cannot be decoded, is
truncated (a JPEG without its end marker, a PNG without its end chunk) or is a JPEG damaged inside (a decoder would
fill the missing part with flat grey), when frames differ in size, and, read as a whole clip, when the frame numbers
have a gap. Frame folders are written whole or not at all (:func:`atomic_directory`).
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


# A container's frame count may be off by a frame or two (a last frame without duration); a shortfall beyond this is
# a damaged file whose decoder gave up early.
MISSING_FRAMES_TOLERANCE = (2, 0.02)   # frames, fraction of the expected count


@dataclass(frozen=True)
class VideoInfo:
    """What a video file's container declares, read without decoding."""

    width: int
    height: int
    fps: float | None               # None if it declares none


def video_info(path: str | os.PathLike[str]) -> VideoInfo:
    """Size and frame rate of a video file as its container declares them (PyAV, else OpenCV)."""
    path = _existing_video(path)
    try:
        import av

        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            return VideoInfo(stream.width, stream.height, _positive(stream.average_rate or stream.guessed_rate))
    except Exception:  # PyAV cannot open it: OpenCV may
        capture = cv2.VideoCapture(str(path))
        try:
            width, height = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
            return VideoInfo(width, height, _positive(capture.get(cv2.CAP_PROP_FPS)))
        finally:
            capture.release()


def expected_frames(path: str | os.PathLike[str]) -> int | None:
    """The frames a video file holds by its container: the packets of its video stream that are shown (an edit
    list may discard a few; PyAV, reading packets without decoding them), else OpenCV's frame count; None if
    neither says."""
    path = _existing_video(path)
    try:
        import av

        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            return sum(1 for packet in container.demux(stream) if packet.size and not packet.is_discard) or None
    except Exception:  # PyAV cannot open it: OpenCV may
        capture = cv2.VideoCapture(str(path))
        try:
            count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        finally:
            capture.release()
        return count if count > 0 else None


def _positive(value: Any) -> float | None:
    value = float(value) if value is not None else math.nan
    return value if math.isfinite(value) and value > 0 else None


def _existing_video(path: str | os.PathLike[str]) -> Path:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"video not found: {path}")
    return path


def _every_frame(t: int) -> bool:
    return True


def _frames_pyav(path: Path, wanted: Callable[[int], bool]) -> Iterator[np.ndarray | None]:
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for t, frame in enumerate(container.decode(stream)):
            yield frame.to_ndarray(format="rgb24") if wanted(t) else None


def _frames_decord(path: Path, wanted: Callable[[int], bool]) -> Iterator[np.ndarray | None]:
    import decord

    reader = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)
    for t in range(len(reader)):
        yield reader[t].asnumpy() if wanted(t) else None


def _frames_opencv(path: Path, wanted: Callable[[int], bool]) -> Iterator[np.ndarray | None]:
    capture = cv2.VideoCapture(str(path))
    try:
        for t in itertools.count():
            if not capture.grab():
                return
            if not wanted(t):
                yield None
                continue
            ok, frame = capture.retrieve()
            if not ok:
                raise ValueError(f"cannot retrieve frame {t}")
            yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
    finally:
        capture.release()


# Tried in this order; the first that decodes a frame is used for the whole video. A decoder takes the file and
# which frames (by index) to convert to RGB arrays; it yields None for the others, decoded but not converted.
DECODERS: tuple[tuple[str, Callable[[Path, Callable[[int], bool]], Iterator[np.ndarray | None]]], ...] = (
    ("pyav", _frames_pyav),
    ("decord", _frames_decord),
    ("opencv", _frames_opencv),
)


def iter_video(path: str | os.PathLike[str],
               wanted: Callable[[int], bool] = _every_frame) -> Iterator[np.ndarray | None]:
    """The frames of a video file in order, one at a time: uint8 RGB ``[H, W, 3]`` (PyAV, else decord, else OpenCV);
    None for a frame whose index ``wanted`` refuses (every frame is decoded, only the wanted are converted to RGB).

    Memory holds one frame (and the decoder's own few), whatever the length of the video. A decoder that fails
    before its first frame hands over to the next; a failure after it, or a video that ends more than
    ``MISSING_FRAMES_TOLERANCE`` short of the frames its container holds (:func:`expected_frames`), is a damaged file:
    :class:`VideoDecodeError` naming it, never a silently shortened video."""
    path = _existing_video(path)
    errors = []
    for name, frames in DECODERS:
        count = 0
        try:
            for frame in frames(path, wanted):
                if frame is not None and (frame.ndim != 3 or frame.shape[-1] != 3):
                    raise ValueError(f"decoded an array of shape {list(frame.shape)}")
                yield None if frame is None else np.ascontiguousarray(frame, dtype=np.uint8)
                count += 1
        except Exception as error:  # each backend has its own error types; the next backend gets its chance
            complaint = f"{name}: {type(error).__name__}: {str(error).strip()[:200]}"
            if count:
                raise VideoDecodeError(f"the video is damaged: decoding failed after frame {count} ({complaint})",
                                       path) from error
            errors.append(complaint)
            continue
        if count:
            _check_frame_count(path, count)
            return
        errors.append(f"{name}: no frames decoded")
    raise VideoDecodeError("cannot decode the video: " + "; ".join(errors), path)


def _check_frame_count(path: Path, count: int) -> None:
    """Refuse a video whose decoder stopped well short of the frames its container holds."""
    expected = expected_frames(path)
    frames, fraction = MISSING_FRAMES_TOLERANCE
    if expected is not None and expected - count > max(frames, fraction * expected):
        raise VideoDecodeError(f"the video is damaged: only {count} of the {expected} frames its container holds "
                               "could be decoded", path)


def read_video(path: str | os.PathLike[str]) -> np.ndarray:
    """All frames of a (short) video file: uint8 RGB ``[T, H, W, 3]``; see :func:`iter_video`."""
    return np.stack(list(iter_video(path)))


def _natural_key(name: str) -> list[int | str]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def frame_files(folder: str | os.PathLike[str]) -> list[Path]:
    """The image files of a frame folder in natural order (``2.jpg`` before ``10.jpg``)."""
    folder = Path(folder)
    files = [p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")]
    return sorted(files, key=lambda p: _natural_key(p.name))


def _read_image(file: Path) -> np.ndarray | None:
    """A BGR image, or None if the file cannot be decoded, is truncated or (JPEG) is damaged inside."""
    data = file.read_bytes()
    suffix = file.suffix.lower()
    end = IMAGE_END.get(suffix)
    if end is not None and not data.rstrip(b"\0").endswith(end):
        return None
    if end == IMAGE_END[".jpg"] and not _jpeg_decodes_cleanly(data):
        return None
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)


def _jpeg_decodes_cleanly(data: bytes) -> bool:
    """FFmpeg's JPEG decoder, told to stop at the first error, decodes ``data``. libjpeg (OpenCV's decoder) only
    warns about a damaged entropy-coded segment and paints the rest of the image grey."""
    import av

    codec = av.CodecContext.create("mjpeg", "r")
    codec.options = {"err_detect": "explode"}
    try:
        return bool(codec.decode(av.Packet(data)) + codec.decode(None))
    except av.error.FFmpegError:
        return False


def read_frame_files(files: Sequence[Path]) -> np.ndarray:
    """Frame images (all of one size) in the order of ``files``: uint8 RGB ``[T, H, W, 3]``."""
    images = [_read_image(Path(file)) for file in files]  # BGR
    unreadable = [Path(file).name for file, image in zip(files, images) if image is None]
    if unreadable:
        raise VideoDecodeError(f"cannot decode frame images (unreadable, truncated or damaged): {unreadable}",
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


def write_video(path: str | os.PathLike[str], frames: np.ndarray, fps: float = 30, codec: str = "h264") -> Path:
    """Encode uint8 RGB ``[T, H, W, 3]`` as an MP4 video; return the path. ``codec`` h264 (PyAV's libx264; even H
    and W) or mp4v (OpenCV's MPEG-4 part 2 writer, whose file carries no time stamp or random id: the same frames
    give the same bytes)."""
    path = Path(path)
    if codec == "mp4v":
        _write_mp4v(path, frames, fps)
    elif codec == "h264":
        _write_h264(path, frames, fps)
    else:
        raise ValueError(f"unknown video codec {codec!r}; expected h264 or mp4v")
    return path


def _write_h264(path: Path, frames: np.ndarray, fps: float) -> None:
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=round(fps))
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")))
        container.mux(stream.encode())


def _write_mp4v(path: Path, frames: np.ndarray, fps: float) -> None:
    height, width = frames.shape[1:3]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), float(fps), (width, height))
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot open an mp4v VideoWriter for {path}")
    try:
        for frame in frames:
            writer.write(np.ascontiguousarray(frame[..., ::-1]))
    finally:
        writer.release()


def write_frame_image(folder: Path, clip_id: str, number: int, frame: np.ndarray, quality: int) -> None:
    """Write a uint8 RGB frame ``[H, W, 3]`` as ``<folder>/<clip_id>_NNNNN.jpg`` (``number``, 1-based: DFEW's
    names) at JPEG ``quality``."""
    ok, data = cv2.imencode(".jpg", frame[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError(f"cannot encode frame {number} of {clip_id} as JPEG ({folder})")
    (folder / f"{clip_id}_{number:05d}.jpg").write_bytes(data.tobytes())


def write_frame_images(folder: Path, clip_id: str, frames: Iterable[np.ndarray], quality: int) -> None:
    """Write uint8 RGB frames ``[H, W, 3]`` into a new or existing ``folder`` (see :func:`write_frame_image`)."""
    folder.mkdir(parents=True, exist_ok=True)
    for number, frame in enumerate(frames, 1):
        write_frame_image(folder, clip_id, number, frame, quality)


# The temporary directories of atomic_directory: ".<name>.<random>.tmp" and ".<name>.<random>.old".
TEMPORARY_DIRECTORY = re.compile(r"\..+\.[a-z0-9_]{8}\.(tmp|old)")


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a new empty directory beside ``path`` (a name no other process uses); when the block succeeds it
    replaces ``path`` (any old content is removed), else it is removed: ``path`` is complete or as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        os.chmod(tmp, _directory_mode())  # mkdtemp makes it 0700
        yield tmp
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
            path.rename(old / path.name)
            tmp.rename(path)
            shutil.rmtree(old)
        else:
            tmp.rename(path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _directory_mode() -> int:
    """The mode ``mkdir`` gives a new directory under the process's umask: a file's mode, searchable where
    readable."""
    from adatosk.io import file_mode

    mode = file_mode()
    return mode | (mode & 0o444) >> 2


def remove_stale_directories(parent: str | os.PathLike[str]) -> list[Path]:
    """Delete the directories :func:`atomic_directory` left in ``parent`` when its process was killed; return them.
    Call it only where no other process writes (under the stage's lock)."""
    parent = Path(parent)
    stale = [p for p in parent.iterdir() if p.is_dir() and TEMPORARY_DIRECTORY.fullmatch(p.name)] \
        if parent.is_dir() else []
    for path in stale:
        shutil.rmtree(path, ignore_errors=True)
    return stale
