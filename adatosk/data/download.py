"""The ``adatosk verify`` stage: fetch or copy a dataset's licensed sources, verify them, extract archives.

The benchmarks cannot be downloaded without a signed licence, so nothing is fetched from a default address: every
``url`` in ``data.sources`` is null until the user sets it (or puts the data at its ``path`` under ``data.root``).
One entry per source, keyed by name (``data.sources.<name>``):

    kind         archive | folder
    path         where it lives under data.root (archive: the file; folder: the directory)
    url          where to get it if it is not at ``path`` yet: a local path, file://, http(s):// or any fsspec URL
                 (s3://, gs://, ... with the matching fsspec back end installed); null: it must already be there
    sha256       archive: expected checksum (null: computed and recorded only)
    files, size  folder: expected number of files and total bytes, hidden entries excluded (null: recorded only)
    extract_to   archive: extract (zip or tar) into this directory under data.root (null: do not extract)
    required     false: an absent source is recorded as absent instead of failing. The dataset's own face frames
                 (the source at ``data.frames_dir``) are required only when read (``data.face_crop.precropped``),
                 its raw videos (at ``data.face_crop.videos_dir``) only when cropped (``precropped: false``)
    licence_url  where to request the licence (named in the error when the source is missing)

Downloads resume: bytes go to ``<path>.part``, continued with an HTTP Range request (or a seek) on the next run, and
the file reaches ``<path>`` only after its checksum matched; a mismatching download is deleted, never kept at
``<path>``. A ``.part`` is continued only from the URL (and for the checksum) it was started for, as
``<path>.part.json`` records; any other is discarded, never spliced. Nothing is written outside ``data.root``: a
fetched source's ``path`` and an ``extract_to`` must be relative, without ``..``.

A small JSON receipt of what was verified is written atomically to ``results/verify/<data.name>.json`` (or
``--receipt``), never into the dataset's tree; an archive whose size and mtime are unchanged since the receipt is not
hashed again.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import http.client
import io
import json
import os
import shutil
import sys
import tarfile
import time
import urllib.error
import urllib.request
import zipfile
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path, PurePosixPath
from typing import IO, Any

from adatosk.errors import AdatoskError
from adatosk.io import sha256_file, write_json_atomic

CHUNK = 1 << 20
RECEIPT = "results/verify/{name}.json"   # relative to the working directory, like manifests/ and cache/
KINDS = ("archive", "folder")


class SourceMissingError(FileNotFoundError):
    """A source is neither at its path nor fetchable from its url; the message says how to get it."""


class SourceUnreachable(OSError):
    """A url that cannot be opened (no such file, HTTP error, unknown protocol, network down)."""


class DownloadInterrupted(RuntimeError):
    """A transfer broke off; what arrived is kept in the ``.part`` file and the next run continues it."""


class ChecksumError(ValueError):
    """A source's checksum, file count or size differs from the expected one; the message names both."""


@dataclass(frozen=True)
class Source:
    name: str
    kind: str
    path: str
    url: str | None = None
    sha256: str | None = None
    files: int | None = None
    size: int | None = None
    extract_to: str | None = None
    required: bool = True
    licence_url: str | None = None

    @classmethod
    def from_config(cls, name: str, entry: Mapping[str, Any]) -> Source:
        known = {f.name for f in fields(cls)} - {"name"}
        unknown = sorted(set(entry) - known)
        if unknown:
            raise KeyError(f"data.sources.{name}: unknown keys {unknown}; known: {sorted(known)}")
        source = cls(name=name, **entry)
        if source.kind not in KINDS:
            raise ValueError(f"data.sources.{name}.kind is {source.kind!r}; expected one of {KINDS}")
        if not source.path:
            raise ValueError(f"data.sources.{name}.path is not set (where the {source.kind} lives under data.root)")
        if source.kind == "folder" and (source.sha256 or source.extract_to):
            raise ValueError(f"data.sources.{name}: a folder is checked by files and size; sha256 and extract_to "
                             "apply to archives")
        if source.kind == "archive" and (source.files is not None or source.size is not None):
            raise ValueError(f"data.sources.{name}: an archive is checked by sha256; files and size apply to folders")
        written = {"extract_to": source.extract_to, "path": source.path if source.url is not None else None}
        for key, value in written.items():
            if value is not None and _leaves_root(str(value)):
                raise ValueError(f"data.sources.{name}.{key} is {value!r}: verify writes there, and it must be a "
                                 "folder under data.root (relative, without '..')")
        return source


def _leaves_root(relative: str) -> bool:
    path = PurePosixPath(relative.replace("\\", "/"))
    return path.is_absolute() or ".." in path.parts or relative.startswith("~")


def _missing(dataset: str, source: Source, target: Path, why: str) -> SourceMissingError:
    licence = f"{dataset} is licensed: request it at {source.licence_url}. " if source.licence_url else ""
    return SourceMissingError(
        f"{dataset}: source '{source.name}' ({source.kind} {source.path}) is missing: {why}. {licence}"
        f"Put the {source.kind} at {target}, or point the dataset's root at your copy of {dataset} "
        f"(datasets.{dataset}.root=DIR in the pipeline's params.yaml, data.root=DIR for one command), or set "
        f"datasets.{dataset}.sources.{source.name}.url (data.sources.{source.name}.url for one command) "
        f"to the path or URL of {Path(source.path).name or target.name}"
    )


# --- fetching one file, resumable -----------------------------------------------------------------------------------

def local_path(url: str) -> Path | None:
    """The local file a ``file://`` URL or a plain path names; None for other schemes."""
    if url.startswith("file://"):
        return Path(urllib.request.url2pathname(url[len("file://"):]))
    return None if "://" in url else Path(url)


@contextlib.contextmanager
def open_at(url: str, offset: int) -> Iterator[tuple[IO[bytes], int, int | None]]:
    """Open ``url`` for reading from byte ``offset``: yield (stream, the offset it really starts at, total size).

    HTTP servers that ignore the Range header answer with the whole body: the offset is then 0. A local file
    shorter than ``offset`` restarts at 0 too.
    """
    path = local_path(url)
    if path is not None:
        if not path.is_file():
            raise SourceUnreachable(f"no file at {path}")
        total = path.stat().st_size
        offset = offset if offset <= total else 0
        with open(path, "rb") as stream:
            stream.seek(offset)
            yield stream, offset, total
    elif url.startswith(("http://", "https://")):
        request = urllib.request.Request(url, headers={"Range": f"bytes={offset}-"} if offset else {})
        try:
            response = urllib.request.urlopen(request, timeout=60)
        except urllib.error.HTTPError as error:
            if error.code != 416:  # 416: the range starts at the end, i.e. the .part is complete
                raise SourceUnreachable(f"HTTP {error.code} {error.reason}") from error
            yield io.BytesIO(), offset, offset
            return
        except (urllib.error.URLError, OSError) as error:
            raise SourceUnreachable(str(error)) from error
        with response:
            length = response.headers.get("Content-Length")
            if response.status != 206:
                offset = 0
            yield response, offset, offset + int(length) if length is not None else None
    else:
        import fsspec

        try:
            stream = fsspec.open(url, "rb").open()
        except (ValueError, OSError) as error:  # an unknown protocol, no such object
            raise SourceUnreachable(str(error)) from error
        with stream:
            total = getattr(stream, "size", None)
            offset = offset if total is None or offset <= total else 0
            stream.seek(offset)
            yield stream, offset, total


def _part_key(part: Path) -> Path:
    return part.with_name(part.name + ".json")


def _resumable(part: Path, url: str, expected_sha256: str | None) -> int:
    """The bytes of ``part`` to continue from: all of them if it was started from ``url`` for the same checksum,
    else none (a ``.part`` of another file is discarded, never spliced); records what the part is from."""
    key = {"url": url, "sha256": (expected_sha256 or "").lower() or None}
    try:
        same = json.loads(_part_key(part).read_text(encoding="utf-8")) == key
    except (OSError, ValueError):
        same = False
    if not same:
        part.unlink(missing_ok=True)
    write_json_atomic(_part_key(part), key)
    return part.stat().st_size if part.exists() else 0


def fetch_file(url: str, dest: Path, expected_sha256: str | None, what: str) -> str:
    """Copy or download ``url`` to ``dest`` through ``dest.part`` (continued if present); return its sha256.

    On a checksum mismatch the ``.part`` is deleted and :class:`ChecksumError` names the file and both hashes;
    ``dest`` itself is only ever written by the final rename.
    """
    from adatosk.progress import progress

    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    with open_at(url, _resumable(part, url, expected_sha256)) as (stream, offset, total):
        with open(part, "r+b" if offset else "wb") as out:
            if offset:  # the bytes already in the part: exactly ``offset`` of them
                for chunk in iter(lambda: out.read(CHUNK), b""):
                    digest.update(chunk)
            try:
                with progress(total=total, initial=offset, unit="B", unit_scale=True, desc=what, leave=False) as bar:
                    for chunk in iter(lambda: stream.read(CHUNK), b""):
                        out.write(chunk)
                        digest.update(chunk)
                        bar.update(len(chunk))
            except (OSError, http.client.HTTPException) as error:
                raise DownloadInterrupted(f"{what}: the transfer of {url} broke off after {out.tell():,} bytes "
                                          f"({error!r}); they are kept in {part}: run again to resume") from error
            if total is not None and out.tell() != total:
                raise DownloadInterrupted(f"{what}: {url} ended after {out.tell():,} of {total:,} bytes; they are "
                                          f"kept in {part}: run again to resume")
    got = digest.hexdigest()
    _part_key(part).unlink()
    if expected_sha256 and got != expected_sha256.lower():
        part.unlink()
        raise ChecksumError(f"{what}: checksum mismatch for {Path(dest).name} from {url}: expected sha256 "
                            f"{expected_sha256.lower()}, got {got}; the download was deleted ({part})")
    os.replace(part, dest)
    return got


# --- folders --------------------------------------------------------------------------------------------------------

def scan_folder(folder: Path) -> dict[str, Any]:
    """Files, bytes and a digest of the sorted (relative path, size) listing; hidden entries are skipped."""
    listing = []
    for parent, dirs, names in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in names:
            if not name.startswith("."):
                path = Path(parent, name)
                listing.append((path.relative_to(folder).as_posix(), path.stat().st_size))
    listing.sort()
    digest = hashlib.sha256("".join(f"{p}\t{s}\n" for p, s in listing).encode()).hexdigest()
    return {"files": len(listing), "size": sum(s for _, s in listing), "listing_sha256": digest}


def fetch_folder(url: str, dest: Path) -> None:
    """Copy a folder (local path, file:// or fsspec URL) to ``dest``; ``dest`` appears complete or not at all."""
    tmp = dest.parent / f".{dest.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        path = local_path(url)
        if path is not None:
            if not path.is_dir():
                raise SourceUnreachable(f"no folder at {path}")
            shutil.copytree(path, tmp)
        else:
            import fsspec

            try:
                fs, remote = fsspec.core.url_to_fs(url)
                found = fs.isdir(remote)
            except (ValueError, OSError) as error:  # an unknown protocol, no such bucket
                raise SourceUnreachable(str(error)) from error
            if not found:
                raise SourceUnreachable(f"no folder at {url}")
            fs.get(remote.rstrip("/") + "/", str(tmp), recursive=True)
        tmp.rename(dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# --- archives -------------------------------------------------------------------------------------------------------

def _merge_move(src: Path, dst: Path) -> None:
    """Move the entries of ``src`` into ``dst``, merging directories that exist in both."""
    dst.mkdir(parents=True, exist_ok=True)
    for entry in src.iterdir():
        target = dst / entry.name
        if entry.is_dir() and target.is_dir():
            _merge_move(entry, target)
        else:
            if target.is_dir():
                shutil.rmtree(target)
            os.replace(entry, target)


def extract_archive(archive: Path, target: Path) -> int:
    """Extract a zip or tar archive into ``target`` (merging with what is there); return the number of members.

    Members are first extracted into a hidden folder beside ``target`` and moved in only when all are out; members
    that would land outside the folder (absolute paths, ``..``, links out) are refused.
    """
    tmp = target.parent / f".{target.name or 'root'}.extract.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                members = zf.namelist()
                for name in members:
                    if not (tmp / name).resolve().is_relative_to(tmp.resolve()):
                        raise ValueError(f"{archive}: member {name!r} would be extracted outside {target}")
                zf.extractall(tmp)
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive) as tf:
                members = tf.getnames()
                tf.extractall(tmp, filter="data")
        else:
            raise ValueError(f"{archive} is neither a zip nor a tar archive")
        _merge_move(tmp, target)
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error, OSError) as error:
        if isinstance(error, OSError) and error.filename is not None:  # the disk, not the archive
            raise
        raise AdatoskError(f"corrupt archive, nothing extracted ({error})", archive) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return len(members)


# --- one source, and the whole stage --------------------------------------------------------------------------------

def _check_folder(dataset: str, source: Source, scan: dict[str, Any], where: Path) -> None:
    for key in ("files", "size"):
        expected = getattr(source, key)
        if expected is not None and int(expected) != scan[key]:
            raise ChecksumError(f"{dataset}: source '{source.name}' at {where}: expected {key}={expected}, found "
                                f"{scan[key]} (data.sources.{source.name}.{key})")


def verify_source(dataset: str, root: Path, source: Source, previous: Mapping[str, Any] | None) -> dict[str, Any]:
    """Fetch (if needed), verify and extract one source; return its receipt entry."""
    start = time.perf_counter()
    target = (root / source.path).resolve()
    what = f"{dataset}/{source.name}"
    entry: dict[str, Any] = {"spec": {k: v for k, v in asdict(source).items() if k != "name"}, "path": str(target)}
    present = target.is_file() if source.kind == "archive" else target.is_dir()
    if not present and source.url is None:
        if not source.required:
            return {**entry, "status": "absent (optional)"}
        raise _missing(dataset, source, target, f"there is no {source.kind} at {target} and "
                       f"data.sources.{source.name}.url is not set")
    if source.kind == "folder":
        if not present:
            try:
                fetch_folder(str(source.url), target)
            except (SourceUnreachable, ImportError) as error:  # ImportError: no fsspec back end for the protocol
                raise _missing(dataset, source, target, f"cannot copy it from {source.url} ({error})") from error
        scan = scan_folder(target)
        _check_folder(dataset, source, scan, target)
        entry.update(scan)
    else:
        stat = target.stat() if present else None
        unchanged = (previous is not None and stat is not None and previous.get("spec") == entry["spec"]
                     and previous.get("bytes") == stat.st_size and previous.get("mtime_ns") == stat.st_mtime_ns)
        if unchanged:
            digest = previous["sha256"]
        elif present:
            digest = sha256_file(target)
            if source.sha256 and digest != source.sha256.lower():
                raise ChecksumError(f"{what}: checksum mismatch for {target}: expected sha256 {source.sha256.lower()}"
                                    f", got {digest} (data.sources.{source.name}.sha256)")
        else:
            try:
                digest = fetch_file(str(source.url), target, source.sha256, what)
            except (SourceUnreachable, ImportError) as error:
                raise _missing(dataset, source, target, f"cannot fetch it from {source.url} ({error})") from error
        stat = target.stat()
        entry.update(sha256=digest, bytes=stat.st_size, mtime_ns=stat.st_mtime_ns)
        if source.extract_to is not None:
            into = root / source.extract_to
            if unchanged and previous.get("extracted_to") == str(into) and into.is_dir():
                entry.update(extracted_to=previous["extracted_to"], members=previous.get("members"))
            else:
                entry.update(extracted_to=str(into), members=extract_archive(target, into))
    pinned = [k for k in (("sha256",) if source.kind == "archive" else ("files", "size")) if getattr(source, k)]
    entry.update(status="verified" if pinned else "recorded (nothing pinned)",
                 seconds=round(time.perf_counter() - start, 2))
    return entry


def _same_folder(a: str | None, b: str | None) -> bool:
    return a is not None and b is not None and os.path.normpath(a) == os.path.normpath(b)


def as_needed(source: Source, data_cfg: Mapping[str, Any]) -> Source:
    """``source`` with ``required: false`` where the selected layout does not read it: the dataset's own face frames
    when the raw videos are cropped, the raw videos when the own frames are read."""
    from adatosk.data.manifest import is_precropped, own_frames_dir

    videos_dir = (data_cfg.get("face_crop") or {}).get("videos_dir")
    unused = videos_dir if is_precropped(data_cfg) else own_frames_dir(data_cfg)
    return replace(source, required=False) if _same_folder(source.path, unused) else source


def verify(data_cfg: Mapping[str, Any], receipt: str | os.PathLike[str] | None = None,
           force: bool = False) -> dict[str, Any]:
    """Verify every source of ``data_cfg`` (``cfg.data``) and write the receipt; return it."""
    dataset = str(data_cfg["name"])
    sources = [as_needed(Source.from_config(name, dict(entry)), data_cfg)
               for name, entry in dict(data_cfg.get("sources") or {}).items()]
    if not sources:
        raise ValueError(f"{dataset}: data.sources is empty: nothing to verify")
    root = Path(data_cfg["root"])
    receipt_path = Path(receipt) if receipt else Path(RECEIPT.format(name=dataset))
    previous: dict[str, Any] = {}
    if receipt_path.is_file() and not force:
        with contextlib.suppress(json.JSONDecodeError, KeyError):
            previous = json.loads(receipt_path.read_text(encoding="utf-8"))["sources"]
    result = {
        "dataset": dataset,
        "root": str(root.resolve()),
        "verified_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "sources": {s.name: verify_source(dataset, root, s, previous.get(s.name)) for s in sources},
    }
    write_json_atomic(receipt_path, result)
    return result


# --- the `adatosk verify` command -----------------------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    from adatosk.cli import add_config_arguments

    parser.add_argument("--receipt", default=None, metavar="FILE",
                        help=f"where to write the JSON receipt (default: {RECEIPT.format(name='{data.name}')})")
    parser.add_argument("--force", action="store_true", help="hash and extract again even if the receipt is current")
    add_config_arguments(parser)


def main(args: argparse.Namespace) -> int:
    from adatosk.config import load_config, to_container

    cfg = load_config(args.overrides, args.config)
    try:
        result = verify(to_container(cfg.data), receipt=args.receipt, force=args.force)
    except (SourceMissingError, ChecksumError, DownloadInterrupted) as error:
        print(f"adatosk verify: {error}", file=sys.stderr)
        return 1
    selected = (cfg.get("select") or {}).get("dataset")         # the pipeline's params.yaml: datasets.<name>
    prefix = f"datasets.{selected}" if selected else "data"
    for name, entry in result["sources"].items():
        spec = entry["spec"]
        if "sha256" in entry:
            facts = f"sha256 {entry['sha256']}, {entry['bytes']:,} bytes"
            hint = f"{prefix}.sources.{name}.sha256={entry['sha256']}"
        elif "files" in entry:
            facts = f"{entry['files']:,} files, {entry['size']:,} bytes"
            hint = f"{prefix}.sources.{name}.files={entry['files']} {prefix}.sources.{name}.size={entry['size']}"
        else:
            facts, hint = "", ""
        extracted = f"; extracted {entry['members']} members into {entry['extracted_to']}" \
            if entry.get("extracted_to") else ""
        print(f"{result['dataset']}/{name} ({spec['kind']} {entry['path']}): {entry['status']}"
              + (f": {facts}" if facts else "") + extracted)
        if entry["status"].startswith("recorded") and hint:
            print(f"  to pin it: {hint}")
    return 0
