"""The verification schedule: every tick, replay a rotating window of operators in every shard, and check
every generation shard file (SHA-256 and layout) and the finite-or-flagged base series.

A check-only job cannot be partitioned in Dagster 1.13 (dagster-notes §1.11), so the schedule targets a
partitioned asset job over ``base_features`` and the shard assets' checks, and requests check-only runs
(``asset_selection=[]``) per shard. The integrity checks run here, not in the runs that write the files
(see ``jobs.build_jobs``). Tick n replays window ``n mod ceil(shard_size / k)`` of each
shard, so every operator is replayed once every ``ceil(shard_size / k)`` ticks (k =
``operators_per_shard``). With the default daily cron, n is the number of days since 1970-01-01.
"""

from collections.abc import Sequence

import dagster as dg

from spinlock_assets.storage.layout import BASE_FEATURES_ASSET

from ..constants import VERIFY_CRON, VERIFY_OPERATORS_PER_SHARD
from .checks import NONFINITE_CHECK, REPLAY_CHECK, integrity_check_key

__all__ = ["VERIFY_JOB", "build_verification_job", "build_verification_schedule"]

VERIFY_JOB = "verify_shards"
_SECONDS_PER_TICK = 86_400  # the default cron is daily


def build_verification_job(generation_assets: Sequence[str]):
    return dg.define_asset_job(
        VERIFY_JOB,
        selection=dg.AssetSelection.assets(BASE_FEATURES_ASSET)
        | dg.AssetSelection.checks_for_assets(*generation_assets),
        description="Replay verification per shard (the schedule launches check-only runs of this job).",
        tags={"purpose": "verify"},
        executor_def=dg.in_process_executor,
    )


def build_verification_schedule(
    job,
    partitions: dg.PartitionsDefinition,
    generation_assets: Sequence[str],
    *,
    operators_per_shard: int = VERIFY_OPERATORS_PER_SHARD,
) -> dg.ScheduleDefinition:
    base_checks = [
        dg.AssetCheckKey(dg.AssetKey(BASE_FEATURES_ASSET), name) for name in (REPLAY_CHECK, NONFINITE_CHECK)
    ]

    @dg.schedule(job=job, cron_schedule=VERIFY_CRON, default_status=dg.DefaultScheduleStatus.RUNNING)
    def verify_replay_sample(context: dg.ScheduleEvaluationContext):
        """Replays a rotating sample of operators in every materialized shard and checks their digests; checks
        every materialized shard file's integrity."""
        rotation = int(context.scheduled_execution_time.timestamp() // _SECONDS_PER_TICK)
        materialized = {
            a: context.instance.get_materialized_partitions(dg.AssetKey(a)) for a in generation_assets
        }
        keys = sorted(materialized[BASE_FEATURES_ASSET] & set(partitions.get_partition_keys()))
        if not keys:
            return dg.SkipReason("no materialized base_features shard to verify yet")
        config = {
            "ops": {
                f"base_features_{REPLAY_CHECK}": {
                    "config": {"operators_per_shard": operators_per_shard, "rotation": rotation}
                }
            }
        }
        return [
            dg.RunRequest(
                run_key=f"verify-{key}-{rotation}",
                partition_key=key,
                asset_selection=[],
                asset_check_keys=[
                    *base_checks,
                    *(integrity_check_key(a) for a in generation_assets if key in materialized[a]),
                ],
                run_config=config,
                tags={"purpose": "verify"},
            )
            for key in keys
        ]

    return verify_replay_sample
