"""Asset checks. Replay verification and shard integrity are blocking: a failure means the data
downstream would be wrong. Non-finite values are allowed only where the rollout was flagged divergent.

Each check is an evaluation function (shard in, :class:`Evaluation` out) used twice: by the partitioned
``@asset_check`` that runs in materialization runs, and by the ``verify_now`` job, which evaluates a
budgeted sample of shards in one run and records each result under the same check and partition.
"""

import json
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import dagster as dg
import numpy as np
from dagster._core.events import DagsterEventType

from spinlock_assets.core.features.base import SERIES_FIELDS
from spinlock_assets.core.shards import parse_shard_key
from spinlock_assets.storage import StorageError, validate_shard_file
from spinlock_assets.storage.layout import BASE_FEATURES_ASSET, GENERATION_ASSETS
from spinlock_assets.storage.operator_arrays import stored_records

from ..resources import DatasetResource, RolloutResource

__all__ = [
    "INTEGRITY_CHECK",
    "NONFINITE_CHECK",
    "REPLAY_CHECK",
    "Evaluation",
    "ReplaySample",
    "build_checks",
    "integrity_check_key",
    "integrity_evaluation",
    "nonfinite_evaluation",
    "recorded_sha256",
    "replay_evaluation",
]

REPLAY_CHECK = "replay_matches_stored_digests"
NONFINITE_CHECK = "nonfinite_only_where_flagged"
INTEGRITY_CHECK = "shard_file_intact"
REPLAY_CHECK_KEY = dg.AssetCheckKey(dg.AssetKey(BASE_FEATURES_ASSET), REPLAY_CHECK)
NONFINITE_CHECK_KEY = dg.AssetCheckKey(dg.AssetKey(BASE_FEATURES_ASSET), NONFINITE_CHECK)


def integrity_check_key(asset: str) -> dg.AssetCheckKey:
    return dg.AssetCheckKey(dg.AssetKey(asset), INTEGRITY_CHECK)


@dataclass(frozen=True)
class Evaluation:
    """One check's verdict on one shard: counts are plain numbers, so the UI can show and plot them."""

    passed: bool
    metadata: dict[str, Any]
    severity: dg.AssetCheckSeverity = dg.AssetCheckSeverity.ERROR

    def result(self) -> dg.AssetCheckResult:
        return dg.AssetCheckResult(passed=self.passed, severity=self.severity, metadata=self.metadata)

    def event(self, check: dg.AssetCheckKey, partition: str) -> dg.AssetCheckEvaluation:
        """The same verdict as an event recorded under ``check`` for ``partition`` by any run."""
        return dg.AssetCheckEvaluation(
            asset_key=check.asset_key,
            check_name=check.name,
            passed=self.passed,
            partition=partition,
            severity=self.severity,
            metadata=self.metadata,
        )


def _row(arrays: dict[str, np.ndarray], row: int) -> dict[str, np.ndarray]:
    return {name: values[row : row + 1] for name, values in arrays.items()}


def _listed(indices: Iterable[int]) -> str:
    return ", ".join(map(str, indices)) or "none"


class ReplaySample(dg.Config):
    """Which operators of the shard a replay check replays: window ``rotation`` of ``operators_per_shard``
    consecutive operators."""

    operators_per_shard: int = 2
    rotation: int = 0


def replay_evaluation(
    dataset: DatasetResource, rollout: RolloutResource, shard_key: str, operators: Sequence[int], log: Any
) -> Evaluation:
    """Replay ``operators`` of the shard and compare every realization's SHA-256 digest with the stored one,
    bit for bit; under another execution fingerprint classify instead (exact / within_tolerance /
    diverged) and warn rather than fail. Only the operators' rows are read (and, in the compact mode,
    only their initial conditions regenerated)."""
    spec_hash = dataset.spec.spec_hash
    try:
        (_, parameters), (_, initial_conditions), (base_attrs, base) = (
            dataset.store.read_rows(asset, shard_key, operators, expected_spec_hash=spec_hash)
            for asset in GENERATION_ASSETS
        )
        fingerprint = json.loads(base_attrs["fingerprint_json"])
        # one record per row: stored records describe a contiguous range, the sample is not one
        records = [
            stored_records(
                dataset.spec,
                *(_row(arrays, row) for arrays in (parameters, initial_conditions, base)),
                fingerprint,
            )[0]
            for row in range(len(parameters["operator_index"]))
        ]
    except StorageError as exc:  # a damaged or missing file fails this shard's check, not the whole run
        counts = dict.fromkeys(
            ("operators_verified", "exact", "within_tolerance", "diverged", "mismatched"), 0
        )
        return Evaluation(passed=False, metadata={**counts, "problems": str(exc)})
    started = time.perf_counter()
    results = rollout.verify(records, log=log)
    counts = Counter(v.status for v in results)
    mismatched = [v.operator_index for v in results if v.status == "mismatch"]
    return Evaluation(
        passed=all(v.ok for v in results),
        severity=dg.AssetCheckSeverity.ERROR if mismatched else dg.AssetCheckSeverity.WARN,
        metadata={
            "operators_verified": len(results),
            "exact": counts["exact"],
            "within_tolerance": counts["within_tolerance"],
            "diverged": counts["diverged"],
            "mismatched": counts["mismatch"],
            "verified_operators": _listed(sorted(operators)),
            "mismatched_operators": _listed(mismatched),
            "wall_seconds": round(time.perf_counter() - started, 3),
        },
    )


def nonfinite_evaluation(dataset: DatasetResource, shard_key: str) -> Evaluation:
    """Base series are finite except for realizations flagged divergent (first_nonfinite_step >= 0), and
    those are NaN from that step on: NaN/Inf is counted and flagged, never hidden or patched."""
    arrays = dataset.store.read(
        BASE_FEATURES_ASSET, shard_key, names=("series", "first_nonfinite_step")
    ).arrays
    series, first = arrays["series"].data, arrays["first_nonfinite_step"].data  # [n,M,T,C,K], [n,M]
    has_nan = np.isnan(series[..., : SERIES_FIELDS.index("nonfinite_frac")]).any(axis=(3, 4))  # [n, M, T]
    flagged_from = np.where(first < 0, series.shape[2], first)
    before_flag = np.arange(series.shape[2]) < flagged_from[..., None]
    start = parse_shard_key(shard_key).start
    bad = [start + row for row in np.unique(np.nonzero(has_nan & before_flag)[0]).tolist()]
    return Evaluation(
        passed=not bad,
        metadata={
            "diverged_operators": int((first >= 0).any(axis=1).sum()),
            "unflagged_nan_operators": len(bad),
            "unflagged_nan_indices": _listed(bad),
        },
    )


def integrity_evaluation(
    dataset: DatasetResource, asset: str, shard_key: str, recorded: str | None
) -> Evaluation:
    """The shard file's SHA-256 equals ``recorded`` (the one recorded when it was materialized), and the
    file passes the layout validator (self-describing arrays, operator rows, spec hash)."""
    path = dataset.store.path(asset, shard_key)
    problems = [str(p) for p in validate_shard_file(path)] if path.exists() else [f"{path}: missing"]
    if not problems and recorded is not None:
        problem = dataset.store.verify_integrity(asset, shard_key, recorded)
        problems += [str(problem)] if problem else []
    return Evaluation(
        passed=not problems,
        metadata={
            "path": dg.MetadataValue.path(str(path)),
            "recorded_sha256": recorded or "",
            "problem_count": len(problems),
            "problems": "; ".join(problems) or "none",
        },
    )


def recorded_sha256(instance: dg.DagsterInstance, asset: str, shard_keys: Iterable[str]) -> dict[str, str]:
    """The sha256 recorded by the latest materialization of each given shard that has one: two indexed
    queries whatever the number of partitions the asset has (never-materialized shards are absent)."""
    key = dg.AssetKey(asset)
    latest = instance.event_log_storage.get_latest_storage_id_by_partition(
        key, DagsterEventType.ASSET_MATERIALIZATION, partitions=set(shard_keys)
    )
    if not latest:
        return {}
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key, storage_ids=list(latest.values())), limit=len(latest)
    ).records
    return {
        record.partition_key: record.asset_materialization.metadata["sha256"].value
        for record in records
        if record.partition_key and "sha256" in record.asset_materialization.metadata
    }


def build_checks(partitions: dg.PartitionsDefinition, shard_assets: Sequence[str]) -> list:
    """The replay and finite checks on ``base_features`` and an integrity check per shard asset."""

    @dg.asset_check(asset=BASE_FEATURES_ASSET, name=REPLAY_CHECK, partitions_def=partitions, blocking=True)
    def replay_matches_stored_digests(
        context: dg.AssetCheckExecutionContext,
        config: ReplaySample,
        dataset: DatasetResource,
        rollout: RolloutResource,
    ) -> dg.AssetCheckResult:
        """Replays a rotating sample of the shard's operators and compares every realization's SHA-256 digest
        with the stored one, bit for bit; under another execution fingerprint it classifies instead
        (exact / within_tolerance / diverged) and warns rather than fails."""
        from spinlock_assets.core.verification import rotating_sample  # imports torch: only when run

        shard = parse_shard_key(context.partition_key)
        operators = rotating_sample(shard.start, shard.stop, config.operators_per_shard, config.rotation)
        return replay_evaluation(dataset, rollout, shard.key, operators, context.log).result()

    @dg.asset_check(asset=BASE_FEATURES_ASSET, name=NONFINITE_CHECK, partitions_def=partitions, blocking=True)
    def nonfinite_only_where_flagged(
        context: dg.AssetCheckExecutionContext, dataset: DatasetResource
    ) -> dg.AssetCheckResult:
        """Base series are finite except for realizations flagged divergent (NaN from that step on)."""
        return nonfinite_evaluation(dataset, context.partition_key).result()

    return [
        replay_matches_stored_digests,
        nonfinite_only_where_flagged,
        *(_integrity_check(partitions, a) for a in shard_assets),
    ]


def _integrity_check(partitions: dg.PartitionsDefinition, asset: str) -> dg.AssetChecksDefinition:
    @dg.asset_check(asset=asset, name=INTEGRITY_CHECK, partitions_def=partitions, blocking=True)
    def shard_file_intact(
        context: dg.AssetCheckExecutionContext, dataset: DatasetResource
    ) -> dg.AssetCheckResult:
        """The shard file's SHA-256 equals the one recorded when it was materialized, and the file passes the
        layout validator (self-describing arrays, operator rows, spec hash)."""
        key = context.partition_key
        recorded = recorded_sha256(context.instance, asset, [key]).get(key)
        return integrity_evaluation(dataset, asset, key, recorded).result()

    return shard_file_intact
