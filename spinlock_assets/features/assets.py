"""One asset per derived feature family, materialized by replay through the rollout resource.

All derived families live in one subsettable multi-asset: selecting three families in a run replays
each operator once and feeds all three. Each family's ``code_version`` is its version, so changing a
family marks exactly that family stale.
"""

from collections.abc import Sequence

import dagster as dg

from .. import plots
from ..constants import FEATURES_GROUP, OWNERS
from ..generation.assets import IO_MANAGER_KEY, load_records, preview
from ..io_manager import ShardOutput
from ..resources import DatasetResource, RolloutResource
from ..storage.operator_arrays import ENGINE_VERSION

__all__ = ["build_feature_assets", "family_asset_name"]


MAX_PREVIEW_COLUMNS = 200

UPSTREAM = ["operator_parameters", "initial_conditions", "base_features"]


def family_asset_name(family_name: str) -> str:
    return f"{family_name}_features"


def family_code_version(family) -> str:
    """The family's version, plus the engine's for families computed from a replay (an engine change alters
    their inputs, so they must go stale too)."""
    if family.needs.value == "base_series":
        return f"{family.name}-{family.version}"
    return f"{family.name}-{family.version}+engine-{ENGINE_VERSION}"


def _kinds(family) -> set[str]:
    return {"torch", "hdf5"} if family.needs.value != "base_series" else {"numpy", "hdf5"}


def build_feature_assets(
    partitions: dg.PartitionsDefinition, families: Sequence, rollout_pool: str | None = None
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
        ins={name: dg.AssetIn() for name in UPSTREAM},
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
        from ..core.extraction import extract_families
        from ..core.verification import same_fingerprint
        from ..progress import ProgressLog
        from ..storage.operator_arrays import family_arrays

        selected = [by_asset[key.path[-1]] for key in sorted(context.selected_asset_keys)]
        records = load_records(dataset, operator_parameters, initial_conditions, base_features)
        fingerprint = rollout.fingerprint()
        extraction = extract_families(
            records,
            selected,
            build_operator=rollout.build_operator,
            same_fingerprint=same_fingerprint(records[0].fingerprint, fingerprint),
            progress=ProgressLog(context.log),
        )
        statuses = [v.status for v in extraction.verifications]
        for family in selected:
            source = "derived" if family.needs.value == "base_series" else "replay"
            arrays = family_arrays(family, extraction.results[family.name], source)
            nan_count = int(sum(int((a.data != a.data).sum()) for a in arrays.values()))
            shown = "summary" if "summary" in arrays else next(iter(arrays))
            matrix = arrays[shown].data.reshape(len(records), -1)[:, :MAX_PREVIEW_COLUMNS]
            yield dg.Output(
                ShardOutput(arrays, fingerprint=fingerprint),
                output_name=family_asset_name(family.name),
                data_version=dg.DataVersion(ShardOutput(arrays).content_version),
                metadata={
                    "operators": len(records),
                    "rollouts_replayed": extraction.rollouts,
                    "replay_exact": statuses.count("exact"),
                    "replay_within_tolerance": statuses.count("within_tolerance"),
                    "nan_values": nan_count,
                    "family_version": family.version,
                    "preview": preview(
                        plots.feature_heatmap(matrix), f"{family.name}/{shown}: operators x features"
                    ),
                },
            )

    return [replay_feature_families]
