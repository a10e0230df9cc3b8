"""Generation of a range of operators: parameters, initial conditions, then the seeded rollouts.

Each function takes a global operator range ``[start, stop)``; operator i's data depends only on the
spec and i, never on the range it is generated in (tests prove it for shard sizes and orderings).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .parameters import OperatorHyperparameters, map_parameters, sobol_points
from .record import OperatorRecord
from .seeds import OperatorSeeds, operator_seeds
from .spec import DatasetSpec

if TYPE_CHECKING:
    from .operator import StochasticCNN
    from .rollout import RolloutRecord

__all__ = [
    "ParameterTable",
    "operator_parameters",
    "generate_initial_conditions",
    "operator_records",
    "roll_out",
]

# progress(done, total) is called after each operator.
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class ParameterTable:
    """Parameters of operators ``start..stop-1``: points ``[n, P]``, hyperparameters and seeds."""

    start: int
    stop: int
    params: np.ndarray
    hyperparameters: tuple[OperatorHyperparameters, ...]
    seeds: tuple[OperatorSeeds, ...]

    @property
    def operator_index(self) -> np.ndarray:
        return np.arange(self.start, self.stop, dtype=np.int64)

    def __len__(self) -> int:
        return self.stop - self.start


def operator_parameters(spec: DatasetSpec, start: int, stop: int) -> ParameterTable:
    """Sobol points, mapped hyperparameters and derived seeds of operators ``start..stop-1``."""
    if not 0 <= start < stop <= spec.n_operators:
        raise ValueError(f"operator range [{start}, {stop}) is outside the dataset's 0..{spec.n_operators}")
    params = sobol_points(spec.root_seed, start, stop)
    return ParameterTable(
        start=start,
        stop=stop,
        params=params,
        hyperparameters=tuple(map_parameters(point, spec.parameter_space) for point in params),
        seeds=tuple(operator_seeds(spec.root_seed, i, spec.realizations) for i in range(start, stop)),
    )


def generate_initial_conditions(spec: DatasetSpec, table: ParameterTable) -> np.ndarray:
    """``[n, C, H, W]`` float32: each operator's IC, drawn from its ``ic_seed`` in its IC family."""
    from .initial_conditions import initial_condition

    fields = np.empty((len(table), spec.channels, spec.height, spec.width), dtype=np.float32)
    for row, (hp, seeds) in enumerate(zip(table.hyperparameters, table.seeds, strict=True)):
        fields[row] = initial_condition(
            hp.ic_family,
            scale=hp.ic_scale,
            channels=spec.channels,
            height=spec.height,
            width=spec.width,
            seed=seeds.ic_seed,
        )
    return fields


def operator_records(
    spec: DatasetSpec,
    table: ParameterTable,
    fields: np.ndarray,
    *,
    digests: np.ndarray | None = None,
    base_series: np.ndarray | None = None,
    fingerprint: dict | None = None,
) -> list[OperatorRecord]:
    """Replayable records of a range; ``digests`` ``[n, M]`` and ``base_series`` ``[n, M, T, C, 10]`` are
    what generation stored, when replaying a stored range."""
    return [
        OperatorRecord(
            index=table.start + row,
            spec=spec,
            params=table.params[row],
            seeds=table.seeds[row],
            initial_condition=fields[row],
            digests=None if digests is None else tuple(str(d) for d in digests[row]),
            base_series=None if base_series is None else base_series[row],
            fingerprint=fingerprint,
        )
        for row in range(len(table))
    ]


def roll_out(
    records: list[OperatorRecord],
    *,
    device: str = "cpu",
    keep_trajectories: bool = False,
    progress: Progress | None = None,
    build_operator: Callable[[OperatorRecord], StochasticCNN] | None = None,
) -> Iterator[RolloutRecord]:
    """Yield each record's rollout record, in order. ``build_operator`` lets a caller supply operators
    (e.g. from a cache; it is called on the calling thread, in record order); by default each record
    rebuilds its own on ``device``.

    On the CPU, several operators roll out at once (:func:`.rollout.operators_at_once`), each on a worker
    with one intra-op thread (a lone one on the calling thread): a rollout's bits are the same on any thread
    count, so this changes only the time it takes."""
    from .fingerprint import configure_determinism
    from .lanes import map_on_workers
    from .rollout import operators_at_once, run_rollout

    configure_determinism(device)
    build = build_operator or (lambda record: record.build_operator(device))

    def rollout(job: tuple[OperatorRecord, StochasticCNN]) -> RolloutRecord:
        record, operator = job
        return run_rollout(
            operator,
            record.initial_condition,
            steps=record.spec.steps,
            noise_seeds=record.seeds.noise_seeds,
            keep_trajectories=keep_trajectories,
        )

    jobs = ((record, build(record)) for record in records)
    for done, result in enumerate(
        map_on_workers(rollout, jobs, workers=operators_at_once(device, len(records))), start=1
    ):
        yield result
        if progress is not None:
            progress(done, len(records))
