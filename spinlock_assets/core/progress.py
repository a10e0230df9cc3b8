"""Progress of long loops over operators (generation, replay): tqdm's counts, rate and ETA.

On a terminal the bar redraws one line in place. Elsewhere (a Dagster run's log, a CI log file) carriage
returns would pile up into one unreadable line, so each refresh becomes a line of its own: every
``interval_s`` seconds through ``emit``, or every tenth of the work on a non-terminal stream.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TextIO

from tqdm import tqdm

__all__ = ["Progress"]

_LINE_FORMAT = "{desc} {n_fmt}/{total_fmt} ({rate_fmt}, ETA {remaining})"


class _Lines:
    """A file for tqdm that hands each refresh to ``emit`` as one line, once per count (closing the bar
    refreshes the last count again)."""

    def __init__(self, emit: Callable[[str], None]) -> None:
        self.emit, self.last_count = emit, ""

    def write(self, text: str) -> None:
        line = text.strip("\r\n ")
        count = line.split(" (")[0]
        nothing_done = count.rsplit(" ", 1)[-1].startswith("0/")
        if line and count != self.last_count and not nothing_done:
            self.last_count = count
            self.emit(line)

    def flush(self) -> None:
        pass


class Progress:
    """A ``progress(done, total)`` callback (what ``core.generation.roll_out`` and ``extract_families`` take)
    backed by one tqdm bar; :meth:`close` it (or use it as a context manager) once the loop ends."""

    def __init__(
        self,
        *,
        label: str = "operators",
        emit: Callable[[str], None] | None = None,
        stream: TextIO | None = None,
        interval_s: float = 5.0,
    ) -> None:
        self.label, self.emit, self.interval_s = label, emit, interval_s
        self.stream = sys.stderr if stream is None else stream
        self.bar: tqdm | None = None

    def _open(self, total: int) -> tqdm:
        if self.emit is not None:
            # delay: a loop shorter than the interval logs its final line only.
            options = dict(
                file=_Lines(self.emit),
                mininterval=self.interval_s,
                delay=self.interval_s,
                bar_format=_LINE_FORMAT,
            )
        elif self.stream.isatty():
            options = dict(file=self.stream, mininterval=0.1, dynamic_ncols=True)
        else:
            lines = _Lines(lambda line: self.stream.write(line + "\n"))
            options = dict(
                file=lines,
                mininterval=0,
                delay=1e-9,
                miniters=max(1, -(-total // 10)),
                bar_format=_LINE_FORMAT,
            )
        return tqdm(total=total, desc=self.label, unit="op", **options)

    def __call__(self, done: int, total: int) -> None:
        if self.bar is None:
            self.bar = self._open(total)
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.refresh()  # the final count, even when the loop ended within the delay
            self.bar.close()
            self.bar = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
