"""The unpartitioned ``dataset`` asset: ``<root>/dataset.h5``, HDF5 virtual datasets over all shards."""

from collections.abc import Sequence

import dagster as dg

from spinlock_assets.core.features.family import FeatureFamily
from spinlock_assets.core.shards import shard_ranges
from spinlock_assets.storage import (
    DATASET_FILE,
    FIXED_SOURCES,
    SCHEMA_VERSION,
    build_consolidated_dataset,
    family_source,
    file_sha256,
)
from spinlock_assets.storage.store import ShardStore

from ..constants import DATASET_GROUP, OWNERS
from ..resources import DatasetResource
from .automation import rebuild_after_upstream_updates

__all__ = ["build_dataset_asset", "recorded_sha256"]


def recorded_sha256(
    instance: dg.DagsterInstance, store: ShardStore, assets: Sequence[str]
) -> dict[tuple[str, str], str]:
    """``(asset, shard_key) -> sha256`` of the latest materialization of every partition of ``assets`` whose
    file is the one in ``store`` (an instance may have materialized the same asset under another root)."""
    recorded: dict[tuple[str, str], str] = {}
    for asset in assets:
        cursor = None
        while True:  # newest first, so the first record seen per partition is its latest
            page = instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset)), limit=1000, cursor=cursor
            )
            for record in page.records:
                event = record.asset_materialization
                if event is None or not event.partition or "sha256" not in event.metadata:
                    continue
                path = event.metadata.get("path")
                if path is None or str(path.value) != str(store.path(asset, event.partition)):
                    continue
                recorded.setdefault((asset, event.partition), str(event.metadata["sha256"].value))
            if not page.has_more:
                break
            cursor = page.cursor
    return recorded


def build_dataset_asset(
    shard_assets: Sequence[dg.AssetsDefinition], families: Sequence[FeatureFamily]
) -> dg.AssetsDefinition:
    """``dataset`` depends on every partition of every shard asset; it never copies data, so rebuilding
    it is cheap and touches no shard file."""
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
        path = build_consolidated_dataset(
            dataset.store,
            dataset.store.root / DATASET_FILE,
            n_operators=spec.n_operators,
            shard_keys=[shard.key for shard in shard_ranges(spec.n_operators, spec.shard_size)],
            sources=sources,
            overwrite=True,
            # What each shard's materialization recorded: a file changed since is refused, never recorded.
            recorded_sha256=recorded_sha256(
                context.instance, dataset.store, [source.asset for source in sources]
            ),
            root_attrs={
                "schema_version": SCHEMA_VERSION,
                "spec_json": spec.to_json(),
                "spec_hash": spec.spec_hash,
                "n_operators": spec.n_operators,
            },
        )
        present = {source.asset: len(dataset.store.shard_keys(source.asset)) for source in sources}
        return dg.MaterializeResult(
            metadata={
                "path": dg.MetadataValue.path(str(path)),
                "sha256": file_sha256(path),
                "n_operators": spec.n_operators,
                "shards_present": dg.MetadataValue.json(present),
            }
        )

    return dataset
