"""Helpers for Dagster-layer tests: build definitions for a tiny spec and materialize through them."""

from __future__ import annotations

import dagster as dg

from spinlock_assets.definitions import build_definitions

SHARDS = ["ops-000000-000003", "ops-000004-000007", "ops-000008-000011"]
GENERATION = ["operator_parameters", "initial_conditions", "base_features"]


def materialize(defs: dg.Definitions, selection, instance, partition_key: str | None = None, **kwargs):
    """Materialize ``selection`` (asset names) through the definitions' own assets and resources."""
    return dg.materialize(
        list(defs.assets),
        selection=selection,
        partition_key=partition_key,
        resources=defs.resources,
        instance=instance,
        **kwargs,
    )


def generate(defs: dg.Definitions, instance, shards=SHARDS) -> None:
    for key in shards:
        assert materialize(defs, GENERATION, instance, key).success


def tiny_definitions(spec, root, **kwargs) -> dg.Definitions:
    return build_definitions(spec, root, **kwargs)
