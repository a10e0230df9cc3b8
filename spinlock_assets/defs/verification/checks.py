"""Asset checks. Replay verification and shard integrity are blocking: a failure means the data
downstream would be wrong. Non-finite values are allowed only where the rollout was flagged divergent."""

import time
from collections.abc import Callable, Sequence
from typing import Any

import dagster as dg

from spinlock_assets.core.shards import parse_shard_key
from spinlock_assets.storage import validate_shard_file
from spinlock_assets.storage.layout import BASE_FEATURES_ASSET, GENERATION_ASSETS

from ..resources import DatasetResource, RolloutResource
from ..shard_assets import load_records

__all__ = [
    "INTEGRITY_CHECK",
    "NONFINITE_CHECK",
    "REPLAY_CHECK",
    "ReplaySample",
    "build_checks",
    "integrity_check_key",
]

REPLAY_CHECK = "replay_matches_stored_digests"
NONFINITE_CHECK = "nonfinite_only_where_flagged"
INTEGRITY_CHECK = "shard_file_intact"


def integrity_check_key(asset: str) -> dg.AssetCheckKey:
    return dg.AssetCheckKey(dg.AssetKey(asset), INTEGRITY_CHECK)


class ReplaySample(dg.Config):
    """Which operators of the shard a replay check replays: window ``rotation`` of ``operators_per_shard``
    consecutive operators (the verification schedule advances ``rotation`` every tick)."""

    operators_per_shard: int = 2
    rotation: int = 0


def _shard_records(dataset: DatasetResource, partition_key: str, indices: Sequence[int]) -> list:
    spec_hash = dataset.spec.spec_hash
    contents = [dataset.store.read(a, partition_key, expected_spec_hash=spec_hash) for a in GENERATION_ASSETS]
    return [r for r in load_records(dataset, *contents) if r.index in set(indices)]


def _stored_features(dataset: DatasetResource, partition_key: str) -> Callable[[Any], dict]:
    """A record's stored base summary and derived-family values in this shard (families whose shard file
    exists), for ``core.verification.compare_features`` to recompute from the replay."""
    from spinlock_assets.core.features.registry import derived_families
    from spinlock_assets.core.shards import parse_shard_key
    from spinlock_assets.core.verification import StoredFamily

    from ..features.assets import family_asset_name

    start, store = parse_shard_key(partition_key).start, dataset.store
    shards = {"base": store.read(BASE_FEATURES_ASSET, partition_key, names=["summary"]).arrays}
    for family in derived_families(dataset.spec.channels):
        asset = family_asset_name(family.name)
        if store.exists(asset, partition_key):
            shards[family.name] = store.read(
                asset, partition_key, expected_spec_hash=dataset.spec.spec_hash
            ).arrays

    def of(record: Any) -> dict:
        row = record.index - start
        return {
            name: StoredFamily(
                next(iter(arrays.values())).version, {key: array.data[row] for key, array in arrays.items()}
            )
            for name, arrays in shards.items()
        }

    return of


def build_checks(
    partitions: dg.PartitionsDefinition, shard_assets: Sequence[str], rollout_pool: str | None = None
) -> list:
    """The replay and finite checks on ``base_features`` and an integrity check per shard asset; the
    replay check runs in ``rollout_pool`` (the GPU pool when rollouts run on a GPU)."""

    @dg.asset_check(
        asset=BASE_FEATURES_ASSET,
        name=REPLAY_CHECK,
        partitions_def=partitions,
        blocking=True,
        pool=rollout_pool,
    )
    def replay_matches_stored_digests(
        context: dg.AssetCheckExecutionContext,
        config: ReplaySample,
        dataset: DatasetResource,
        rollout: RolloutResource,
    ) -> dg.AssetCheckResult:
        """Replays a rotating sample of the shard's operators and compares every realization's SHA-256 digest
        with the stored one, bit for bit, and every stored feature of the shard (base summary, derived
        families) with the value recomputed from the replay; under another execution fingerprint it
        classifies instead (exact / within_tolerance / diverged) and warns rather than fails."""
        from spinlock_assets.core.verification import (  # imports torch: only when run
            STATUSES,
            rotating_sample,
        )

        shard = parse_shard_key(context.partition_key)
        indices = rotating_sample(shard.start, shard.stop, config.operators_per_shard, config.rotation)
        started = time.perf_counter()
        records = _shard_records(dataset, context.partition_key, indices)
        features = _stored_features(dataset, context.partition_key)
        results = rollout.verify(records, log=context.log, stored_features=features)
        statuses = {status: [v.operator_index for v in results if v.status == status] for status in STATUSES}
        # A reproducibility bug or edited data is an error; other numerics (another fingerprint) a warning.
        errors = statuses["mismatch"] or statuses["tampered"]
        severity = dg.AssetCheckSeverity.ERROR if errors else dg.AssetCheckSeverity.WARN
        return dg.AssetCheckResult(
            passed=all(v.ok for v in results),
            severity=severity,
            metadata={
                "operators_verified": len(results),
                "verified_indices": dg.MetadataValue.json(indices),
                "exact": len(statuses["exact"]),
                "within_tolerance": len(statuses["within_tolerance"]),
                "diverged": dg.MetadataValue.json(statuses["diverged"]),
                "mismatched": dg.MetadataValue.json(statuses["mismatch"]),
                "tampered": dg.MetadataValue.json(statuses["tampered"]),
                "fingerprint_changed": dg.MetadataValue.json(
                    [v.operator_index for v in results if not v.same_fingerprint]
                ),
                "wall_seconds": round(time.perf_counter() - started, 3),
                "rotation": config.rotation,
            },
        )

    @dg.asset_check(asset=BASE_FEATURES_ASSET, name=NONFINITE_CHECK, partitions_def=partitions, blocking=True)
    def nonfinite_only_where_flagged(
        context: dg.AssetCheckExecutionContext, dataset: DatasetResource
    ) -> dg.AssetCheckResult:
        """Base series are finite except for realizations flagged divergent (first_nonfinite_step >= 0), and
        those are NaN from that step on: NaN/Inf is counted and flagged, never hidden or patched."""
        from spinlock_assets.core.verification import unflagged_nonfinite_rows  # imports torch

        arrays = dataset.store.read(BASE_FEATURES_ASSET, context.partition_key).arrays
        first = arrays["first_nonfinite_step"].data
        bad = unflagged_nonfinite_rows(arrays["series"].data, first)
        diverged = int((first >= 0).any(axis=1).sum())
        return dg.AssetCheckResult(
            passed=not bad,
            metadata={
                "diverged_operators": diverged,
                "unflagged_nan_rows": dg.MetadataValue.json(bad),
            },
        )

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
        records = context.instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[key]), limit=1
        ).records
        recorded = records[0].asset_materialization.metadata["sha256"].value if records else None
        path = dataset.store.path(asset, key)
        problems = [str(p) for p in validate_shard_file(path)] if path.exists() else [f"{path}: missing"]
        if not problems and recorded is not None:
            problem = dataset.store.verify_integrity(asset, key, recorded)
            problems += [str(problem)] if problem else []
        return dg.AssetCheckResult(
            passed=not problems,
            metadata={
                "path": dg.MetadataValue.path(str(path)),
                "recorded_sha256": recorded or "",
                "problems": dg.MetadataValue.json(problems),
            },
        )

    return shard_file_intact
