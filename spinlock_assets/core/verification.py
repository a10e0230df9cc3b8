"""Replay: rebuild a stored operator and run its rollout again, through the same engine as generation.

Verification compares the replayed digests with the stored ones:

- ``exact``: every realization's digest matches, bit for bit.
- ``mismatch``: a digest differs although the execution fingerprint is the one the operator was
  generated under. That is a reproducibility bug and is always an error.
- ``within_tolerance``: the fingerprint differs (another CPU capability, GPU, torch version), digests
  differ, but the replayed base series equals the stored one within ``RTOL``/``ATOL`` (NaN where stored
  NaN). Platform changes legitimately move the last bits.
- ``diverged``: the fingerprint differs and the series are further apart than that (chaotic operators
  amplify one ulp to O(1)). Never reported as a pass.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .fingerprint import execution_fingerprint, fingerprint_id
from .record import OperatorRecord
from .rollout import RolloutRecord

__all__ = [
    "ATOL",
    "RTOL",
    "Verification",
    "classify",
    "replay",
    "replay_rollout",
    "rotating_sample",
    "same_fingerprint",
    "verify",
]

RTOL = 1e-4
ATOL = 1e-6


def replay_rollout(
    record: OperatorRecord, *, device: str = "cpu", keep_trajectories: bool = False
) -> RolloutRecord:
    """The operator's rollout record (base series, digests, and trajectories if asked)."""
    from .generation import roll_out

    return next(roll_out([record], device=device, keep_trajectories=keep_trajectories))


def replay(record: OperatorRecord, *, device: str = "cpu") -> np.ndarray:
    """The operator's trajectories ``[M, T, C, H, W]`` float32 (state 0 is the initial condition)."""
    return replay_rollout(record, device=device, keep_trajectories=True).trajectories


@dataclass(frozen=True)
class Verification:
    """The outcome of replaying one operator. ``mismatched_realizations`` lists realizations whose
    digest differs; ``max_relative_error`` compares base series (0.0 when exact)."""

    operator_index: int
    status: str
    mismatched_realizations: tuple[int, ...] = ()
    max_relative_error: float = 0.0
    replayed_digests: tuple[str, ...] = field(default=(), repr=False)

    @property
    def ok(self) -> bool:
        return self.status in ("exact", "within_tolerance")


def classify(record: OperatorRecord, replayed: RolloutRecord, *, same_fingerprint: bool) -> Verification:
    """Compare a replayed rollout with what was stored for ``record`` (see the module docstring)."""
    if record.digests is None:
        raise ValueError(f"operator {record.index} has no stored digests to verify against")
    mismatched = tuple(
        m for m, (a, b) in enumerate(zip(record.digests, replayed.digests, strict=True)) if a != b
    )
    if not mismatched:
        return Verification(record.index, "exact", replayed_digests=tuple(replayed.digests))
    error = _max_relative_error(record.base_series, replayed.base_series)
    if same_fingerprint:
        status = "mismatch"  # same numerics, other bits: a reproducibility bug
    elif error <= 1.0:
        status = "within_tolerance"
    else:
        status = "diverged"
    return Verification(record.index, status, mismatched, error, tuple(replayed.digests))


def _max_relative_error(stored: np.ndarray | None, replayed: np.ndarray) -> float:
    """max |a-b| / (ATOL + RTOL*|b|) over the base series, so <= 1 means within tolerance; inf if the
    NaN patterns differ or nothing is stored."""
    if stored is None:
        return float("inf")
    stored_nan, replayed_nan = np.isnan(stored), np.isnan(replayed)
    if not np.array_equal(stored_nan, replayed_nan):
        return float("inf")
    finite = ~stored_nan
    a, b = stored[finite].astype(np.float64), replayed[finite].astype(np.float64)
    if a.size == 0:
        return 0.0
    return float(np.max(np.abs(a - b) / (ATOL + RTOL * np.abs(a))))


def same_fingerprint(stored: dict | None, current: dict) -> bool:
    """Whether an operator generated under ``stored`` replays under the same numerics now (an operator
    with no recorded fingerprint is assumed to be, so a mismatch is then an error, never excused)."""
    return stored is None or fingerprint_id(stored) == fingerprint_id(current)


def verify(record: OperatorRecord, *, device: str = "cpu") -> Verification:
    """Replay ``record`` and classify the result against its stored digests and fingerprint."""
    same = same_fingerprint(record.fingerprint, execution_fingerprint(device))
    return classify(record, replay_rollout(record, device=device), same_fingerprint=same)


def rotating_sample(start: int, stop: int, size: int, rotation: int) -> list[int]:
    """Operators of ``[start, stop)`` verified at tick ``rotation``: window ``rotation`` of ``size``
    consecutive operators (wrapping). Ticks 0..ceil(n/size)-1 cover every operator at least once."""
    n = stop - start
    if size < 1:
        raise ValueError(f"sample size must be >= 1, got {size}")
    if size >= n:
        return list(range(start, stop))
    windows = -(-n // size)
    first = (rotation % windows) * size
    return sorted({start + (first + k) % n for k in range(size)})
