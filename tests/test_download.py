"""`adatosk verify`: copy/download (resumable), checksums, extraction, receipts and the missing-source message."""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import os
import tarfile
import threading
import zipfile
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from adatosk.data import download
from adatosk.data.download import ChecksumError, DownloadInterrupted, SourceMissingError, verify

LICENCE = "https://dfew-dataset.github.io/"
MEMBERS = {"Clip/clip_224x224/00001/00001_00001.jpg": b"frame one" * 100, "EmoLabel_DataSplit/set_1.csv": b"1,2\n"}


def _zip_bytes(members: dict[str, bytes]) -> bytes:
    """A zip of ``members`` with a fixed date: the same bytes in every process (pytest-xdist workers collect the
    parametrised checksum separately and must agree)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, data in members.items():
            zf.writestr(zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0)), data)
    return buffer.getvalue()


ARCHIVE = _zip_bytes({**MEMBERS, "padding.bin": bytes(200_000)})  # stored, not compressed: transfers take chunks
ARCHIVE_SHA = hashlib.sha256(ARCHIVE).hexdigest()


def _data_cfg(root: Path, **entry) -> dict:
    source = {"kind": "archive", "path": "downloads/dfew.zip", "sha256": ARCHIVE_SHA, "extract_to": ".",
              "licence_url": LICENCE, **entry}
    return {"name": "dfew", "root": str(root), "sources": {"clips": source}}


@pytest.fixture(autouse=True)
def _work_dir(tmp_path: Path, monkeypatch) -> None:
    """Receipts go to results/verify/ under the working directory: a test's own."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture()
def archive_file(tmp_path: Path) -> Path:
    path = tmp_path / "src" / "dfew.zip"
    path.parent.mkdir()
    path.write_bytes(ARCHIVE)
    return path


# --- a local HTTP server with Range support ---------------------------------------------------------------------

class _Handler(http.server.BaseHTTPRequestHandler):
    files: dict[str, bytes] = {}
    ranges: list[str | None] = []
    honour_range = True
    cut_first_after: int | None = None  # send only this many bytes of the first body, then hang up

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        data = self.files.get(self.path)
        self.ranges.append(self.headers.get("Range"))
        if data is None:
            self.send_error(404)
            return
        start = 0
        if self.honour_range and self.headers.get("Range"):
            start = int(self.headers["Range"].removeprefix("bytes=").split("-")[0])
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if type(self).cut_first_after is not None:
            body = body[:type(self).cut_first_after]
            type(self).cut_first_after = None
            self.close_connection = True
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture()
def server():
    handler = type("Handler", (_Handler,), {"files": {"/dfew.zip": ARCHIVE}, "ranges": []})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield handler, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _assert_extracted(root: Path) -> None:
    for name, data in MEMBERS.items():
        assert (root / name).read_bytes() == data


def _leftovers(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.endswith((".part", ".tmp"))]


# --- archives: file:// and HTTP ----------------------------------------------------------------------------------

def test_file_url_success_extracts_and_writes_receipt(tmp_path, archive_file):
    root = tmp_path / "dfew"
    result = verify(_data_cfg(root, url=archive_file.as_uri()))
    assert (root / "downloads/dfew.zip").read_bytes() == ARCHIVE
    _assert_extracted(root)
    receipt = json.loads((tmp_path / "results/verify/dfew.json").read_text())
    entry = receipt["sources"]["clips"]
    assert receipt["dataset"] == "dfew" and entry == result["sources"]["clips"]
    assert entry["sha256"] == ARCHIVE_SHA and entry["status"] == "verified" and entry["members"] == len(MEMBERS) + 1
    assert not _leftovers(tmp_path)


@pytest.mark.parametrize("url_kind", ["file", "http"])
def test_checksum_mismatch_leaves_nothing_at_the_final_path(tmp_path, archive_file, server, url_kind):
    root = tmp_path / "dfew"
    url = archive_file.as_uri() if url_kind == "file" else server[1] + "/dfew.zip"
    wrong = "0" * 64
    with pytest.raises(ChecksumError) as info:
        verify(_data_cfg(root, url=url, sha256=wrong))
    message = str(info.value)
    assert "dfew.zip" in message and wrong in message and ARCHIVE_SHA in message
    assert not (root / "downloads/dfew.zip").exists()
    assert not _leftovers(root)
    assert not (tmp_path / "results/verify/dfew.json").exists() and not (root / "Clip").exists()


def _started_part(part: Path, url: str, data: bytes, sha256: str | None = ARCHIVE_SHA) -> None:
    """A ``.part`` as an interrupted download from ``url`` left it, with the record of what it is from."""
    part.parent.mkdir(parents=True)
    part.write_bytes(data)
    part.with_name(part.name + ".json").write_text(json.dumps({"url": url, "sha256": sha256}))


def test_http_download_resumes_a_partial_file(tmp_path, server):
    handler, base = server
    root = tmp_path / "dfew"
    part = root / "downloads/dfew.zip.part"
    _started_part(part, f"{base}/dfew.zip", ARCHIVE[:70_000])
    verify(_data_cfg(root, url=f"{base}/dfew.zip"))
    assert handler.ranges == ["bytes=70000-"]
    assert (root / "downloads/dfew.zip").read_bytes() == ARCHIVE
    _assert_extracted(root)
    assert not _leftovers(root)


def test_interrupted_http_download_is_kept_as_part_and_resumed(tmp_path, server):
    handler, base = server
    handler.cut_first_after = 50_000
    root = tmp_path / "dfew"
    cfg = _data_cfg(root, url=f"{base}/dfew.zip")
    with pytest.raises(DownloadInterrupted, match="run again to resume"):
        verify(cfg)
    final = root / "downloads/dfew.zip"
    assert not final.exists()
    assert (root / "downloads/dfew.zip.part").stat().st_size == 50_000
    verify(cfg)
    assert handler.ranges == [None, "bytes=50000-"]
    assert final.read_bytes() == ARCHIVE and not _leftovers(root)


def test_server_ignoring_range_restarts_from_zero(tmp_path, server):
    handler, base = server
    handler.honour_range = False
    root = tmp_path / "dfew"
    part = root / "downloads/dfew.zip.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(b"stale bytes from elsewhere")
    verify(_data_cfg(root, url=f"{base}/dfew.zip"))
    assert (root / "downloads/dfew.zip").read_bytes() == ARCHIVE


@pytest.mark.parametrize("pinned", [ARCHIVE_SHA, None])
def test_a_part_of_another_file_is_discarded_not_spliced(tmp_path, server, pinned):
    handler, base = server
    root = tmp_path / "dfew"
    part = root / "downloads/dfew.zip.part"
    _started_part(part, f"{base}/other.zip", b"X" * 70_000, pinned)   # started from another URL
    verify(_data_cfg(root, url=f"{base}/dfew.zip", sha256=pinned))
    assert handler.ranges == [None] and (root / "downloads/dfew.zip").read_bytes() == ARCHIVE
    part.parent.joinpath("dfew.zip.part").write_bytes(b"X" * 70_000)    # a .part with no record of its source
    (root / "downloads/dfew.zip").unlink()
    verify(_data_cfg(root, url=f"{base}/dfew.zip", sha256=None))
    assert handler.ranges == [None, None] and (root / "downloads/dfew.zip").read_bytes() == ARCHIVE
    assert not _leftovers(root) and not list(root.rglob("*.part.json"))


@pytest.mark.parametrize(("key", "value"), [("path", "../../outside.zip"), ("path", "/tmp/outside.zip"),
                                            ("extract_to", "../.."), ("extract_to", "/tmp")])
def test_a_source_that_would_write_outside_the_root_is_refused(tmp_path, archive_file, key, value):
    root = tmp_path / "dfew"
    with pytest.raises(ValueError, match=f"data.sources.clips.{key} is '{value}'"):
        verify(_data_cfg(root, url=archive_file.as_uri(), **{key: value}))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]   # nothing written, anywhere


def test_completed_part_gets_416_and_is_verified(tmp_path, server):
    handler, base = server
    root = tmp_path / "dfew"
    part = root / "downloads/dfew.zip.part"
    _started_part(part, f"{base}/dfew.zip", ARCHIVE)
    verify(_data_cfg(root, url=f"{base}/dfew.zip"))
    assert handler.ranges == [f"bytes={len(ARCHIVE)}-"]
    assert (root / "downloads/dfew.zip").read_bytes() == ARCHIVE


# --- missing sources ---------------------------------------------------------------------------------------------

def _assert_helpful(message: str, source: str = "clips") -> None:
    assert "dfew" in message                              # the dataset
    assert "downloads/dfew.zip" in message                # the file
    assert LICENCE in message                             # where to request the licence
    assert f"data.sources.{source}.url" in message        # the param to set


def test_missing_source_names_dataset_file_licence_and_param(tmp_path):
    with pytest.raises(SourceMissingError) as info:
        verify(_data_cfg(tmp_path / "dfew", url=None))
    _assert_helpful(str(info.value))


@pytest.mark.parametrize("where", ["path", "http404"])
def test_unreachable_url_is_reported_as_missing(tmp_path, server, where):
    url = str(tmp_path / "nowhere.zip") if where == "path" else server[1] + "/nowhere.zip"
    with pytest.raises(SourceMissingError) as info:
        verify(_data_cfg(tmp_path / "dfew", url=url))
    _assert_helpful(str(info.value))
    assert url in str(info.value)


def test_optional_absent_source_is_recorded(tmp_path):
    root = tmp_path / "dfew"
    result = verify(_data_cfg(root, url=None, required=False))
    assert result["sources"]["clips"]["status"] == "absent (optional)"
    assert (tmp_path / "results/verify/dfew.json").is_file()


# --- receipts, in-place files, folders, other archives ---------------------------------------------------------------

def test_receipt_skips_rehash_until_the_file_changes(tmp_path, archive_file, monkeypatch):
    root = tmp_path / "dfew"
    cfg = _data_cfg(root, url=archive_file.as_uri())
    verify(cfg)
    calls = []
    monkeypatch.setattr(download, "sha256_file", lambda path: calls.append(path) or ARCHIVE_SHA)
    verify(cfg)
    assert calls == []
    final = root / "downloads/dfew.zip"
    os.utime(final, ns=(final.stat().st_atime_ns, final.stat().st_mtime_ns + 10**9))
    verify(cfg)
    assert calls == [final.resolve()]


def test_archive_already_in_place_is_checked_not_fetched(tmp_path):
    root = tmp_path / "dfew"
    final = root / "downloads/dfew.zip"
    final.parent.mkdir(parents=True)
    final.write_bytes(ARCHIVE[:-1] + b"x")
    with pytest.raises(ChecksumError) as info:
        verify(_data_cfg(root, url=None))
    assert str(final.resolve()) in str(info.value) and ARCHIVE_SHA in str(info.value)
    assert final.exists()  # the user's own file is never deleted


def test_folder_source_copied_and_checked_by_count_and_size(tmp_path):
    src = tmp_path / "src" / "EmoLabel_DataSplit"
    (src / "train").mkdir(parents=True)
    (src / "train/set_1.csv").write_text("video_name,label\n1,2\n")
    (src / "test.csv").write_text("x\n")
    (src / ".hidden").write_text("not counted")
    root = tmp_path / "dfew"
    folder = {"kind": "folder", "path": "EmoLabel_DataSplit", "url": str(src), "files": 2, "size": 23,
              "licence_url": LICENCE}
    result = verify({"name": "dfew", "root": str(root), "sources": {"splits": folder}})
    entry = result["sources"]["splits"]
    assert (entry["files"], entry["size"], entry["status"]) == (2, 23, "verified")
    assert (root / "EmoLabel_DataSplit/train/set_1.csv").read_text() == "video_name,label\n1,2\n"
    with pytest.raises(ChecksumError, match=r"expected files=3, found 2 \(data.sources.splits.files\)"):
        verify({"name": "dfew", "root": str(root), "sources": {"splits": {**folder, "files": 3}}})


def test_tar_archive_extracts_into_extract_to(tmp_path):
    tar_path = tmp_path / "src.tar.gz"
    with tarfile.open(tar_path, "w:gz") as tf:
        for name, data in MEMBERS.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    root = tmp_path / "dfew"
    sha = hashlib.sha256(tar_path.read_bytes()).hexdigest()
    verify(_data_cfg(root, url=str(tar_path), path="downloads/src.tar.gz", sha256=sha, extract_to="sub"))
    _assert_extracted(root / "sub")


def test_zip_member_outside_the_target_is_refused(tmp_path):
    evil = tmp_path / "evil.zip"
    evil.write_bytes(_zip_bytes({"../escaped.txt": b"x"}))
    sha = hashlib.sha256(evil.read_bytes()).hexdigest()
    with pytest.raises(ValueError, match="outside"):
        verify(_data_cfg(tmp_path / "dfew", url=str(evil), path="evil.zip", sha256=sha))
    assert not (tmp_path / "escaped.txt").exists()


def test_unknown_source_key_is_an_error(tmp_path):
    with pytest.raises(KeyError, match="data.sources.clips: unknown keys"):
        verify(_data_cfg(tmp_path, sha265="typo"))


def test_demo_sources_record_the_generated_tree(tmp_path):
    from adatosk.data.demo import generate

    root = tmp_path / "demo"
    generate(root, {"subjects": 5, "clips_per_class": 2, "test_only_clips_per_class": 0, "raw_videos": 1})
    sources = OmegaConf.to_container(OmegaConf.load(Path(__file__).parents[1] / "params/data/demo.yaml").sources)
    receipt = tmp_path / "receipts/demo.json"
    before = sorted(root.rglob("*"))
    result = verify({"name": "demo", "root": str(root), "sources": sources}, receipt=receipt)
    files = [p for p in root.rglob("*") if p.is_file()]
    entry = result["sources"]["tree"]
    assert entry["files"] == len(files) and entry["size"] == sum(p.stat().st_size for p in files)
    assert json.loads(receipt.read_text())["sources"]["tree"]["listing_sha256"] == entry["listing_sha256"]
    assert sorted(root.rglob("*")) == before   # nothing written into the tree


def test_cli_reports_a_missing_source_without_a_traceback(tmp_path, capsys):
    from adatosk.cli import main

    code = main(["verify", f"data.root={tmp_path / 'nothing'}", f"--receipt={tmp_path / 'receipt.json'}"])
    assert code == 1
    message = capsys.readouterr().err
    assert "demo: source 'tree'" in message and "data.sources.tree.url" in message
    assert not (tmp_path / "receipt.json").exists()


def test_the_root_key_the_message_names_works_under_the_pipelines_params(tmp_path, capsys):
    """`adatosk verify --config params.yaml select.dataset=demo`: `data` is replaced by `datasets.demo`, so the
    message names `datasets.demo.root`; setting it verifies the tree, and the pin hint uses the same prefix."""
    from adatosk.cli import main
    from adatosk.data.demo import generate

    params = Path(__file__).parents[1] / "params.yaml"
    common = ["verify", f"--receipt={tmp_path / 'receipt.json'}", "--config", str(params), "select.dataset=demo"]
    assert main(common + [f"datasets.demo.root={tmp_path / 'nothing'}"]) == 1
    message = capsys.readouterr().err
    assert "datasets.demo.root=DIR" in message and "datasets.demo.sources.tree.url" in message
    generate(tmp_path / "mine", {"subjects": 5, "clips_per_class": 1, "test_only_clips_per_class": 0,
                                      "raw_videos": 0})
    # replaced by datasets.demo: ignored (that root pinned, not the checkout's generated/demo that `make demo` makes)
    assert main(common + [f"datasets.demo.root={tmp_path / 'nothing'}", f"data.root={tmp_path / 'mine'}"]) == 1
    capsys.readouterr()
    assert main(common + [f"datasets.demo.root={tmp_path / 'mine'}"]) == 0
    out = capsys.readouterr().out
    assert "to pin it: datasets.demo.sources.tree.files=" in out
    assert json.loads((tmp_path / "receipt.json").read_text())["root"] == str((tmp_path / "mine").resolve())
