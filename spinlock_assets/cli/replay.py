"""The long-running half of the command line: replaying operators, with progress shown on stderr.

``Replayer`` replays stored operators on one device and classifies each replay against the stored
digests (``core.verification.classify``); ``check_shards`` refuses, before any work, operators whose
shard files are gone. Progress goes to stderr (``core.progress``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from spinlock_assets.core.fingerprint import execution_fingerprint, fingerprint_id
from spinlock_assets.core.progress import Progress
from spinlock_assets.core.shards import ShardRange
from spinlock_assets.storage.errors import ShardMissingError
from spinlock_assets.storage.layout import GENERATION_ASSETS
from spinlock_assets.storage.reader import DatasetReader
from spinlock_assets.storage.store import ShardStore

if TYPE_CHECKING:
    from spinlock_assets.core.record import OperatorRecord
    from spinlock_assets.core.rollout import RolloutRecord
    from spinlock_assets.core.verification import Verification

__all__ = ["Replayer", "check_shards"]

_WIDTH = 20


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
                f"operator {missing[0]}{more}: shard {asset}/{ShardRange(start, start + size).key}.h5 "
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
        # Closed before an error propagates, so its message does not land at the end of the redrawn bar.
        with Progress(label="replayed") as progress:
            for done, index in enumerate(indices, start=1):
                results.append(self.replay(reader.operator(int(index)), keep_trajectories=False)[1])
                progress(done, len(indices))
        return results
