"""The ``verify_now`` job: one run that verifies a bounded sample of the whole dataset.

Whatever the number of operators, a run replays at most ``operator_budget`` operators, spread over all
shards, and checks the files of at most ``file_budget`` shard files (every shard asset's file of the
shards it picks): its cost is the budget, not the dataset. Both samples rotate (``core.rotation``), so
every operator is replayed once every ``ceil(N / operator_budget)`` rotations and every shard file
checked once every ``ceil(S / shards_per_rotation)``. The schedule launches one such run per tick;
from the UI, Jobs → ``verify_now`` → Launchpad → Launch run verifies the current rotation (or edit the
config to name ``operators`` or ``shards``).

Each verdict is recorded under the asset check it belongs to (``replay_matches_stored_digests``,
``nonfinite_only_where_flagged``, ``shard_file_intact``) and the shard's partition, exactly as a
partitioned check would record it; shards never materialized are skipped, never shown as passed. The
run's output carries the summary counts.
"""

import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import dagster as dg
from dagster._core.events import DagsterEventType
from pydantic import Field

from spinlock_assets.core.rotation import rotation_period, rotation_sample
from spinlock_assets.core.shards import ShardRange, parse_shard_key
from spinlock_assets.core.spec import DatasetSpec
from spinlock_assets.storage.layout import BASE_FEATURES_ASSET

from ..constants import VERIFY_FILE_BUDGET, VERIFY_OPERATOR_BUDGET
from ..resources import DatasetResource, RolloutResource
from ..shard_assets import recorded_sha256
from .checks import (
    INTEGRITY_CHECK,
    NONFINITE_CHECK_KEY,
    REPLAY_CHECK_KEY,
    REPLAY_COUNTS,
    Evaluation,
    integrity_check_key,
    integrity_evaluation,
    nonfinite_evaluation,
    replay_evaluation,
)

__all__ = [
    "VERIFY_JOB",
    "VERIFY_OP",
    "VerificationPlan",
    "VerifyConfig",
    "build_verify_now_job",
    "current_rotation",
]

VERIFY_JOB = "verify_now"
VERIFY_OP = "verify_sample"
_SECONDS_PER_ROTATION = 86_400  # one rotation a day, matching the daily schedule


def current_rotation(timestamp: float) -> int:
    """The rotation of a moment: days since 1970-01-01 (so the daily schedule advances it by one)."""
    return int(timestamp // _SECONDS_PER_ROTATION)


class VerifyConfig(dg.Config):
    """What one verification run checks. With the defaults: the current rotation of the whole dataset."""

    rotation: int = Field(default=-1, description="rotation to verify; -1 = today's (days since 1970-01-01)")
    operators: list[int] = Field(
        default=[], description="replay exactly these operators (and check their files)"
    )
    shards: list[str] = Field(
        default=[],
        description="check every file of these shards and replay the budget's operators among them",
    )
    operator_budget: int = Field(
        default=VERIFY_OPERATOR_BUDGET, ge=1, description="operators replayed per run"
    )
    file_budget: int = Field(default=VERIFY_FILE_BUDGET, ge=1, description="shard files checked per run")


@dataclass(frozen=True)
class VerificationPlan:
    """The operators to replay (by shard key) and the shards whose files to check."""

    replays: dict[str, list[int]]
    file_shards: list[str]


def _by_shard(operators: Sequence[int], shard_size: int) -> dict[str, list[int]]:
    grouped: dict[str, list[int]] = {}
    for index in sorted(set(operators)):
        start = index - index % shard_size
        grouped.setdefault(ShardRange(start, start + shard_size).key, []).append(index)
    return grouped


def plan_verification(
    config: VerifyConfig, spec: DatasetSpec, n_shard_assets: int, rotation: int
) -> VerificationPlan:
    """The sample of one run, by arithmetic on the spec alone (no listing of shards or partitions)."""
    shards_per_rotation = max(1, config.file_budget // n_shard_assets)
    if config.operators:
        outside = [i for i in config.operators if not 0 <= i < spec.n_operators]
        if outside:
            raise dg.Failure(f"operators {outside} are outside 0..{spec.n_operators - 1}")
        replays = _by_shard(config.operators, spec.shard_size)
        return VerificationPlan(replays, sorted(replays))
    if config.shards:
        ranges = [parse_shard_key(key) for key in sorted(set(config.shards))]
        operators = [index for shard in ranges for index in shard]
        chosen = rotation_sample(len(operators), config.operator_budget, rotation)
        return VerificationPlan(
            _by_shard([operators[i] for i in chosen], spec.shard_size), [s.key for s in ranges]
        )
    n_shards = spec.n_operators // spec.shard_size
    file_shards = [
        ShardRange(i * spec.shard_size, (i + 1) * spec.shard_size).key
        for i in rotation_sample(n_shards, shards_per_rotation, rotation)
    ]
    replays = _by_shard(rotation_sample(spec.n_operators, config.operator_budget, rotation), spec.shard_size)
    return VerificationPlan(replays, file_shards)


def _summary(
    verdicts: Sequence[tuple[dg.AssetCheckKey, str, Evaluation]],
    spec: DatasetSpec,
    config: VerifyConfig,
    rotation: int,
    n_shard_assets: int,
    started: float,
) -> dict[str, int | float]:
    """The run's counts, as plain numbers: replays by status, files checked and damaged, coverage periods."""
    counts: Counter[str] = Counter()
    for check, _, evaluation in verdicts:
        if check == REPLAY_CHECK_KEY:
            counts.update({name: evaluation.metadata[name] for name in REPLAY_COUNTS})
        elif check.name == INTEGRITY_CHECK:
            counts.update(files_checked=1, files_damaged=int(not evaluation.passed))
    return {
        "rotation": rotation,
        "shards_replayed": sum(check == REPLAY_CHECK_KEY for check, _, _ in verdicts),
        **{name: counts[name] for name in (*REPLAY_COUNTS, "files_checked", "files_damaged")},
        "rotations_to_replay_every_operator": rotation_period(spec.n_operators, config.operator_budget),
        "rotations_to_check_every_file": rotation_period(
            spec.n_operators // spec.shard_size, max(1, config.file_budget // n_shard_assets)
        ),
        "wall_seconds": round(time.perf_counter() - started, 3),
    }


def _materialized(instance: dg.DagsterInstance, asset: str, shard_keys: Sequence[str]) -> set[str]:
    """Which of ``shard_keys`` have a materialization: one indexed query for just those partitions."""
    return set(
        instance.event_log_storage.get_latest_storage_id_by_partition(
            dg.AssetKey(asset), DagsterEventType.ASSET_MATERIALIZATION, partitions=set(shard_keys)
        )
    )


def build_verify_now_job(shard_assets: Sequence[str], rollout_pool: str | None = None) -> dg.JobDefinition:
    """The job, checking the files of every asset in ``shard_assets`` (generation and derived families); its
    replays run in ``rollout_pool`` (the GPU pool when rollouts run on a GPU)."""

    @dg.op(name=VERIFY_OP, out=dg.Out(dg.Nothing), pool=rollout_pool)
    def verify_sample(
        context: dg.OpExecutionContext,
        config: VerifyConfig,
        dataset: DatasetResource,
        rollout: RolloutResource,
    ) -> Iterator[dg.AssetCheckEvaluation | dg.Output]:
        """Replays the run's operators, checks the files of its shards, records each verdict per shard;
        the run fails when a check fails with severity ERROR (a mismatch, tampered data, a damaged file)."""
        started = time.perf_counter()
        spec = dataset.spec
        rotation = config.rotation if config.rotation >= 0 else current_rotation(time.time())
        plan = plan_verification(config, spec, len(shard_assets), rotation)
        generated = _materialized(context.instance, BASE_FEATURES_ASSET, [*plan.replays, *plan.file_shards])
        verdicts: list[tuple[dg.AssetCheckKey, str, Evaluation]] = []
        for shard_key, operators in plan.replays.items():
            if shard_key in generated:
                evaluation = replay_evaluation(dataset, rollout, shard_key, operators, context.log)
                verdicts.append((REPLAY_CHECK_KEY, shard_key, evaluation))
                # yielded at once: recorded even if the run fails
                yield evaluation.event(REPLAY_CHECK_KEY, shard_key)
        for shard_key in plan.file_shards:
            if shard_key in generated:
                evaluation = nonfinite_evaluation(dataset, shard_key)
                verdicts.append((NONFINITE_CHECK_KEY, shard_key, evaluation))
                yield evaluation.event(NONFINITE_CHECK_KEY, shard_key)
        for asset in shard_assets:
            materialized = sorted(_materialized(context.instance, asset, plan.file_shards))
            recorded = recorded_sha256(context.instance, dataset.store, asset, materialized)
            for shard_key in materialized:
                evaluation = integrity_evaluation(dataset, asset, shard_key, recorded.get(shard_key))
                verdicts.append((integrity_check_key(asset), shard_key, evaluation))
                yield evaluation.event(integrity_check_key(asset), shard_key)
        yield dg.Output(None, metadata=_summary(verdicts, spec, config, rotation, len(shard_assets), started))
        failed = [
            f"{check.asset_key.to_user_string()}:{check.name}[{shard_key}]"
            for check, shard_key, evaluation in verdicts
            if not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.ERROR
        ]
        if failed:
            raise dg.Failure(f"{len(failed)} check(s) failed: {', '.join(failed)}")

    @dg.job(
        name=VERIFY_JOB,
        description="Replays a budgeted, rotating sample of operators spread over every shard and checks "
        "the integrity of a rotating budget of shard files; results per shard under each asset check. "
        "Launch with the default config to verify today's rotation, or name operators or shards.",
        tags={"purpose": "verify"},
        executor_def=dg.in_process_executor,
    )
    def verify_now() -> None:
        verify_sample()

    return verify_now
