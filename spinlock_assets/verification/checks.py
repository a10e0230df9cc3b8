"""Asset checks. Replay verification and shard integrity are blocking: a failure means the data
downstream would be wrong. Non-finite values are allowed only where the rollout was flagged divergent."""

from collections.abc import Sequence

import dagster as dg

from ..resources import DatasetResource, RolloutResource

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
    from ..generation.assets import load_records

    spec_hash = dataset.spec.spec_hash
    contents = [
        dataset.store.read(a, partition_key, expected_spec_hash=spec_hash)
        for a in ("operator_parameters", "initial_conditions", "base_features")
    ]
    return [r for r in load_records(dataset, *contents) if r.index in set(indices)]


def build_checks(
    partitions: dg.PartitionsDefinition, shard_assets: Sequence[str], rollout_pool: str | None = None
) -> list:
    """The replay and finite checks on ``base_features`` and an integrity check per shard asset; the
    replay check runs in ``rollout_pool`` (the GPU pool when rollouts run on a GPU)."""

    @dg.asset_check(
        asset="base_features", name=REPLAY_CHECK, partitions_def=partitions, blocking=True, pool=rollout_pool
    )
    def replay_matches_stored_digests(
        context: dg.AssetCheckExecutionContext,
        config: ReplaySample,
        dataset: DatasetResource,
        rollout: RolloutResource,
    ) -> dg.AssetCheckResult:
        """Replays a rotating sample of the shard's operators and compares every realization's SHA-256 digest
        with the stored one, bit for bit; under another execution fingerprint it classifies instead
        (exact / within_tolerance / diverged) and warns rather than fails."""
        import time

        from ..core.shards import parse_shard_key
        from ..core.verification import rotating_sample

        shard = parse_shard_key(context.partition_key)
        indices = rotating_sample(shard.start, shard.stop, config.operators_per_shard, config.rotation)
        started = time.perf_counter()
        results = rollout.verify(_shard_records(dataset, context.partition_key, indices), log=context.log)
        statuses = {
            status: [v.operator_index for v in results if v.status == status]
            for status in ("exact", "within_tolerance", "diverged", "mismatch")
        }
        severity = dg.AssetCheckSeverity.ERROR if statuses["mismatch"] else dg.AssetCheckSeverity.WARN
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
                "wall_seconds": round(time.perf_counter() - started, 3),
                "rotation": config.rotation,
            },
        )

    @dg.asset_check(asset="base_features", name=NONFINITE_CHECK, partitions_def=partitions, blocking=True)
    def nonfinite_only_where_flagged(
        context: dg.AssetCheckExecutionContext, dataset: DatasetResource
    ) -> dg.AssetCheckResult:
        """Base series are finite except for realizations flagged divergent (first_nonfinite_step >= 0), and
        those are NaN from that step on: NaN/Inf is counted and flagged, never hidden or patched."""
        import numpy as np

        from ..core.features.base import SERIES_FIELDS

        arrays = dataset.store.read("base_features", context.partition_key).arrays
        series, first = arrays["series"].data, arrays["first_nonfinite_step"].data  # [n,M,T,C,K], [n,M]
        has_nan = np.isnan(series[..., : SERIES_FIELDS.index("nonfinite_frac")]).any(axis=(3, 4))  # [n, M, T]
        flagged_from = np.where(first < 0, series.shape[2], first)
        before_flag = np.arange(series.shape[2]) < flagged_from[..., None]
        bad = np.unique(np.nonzero(has_nan & before_flag)[0]).tolist()
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
        from ..storage import validate_shard_file

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
