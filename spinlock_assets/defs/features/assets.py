"""One asset per derived feature family, materialized by replay through the rollout resource.

All derived families live in one subsettable multi-asset: selecting three families in a run replays
each operator once and feeds all three. Each family's ``code_version`` is its version, so changing a
family marks exactly that family stale.
"""

import time
from collections.abc import Sequence

import dagster as dg

from spinlock_assets.core.features.family import FeatureFamily, Needs
from spinlock_assets.core.fingerprint import ENGINE_VERSION
from spinlock_assets.core.progress import Progress
from spinlock_assets.figures import plots
from spinlock_assets.storage.arrays import StoredArray
from spinlock_assets.storage.layout import GENERATION_ASSETS
from spinlock_assets.storage.operator_arrays import family_arrays

from ..constants import FEATURES_GROUP, OWNERS
from ..io_manager import IO_MANAGER_KEY, ShardOutput
from ..resources import DatasetResource, RolloutResource
from ..shard_assets import load_records, preview

__all__ = ["build_feature_assets", "family_asset_name"]


# Verification statuses that count as a reproduced replay; anything else (mismatch, diverged) does not.
REPRODUCED = ("exact", "within_tolerance")


def family_asset_name(family_name: str) -> str:
    return f"{family_name}_features"


def family_code_version(family: FeatureFamily) -> str:
    """The family's version, plus the engine's for families computed from a replay (an engine change alters
    their inputs, so they must go stale too)."""
    if family.needs is Needs.BASE_SERIES:
        return f"{family.name}-{family.version}"
    return f"{family.name}-{family.version}+engine-{ENGINE_VERSION}"


def _kinds(family: FeatureFamily) -> set[str]:
    return {"numpy", "hdf5"} if family.needs is Needs.BASE_SERIES else {"torch", "hdf5"}


def build_feature_assets(
    partitions: dg.PartitionsDefinition, families: Sequence[FeatureFamily], rollout_pool: str | None = None
) -> list[dg.AssetsDefinition]:
    """The multi-asset computing ``families`` (``FeatureFamily`` objects) per shard; its replays run in
    ``rollout_pool`` (the GPU pool when rollouts run on a GPU)."""
    if not families:
        return []
    by_asset = {family_asset_name(f.name): f for f in families}
    outs = {
        name: dg.AssetOut(
            description=f"{family.description} (feature family '{family.name}', needs {family.needs.value})",
            group_name=FEATURES_GROUP,
            code_version=family_code_version(family),
            kinds=_kinds(family),
            owners=OWNERS,
            io_manager_key=IO_MANAGER_KEY,
            is_required=False,
            tags={"family": family.name, "needs": family.needs.value},
            metadata={"feature_columns": {a.name: list(a.field_names) for a in family.arrays}},
        )
        for name, family in by_asset.items()
    }

    @dg.multi_asset(
        outs=outs,
        can_subset=True,
        partitions_def=partitions,
        name="replay_feature_families",
        pool=rollout_pool,
        ins={name: dg.AssetIn() for name in GENERATION_ASSETS},
    )
    def replay_feature_families(
        context: dg.AssetExecutionContext,
        dataset: DatasetResource,
        rollout: RolloutResource,
        operator_parameters,
        initial_conditions,
        base_features,
    ):
        """Replays each operator of the shard once and computes every selected family from it."""
        from spinlock_assets.core.extraction import extract_families
        from spinlock_assets.core.verification import same_fingerprint

        selected = [by_asset[key.path[-1]] for key in sorted(context.selected_asset_keys)]
        records = load_records(dataset, operator_parameters, initial_conditions, base_features)
        fingerprint = rollout.fingerprint()
        started = time.perf_counter()
        with Progress(emit=context.log.info) as progress:
            extraction = extract_families(
                records,
                selected,
                build_operator=rollout.build_operator,
                same_fingerprint=same_fingerprint(records[0].fingerprint, fingerprint),
                progress=progress,
            )
        seconds = time.perf_counter() - started
        statuses = [v.status for v in extraction.verifications]
        operator_indices = [record.index for record in records]
        for family in selected:
            source = "derived" if family.needs is Needs.BASE_SERIES else "replay"
            arrays = family_arrays(family, extraction.results[family.name], source)
            nan_count = int(sum(int((a.data != a.data).sum()) for a in arrays.values()))
            yield dg.Output(
                ShardOutput(arrays, fingerprint=fingerprint),
                output_name=family_asset_name(family.name),
                data_version=dg.DataVersion(ShardOutput(arrays).content_version),
                metadata={
                    "operators": len(records),
                    "rollouts_replayed": extraction.rollouts,
                    "replay_exact": statuses.count("exact"),
                    "replay_within_tolerance": statuses.count("within_tolerance"),
                    "replay_not_reproduced": sum(status not in REPRODUCED for status in statuses),
                    "nan_values": nan_count,
                    # The run's extraction time, shared by every family computed in it.
                    "seconds_per_operator": round(seconds / len(records), 4),
                    "family_version": family.version,
                    "feature_map": preview(_feature_map(family, arrays, operator_indices)),
                },
            )

    return [replay_feature_families]


def _feature_map(
    family: FeatureFamily, arrays: dict[str, StoredArray], operator_indices: list[int]
) -> plots.Preview:
    """The family's summary (else its first array) as an operators-by-named-features heat map."""
    name = "summary" if "summary" in arrays else next(iter(arrays))
    shown = arrays[name]
    matrix, columns, cut = plots.feature_matrix(
        shown.data, shown.axes, shown.field_names, dict(shown.axis_labels)
    )
    title = f"{family.name} / {name}" + (f" ({cut})" if cut else "")
    return plots.feature_heatmap(matrix, columns, operator_indices=operator_indices, title=title)
