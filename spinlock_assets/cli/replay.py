"""The long-running half of the command line: replaying operators, with progress shown on stderr.

``Replayer`` replays stored operators on one device and verifies each against everything stored about
it (``core.verification.verify_operator``: digests, base series, features), adding the integrity
problems the reader finds in the files (``DatasetReader.check_operators``). Progress goes to stderr
(``core.progress``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from spinlock_assets.core.fingerprint import execution_fingerprint, fingerprint_id
from spinlock_assets.core.progress import Progress
from spinlock_assets.storage.errors import StorageError
from spinlock_assets.storage.layout import Problem
from spinlock_assets.storage.reader import DatasetReader

if TYPE_CHECKING:
    from spinlock_assets.core.record import OperatorRecord
    from spinlock_assets.core.rollout import RolloutRecord
    from spinlock_assets.core.verification import StoredFeatures, Verification

__all__ = ["Replayer"]


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
        return self._verified(self._read(reader, index, problems), keep_trajectories=keep_trajectories)

    def verify(
        self, reader: DatasetReader, indices: np.ndarray, problems: dict[int | None, list[Problem]]
    ) -> list[Verification]:
        """Replay and verify each of ``indices``, in order, with a progress bar on stderr: operators are read
        here, one after another, and replayed several at once (``core.lanes.map_on_workers``, as
        ``verify_records`` does)."""
        from spinlock_assets.core.lanes import map_on_workers
        from spinlock_assets.core.rollout import operators_at_once

        reads = (self._read(reader, index, problems.get(index, [])) for index in indices.tolist())
        verified = map_on_workers(
            lambda read: self._verified(read)[1], reads, workers=operators_at_once(self.device, len(indices))
        )
        results = []
        # Closed before an error propagates, so its message does not land at the end of the redrawn bar.
        with Progress(label="replayed") as progress:
            for done, result in enumerate(verified, start=1):
                results.append(result)
                progress(done, len(indices))
        return results

    @staticmethod
    def _read(reader: DatasetReader, index: int, problems: list[Problem]) -> _Read:
        """What replaying operator ``index`` needs from the files, or its ``tampered`` verdict when it cannot
        be read."""
        from spinlock_assets.core.verification import Verification

        try:
            return _Read(reader.operator(index), reader.stored_features(index), problems)
        except StorageError as exc:
            reasons = (*map(str, problems), " ".join(str(exc).split()))
            return _Read(None, None, problems, Verification(index, "tampered", differences=reasons))

    def _verified(
        self, read: _Read, *, keep_trajectories: bool = False
    ) -> tuple[RolloutRecord | None, Verification]:
        from dataclasses import replace

        from spinlock_assets.core.verification import verify_operator

        if read.unreadable is not None:
            return None, read.unreadable
        rollout, result = verify_operator(
            read.record,
            device=self.device,
            current_fingerprint=self.fingerprint,
            stored_features=read.features,
            keep_trajectories=keep_trajectories,
        )
        if read.problems:
            result = replace(
                result, status="tampered", differences=(*map(str, read.problems), *result.differences)
            )
        return rollout, result


@dataclass(frozen=True)
class _Read:
    """One operator as read from the files: its record and stored features, the integrity problems found
    in its files, or the verdict of an operator that could not be read."""

    record: OperatorRecord | None
    features: StoredFeatures | None
    problems: list[Problem]
    unreadable: Verification | None = None
