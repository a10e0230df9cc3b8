"""Replay: rebuild a stored operator, run its rollout again through the same engine as generation, and
compare everything stored about it with what the replay gives.

Verification compares the replayed digests with the stored ones, then the stored base series, its
summary and every stored feature family with the values recomputed from the replay:

- ``exact``: every realization's digest matches bit for bit, and so does every stored value recomputed
  from the replay.
- ``mismatch``: a digest differs although the execution fingerprint is the one the operator was
  generated under. That is a reproducibility bug and is always an error.
- ``within_tolerance``: the fingerprint differs (another CPU capability, GPU, torch version), digests
  differ, but the replayed base series equals the stored one within ``RTOL``/``ATOL`` (NaN where stored
  NaN). Platform changes legitimately move the last bits. Callers report the changed fingerprint.
- ``diverged``: the fingerprint differs and the series are further apart than that (chaotic operators
  amplify one ulp to O(1)). Never reported as a pass.
- ``tampered``: a combination no change of environment can produce, so the stored data was edited:
  digests that differ while the base series is identical bit for bit (a forged digest, typically with an
  edited fingerprint), or a stored value (series, summary, feature) that differs from the replay's
  although every digest matches.
- ``unverified``: the replay matches, but a stored feature family cannot be recomputed here (its plugin
  is not loaded, or it is registered at another version): not a pass either.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from .fingerprint import execution_fingerprint, fingerprint_id
from .record import OperatorRecord
from .rollout import RolloutRecord

__all__ = [
    "ATOL",
    "RTOL",
    "STATUSES",
    "StoredFamily",
    "StoredFeatures",
    "Verification",
    "classify",
    "compare_features",
    "replay",
    "replay_rollout",
    "rotating_sample",
    "same_fingerprint",
    "unflagged_nonfinite_rows",
    "verify",
    "verify_operator",
    "verify_records",
]

RTOL = 1e-4
ATOL = 1e-6
STATUSES = ("exact", "within_tolerance", "mismatch", "diverged", "tampered", "unverified")


@dataclass(frozen=True)
class StoredFamily:
    """What a dataset stores of one family for one operator: its version and arrays (no operator axis)."""

    version: str
    arrays: Mapping[str, np.ndarray]


StoredFeatures = Mapping[str, StoredFamily]  # by family name


def replay_rollout(
    record: OperatorRecord,
    *,
    device: str = "cpu",
    keep_trajectories: bool = False,
    build_operator: Callable[[OperatorRecord], Any] | None = None,
) -> RolloutRecord:
    """The operator's rollout record (base series, digests, and trajectories if asked)."""
    from .generation import roll_out

    rollouts = roll_out(
        [record], device=device, keep_trajectories=keep_trajectories, build_operator=build_operator
    )
    return next(rollouts)


def replay(record: OperatorRecord, *, device: str = "cpu") -> np.ndarray:
    """The operator's trajectories ``[M, T, C, H, W]`` float32 (state 0 is the initial condition)."""
    return replay_rollout(record, device=device, keep_trajectories=True).trajectories


@dataclass(frozen=True)
class Verification:
    """The outcome of replaying one operator. ``mismatched_realizations`` lists realizations whose
    digest differs; ``max_relative_error`` compares base series (0.0 when exact); ``differences`` names
    every stored value that the replay does not reproduce (why a result is ``tampered``)."""

    operator_index: int
    status: str
    mismatched_realizations: tuple[int, ...] = ()
    max_relative_error: float = 0.0
    replayed_digests: tuple[str, ...] = field(default=(), repr=False)
    differences: tuple[str, ...] = ()
    same_fingerprint: bool = True

    @property
    def ok(self) -> bool:
        """Whether the stored data can be used as it is (exact, or within tolerance on other numerics)."""
        return self.status in ("exact", "within_tolerance")

    @property
    def exact(self) -> bool:
        return self.status == "exact"


def classify(record: OperatorRecord, replayed: RolloutRecord, *, same_fingerprint: bool) -> Verification:
    """Compare a replayed rollout with what was stored for ``record`` (see the module docstring)."""
    if record.digests is None:
        raise ValueError(f"operator {record.index} has no stored digests to verify against")
    mismatched = tuple(
        m for m, (a, b) in enumerate(zip(record.digests, replayed.digests, strict=True)) if a != b
    )
    digests = tuple(replayed.digests)
    stored_series = record.base_series
    identical = stored_series is not None and _bit_equal(stored_series, replayed.base_series)
    error = 0.0 if identical else _max_relative_error(stored_series, replayed.base_series)
    common = dict(replayed_digests=digests, same_fingerprint=same_fingerprint)
    if not mismatched:
        if stored_series is None:  # nothing but the digests to compare
            return Verification(record.index, "exact", **common)
        # Identical states give identical series on the same numerics; elsewhere the series computation may
        # move the last bits, never further than the tolerance.
        if identical or (not same_fingerprint and error <= 1.0):
            return Verification(record.index, "exact", max_relative_error=error, **common)
        what = "the stored base series differs from the replay's although every digest matches"
        return Verification(record.index, "tampered", (), error, differences=(what,), **common)
    if identical:
        what = "digests differ while the stored base series equals the replay's bit for bit (a forged digest)"
        return Verification(record.index, "tampered", mismatched, 0.0, differences=(what,), **common)
    if same_fingerprint:
        status = "mismatch"  # same numerics, other bits: a reproducibility bug
    elif error <= 1.0:
        status = "within_tolerance"
    else:
        status = "diverged"
    return Verification(record.index, status, mismatched, error, **common)


def _bit_equal(a: np.ndarray, b: np.ndarray) -> bool:
    """Same shape and bytes (NaN payloads included): what a bit-exact replay reproduces."""
    a, b = np.asarray(a), np.asarray(b)
    return a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()


def _max_relative_error(stored: np.ndarray | None, replayed: np.ndarray) -> float:
    """max |a-b| / (ATOL + RTOL*|b|) over two arrays, so <= 1 means within tolerance; inf if the
    NaN patterns or shapes differ or nothing is stored."""
    if stored is None or np.shape(stored) != np.shape(replayed):
        return float("inf")
    stored_nan, replayed_nan = np.isnan(stored), np.isnan(replayed)
    if not np.array_equal(stored_nan, replayed_nan):
        return float("inf")
    finite = ~stored_nan
    a, b = stored[finite].astype(np.float64), replayed[finite].astype(np.float64)
    if a.size == 0:
        return 0.0
    with np.errstate(invalid="ignore", over="ignore"):
        errors = np.abs(a - b) / (ATOL + RTOL * np.abs(a))
    return float(np.max(np.where(np.isnan(errors), np.inf, errors)))


def compare_features(
    record: OperatorRecord,
    replayed: RolloutRecord,
    stored: StoredFeatures,
    *,
    same_fingerprint: bool,
    build_operator: Callable[[OperatorRecord], Any] | None = None,
    device: str = "cpu",
) -> tuple[list[str], list[str]]:
    """``(differing, unverifiable)``: the stored values of ``record`` that the replay does not reproduce,
    and the families that cannot be recomputed here (not registered, or registered at another version
    than the stored one). ``stored`` holds the base summary and any families
    (``{"base": StoredFamily(...), "spectral": StoredFamily(...)}``); each is recomputed from the replayed
    trajectories, the stored base series or the rebuilt operator, as the family needs.

    Families are pure functions of one operator, so under the same fingerprint a stored value must equal
    the recomputed one bit for bit; under another it must agree to ``RTOL``/``ATOL``. ``replayed`` must
    hold trajectories when a family needs them.
    """
    from .extraction import operator_inputs
    from .features.base import summarize
    from .features.registry import FAMILIES

    def differs(a: np.ndarray, b: np.ndarray) -> bool:
        if same_fingerprint:
            return not _bit_equal(np.asarray(a, dtype=np.float32), np.asarray(b, dtype=np.float32))
        return _max_relative_error(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)) > 1.0

    differing, unverifiable = [], []
    base = stored.get("base")
    if (
        base is not None
        and "summary" in base.arrays
        and differs(base.arrays["summary"], summarize(replayed.base_series))
    ):
        differing.append("base/summary")
    build = build_operator or (lambda r: r.build_operator(device))
    operator = None
    for name, family_stored in sorted(stored.items()):
        if name == "base":
            continue
        family = FAMILIES.get(name)
        if family is None or family.version != family_stored.version:
            here = "not registered here" if family is None else f"registered here at version {family.version}"
            unverifiable.append(f"family {name} version {family_stored.version} ({here})")
            continue
        operator = build(record) if operator is None else operator
        recomputed = family.compute(operator_inputs(record, operator, replayed.trajectories))
        differing += [
            f"{name}/{array}"
            for array, value in sorted(family_stored.arrays.items())
            if array not in recomputed or differs(value, recomputed[array])
        ]
    return differing, unverifiable


def verify_operator(
    record: OperatorRecord,
    *,
    device: str = "cpu",
    current_fingerprint: Mapping[str, str] | None = None,
    stored_features: StoredFeatures | None = None,
    keep_trajectories: bool = False,
    build_operator: Callable[[OperatorRecord], Any] | None = None,
) -> tuple[RolloutRecord, Verification]:
    """Replay ``record`` once and verify it: digests and base series (:func:`classify`), then the stored
    features (:func:`compare_features`). Returns the rollout too, so a caller that needs the trajectories
    does not replay twice. A stored value the replay does not reproduce makes the result ``tampered``."""
    current = dict(current_fingerprint or execution_fingerprint(device))
    same = same_fingerprint(record.fingerprint, current)
    derived = {name for name in stored_features or {} if name != "base"}
    keep = keep_trajectories or bool(derived)
    if build_operator is None and derived:  # one build for the rollout and the families that need it
        built = record.build_operator(device)
        build_operator = lambda _record: built  # noqa: E731
    rollout = replay_rollout(record, device=device, keep_trajectories=keep, build_operator=build_operator)
    result = classify(record, rollout, same_fingerprint=same)
    if stored_features and result.status in ("exact", "within_tolerance"):
        differing, unverifiable = compare_features(
            record,
            rollout,
            stored_features,
            same_fingerprint=same,
            build_operator=build_operator,
            device=device,
        )
        what = tuple(f"stored {name} differs from the value recomputed from the replay" for name in differing)
        what += tuple(f"cannot recompute {name}" for name in unverifiable)
        if what:
            status = "tampered" if differing else "unverified"
            result = replace(result, status=status, differences=result.differences + what)
    if keep and not keep_trajectories:
        rollout = replace(rollout, trajectories=None)
    return rollout, result


def verify_records(
    records: Iterable[OperatorRecord],
    *,
    device: str = "cpu",
    stored_features: Callable[[OperatorRecord], StoredFeatures] | None = None,
    build_operator: Callable[[OperatorRecord], Any] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[Verification]:
    """:func:`verify_operator` for each record, in order: the one replay-and-classify loop of the package
    (the Dagster replay check, the command line and notebooks all go through it). ``stored_features``
    gives a record's stored feature values to recompute; ``progress(done, total)`` is called after each.
    Operators are verified several at once on the CPU, as ``generation.roll_out`` runs them (operators
    and stored features are fetched on the calling thread, in order)."""
    from .lanes import map_on_workers
    from .rollout import operators_at_once

    records = list(records)
    current = execution_fingerprint(device)
    build = build_operator or (lambda record: record.build_operator(device))

    def fetched(record: OperatorRecord) -> tuple[OperatorRecord, Any, StoredFeatures | None]:
        return record, build(record), stored_features(record) if stored_features is not None else None

    def verified(job: tuple[OperatorRecord, Any, StoredFeatures | None]) -> Verification:
        record, operator, features = job
        return verify_operator(
            record,
            device=device,
            current_fingerprint=current,
            stored_features=features,
            build_operator=lambda _record: operator,
        )[1]

    results = []
    jobs = map(fetched, records)
    for done, result in enumerate(
        map_on_workers(verified, jobs, workers=operators_at_once(device, len(records))), start=1
    ):
        results.append(result)
        if progress is not None:
            progress(done, len(records))
    return results


def same_fingerprint(stored: Mapping[str, str] | None, current: Mapping[str, str]) -> bool:
    """Whether an operator generated under ``stored`` replays under the same numerics now (an operator
    with no recorded fingerprint is assumed to be, so a mismatch is then an error, never excused)."""
    return stored is None or fingerprint_id(dict(stored)) == fingerprint_id(dict(current))


def verify(record: OperatorRecord, *, device: str = "cpu") -> Verification:
    """Replay ``record`` and classify the result against its stored digests and fingerprint."""
    return verify_operator(record, device=device)[1]


def unflagged_nonfinite_rows(series: np.ndarray, first_nonfinite_step: np.ndarray) -> list[int]:
    """Rows (operators) of a base series ``[n, M, T, C, 10]`` with a NaN before the step their realization
    is flagged divergent at (``first_nonfinite_step`` ``[n, M]``, -1 when never): NaN/Inf must be counted
    and flagged, never hidden or patched. The ``nonfinite_frac`` column itself is always a number."""
    from .features.base import SERIES_FIELDS

    values = series[..., : SERIES_FIELDS.index("nonfinite_frac")]
    has_nan = np.isnan(values).any(axis=(3, 4))  # [n, M, T]
    flagged_from = np.where(first_nonfinite_step < 0, series.shape[2], first_nonfinite_step)
    before_flag = np.arange(series.shape[2]) < flagged_from[..., None]
    return np.unique(np.nonzero(has_nan & before_flag)[0]).tolist()


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
