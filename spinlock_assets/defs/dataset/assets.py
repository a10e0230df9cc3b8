"""The unpartitioned ``dataset`` asset: ``<root>/dataset.h5``, HDF5 virtual datasets over all shards."""

from collections.abc import Sequence
from functools import partial
from pathlib import Path

import dagster as dg

from spinlock_assets.core.features.family import FeatureFamily
from spinlock_assets.core.shards import shard_ranges
from spinlock_assets.storage import (
    DATASET_FILE,
    FIXED_SOURCES,
    SCHEMA_VERSION,
    family_source,
    update_consolidated_dataset,
)

from ..constants import DATASET_GROUP, OWNERS
from ..resources import DatasetResource
from ..shard_assets import recorded_sha256
from .automation import rebuild_after_upstream_updates

__all__ = ["build_dataset_asset"]


def _recorded_sha256_of(instance: dg.DagsterInstance, key: dg.AssetKey, path: Path) -> str | None:
    """The sha256 the latest materialization of ``key`` recorded for the file at ``path`` (None when this
    instance never built it there): what lets an update keep the rows of the dataset.h5 it finds."""
    cursor = None
    while True:  # newest first
        page = instance.fetch_materializations(key, limit=100, cursor=cursor)
        for record in page.records:
            metadata = record.asset_materialization.metadata if record.asset_materialization else {}
            if "path" in metadata and str(metadata["path"].value) == str(path) and "sha256" in metadata:
                return str(metadata["sha256"].value)
        if not page.has_more:
            return None
        cursor = page.cursor


def build_dataset_asset(
    shard_assets: Sequence[dg.AssetsDefinition], families: Sequence[FeatureFamily]
) -> dg.AssetsDefinition:
    """``dataset`` depends on every partition of every shard asset; it never copies data, and each update
    reads only the shard files that changed since the last one (``update_consolidated_dataset``)."""
    deps = [
        dg.AssetDep(key, partition_mapping=dg.AllPartitionMapping())
        for assets_def in shard_assets
        for key in assets_def.keys
    ]

    @dg.asset(
        deps=deps,
        group_name=DATASET_GROUP,
        code_version="1",
        kinds={"hdf5"},
        owners=OWNERS,
        pool="h5-consolidate",
        automation_condition=rebuild_after_upstream_updates(),
    )
    def dataset(context: dg.AssetExecutionContext, dataset: DatasetResource) -> dg.MaterializeResult:
        """The single-file view `dataset.h5` (`/parameters`, `/inputs`, `/features/<family>`,
        `/verification`, `/metadata`) over all shard files, readable with plain h5py. Shards or families not
        materialized yet are left out or masked (`present = 0`, never zeros), so it can be built at any
        time: confirm when the UI warns about unmaterialized upstream partitions. The `rebuild_dataset`
        sensor rebuilds it after new shards or families land."""
        spec = dataset.spec
        candidates = [*FIXED_SOURCES, *(family_source(f.name, [a.name for a in f.arrays]) for f in families)]
        # A family never materialized has no place in the file yet; a partly materialized one is masked.
        sources = [source for source in candidates if dataset.store.shard_keys(source.asset)]
        path = dataset.store.root / DATASET_FILE
        consolidation = update_consolidated_dataset(
            dataset.store,
            path,
            n_operators=spec.n_operators,
            shard_keys=[shard.key for shard in shard_ranges(spec.n_operators, spec.shard_size)],
            sources=sources,
            # Rows of the previous dataset.h5 are kept only if it is the file this instance recorded, and
            # each shard read afresh is compared with what its materialization recorded: a file changed
            # since is refused, never recorded.
            previous_sha256=_recorded_sha256_of(context.instance, context.asset_key, path),
            recorded_sha256=partial(recorded_sha256, context.instance, dataset.store),
            root_attrs={
                "schema_version": SCHEMA_VERSION,
                "spec_json": spec.to_json(),
                "spec_hash": spec.spec_hash,
                "n_operators": spec.n_operators,
            },
        )
        return dg.MaterializeResult(
            metadata={
                "path": dg.MetadataValue.path(str(consolidation.path)),
                "sha256": consolidation.sha256,
                "n_operators": spec.n_operators,
                "shards_present": dg.MetadataValue.json(consolidation.shards_by_asset),
                "shard_files": consolidation.shards_present,
                # files described afresh; every other row was kept from the previous dataset.h5
                "shard_files_read": consolidation.shards_read,
            }
        )

    return dataset
