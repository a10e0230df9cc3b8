"""Runs sized by work: one run materializes a range of consecutive shards, and every shard keeps its own
materialization (file, sha256, data version, code version, input provenance) and its own check results.

Dagster records every partition of a ranged ``Output`` with one shared data version
(``_get_output_asset_events``; dagster-notes §6): one changed shard would mark every shard of its range
changed downstream. So a step over several shards publishes each shard's file as soon as it is computed
(``io_manager.publish_shard``, the same write the IO manager does for one shard), yields one
:class:`PublishedRange` output per asset (Dagster records its shared-version events first; they carry no
file metadata), then logs one ``AssetMaterialization`` per shard with the shard's own content version and
the provenance of its own upstream shards. Every shard's latest record is then the one it would have
had in a run of its own: staleness, the dataset's incremental update and the integrity checks read it
so. A run of one shard takes the plain path: its ``Output`` goes through the IO manager.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import dagster as dg
from dagster._core.definitions.data_version import (
    CODE_VERSION_TAG,
    DATA_VERSION_IS_USER_PROVIDED_TAG,
    DATA_VERSION_TAG,
    get_input_data_version_tag,
    get_input_event_pointer_tag,
)

from spinlock_assets.core.budget import estimated_operator_seconds
from spinlock_assets.core.spec import DatasetSpec

from .io_manager import PublishedRange, ShardOutput, publish_shard
from .resources import DatasetResource
from .shard_assets import newest_first

__all__ = [
    "RUN_SECONDS",
    "ShardResult",
    "backfill_policy",
    "latest_records",
    "materialize_shards",
    "shards_per_run",
]

# Work one run should carry: far above a run's fixed cost (~1 s in a warm process, 4-11 s for a new run
# process), short enough that a killed run loses little and a backfill spreads over workers.
RUN_SECONDS = 60.0
MAX_SHARDS_PER_RUN = 256  # bounds the events and the previews one run records


def shards_per_run(spec: DatasetSpec, run_seconds: float = RUN_SECONDS) -> int:
    """How many shards one run materializes: ``run_seconds`` of estimated work, at least one shard."""
    shard_seconds = estimated_operator_seconds(spec) * spec.shard_size
    return max(1, min(MAX_SHARDS_PER_RUN, math.floor(run_seconds / shard_seconds)))


def backfill_policy(spec: DatasetSpec, run_seconds: float = RUN_SECONDS) -> dg.BackfillPolicy:
    """Backfills (UI, daemon) launch one run per :func:`shards_per_run` consecutive shards."""
    return dg.BackfillPolicy.multi_run(max_partitions_per_run=shards_per_run(spec, run_seconds))


@dataclass(frozen=True)
class ShardResult:
    """One asset's result for one shard: the arrays to publish and the metadata to show with them."""

    output: ShardOutput
    metadata: dict[str, Any]


def materialize_shards(
    context: dg.AssetExecutionContext,
    dataset: DatasetResource,
    results: Iterable[tuple[str, Mapping[str, ShardResult]]],
) -> Iterator[dg.Output]:
    """The outputs of a shard step, from ``results``: per shard key (in the run's order), per output name,
    that asset's :class:`ShardResult`. Over one shard: one ``Output`` per asset, written by the IO
    manager. Over several: each shard published as it comes (memory holds one shard at a time), then
    one :class:`PublishedRange` per asset and one materialization per shard and asset."""
    keys = list(context.partition_keys)
    if len(keys) == 1:
        for _, by_output in results:
            for name, result in by_output.items():
                yield dg.Output(
                    result.output,
                    output_name=name,
                    data_version=dg.DataVersion(result.output.content_version),
                    metadata=result.metadata,
                )
        return
    published: list[tuple[dg.AssetKey, str, str, dict[str, Any]]] = []
    names: list[str] = []
    for key, by_output in results:
        for name, result in by_output.items():
            asset_key = context.asset_key_for_output(name)
            code_version = context.assets_def.specs_by_key[asset_key].code_version or ""
            files = publish_shard(dataset, asset_key.path[-1], key, result.output, code_version)
            published.append((asset_key, key, result.output.content_version, {**result.metadata, **files}))
            names += [name] if name not in names else []
    for name in names:
        yield dg.Output(
            PublishedRange(tuple(keys)),
            output_name=name,
            metadata={"shards_in_run": len(keys), "note": "each shard's own materialization follows"},
        )
    # Upstream records are read after the outputs: an upstream asset of this same run has logged its
    # per-shard materializations by now (steps run in order), so each shard points at its own.
    upstream = {
        asset_key: [dep.asset_key for dep in context.assets_def.specs_by_key[asset_key].deps]
        for asset_key, *_ in published
    }
    provenance = {
        up: latest_records(context.instance, up, keys)
        for up in {up for deps in upstream.values() for up in deps}
    }
    for asset_key, key, version, metadata in published:
        spec = context.assets_def.specs_by_key[asset_key]
        tags = {
            CODE_VERSION_TAG: spec.code_version or "",
            DATA_VERSION_TAG: version,
            DATA_VERSION_IS_USER_PROVIDED_TAG: "true",
        }
        for up in upstream[asset_key]:
            if key in provenance[up]:  # an upstream never materialized has no version to point at
                storage_id, data_version = provenance[up][key]
                tags[get_input_data_version_tag(up)] = data_version
                tags[get_input_event_pointer_tag(up)] = str(storage_id)
        context.log_event(dg.AssetMaterialization(asset_key, partition=key, metadata=metadata, tags=tags))


def latest_records(
    instance: dg.DagsterInstance, asset_key: dg.AssetKey, shard_keys: Sequence[str]
) -> dict[str, tuple[int, str]]:
    """``shard_key -> (storage id, data version)`` of the latest versioned materialization of each of
    ``shard_keys``; shards never materialized are absent."""
    latest: dict[str, tuple[int, str]] = {}
    for record in newest_first(instance, asset_key, shard_keys):
        event = record.asset_materialization
        if event is not None and event.partition not in latest and DATA_VERSION_TAG in event.tags:
            latest[event.partition] = (record.storage_id, event.tags[DATA_VERSION_TAG])
    return latest
