"""The long-running half of the command line: replaying operators, with progress shown on stderr.

``Replayer`` replays stored operators on one device and verifies each against everything stored about
it (``core.verification.verify_operator``: digests, base series, features), adding the integrity
problems the reader finds in the files (``DatasetReader.check_operators``). Progress goes to stderr
(``core.progress``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from spinlock_assets.core.fingerprint import execution_fingerprint, fingerprint_id
from spinlock_assets.core.progress import Progress
from spinlock_assets.storage.errors import StorageError
from spinlock_assets.storage.layout import Problem
from spinlock_assets.storage.reader import DatasetReader

if TYPE_CHECKING:
    from spinlock_assets.core.rollout import RolloutRecord
    from spinlock_assets.core.verification import Verification

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
        # Closed before an error propagates, so its message does not land at the end of the redrawn bar.
        with Progress(label="replayed") as progress:
            for done, index in enumerate(indices.tolist(), start=1):
                results.append(self.replay(reader, index, problems.get(index, []))[1])
                progress(done, len(indices))
        return results
