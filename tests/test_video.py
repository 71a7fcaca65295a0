"""Video and frame-folder decoding: decord first, PyAV/OpenCV only where decord fails, clear errors."""

from __future__ import annotations

from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from adatosk.data.video import (VideoDecodeError, frame_files, read_clip, read_frame_files, read_frames_dir,
                                read_video)

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


def test_file_decord_cannot_read_is_read_by_the_fallback(tmp_path):
    import decord

    rng = np.random.default_rng(0)
    blocks = rng.integers(0, 2, (6, 8, 8, 3)).astype(np.uint8) * 255  # pure colours: exact in a GIF palette
    written = np.repeat(np.repeat(blocks, 8, axis=1), 8, axis=2)  # [6, 64, 64, 3]
    path = tmp_path / "clip.gif"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("gif", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "rgb8"
        for frame in written:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    with pytest.raises(Exception):
        reader = decord.VideoReader(str(path))
        reader.get_batch(list(range(len(reader))))
    frames = read_video(path)
    assert frames.shape == written.shape
    assert np.abs(frames.astype(int) - written).mean() < 4.0


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
    for t in (1, 2, 10, 11):
        _write_png(tmp_path / f"frame_{t}.png", t)
    (tmp_path / ".hidden.png").write_bytes(b"ignored")
    (tmp_path / "notes.txt").write_text("ignored")
    assert [p.name for p in frame_files(tmp_path)] == ["frame_1.png", "frame_2.png", "frame_10.png", "frame_11.png"]
    frames = read_frames_dir(tmp_path)
    assert frames.shape == (4, 4, 6, 3)
    assert frames[:, 0, 0, 0].tolist() == [1, 2, 10, 11] and frames[..., 1:].max() == 0
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
