"""Progress bars for terminals and for logs: every progress bar of the package is made by :func:`progress`; and
:func:`machine_load`, the line under which a benchmark table says what the machine was doing, and
:func:`available_cores`, how many processes a parallel stage starts.

On a terminal it is an ordinary tqdm bar, redrawn in place with ``\\r``. Under DVC, Snakemake or SLURM, stderr is a
log file: a bar redrawn many times a second would fill it with ``\\r``-joined copies of itself. There the bar prints
one plain line (ASCII, no ``\\r``) at most every ``log_interval`` seconds, and its last state when it closes.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from typing import IO, Any

from tqdm import tqdm

LOG_INTERVAL = 60.0     # seconds between two lines of a bar written to a log


class _Lines:
    """A text stream for tqdm that turns each redraw into one line and drops the erasing redraws."""

    def __init__(self, stream: IO[str]):
        self.stream = stream

    def write(self, text: str) -> None:
        line = text.replace("\r", "").strip()
        if line:
            self.stream.write(line + "\n")

    def flush(self) -> None:
        self.stream.flush()


class _LogBar(tqdm):
    """A bar for logs: a new postfix or description waits for the bar's next line (tqdm would print one at once, on
    every training step that sets the loss)."""

    def set_postfix(self, ordered_dict: Any = None, refresh: bool = True, **kwargs: Any) -> None:
        super().set_postfix(ordered_dict, refresh=False, **kwargs)

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        super().set_postfix_str(s, refresh=False)

    def set_description(self, desc: str | None = None, refresh: bool = True) -> None:
        super().set_description(desc, refresh=False)

    def set_description_str(self, desc: str | None = None, refresh: bool = True) -> None:
        super().set_description_str(desc, refresh=False)


def progress(iterable: Iterable[Any] | None = None, log_interval: float = LOG_INTERVAL, **kwargs: Any) -> tqdm:
    """``tqdm(iterable, **kwargs)`` on a terminal; line-per-``log_interval`` output when the stream is not one."""
    stream = kwargs.pop("file", None) or sys.stderr
    if stream.isatty():
        return tqdm(iterable, file=stream, **kwargs)
    kwargs.pop("dynamic_ncols", None)
    kwargs["mininterval"] = kwargs["maxinterval"] = kwargs["delay"] = max(kwargs.get("mininterval", 0.0), log_interval)
    return _LogBar(iterable, file=_Lines(stream), ascii=True, ncols=100, **kwargs)


def machine_load() -> str:
    """``"2 cores, load average 0.52, 1.34, 1.52"``: how busy the machine was while a benchmark ran."""
    return f"{os.cpu_count()} cores, load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def available_cores() -> int:
    """The cores this process may run on: its CPU affinity (what SLURM or ``taskset`` grants), not the machine's."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
