"""Driving a running deployment from a test: backfills launched through the webserver's GraphQL API,
everything else read from the deployment's own PostgreSQL instance."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import dagster as dg
import h5py
import numpy as np
from dagster._core.storage.dagster_run import DagsterRunStatus, RunsFilter

from spinlock_assets.cluster import client
from spinlock_assets.cluster.deployment import Deployment

__all__ = [
    "GENERATION_ASSETS",
    "array_contents",
    "backfill_runs",
    "cluster_instance",
    "launch_backfill",
    "materialized_partitions",
    "poll",
    "run_partitions",
    "temp_files",
    "wait_backfill",
]

GENERATION_ASSETS = ["operator_parameters", "initial_conditions", "base_features"]
BACKFILL_DONE = ("COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED", "COMPLETED")
T = TypeVar("T")


def poll(probe: Callable[[], T | None], *, timeout: float, what: str, interval: float = 0.5) -> T:
    """Call ``probe`` until it returns something other than ``None``; ``TimeoutError`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value is not None:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: still waiting after {timeout:.0f} s")
        time.sleep(interval)


@contextlib.contextmanager
def cluster_instance(deployment: Deployment) -> Iterator[dg.DagsterInstance]:
    """The deployment's instance (PostgreSQL), as its own processes see it."""
    saved = dict(os.environ)
    os.environ.update(deployment.environment())
    try:
        with dg.DagsterInstance.get() as instance:
            yield instance
    finally:
        os.environ.clear()
        os.environ.update(saved)


def launch_backfill(
    deployment: Deployment, partitions: Sequence[str], *, tags: dict[str, str] | None = None
) -> str:
    """An asset backfill of the generation assets over ``partitions``, through GraphQL; its id."""
    return client.launch_backfill(deployment.url, GENERATION_ASSETS, partitions, tags=tags)


def backfill_runs(instance: dg.DagsterInstance, backfill_id: str) -> list[dg.DagsterRun]:
    return list(instance.get_runs(filters=RunsFilter(tags={"dagster/backfill": backfill_id})))


def wait_backfill(instance: dg.DagsterInstance, backfill_id: str, timeout: float) -> str:
    """The backfill's final status, once it and every one of its runs (retries included) has ended."""

    def finished() -> str | None:
        status = instance.get_backfill(backfill_id).status.value
        runs = backfill_runs(instance, backfill_id)
        ended = all(run.status in (DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE) for run in runs)
        return status if status in BACKFILL_DONE and ended else None

    try:
        return poll(finished, timeout=timeout, what=f"backfill {backfill_id}", interval=1.0)
    except TimeoutError as error:
        runs = "\n".join(
            f"  {r.run_id} {r.status.value} {r.tags}" for r in backfill_runs(instance, backfill_id)
        )
        raise TimeoutError(f"{error}\n{runs}") from None


def materialized_partitions(instance: dg.DagsterInstance, asset: str) -> dict[str, int]:
    """``{partition: number of times its file was published}``: materializations that record a file (a
    ranged run also records one marker per partition, without a file, before each shard's own)."""
    records = instance.fetch_materializations(dg.AssetKey(asset), limit=10_000).records
    counts: dict[str, int] = {}
    for record in records:
        event = record.asset_materialization
        if "sha256" in event.metadata:
            counts[event.partition] = counts.get(event.partition, 0) + 1
    return counts


def run_partitions(run: dg.DagsterRun, keys: Sequence[str]) -> list[str]:
    """The shards a run materialized: its partition, or the range its tags name (within ``keys``, the
    partitions in order)."""
    if "dagster/partition" in run.tags:
        return [run.tags["dagster/partition"]]
    first = keys.index(run.tags["dagster/asset_partition_range_start"])
    return list(keys[first : keys.index(run.tags["dagster/asset_partition_range_end"]) + 1])


def array_contents(path: Path) -> dict[str, Any]:
    """Every dataset of an HDF5 file by path: its dtype, shape and bytes (what must be bit-identical
    between two runs; the file's bytes also hold a creation time)."""
    contents: dict[str, Any] = {}
    with h5py.File(path, "r") as handle:

        def visit(name: str, node: Any) -> None:
            if isinstance(node, h5py.Dataset):
                data = np.asarray(node[()])
                contents[name] = (data.dtype.str, data.shape, data.tobytes())

        handle.visititems(visit)
    return contents


def temp_files(data_root: Path) -> list[Path]:
    """Leftover temporary files of the atomic writer (``.<name>.tmp-<pid>-<hex>``)."""
    return sorted(path for path in data_root.rglob(".*.tmp-*"))
