"""The composition root: the only place that reads configuration and builds the Dagster definitions.

The dataset spec comes from ``$SPINLOCK_SPEC`` (default: the small CPU-friendly spec shipped in
``spinlock_assets/specs/default.json``) and HDF5 files go under ``$SPINLOCK_DATA_ROOT`` (default
``./data``). Both are read here once, when the code location loads.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Sequence
from pathlib import Path

import dagster as dg

from .core.spec import DEFAULT_SPEC_PATH, DatasetSpec, load_spec
from .defs.constants import (
    DATA_ROOT_ENV_VAR,
    DEFAULT_DATA_ROOT,
    DEVICE_ENV_VAR,
    GPU_POOL,
    PLUGINS_ENV_VAR,
    RUN_SECONDS_ENV_VAR,
    SPEC_ENV_VAR,
)
from .defs.dataset import build_dataset_asset, build_dataset_sensor
from .defs.features import build_feature_assets
from .defs.generation import build_generation_assets
from .defs.io_manager import IO_MANAGER_KEY, HDF5ShardIOManager
from .defs.jobs import build_jobs
from .defs.partitions import shard_partitions
from .defs.ranges import RUN_SECONDS, backfill_policy
from .defs.resources import DatasetResource, RolloutResource
from .defs.verification import build_checks, build_verification_schedule, build_verify_now_job
from .defs.verification.checks import integrity_check_key

__all__ = ["build_definitions", "definitions_from_environment", "defs"]


def build_definitions(
    spec: DatasetSpec,
    data_root: str | Path,
    *,
    families: Sequence | None = None,
    rollout: RolloutResource | None = None,
    run_seconds: float = RUN_SECONDS,
) -> dg.Definitions:
    """Everything Dagster needs for one dataset: assets, checks, jobs, schedules and resources. A backfill
    gives each run about ``run_seconds`` of estimated work (0: one shard per run). A spec one
    rollout of which would not fit this machine's memory is refused here, before any work
    (``core.budget``; free disk changes, so the main job checks it before its runs instead: a full disk
    must not stop the code location from loading)."""
    from .core.budget import check_memory
    from .core.features.registry import derived_families

    check_memory(spec)

    families = derived_families(spec.channels) if families is None else list(families)
    rollout = rollout or RolloutResource()
    # Steps that roll out on a GPU share the GPU pool, whose limit (one per GPU) keeps runs that land
    # on one machine from oversubscribing its GPUs; CPU rollouts are limited by the run queue alone.
    rollout_pool = GPU_POOL if rollout.device.startswith("cuda") else None
    partitions = shard_partitions(spec)
    policy = backfill_policy(spec, run_seconds)
    generation = build_generation_assets(partitions, policy, rollout_pool)
    features = build_feature_assets(partitions, families, policy, rollout_pool)
    dataset_asset = build_dataset_asset([*generation, *features], families)
    shard_assets = [key.path[-1] for assets_def in (*generation, *features) for key in assets_def.keys]
    generation_assets = [key.path[-1] for assets_def in generation for key in assets_def.keys]
    verify_now = build_verify_now_job(shard_assets, rollout_pool)
    dataset = DatasetResource(spec_json=spec.to_json(), data_root=str(Path(data_root).absolute()))
    return dg.Definitions(
        assets=[*generation, *features, dataset_asset],
        asset_checks=build_checks(partitions, shard_assets, rollout_pool),
        jobs=[*build_jobs([integrity_check_key(a) for a in generation_assets]), verify_now],
        schedules=[build_verification_schedule(verify_now)],
        sensors=[build_dataset_sensor()],
        # One process per run: a step process would re-import torch (seconds) for a few seconds of work.
        # Runs are the unit of parallelism: a backfill's runs (a range of shards each) run concurrently.
        executor=dg.in_process_executor,
        resources={
            "dataset": dataset,
            "rollout": rollout,
            IO_MANAGER_KEY: HDF5ShardIOManager(dataset=dataset),
        },
    )


def definitions_from_environment() -> dg.Definitions:
    """The definitions of the spec, data root and device the environment names now (``$SPINLOCK_SPEC``,
    ``$SPINLOCK_DATA_ROOT``, ``$SPINLOCK_DEVICE``: a Celery worker serving the cuda queue sets it, so its
    runs roll out on its GPU), and the work per backfill run (``$SPINLOCK_RUN_SECONDS``)."""
    return build_definitions(
        _spec_from_environment(),
        os.environ.get(DATA_ROOT_ENV_VAR) or DEFAULT_DATA_ROOT,
        rollout=RolloutResource(device=os.environ.get(DEVICE_ENV_VAR) or "cpu"),
        run_seconds=_run_seconds_from_environment(),
    )


def _run_seconds_from_environment() -> float:
    text = os.environ.get(RUN_SECONDS_ENV_VAR)
    if not text:
        return RUN_SECONDS
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not seconds >= 0:  # also refuses nan
        raise ValueError(f"${RUN_SECONDS_ENV_VAR}={text!r}: expected seconds of work per run, >= 0")
    return seconds


def _spec_from_environment() -> DatasetSpec:
    return load_spec(os.environ.get(SPEC_ENV_VAR) or DEFAULT_SPEC_PATH)


def _import_plugins() -> None:
    """Import the modules named in ``$SPINLOCK_PLUGINS`` (comma-separated): each registers its own feature
    families with ``register_family``, so a research group adds families without editing this package."""
    for name in filter(None, (part.strip() for part in os.environ.get(PLUGINS_ENV_VAR, "").split(","))):
        importlib.import_module(name)


_import_plugins()

defs = definitions_from_environment()
