"""One error style for every command: ``adatosk <command>: <file>: <what is wrong>`` on one line, non-zero exit.

Code that finds bad input raises :class:`AdatoskError` (or a subclass) naming the file and what is wrong; the CLI
(:func:`adatosk.cli.main`) prints it as one line and exits with its ``exit_code``. Other exceptions are reported
the same way, with their type, and the traceback is shown only with ``--debug`` (or ``ADATOSK_DEBUG=1``).
"""

from __future__ import annotations

import os


class AdatoskError(Exception):
    """A failure the user can act on. ``str(error)`` is ``"<path>: <what>"`` (just ``what`` without a path)."""

    exit_code = 1

    def __init__(self, what: str, path: str | os.PathLike[str] | None = None, *, exit_code: int | None = None) -> None:
        self.what, self.path = what, None if path is None else os.fspath(path)
        if exit_code is not None:
            self.exit_code = exit_code
        super().__init__(what if self.path is None else f"{self.path}: {what}")


class ConfigError(AdatoskError):
    """The run configuration is invalid (unknown key, wrong type, out of range): nothing has been touched yet."""

    exit_code = 2


def describe(error: BaseException) -> str:
    """The one-line message for any exception: ``AdatoskError`` as it is, ``OSError`` as ``<file>: <reason>``,
    anything else as ``<Type>: <message>``."""
    if isinstance(error, AdatoskError):
        return str(error)
    if isinstance(error, OSError) and error.filename is not None:
        reason = error.strerror or str(error)
        target = f" -> {error.filename2}" if error.filename2 is not None else ""
        return f"{error.filename}{target}: {reason}"
    text = first_line(error)
    return text if text == type(error).__name__ else f"{type(error).__name__}: {text}"


def first_line(error: BaseException) -> str:
    """The first line of an exception's message (its type's name when it has none)."""
    return (str(error).strip().splitlines() or [type(error).__name__])[0]
