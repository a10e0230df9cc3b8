"""Asset checks. Replay verification and shard integrity are blocking: a failure means the data
downstream would be wrong. Non-finite values are allowed only where the rollout was flagged divergent.

Each check is an evaluation function (shard in, :class:`Evaluation` out) used twice: by the partitioned
``@asset_check`` that runs in materialization runs, and by the ``verify_now`` job, which evaluates a
budgeted sample of shards in one run and records each result under the same check and partition.
In a run over a range of shards (``defs/ranges.py``) the ``@asset_check`` evaluates every shard and
records each verdict under its own partition too; the result it returns is the range's summary.
"""

import json
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import dagster as dg
import numpy as np

from spinlock_assets.core.shards import parse_shard_key
from spinlock_assets.storage import StorageError, validate_shard_file
from spinlock_assets.storage.layout import BASE_FEATURES_ASSET, GENERATION_ASSETS
from spinlock_assets.storage.operator_arrays import stored_records

from ..resources import DatasetResource, RolloutResource
from ..shard_assets import recorded_sha256

if TYPE_CHECKING:
    from spinlock_assets.core.record import OperatorRecord
    from spinlock_assets.core.verification import StoredFamily

__all__ = [
    "INTEGRITY_CHECK",
    "NONFINITE_CHECK",
    "REPLAY_CHECK",
    "REPLAY_COUNTS",
    "Evaluation",
    "ReplaySample",
    "build_checks",
    "integrity_check_key",
    "integrity_evaluation",
    "nonfinite_evaluation",
    "replay_evaluation",
]

REPLAY_CHECK = "replay_matches_stored_digests"
NONFINITE_CHECK = "nonfinite_only_where_flagged"
INTEGRITY_CHECK = "shard_file_intact"
REPLAY_CHECK_KEY = dg.AssetCheckKey(dg.AssetKey(BASE_FEATURES_ASSET), REPLAY_CHECK)
NONFINITE_CHECK_KEY = dg.AssetCheckKey(dg.AssetKey(BASE_FEATURES_ASSET), NONFINITE_CHECK)
# A replay's counts by status (plain numbers); mismatch (a reproducibility bug) and tampered (edited data)
# are errors, anything else that is not a pass (another fingerprint, a family not recomputable) a warning.
REPLAY_COUNTS = (
    "operators_verified",
    "exact",
    "within_tolerance",
    "diverged",
    "mismatched",
    "tampered",
    "unverified",
)
_ERRORS = ("mismatch", "tampered")


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


def _stored_rows(
    dataset: DatasetResource, shard_key: str, operators: Sequence[int]
) -> tuple[list["OperatorRecord"], dict[int, dict[str, "StoredFamily"]]]:
    """The replayable records of ``operators`` of the shard, and by operator its stored base summary and
    derived-family values (families whose shard file exists), for ``core.verification.compare_features``
    to recompute from the replay. Only the operators' rows are read (and, in the compact mode, only their
    initial conditions regenerated)."""
    from spinlock_assets.core.features.registry import derived_families
    from spinlock_assets.core.verification import StoredFamily

    from ..features.assets import family_asset_name

    spec_hash, store = dataset.spec.spec_hash, dataset.store
    (_, parameters), (_, initial_conditions), (base_header, base) = (
        store.read_rows(asset, shard_key, operators, expected_spec_hash=spec_hash)
        for asset in GENERATION_ASSETS
    )
    fingerprint = json.loads(base_header.attrs["fingerprint_json"])
    families = {"base": (base_header, {"summary": base["summary"]})}
    for family in derived_families(dataset.spec.channels):
        asset = family_asset_name(family.name)
        if store.exists(asset, shard_key):
            families[family.name] = store.read_rows(asset, shard_key, operators, expected_spec_hash=spec_hash)
    records, features = [], {}
    for row, index in enumerate(parameters["operator_index"].tolist()):
        # one record per row: stored records describe a contiguous range, the sample is not one
        records += stored_records(
            dataset.spec,
            *(_row(arrays, row) for arrays in (parameters, initial_conditions, base)),
            fingerprint,
        )
        features[index] = {
            name: StoredFamily(
                header.arrays[next(iter(arrays))].attrs["version"],
                {array: values[row] for array, values in arrays.items()},
            )
            for name, (header, arrays) in families.items()
        }
    return records, features


def replay_evaluation(
    dataset: DatasetResource, rollout: RolloutResource, shard_key: str, operators: Sequence[int], log: Any
) -> Evaluation:
    """Replay ``operators`` of the shard and compare every realization's SHA-256 digest with the stored one,
    bit for bit, and every stored feature of the shard (base summary, derived families) with the value
    recomputed from the replay; under another execution fingerprint classify instead (exact /
    within_tolerance / diverged) and warn rather than fail. A reproducibility bug (mismatch) or edited
    data (tampered) is an error; a family that cannot be recomputed here leaves the operator unverified."""
    try:
        records, features = _stored_rows(dataset, shard_key, operators)
    except StorageError as exc:  # a damaged or missing file fails this shard's check, not the whole run
        counts = dict.fromkeys(REPLAY_COUNTS, 0)
        return Evaluation(passed=False, metadata={**counts, "problems": str(exc)})
    started = time.perf_counter()
    results = rollout.verify(records, log=log, stored_features=lambda record: features[record.index])
    counts = Counter(v.status for v in results)
    named = {status: [v.operator_index for v in results if v.status == status] for status in _ERRORS}
    return Evaluation(
        passed=all(v.ok for v in results),
        severity=dg.AssetCheckSeverity.ERROR if any(named.values()) else dg.AssetCheckSeverity.WARN,
        metadata={
            "operators_verified": len(results),
            "exact": counts["exact"],
            "within_tolerance": counts["within_tolerance"],
            "diverged": counts["diverged"],
            "mismatched": counts["mismatch"],
            "tampered": counts["tampered"],
            "unverified": counts["unverified"],
            "fingerprint_changed": sum(not v.same_fingerprint for v in results),
            "verified_operators": _listed(sorted(operators)),
            "mismatched_operators": _listed(named["mismatch"]),
            "tampered_operators": _listed(named["tampered"]),
            "wall_seconds": round(time.perf_counter() - started, 3),
        },
    )


def nonfinite_evaluation(dataset: DatasetResource, shard_key: str) -> Evaluation:
    """Base series are finite except for realizations flagged divergent (first_nonfinite_step >= 0), and
    those are NaN from that step on: NaN/Inf is counted and flagged, never hidden or patched."""
    from spinlock_assets.core.verification import unflagged_nonfinite_rows  # imports torch: only when run

    arrays = dataset.store.read(
        BASE_FEATURES_ASSET, shard_key, names=("series", "first_nonfinite_step")
    ).arrays
    first = arrays["first_nonfinite_step"].data
    start = parse_shard_key(shard_key).start
    bad = [start + row for row in unflagged_nonfinite_rows(arrays["series"].data, first)]
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


def evaluate_shards(
    context: dg.AssetCheckExecutionContext, evaluate: Callable[[str], Evaluation]
) -> dg.AssetCheckResult:
    """The check's result over the run's shards: one shard's own verdict, or over a range each shard's
    verdict recorded under its partition (as ``verify_now`` records them) and a summary that fails if any
    shard failed. Verdicts are logged one by one, so a later shard's error cannot lose earlier ones."""
    keys = list(context.partition_keys)
    if len(keys) == 1:
        return evaluate(keys[0]).result()
    [check_key] = [spec.key for spec in context.check_specs]
    failed: dict[str, Evaluation] = {}
    for key in keys:
        evaluation = evaluate(key)
        context.op_execution_context.log_event(evaluation.event(check_key, key))
        if not evaluation.passed:
            failed[key] = evaluation
    errors = any(e.severity == dg.AssetCheckSeverity.ERROR for e in failed.values())
    return dg.AssetCheckResult(
        passed=not failed,
        severity=dg.AssetCheckSeverity.ERROR if errors or not failed else dg.AssetCheckSeverity.WARN,
        metadata={
            "shards_checked": len(keys),
            "shards_failed": len(failed),
            "failed_shards": _listed(failed),
        },
    )


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
        from spinlock_assets.core.verification import rotating_sample  # imports torch: only when run

        def evaluate(key: str) -> Evaluation:
            shard = parse_shard_key(key)
            operators = rotating_sample(shard.start, shard.stop, config.operators_per_shard, config.rotation)
            # one progress line per shard would outnumber the verdicts of a range
            log = context.log if len(context.partition_keys) == 1 else None
            return replay_evaluation(dataset, rollout, shard.key, operators, log)

        return evaluate_shards(context, evaluate)

    @dg.asset_check(asset=BASE_FEATURES_ASSET, name=NONFINITE_CHECK, partitions_def=partitions, blocking=True)
    def nonfinite_only_where_flagged(
        context: dg.AssetCheckExecutionContext, dataset: DatasetResource
    ) -> dg.AssetCheckResult:
        """Base series are finite except for realizations flagged divergent (NaN from that step on)."""
        return evaluate_shards(context, lambda key: nonfinite_evaluation(dataset, key))

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
        recorded = recorded_sha256(context.instance, dataset.store, asset, context.partition_keys)
        return evaluate_shards(
            context, lambda key: integrity_evaluation(dataset, asset, key, recorded.get(key))
        )

    return shard_file_intact
