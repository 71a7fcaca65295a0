"""adatosk.progress: a live bar on a terminal; in a log (DVC, Snakemake, SLURM), plain lines at most every interval."""

import io
import time

from adatosk.progress import progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_gets_the_redrawn_bar():
    stream = Terminal()
    with progress(total=50, desc="epoch 1/1", file=stream, mininterval=0) as bar:
        for _ in range(50):
            bar.update(1)
    assert stream.getvalue().count("\r") >= 50 and "\n" not in stream.getvalue().rstrip("\n")


def test_a_log_gets_one_plain_line_per_interval_and_no_carriage_returns():
    stream = io.StringIO()
    with progress(total=60, desc="face-crop", unit="clip", file=stream, log_interval=0.05) as bar:
        for _ in range(60):
            bar.update(1)
            time.sleep(0.005)                       # 0.3 s in all: about 6 lines, never one per update
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue() and 2 <= len(lines) <= 12
    assert all(line.startswith("face-crop:") for line in lines) and "60/60" in lines[-1]
    assert all(line.isascii() for line in lines)


def test_a_short_loop_writes_nothing_to_a_log():
    stream = io.StringIO()
    bar = progress(range(1000), desc="evaluate", file=stream, dynamic_ncols=True, leave=False)
    assert list(bar) == list(range(1000))
    assert stream.getvalue() == ""                  # under the interval: the command's own summary line suffices
