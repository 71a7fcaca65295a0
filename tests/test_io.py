import json
import os

import pytest

from adatosk.io import atomic_path, sha256_file, write_json_atomic


def test_atomic_path_replaces_only_on_success(tmp_path):
    target = tmp_path / "out.json"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash mid-write")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"], "temporary file left behind"

    with atomic_path(target) as tmp:
        tmp.write_text("new")
    assert target.read_text() == "new"


def test_write_json_atomic_handles_numpy_and_paths(tmp_path):
    import numpy as np

    write_json_atomic(tmp_path / "a" / "b.json", {"x": np.arange(3), "p": tmp_path, "f": np.float32(0.5)})
    assert json.loads((tmp_path / "a" / "b.json").read_text()) == {"x": [0, 1, 2], "p": str(tmp_path), "f": 0.5}


def test_sha256_file_matches_hashlib(tmp_path):
    import hashlib

    data = os.urandom(3 * 1024 * 1024 + 7)
    (tmp_path / "blob").write_bytes(data)
    assert sha256_file(tmp_path / "blob", chunk_size=1 << 16) == hashlib.sha256(data).hexdigest()


def test_a_full_disk_names_the_destination_and_leaves_nothing(tmp_path, monkeypatch):
    import errno
    from pathlib import Path

    from adatosk.io import write_text_atomic

    def disk_full(self, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # write(2) gives no file name

    monkeypatch.setattr(Path, "write_bytes", disk_full)
    target = tmp_path / "metrics.json"
    with pytest.raises(OSError) as caught:
        write_text_atomic(target, "{}")
    assert (caught.value.errno, caught.value.filename) == (errno.ENOSPC, str(target))
    assert list(tmp_path.iterdir()) == []


def test_an_unwritable_directory_names_the_destination(tmp_path, monkeypatch):
    import errno
    import tempfile

    def read_only(prefix, suffix, dir):
        raise PermissionError(errno.EACCES, "Permission denied", f"{dir}/{prefix}x1y2z3w4{suffix}")

    monkeypatch.setattr(tempfile, "mkstemp", read_only)  # root may write anywhere: simulate a read-only directory
    target = tmp_path / "out.json"
    with pytest.raises(PermissionError) as caught:
        write_json_atomic(target, {})
    assert caught.value.filename == str(target)


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600)])
def test_written_files_get_the_mode_of_the_umask(tmp_path, umask, mode):
    previous = os.umask(umask)
    try:
        write_json_atomic(tmp_path / "out.json", {})
        with atomic_path(tmp_path / "remade.bin") as tmp:
            tmp.unlink()  # a writer that makes the file anew (as safetensors does)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT, 0o600)
            os.close(fd)
    finally:
        os.umask(previous)
    assert oct((tmp_path / "out.json").stat().st_mode & 0o777) == oct(mode)
    assert oct((tmp_path / "remade.bin").stat().st_mode & 0o777) == oct(mode)


def test_stale_temporaries_are_removed_and_nothing_else(tmp_path):
    from adatosk.io import remove_stale_temporaries

    (tmp_path / "sub").mkdir()
    stale = [tmp_path / ".log.csv.abcd_123.tmp", tmp_path / "sub" / ".model.json.zzzzzzzz.tmp"]
    kept = [tmp_path / "log.csv", tmp_path / ".notes.tmp", tmp_path / "sub" / "a.tmp"]
    for path in stale + kept:
        path.write_text("x")
    assert sorted(remove_stale_temporaries(tmp_path)) == sorted(stale)
    assert all(p.exists() for p in kept) and not any(p.exists() for p in stale)
    assert remove_stale_temporaries(tmp_path / "absent") == []
