"""The long-running half of the command line: replaying operators, with progress shown on stderr.

``Replayer`` replays stored operators on one device and verifies each against everything stored about
it (``core.verification.verify_operator``: digests, base series, features), adding the integrity
problems the reader finds in the files (``DatasetReader.check_operators``); ``ProgressBar`` is a
dependency-free bar. On a terminal the bar redraws one line
in place (``\\r[#####.....] 12/40 3.1 op/s ETA 9s``); when stderr is a file or a pipe (CI logs) carriage
returns would pile up into one unreadable line, so it prints a plain line per tenth of the work instead.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, TextIO

import numpy as np

from spinlock_assets.core.fingerprint import execution_fingerprint, fingerprint_id
from spinlock_assets.storage.errors import StorageError
from spinlock_assets.storage.layout import Problem
from spinlock_assets.storage.reader import DatasetReader

if TYPE_CHECKING:
    from spinlock_assets.core.rollout import RolloutRecord
    from spinlock_assets.core.verification import Verification

__all__ = ["ProgressBar", "Replayer"]

_WIDTH = 20


class ProgressBar:
    """Call :meth:`update` with the number of items done so far, then :meth:`close` once."""

    def __init__(
        self,
        total: int,
        *,
        label: str = "op",
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total, self.label, self.clock = total, label, clock
        self.stream = sys.stderr if stream is None else stream
        self.interactive = self.stream.isatty()
        self.started = clock()
        self.tenths_shown = 0
        self.drawn_width = 0  # of the line on screen; 0 when nothing was drawn

    def update(self, done: int) -> None:
        rate = done / max(self.clock() - self.started, 1e-9)
        eta = f"{(self.total - done) / rate:.0f}s" if rate > 0 else "?"
        counts = f"{done}/{self.total} {rate:.1f} {self.label}/s ETA {eta}"
        if self.interactive:
            filled = _WIDTH * done // max(self.total, 1)
            line = f"[{'#' * filled}{'.' * (_WIDTH - filled)}] {counts}"
            # Pad to the previous width: a shorter line (ETA 10s -> 9s) would leave the old tail visible.
            self.stream.write("\r" + line.ljust(self.drawn_width))
            self.drawn_width = max(self.drawn_width, len(line))
        else:
            tenths = 10 * done // max(self.total, 1)
            if tenths <= self.tenths_shown:
                return
            self.tenths_shown = tenths
            self.stream.write(f"{100 * done // max(self.total, 1)}% {counts}\n")
        self.stream.flush()

    def close(self) -> None:
        """End the redrawn line so that what is printed next starts on a line of its own."""
        if self.drawn_width:
            self.stream.write("\n")
            self.stream.flush()


class Replayer:
    """Replays operators on ``device`` and classifies each against what generation stored."""

    def __init__(self, device: str) -> None:
        import torch

        try:
            kind = torch.device(device).type
        except RuntimeError as exc:
            raise ValueError(f"--device {device!r}: {exc}") from exc
        if kind not in ("cpu", "cuda"):
            raise ValueError(f"--device {device!r}: expected cpu or cuda[:N]")
        if kind == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"--device {device!r}: CUDA is not available on this machine")
        self.device = device
        self.fingerprint = execution_fingerprint(device)
        self.fingerprint_id = fingerprint_id(self.fingerprint)

    def replay(
        self, reader: DatasetReader, index: int, problems: list[Problem], *, keep_trajectories: bool = False
    ) -> tuple[RolloutRecord | None, Verification]:
        """One rollout of operator ``index``, both returned and verified (replaying twice would double the
        cost). ``problems`` (the reader's integrity problems of this operator) make it ``tampered``: a
        replay of data other than what was recorded is never reported exact. An operator that cannot be
        read is ``tampered`` without a rollout."""
        from dataclasses import replace

        from spinlock_assets.core.verification import Verification, verify_operator

        try:
            record = reader.operator(index)
            features = reader.stored_features(index)
        except StorageError as exc:
            reasons = (*map(str, problems), " ".join(str(exc).split()))
            return None, Verification(index, "tampered", differences=reasons)
        rollout, result = verify_operator(
            record,
            device=self.device,
            current_fingerprint=self.fingerprint,
            stored_features=features,
            keep_trajectories=keep_trajectories,
        )
        if problems:
            result = replace(
                result, status="tampered", differences=(*map(str, problems), *result.differences)
            )
        return rollout, result

    def verify(
        self, reader: DatasetReader, indices: np.ndarray, problems: dict[int | None, list[Problem]]
    ) -> list[Verification]:
        """Replay and verify each of ``indices`` in order, with a progress bar on stderr."""
        results = []
        bar = ProgressBar(len(indices))
        try:
            for done, index in enumerate(indices.tolist(), start=1):
                results.append(self.replay(reader, index, problems.get(index, []))[1])
                bar.update(done)
        finally:  # an error message must not land at the end of the redrawn bar line
            bar.close()
        return results
