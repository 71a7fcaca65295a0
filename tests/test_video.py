"""Video and frame-folder decoding: PyAV first, decord/OpenCV only where it fails, clear errors."""

from __future__ import annotations

import itertools
from pathlib import Path

import cv2
import numpy as np
import pytest
from helpers import damaged_video

from adatosk.data.video import (
    VideoDecodeError,
    atomic_directory,
    expected_frames,
    frame_files,
    iter_video,
    read_frame_files,
    read_frames_dir,
    read_video,
    remove_stale_directories,
    video_info,
    write_video,
)

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

    def failing(path, wanted):
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


def test_video_is_decoded_as_a_stream_of_frames():
    """iter_video holds one frame at a time: the peak of numpy's allocations while reading 72 frames is a few
    frames, not the video."""
    import tracemalloc

    info = video_info(DATA / "single_face.mp4")
    assert (info.width, info.height, info.fps) == (640, 360, pytest.approx(30.0))
    frame_bytes = 640 * 360 * 3
    tracemalloc.start()
    try:
        count = sum(1 for frame in iter_video(DATA / "single_face.mp4") if frame.shape == (360, 640, 3))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 72 and peak < 4 * frame_bytes


@pytest.mark.parametrize("decoder", ["pyav", "decord", "opencv"])
def test_only_the_wanted_frames_are_converted(monkeypatch, decoder):
    from adatosk.data import video

    expected = read_video(DATA / "single_face.mp4")
    monkeypatch.setattr(video, "DECODERS", tuple(d for d in video.DECODERS if d[0] == decoder))
    frames = list(iter_video(DATA / "single_face.mp4", wanted=lambda t: t % 4 == 0))
    assert len(frames) == 72 and all((frame is None) == bool(t % 4) for t, frame in enumerate(frames))
    assert np.abs(np.stack(frames[::4]).astype(int) - expected[::4]).mean() < 3.0


def test_video_damaged_in_the_middle_is_refused_not_shortened(tmp_path):
    """20 KB zeroed in the middle of an H.264 file: the decoder stops after 32 of its 72 frames."""
    damaged = damaged_video(tmp_path / "damaged.mp4")
    with pytest.raises(VideoDecodeError, match="the video is damaged") as info:
        read_video(damaged)
    assert str(damaged) in str(info.value)


def test_video_ending_short_of_its_frames_is_refused(monkeypatch):
    """A decoder that ends quietly after 30 of the 72 frames the container holds (one that conceals errors); the 3
    frames no_face.mp4's edit list discards are not missing."""
    from adatosk.data import video

    whole = video.DECODERS[0][1]
    monkeypatch.setattr(video, "DECODERS", (("quiet", lambda path, wanted: itertools.islice(whole(path, wanted), 30)),))
    with pytest.raises(VideoDecodeError, match="only 30 of the 72 frames its container holds") as info:
        read_video(DATA / "single_face.mp4")
    assert str(DATA / "single_face.mp4") in str(info.value)
    monkeypatch.setattr(video, "DECODERS", (("quiet", lambda path, wanted: itertools.islice(whole(path, wanted), 71)),))
    assert len(read_video(DATA / "single_face.mp4")) == 71  # within the tolerance of a container's count
    assert expected_frames(DATA / "no_face.mp4") == 95


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
    assert str(info.value) == \
        f"{tmp_path}: cannot decode frame images (unreadable, truncated or damaged): ['00002{suffix}']"
    (tmp_path / f"00002{suffix}").write_bytes(whole + b"\0" * 16)  # padding after the end marker is fine
    assert read_frames_dir(tmp_path).shape == (3, 32, 32, 3)


def test_jpeg_damaged_inside_is_refused(tmp_path):
    """A JPEG with 2 KB zeroed in its middle keeps its end marker; libjpeg would only warn and paint it grey."""
    frame = read_video(DATA / "single_face.mp4")[0]
    for t in range(1, 4):
        cv2.imwrite(str(tmp_path / f"{t:05d}.jpg"), frame[..., ::-1])
    whole = bytearray((tmp_path / "00002.jpg").read_bytes())
    middle = len(whole) // 2
    whole[middle:middle + 2000] = bytes(2000)
    (tmp_path / "00002.jpg").write_bytes(bytes(whole))
    with pytest.raises(VideoDecodeError) as info:
        read_frames_dir(tmp_path)
    assert str(info.value) == \
        f"{tmp_path}: cannot decode frame images (unreadable, truncated or damaged): ['00002.jpg']"


def test_atomic_directory_is_whole_or_absent_and_unique_per_writer(tmp_path):
    target = tmp_path / "clip"
    with atomic_directory(target) as first, atomic_directory(target) as second:
        assert first != second and first.parent == second.parent == tmp_path  # two writers never share a temp
        (first / "a").write_text("first")
        (second / "b").write_text("second")
    assert [p.name for p in target.iterdir()] == ["a"]  # the last to finish wins, whole
    with pytest.raises(RuntimeError), atomic_directory(target) as tmp:
        (tmp / "half").write_text("x")
        raise RuntimeError("killed")
    assert [p.name for p in tmp_path.iterdir()] == ["clip"] and [p.name for p in target.iterdir()] == ["a"]
    stale = tmp_path / ".clip.k3j9x2_a.tmp"  # the name atomic_directory gives a folder a killed run was writing
    stale.mkdir()
    assert remove_stale_directories(tmp_path) == [stale] and not stale.exists() and target.exists()


def test_gap_in_the_frame_numbers_is_refused(tmp_path):
    for t in (1, 2, 4, 5):  # frame 3 is lost
        _write_jpeg(tmp_path / f"00017_{t:05d}.jpg", t * 10)
    with pytest.raises(VideoDecodeError) as info:
        read_frames_dir(tmp_path)
    assert str(info.value) == (f"{tmp_path}: frames are missing: the numbering jumps from 00017_00002.jpg to "
                               "00017_00004.jpg")
    _write_jpeg(tmp_path / "00017_00003.jpg", 30)
    assert read_frames_dir(tmp_path)[:, 0, 0, 0].tolist() == [10, 20, 30, 40, 50]
