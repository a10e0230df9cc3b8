"""Jobs, selected by asset group."""

from __future__ import annotations

from collections.abc import Sequence

import dagster as dg

from .constants import DATASET_GROUP, FEATURES_GROUP, GENERATION_GROUP, INPUTS_GROUP

__all__ = ["build_jobs", "GENERATION_JOB", "FEATURES_JOB", "DATASET_JOB"]

GENERATION_JOB = "generate_shards"
FEATURES_JOB = "replay_features"
DATASET_JOB = "consolidate_dataset"


def build_jobs(generation_integrity_checks: Sequence[dg.AssetCheckKey] = ()) -> list:
    """The generation, feature and dataset jobs. The generation assets' integrity checks are left out of
    the generation job, the hot path of every backfill: right after an atomic write they would only re-read
    the file, at a Dagster step's cost (~50 ms) per asset and shard; the verification schedule runs them
    on the files at rest."""
    at_rest = dg.AssetSelection.checks(*generation_integrity_checks)
    return [
        dg.define_asset_job(
            GENERATION_JOB,
            selection=dg.AssetSelection.groups(INPUTS_GROUP, GENERATION_GROUP) - at_rest,
            description="Parameters, initial conditions and the generation rollout (base features + digests)"
            " per shard.",
            executor_def=dg.in_process_executor,
        ),
        dg.define_asset_job(
            FEATURES_JOB,
            selection=dg.AssetSelection.groups(FEATURES_GROUP),
            description="Every derived feature family per shard, from one replay of each operator.",
            executor_def=dg.in_process_executor,
        ),
        dg.define_asset_job(
            DATASET_JOB,
            selection=dg.AssetSelection.groups(DATASET_GROUP),
            description="Rebuild dataset.h5, the consolidated view over every shard file.",
        ),
    ]
