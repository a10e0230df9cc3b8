"""Derived feature families by replay: one pass over a shard's operators feeds every selected family.

Per operator: rebuild it once; replay its rollout once if any family needs trajectories (and check
the replay against the stored digests, so features of a wrong trajectory are never produced); hand
the same inputs to every family.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from .features.family import FeatureFamily, Needs, OperatorInputs
from .record import OperatorRecord
from .verification import Verification, classify

__all__ = ["Extraction", "ReplayMismatchError", "extract_families", "operator_inputs"]


class ReplayMismatchError(RuntimeError):
    """Replayed trajectories do not match the stored digests; no features were produced."""


@dataclass
class Extraction:
    """Per family, one result dict per operator (in record order); the replay verifications; and how
    many rollouts ran (one per operator at most, whatever the number of families)."""

    results: dict[str, list[dict[str, np.ndarray]]]
    verifications: list[Verification] = field(default_factory=list)
    rollouts: int = 0


def operator_inputs(
    record: OperatorRecord, operator: object | None, trajectories: np.ndarray | None
) -> OperatorInputs:
    """What a family is given for ``record``: generation and verification build it here alike, so a
    recomputed feature sees exactly the inputs the stored one was computed from (the stored base series,
    the replayed trajectories as a tensor, the rebuilt operator's step)."""
    import torch

    from .operator import OperatorStep

    return OperatorInputs(
        initial_condition=record.initial_condition,
        base_series=record.base_series,
        trajectories=None if trajectories is None else torch.from_numpy(trajectories),
        step=OperatorStep(operator) if operator is not None else None,
        probe_seed=record.seeds.probe_seed,
    )


def extract_families(
    records: Sequence[OperatorRecord],
    families: Sequence[FeatureFamily],
    *,
    build_operator: Callable[[OperatorRecord], object],
    device: str = "cpu",
    same_fingerprint: bool = True,
    progress: Callable[[int, int], None] | None = None,
) -> Extraction:
    """Compute ``families`` for ``records`` (operators built by ``build_operator`` on ``device``); raises
    :class:`ReplayMismatchError` naming the operators whose replay is not exact (or, under another
    fingerprint, not within tolerance)."""
    from .generation import roll_out

    needs = {family.needs for family in families}
    extraction = Extraction(results={family.name: [] for family in families})
    built: dict[int, object] = {}  # operators of the replays in flight, by operator index

    def build_and_keep(record: OperatorRecord) -> object:
        built[record.index] = operator = build_operator(record)
        return operator

    # Replays run several operators at once (``roll_out``); families are computed here, in record order.
    replays = (
        roll_out(list(records), device=device, keep_trajectories=True, build_operator=build_and_keep)
        if Needs.ROLLOUT in needs
        else None
    )
    for done, record in enumerate(records, start=1):
        operator = build_operator(record) if Needs.OPERATOR in needs and replays is None else None
        trajectories = None
        if replays is not None:
            replayed = next(replays)
            operator = built.pop(record.index)
            extraction.rollouts += 1
            extraction.verifications.append(classify(record, replayed, same_fingerprint=same_fingerprint))
            trajectories = replayed.trajectories
        inputs = operator_inputs(record, operator, trajectories)
        for family in families:
            extraction.results[family.name].append(family.compute(inputs))
        if progress is not None:
            progress(done, len(records))
    failed = [v for v in extraction.verifications if not v.ok]
    if failed:
        raise ReplayMismatchError(
            f"replay does not reproduce the stored rollouts of operators "
            f"{[v.operator_index for v in failed]} "
            f"({sorted({v.status for v in failed})}); no features were stored"
        )
    return extraction
