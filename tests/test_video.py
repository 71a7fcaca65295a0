"""Video and frame-folder decoding: PyAV first, decord/OpenCV only where it fails, clear errors."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from adatosk.data.video import (VideoDecodeError, frame_files, read_clip, read_frame_files, read_frames_dir,
                                read_video, write_video)

DATA = Path(__file__).parent / "data"


def _opencv_frames(path: Path) -> np.ndarray:
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame[..., ::-1])
    capture.release()
    return np.stack(frames)


def test_read_video_decodes_all_frames_as_rgb():
    frames = read_video(DATA / "single_face.mp4")
    assert frames.shape == (72, 360, 640, 3) and frames.dtype == np.uint8 and frames.flags.c_contiguous
    reference = _opencv_frames(DATA / "single_face.mp4")  # another decoder, BGR flipped to RGB
    assert reference.shape == frames.shape
    ours, theirs = frames[::8].astype(np.int16), reference[::8].astype(np.int16)
    same = np.abs(ours - theirs).mean()
    assert same < 3.0  # the same pixels in the same channel order
    assert np.abs(ours - theirs[..., ::-1]).mean() > 3 * same


def test_file_the_first_decoder_cannot_read_is_read_by_the_next(monkeypatch):
    from adatosk.data import video

    expected = read_video(DATA / "single_face.mp4")
    calls = []

    def failing(path):
        calls.append(path)
        raise RuntimeError("unsupported codec")

    monkeypatch.setattr(video, "DECODERS", (("failing", failing), *video.DECODERS[1:]))  # decord, then OpenCV
    frames = read_video(DATA / "single_face.mp4")
    assert len(calls) == 1 and frames.shape == expected.shape
    assert np.abs(frames.astype(int) - expected).mean() < 3.0


def test_write_video_round_trips(tmp_path):
    rng = np.random.default_rng(0)
    blocks = rng.integers(0, 2, (5, 4, 4, 3)).astype(np.uint8) * 255
    written = np.repeat(np.repeat(blocks, 16, axis=1), 16, axis=2)  # [5, 64, 64, 3] flat colour blocks
    frames = read_video(write_video(tmp_path / "clip.mp4", written, fps=10))
    assert frames.shape == written.shape and np.abs(frames.astype(int) - written).mean() < 6.0


def test_undecodable_video_error_names_the_file_and_every_decoder(tmp_path):
    path = tmp_path / "broken.mp4"
    path.write_bytes((DATA / "single_face.mp4").read_bytes()[:20_000])  # truncated: no moov atom
    with pytest.raises(VideoDecodeError) as info:
        read_video(path)
    message = str(info.value)
    assert str(path) in message and all(name in message for name in ("decord", "pyav", "opencv"))
    with pytest.raises(FileNotFoundError, match="missing.mp4"):
        read_video(tmp_path / "missing.mp4")


def _write_png(path: Path, value: int, size: tuple[int, int] = (6, 4)) -> None:
    image = np.zeros((size[1], size[0], 3), np.uint8)
    image[..., 2] = value  # BGR: red channel
    cv2.imwrite(str(path), image)


def test_frame_folder_in_natural_order_as_rgb(tmp_path):
    for t in range(1, 12):
        _write_png(tmp_path / f"frame_{t}.png", t)
    (tmp_path / ".hidden.png").write_bytes(b"ignored")
    (tmp_path / "notes.txt").write_text("ignored")
    assert [p.name for p in frame_files(tmp_path)][:4] == ["frame_1.png", "frame_2.png", "frame_3.png", "frame_4.png"]
    frames = read_frames_dir(tmp_path)
    assert frames.shape == (11, 4, 6, 3)
    assert frames[:, 0, 0, 0].tolist() == list(range(1, 12)) and frames[..., 1:].max() == 0
    assert np.array_equal(read_clip(tmp_path), frames)
    subset = read_frame_files([tmp_path / "frame_10.png", tmp_path / "frame_1.png"])  # in the order given
    assert subset.shape == (2, 4, 6, 3) and subset[:, 0, 0, 0].tolist() == [10, 1]


def test_frame_folder_errors_name_the_folder_or_file(tmp_path):
    with pytest.raises(VideoDecodeError, match=str(tmp_path)):
        read_frames_dir(tmp_path)
    _write_png(tmp_path / "1.png", 0)
    (tmp_path / "2.png").write_bytes(b"not a png")
    with pytest.raises(VideoDecodeError, match="2.png"):
        read_frames_dir(tmp_path)
    _write_png(tmp_path / "2.png", 0, size=(8, 8))
    _write_png(tmp_path / "3.png", 0, size=(8, 8))
    with pytest.raises(VideoDecodeError, match=r"differ in size \(w, h\): \{'1.png': \(6, 4\), '2.png': \(8, 8\)\}$"):
        read_frames_dir(tmp_path)  # the first frame of each size
    with pytest.raises(FileNotFoundError, match="nowhere"):
        read_frames_dir(tmp_path / "nowhere")


def _write_jpeg(path: Path, value: int) -> None:
    cv2.imwrite(str(path), np.full((32, 32, 3), value, np.uint8))


@pytest.mark.parametrize("suffix", [".jpg", ".png"])
def test_truncated_frame_image_is_refused(tmp_path, suffix):
    """A decoder fills the lost part of a truncated image with flat grey; the folder is refused instead."""
    rng = np.random.default_rng(0)
    for t in range(1, 4):
        cv2.imwrite(str(tmp_path / f"{t:05d}{suffix}"), rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
    whole = (tmp_path / f"00002{suffix}").read_bytes()
    (tmp_path / f"00002{suffix}").write_bytes(whole[:len(whole) // 2])
    with pytest.raises(VideoDecodeError) as info:
        read_frames_dir(tmp_path)
    assert str(info.value) == f"{tmp_path}: cannot decode frame images (unreadable or truncated): ['00002{suffix}']"
    (tmp_path / f"00002{suffix}").write_bytes(whole + b"\0" * 16)  # padding after the end marker is fine
    assert read_frames_dir(tmp_path).shape == (3, 32, 32, 3)


def test_gap_in_the_frame_numbers_is_refused(tmp_path):
    for t in (1, 2, 4, 5):  # frame 3 is lost
        _write_jpeg(tmp_path / f"00017_{t:05d}.jpg", t * 10)
    with pytest.raises(VideoDecodeError) as info:
        read_frames_dir(tmp_path)
    assert str(info.value) == (f"{tmp_path}: frames are missing: the numbering jumps from 00017_00002.jpg to "
                               "00017_00004.jpg")
    _write_jpeg(tmp_path / "00017_00003.jpg", 30)
    assert read_frames_dir(tmp_path)[:, 0, 0, 0].tolist() == [10, 20, 30, 40, 50]
