"""What every shard asset shares: loading a shard's replayable records, the preview image shown in the UI's
metadata panel, and reading back what its materializations recorded."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

import dagster as dg
import numpy as np

from spinlock_assets.storage.operator_arrays import stored_records

from .resources import DatasetResource

if TYPE_CHECKING:
    from spinlock_assets.core.record import OperatorRecord
    from spinlock_assets.figures.plots import Preview
    from spinlock_assets.storage import ShardContents, ShardStore

__all__ = [
    "arrays_of",
    "finite_mean",
    "load_records",
    "newest_first",
    "preview",
    "recorded_sha256",
    "shards_of",
]

_PARTITIONS_PER_QUERY = 500  # partition keys bound in one query (SQLite limits bound variables)


def arrays_of(contents: ShardContents) -> dict[str, Any]:
    """The numpy arrays of loaded shard contents, by name."""
    return {name: array.data for name, array in contents.arrays.items()}


def load_records(
    dataset: DatasetResource,
    operator_parameters: ShardContents,
    initial_conditions: ShardContents,
    base_features: ShardContents | None = None,
) -> list[OperatorRecord]:
    """Replayable records of one shard from its loaded shard contents (with stored digests when
    ``base_features`` is given); initial conditions are stored or, in the compact mode, regenerated and
    checked against their digests (``storage.operator_arrays.initial_condition_fields``)."""
    fingerprint = json.loads(base_features.attrs["fingerprint_json"]) if base_features is not None else None
    return stored_records(
        dataset.spec,
        arrays_of(operator_parameters),
        arrays_of(initial_conditions),
        arrays_of(base_features) if base_features is not None else None,
        fingerprint,
    )


def preview(figure: Preview) -> dg.MetadataValue:
    """A figure with its caption for the UI's metadata panel ("[Show Markdown]" opens it)."""
    return dg.MetadataValue.md(figure.markdown())


def finite_mean(values: np.ndarray) -> float:
    """Mean of the finite entries as numeric metadata (NaN when there is none, e.g. all diverged)."""
    finite = np.asarray(values, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    return float(finite.mean()) if finite.size else float("nan")


def shards_of(loaded: Any, shard_keys: list[str]) -> Any:
    """An upstream input by shard key: the IO manager loads one shard as its contents and a range as a
    mapping (``io_manager.load_input``)."""
    return {shard_keys[0]: loaded} if len(shard_keys) == 1 else loaded


def newest_first(
    instance: dg.DagsterInstance, asset_key: dg.AssetKey, shard_keys: Iterable[str]
) -> Iterator[dg.EventLogRecord]:
    """Materialization records of ``shard_keys`` of ``asset_key``, newest first within each chunk of keys.
    Queries those partitions only, so the cost is the number of keys asked for, not the number of
    partitions the asset has."""
    keys = sorted(set(shard_keys))
    for first in range(0, len(keys), _PARTITIONS_PER_QUERY):
        records_filter = dg.AssetRecordsFilter(
            asset_key=asset_key, asset_partitions=keys[first : first + _PARTITIONS_PER_QUERY]
        )
        cursor = None
        while True:
            page = instance.fetch_materializations(records_filter, limit=1000, cursor=cursor)
            yield from page.records
            if not page.has_more:
                break
            cursor = page.cursor


def recorded_sha256(
    instance: dg.DagsterInstance, store: ShardStore, asset: str, shard_keys: Iterable[str]
) -> dict[str, str]:
    """``shard_key -> sha256`` recorded by the latest materialization of each of ``shard_keys`` of ``asset``
    whose file is the one in ``store`` (an instance may have materialized the same asset under another data
    root); shards never materialized there are absent."""
    recorded: dict[str, str] = {}
    for record in newest_first(instance, dg.AssetKey(asset), shard_keys):
        event = record.asset_materialization
        if event is None or event.partition in recorded or "sha256" not in event.metadata:
            continue
        path = event.metadata.get("path")
        if path is not None and str(path.value) == str(store.path(asset, event.partition)):
            recorded[event.partition] = str(event.metadata["sha256"].value)
    return recorded
