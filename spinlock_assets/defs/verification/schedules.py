"""The verification schedule: one ``verify_now`` run per tick, whatever the size of the dataset.

A tick reads nothing but whether ``base_features`` was ever materialized, and requests one run for the
tick's rotation (days since 1970-01-01). The run replays ``operator_budget`` operators spread over every
shard and checks ``file_budget`` shard files (``verify_now``), so every operator is replayed once every
``ceil(N / operator_budget)`` days and every shard file checked once every
``ceil(S / (file_budget // shard assets))`` days; raise the budgets in the job's config (or run the
schedule more often) for a shorter period.
"""

import dagster as dg

from spinlock_assets.storage.layout import BASE_FEATURES_ASSET

from ..constants import VERIFY_CRON
from .verify_now import VERIFY_OP, current_rotation

__all__ = ["build_verification_schedule"]


def build_verification_schedule(job: dg.JobDefinition) -> dg.ScheduleDefinition:
    @dg.schedule(
        job=job,
        cron_schedule=VERIFY_CRON,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Daily: one verify_now run replaying a fixed budget of operators spread over every shard "
        "and checking a fixed budget of shard files, rotating so that every operator and file is covered "
        "(period: ceil(N / budget) days).",
    )
    def verify_replay_sample(context: dg.ScheduleEvaluationContext):
        if context.instance.get_latest_materialization_event(dg.AssetKey(BASE_FEATURES_ASSET)) is None:
            return dg.SkipReason("no materialized base_features shard to verify yet")
        rotation = current_rotation(context.scheduled_execution_time.timestamp())
        return dg.RunRequest(
            run_key=f"verify-{rotation}",
            run_config={"ops": {VERIFY_OP: {"config": {"rotation": rotation}}}},
            tags={"purpose": "verify"},
        )

    return verify_replay_sample
