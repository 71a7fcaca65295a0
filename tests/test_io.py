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
