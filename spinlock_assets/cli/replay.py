"""The long-running half of the command line: replaying operators, with progress shown on stderr.

``Replayer`` replays stored operators on one device and classifies each replay against the stored
digests (``core.verification.classify``); ``check_shards`` refuses, before any work, operators whose
shard files are gone; ``ProgressBar`` is a dependency-free bar. On a terminal the bar redraws one line
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
from spinlock_assets.storage.errors import ShardMissingError
from spinlock_assets.storage.layout import GENERATION_ASSETS, format_shard_key
from spinlock_assets.storage.reader import DatasetReader
from spinlock_assets.storage.store import ShardStore

if TYPE_CHECKING:
    from spinlock_assets.core.record import OperatorRecord
    from spinlock_assets.core.rollout import RolloutRecord
    from spinlock_assets.core.verification import Verification

__all__ = ["ProgressBar", "Replayer", "check_shards"]

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


def check_shards(reader: DatasetReader, indices: np.ndarray) -> None:
    """Raise ``ShardMissingError`` unless every shard a replay of ``indices`` reads is listed in dataset.h5
    and still on disk: HDF5 reads the rows of a vanished shard file as fill values (NaN parameters, zero
    seeds), never as an error, and a shard generated after dataset.h5 was built is not mapped at all."""
    store, size = ShardStore(reader.path.parent), reader.spec.shard_size
    table = reader.file["/metadata/shards"][()]
    # A replay reads parameters and seeds, the initial condition, and the digests to compare with.
    for asset in GENERATION_ASSETS:
        readable = np.zeros(reader.n_operators, dtype=bool)
        for row in table[table["asset"] == asset.encode()]:
            if store.exists(asset, row["shard_key"].decode()):
                readable[row["operator_start"] : row["operator_stop"]] = True
        missing = indices[~readable[indices]]
        if missing.size:
            start = int(missing[0]) - int(missing[0]) % size
            more = f" (and {missing.size - 1} more of the chosen operators)" if missing.size > 1 else ""
            raise ShardMissingError(
                f"operator {missing[0]}{more}: shard {asset}/{format_shard_key(start, start + size)}.h5 "
                f"is missing under {store.root}; generate it and rebuild dataset.h5"
            )


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
        self, record: OperatorRecord, *, keep_trajectories: bool
    ) -> tuple[RolloutRecord, Verification]:
        """One rollout, both returned and classified (replaying twice would double the cost)."""
        from spinlock_assets.core.verification import classify, replay_rollout, same_fingerprint

        rollout = replay_rollout(record, device=self.device, keep_trajectories=keep_trajectories)
        same = same_fingerprint(record.fingerprint, self.fingerprint)
        return rollout, classify(record, rollout, same_fingerprint=same)

    def verify(self, reader: DatasetReader, indices: np.ndarray) -> list[Verification]:
        """Replay and classify each of ``indices`` in order, with a progress bar on stderr."""
        results = []
        bar = ProgressBar(len(indices))
        try:
            for done, index in enumerate(indices, start=1):
                results.append(self.replay(reader.operator(int(index)), keep_trajectories=False)[1])
                bar.update(done)
        finally:  # an error message must not land at the end of the redrawn bar line
            bar.close()
        return results
