"""Atomic writes, hashing and run-directory locks: an artefact is either complete on disk or absent, never
half-written, and two processes never write one run directory at the same time."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from adatosk.errors import AdatoskError

# The temporary files of atomic_path: ".<name>.<8 random characters of mkstemp>.tmp" (.dvcignore holds ".*.tmp").
TEMPORARY_NAME = re.compile(r"\..+\.[a-z0-9_]{8}\.tmp")


def file_mode() -> int:
    """The mode ``open()`` gives a new file: 0666 less the process's umask (mkstemp's files are 0600)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            umask = next(int(line.split()[1], 8) for line in status if line.startswith("Umask:"))
    except (OSError, StopIteration, ValueError):  # not Linux: read the umask by setting it (not thread-safe)
        umask = os.umask(0o022)
        os.umask(umask)
    return 0o666 & ~umask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    The temporary file lives in the destination directory so that the final ``os.replace`` is atomic on POSIX
    file systems; it has the mode of a file created by ``open`` (umask respected). On any exception the temporary
    file is removed and ``path`` is left as it was; an ``OSError`` without a file name (a full disk, a read-only
    directory) is raised again naming ``path``.
    """
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        tmp = Path(tmp_name)
        yield tmp
        if tmp.is_file():  # the writer may have made the file anew (safetensors does, 0600 too)
            os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    except OSError as error:
        named = None if error.filename is None else Path(os.fsdecode(error.filename))
        if named is not None and not (named.parent == path.parent and TEMPORARY_NAME.fullmatch(named.name)):
            raise  # it names another file, e.g. the directory that cannot be made
        raise OSError(error.errno, error.strerror or str(error), str(path)) from error
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)


def remove_stale_temporaries(directory: str | os.PathLike[str]) -> list[Path]:
    """Delete the temporary files that :func:`atomic_path` left under ``directory`` when its process was killed;
    return them. Call it only where no other process writes (a stage's own output, under its lock)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    stale = [p for p in directory.rglob(".*.tmp") if p.is_file() and TEMPORARY_NAME.fullmatch(p.name)]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


@contextlib.contextmanager
def locked_directory(directory: str | os.PathLike[str], what: str) -> Iterator[Path]:
    """Hold an exclusive lock on ``directory`` (created if needed) for the block, or fail at once naming it.

    The lock is ``flock`` on the directory itself: no lock file is left behind, and the kernel releases it when
    the process exits, however it dies (``kill -9`` leaves no stale lock)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            if error.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            raise AdatoskError(f"locked: another adatosk process is working in this directory, and {what} cannot "
                               "run beside it; wait for it to finish or stop it", directory) from None
        yield directory
    finally:
        os.close(fd)  # releases the lock


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | os.PathLike[str], obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):  # numpy arrays/scalars, torch tensors
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def sha256_file(path: str | os.PathLike[str], chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()
