"""Setup and ground truth for the browser tests, through GraphQL and the file system only.

The browser tests drive the workflows by clicking; what comes before a workflow (shards generated,
the spec grown) and what the UI cannot show (a schedule's stored state, file hashes) goes through
the :class:`DagsterDev` GraphQL client here.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from dagster_graphql import ReloadRepositoryLocationStatus

from spinlock_assets.core.shards import shard_ranges
from spinlock_assets.core.spec import DatasetSpec, load_spec
from spinlock_assets.defs.jobs import GENERATION_JOB
from spinlock_assets_tests.conftest import tiny_spec
from spinlock_assets_tests.e2e.dagster_dev import (
    REPOSITORY_NAME,
    DagsterDev,
    DagsterDevError,
    expect_typename,
    poll,
)

__all__ = [
    "GENERATION_ASSETS",
    "current_spec",
    "generate_missing_shards",
    "grow_spec",
    "materialized_partitions",
    "partition_keys",
    "reload_location",
    "schedule_status",
    "sha256_of",
    "shard_keys",
]

GENERATION_ASSETS = ["operator_parameters", "initial_conditions", "base_features"]
RUN_TIMEOUT_S = 300
RELOAD_TIMEOUT_S = 120

_PARTITION_KEYS = """
query($key: AssetKeyInput!) {
  assetNodeOrError(assetKey: $key) {
    __typename
    ... on AssetNode { partitionKeys }
    ... on Error { message }
  }
}
"""
_SCHEDULE_STATUS = """
query($selector: ScheduleSelector!) {
  scheduleOrError(scheduleSelector: $selector) {
    __typename
    ... on Schedule { scheduleState { status } }
    ... on Error { message }
  }
}
"""


def shard_keys(spec: DatasetSpec) -> list[str]:
    return [shard.key for shard in shard_ranges(spec.n_operators, spec.shard_size)]


def current_spec(dev: DagsterDev) -> DatasetSpec:
    """The spec file the server's code location reads (it may have been grown since it started)."""
    return load_spec(dev.spec_path)


def grow_spec(dev: DagsterDev, n_operators: int) -> DatasetSpec:
    """Rewrite the server's spec file with ``n_operators`` (the code location sees it on reload)."""
    spec = tiny_spec(n_operators=n_operators)
    dev.spec_path.write_text(spec.to_json())
    return spec


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def partition_keys(dev: DagsterDev, asset: str = "base_features") -> list[str]:
    """The partition keys the loaded code location defines for ``asset``."""
    result = dev.graphql(_PARTITION_KEYS, {"key": {"path": [asset]}})["assetNodeOrError"]
    return list(expect_typename(result, "AssetNode", f"asset node {asset}")["partitionKeys"])


def reload_location(dev: DagsterDev) -> None:
    """Reload the code location and wait until it defines the partitions of the spec file."""
    reloaded = dev.client.reload_repository_location(dev.location_name)
    if reloaded.status != ReloadRepositoryLocationStatus.SUCCESS:
        raise DagsterDevError(f"reload of {dev.location_name}: {reloaded.failure_type}: {reloaded.message}")
    wanted = shard_keys(current_spec(dev))
    poll(
        lambda: True if partition_keys(dev) == wanted else None,
        timeout=RELOAD_TIMEOUT_S,
        what=f"code location reload to partitions {wanted}",
    )


def materialized_partitions(dev: DagsterDev, asset: str) -> set[str]:
    return {event.partition for event in dev.asset_materializations(asset, limit=100) if event.partition}


def generate_missing_shards(dev: DagsterDev) -> None:
    """Generate every shard of the current spec not generated yet: one run of the ``generate_shards``
    job per shard, all launched at once (that job runs its three steps in one process, the cheapest
    way on a small machine), then wait for them all."""
    done = materialized_partitions(dev, "base_features")
    missing = [key for key in shard_keys(current_spec(dev)) if key not in done]
    run_ids = [dev.launch_run(GENERATION_JOB, tags={"dagster/partition": key}) for key in missing]
    for run_id in run_ids:
        status = dev.wait_run(run_id, timeout=RUN_TIMEOUT_S)
        assert status == "SUCCESS", dev.describe_run(run_id)


def schedule_status(dev: DagsterDev, schedule: str) -> str:
    """The stored status of a schedule: ``RUNNING`` or ``STOPPED``."""
    selector = {
        "repositoryLocationName": dev.location_name,
        "repositoryName": REPOSITORY_NAME,
        "scheduleName": schedule,
    }
    result = dev.graphql(_SCHEDULE_STATUS, {"selector": selector})["scheduleOrError"]
    return expect_typename(result, "Schedule", f"schedule {schedule}")["scheduleState"]["status"]
