"""Keeping ``dataset`` honest: dataset.h5 is rebuilt by itself once new shards or a new family have landed.

Dagster does not mark an unpartitioned asset stale when a partition of an upstream asset appears for the
first time, so after a new family's backfill ``dataset`` would keep reading "Materialized" while its file
lacks the family. A rebuild only writes virtual datasets over the shard files (seconds, no copy), so the
cheapest honest answer is to rebuild it whenever any upstream shard was materialized since the last
rebuild, once no upstream run or backfill is still going (one rebuild per backfill, not one per shard).
"""

from __future__ import annotations

import dagster as dg

from ..constants import DATASET_GROUP

__all__ = ["REBUILD_SENSOR", "build_dataset_sensor", "rebuild_after_upstream_updates"]

REBUILD_SENSOR = "rebuild_dataset"


def rebuild_after_upstream_updates() -> dg.AutomationCondition:
    """True once any upstream shard was updated since ``dataset`` was last requested or built, and no
    upstream run or backfill is in progress. Unlike ``eager()`` it does not wait for every upstream
    partition: a family never materialized is the normal state, and dataset.h5 masks it."""
    return (
        dg.AutomationCondition.any_deps_updated().since_last_handled()
        & ~dg.AutomationCondition.any_deps_in_progress()  # runs and backfills
        & ~dg.AutomationCondition.in_progress()
    ).with_label("rebuild after upstream shards land")


def build_dataset_sensor() -> dg.AutomationConditionSensorDefinition:
    """Evaluates the dataset's condition every 30 s in the daemon, on by default."""
    return dg.AutomationConditionSensorDefinition(
        REBUILD_SENSOR,
        target=dg.AssetSelection.groups(DATASET_GROUP),
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Rebuilds dataset.h5 after new shards or a new feature family have been materialized "
        "(once their runs and backfills have finished). Stop it here to rebuild by hand instead.",
    )
