"""The packed clip cache: atomic uint8 [T, H, W, 3] .npy files, memory-mapped, with errors naming the file."""

import numpy as np
import pytest

from adatosk.data.cache import CorruptClipError, open_clip, pack_clip


@pytest.fixture
def clip():
    return np.random.default_rng(0).integers(0, 256, (5, 8, 6, 3), dtype=np.uint8)


def test_round_trip_is_exact_and_memory_mapped(tmp_path, clip):
    path = pack_clip(clip, tmp_path / "sub" / "c1.npy")
    assert [p.name for p in path.parent.iterdir()] == ["c1.npy"]  # no temporary file left beside it
    frames = open_clip(path)
    assert isinstance(frames, np.memmap) and not frames.flags.writeable
    assert frames.dtype == np.uint8 and frames.shape == clip.shape
    np.testing.assert_array_equal(frames, clip)


def test_pack_overwrites_atomically(tmp_path, clip):
    path = tmp_path / "c1.npy"
    pack_clip(clip, path)
    pack_clip(clip[:2] // 2, path)
    np.testing.assert_array_equal(open_clip(path), clip[:2] // 2)


@pytest.mark.parametrize("bad", [np.zeros((2, 4, 4, 3), np.float32), np.zeros((2, 4, 4), np.uint8),
                                 np.zeros((2, 4, 4, 4), np.uint8), np.zeros((0, 4, 4, 3), np.uint8)])
def test_pack_rejects_wrong_dtype_or_shape_and_writes_nothing(tmp_path, bad):
    path = tmp_path / "c1.npy"
    with pytest.raises(CorruptClipError, match="c1.npy"):
        pack_clip(bad, path)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("damage", ["truncated_data", "truncated_header", "garbage", "empty"])
def test_corrupt_file_error_names_the_file(tmp_path, clip, damage):
    path = pack_clip(clip, tmp_path / "c7.npy")
    data = path.read_bytes()
    path.write_bytes({"truncated_data": data[:-7], "truncated_header": data[:40], "garbage": b"not a numpy file" * 10,
                      "empty": b""}[damage])
    with pytest.raises(CorruptClipError, match=r"c7\.npy: corrupt packed clip"):
        open_clip(path)


@pytest.mark.parametrize("array", [np.zeros((2, 4, 4, 3), np.float32), np.zeros((2, 4, 4), np.uint8)])
def test_wrong_dtype_or_shape_on_disk_is_an_error_naming_the_file(tmp_path, array):
    path = tmp_path / "c3.npy"
    np.save(path, array)
    with pytest.raises(CorruptClipError, match=r"c3\.npy.*expected"):
        open_clip(path)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.npy"):
        open_clip(tmp_path / "nope.npy")
