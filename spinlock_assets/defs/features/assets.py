"""One asset per derived feature family, materialized by replay through the rollout resource.

All derived families live in one subsettable multi-asset: selecting three families in a run replays
each operator once and feeds all three. Each family's ``code_version`` is its version, so changing a
family marks exactly that family stale.
"""

import time
from collections.abc import Iterator, Sequence

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
from ..ranges import ShardResult, materialize_shards
from ..resources import DatasetResource, RolloutResource
from ..shard_assets import load_records, preview, shards_of

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
    partitions: dg.PartitionsDefinition,
    families: Sequence[FeatureFamily],
    backfill_policy: dg.BackfillPolicy | None = None,
    rollout_pool: str | None = None,
) -> list[dg.AssetsDefinition]:
    """The multi-asset computing ``families`` (``FeatureFamily`` objects) per shard, one shard or a range of
    them per run (``backfill_policy``, ``defs/ranges.py``); its replays run in ``rollout_pool`` (the GPU
    pool when rollouts run on a GPU)."""
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
        backfill_policy=backfill_policy,
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
    ) -> Iterator[dg.Output]:
        """Replays each operator of the shard once and computes every selected family from it."""
        selected = [by_asset[key.path[-1]] for key in sorted(context.selected_asset_keys)]
        keys = list(context.partition_keys)
        inputs = [
            shards_of(loaded, keys) for loaded in (operator_parameters, initial_conditions, base_features)
        ]
        fingerprint = rollout.fingerprint()

        def shard(key: str) -> dict[str, ShardResult]:
            upstream = [loaded[key] for loaded in inputs]
            first = key == keys[0]  # one figure per run
            return _replay_shard(context, dataset, rollout, fingerprint, selected, upstream, first)

        yield from materialize_shards(context, dataset, ((key, shard(key)) for key in keys))

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


def _replay_shard(
    context: dg.AssetExecutionContext,
    dataset: DatasetResource,
    rollout: RolloutResource,
    fingerprint: dict[str, str],
    selected: list[FeatureFamily],
    inputs: list,
    with_figures: bool,
) -> dict[str, ShardResult]:
    """Every selected family of one shard, from one replay of each of its operators."""
    from spinlock_assets.core.extraction import extract_families
    from spinlock_assets.core.verification import same_fingerprint

    records = load_records(dataset, *inputs)
    started = time.perf_counter()
    with Progress(emit=context.log.info) as progress:
        extraction = extract_families(
            records,
            selected,
            build_operator=rollout.build_operator,
            device=rollout.device,
            same_fingerprint=same_fingerprint(records[0].fingerprint, fingerprint),
            progress=progress,
        )
    seconds = time.perf_counter() - started
    statuses = [v.status for v in extraction.verifications]
    operator_indices = [record.index for record in records]
    results = {}
    for family in selected:
        source = "derived" if family.needs is Needs.BASE_SERIES else "replay"
        arrays = family_arrays(family, extraction.results[family.name], source)
        metadata = {
            "operators": len(records),
            "rollouts_replayed": extraction.rollouts,
            "replay_exact": statuses.count("exact"),
            "replay_within_tolerance": statuses.count("within_tolerance"),
            "replay_not_reproduced": sum(status not in REPRODUCED for status in statuses),
            "nan_values": int(sum(int((a.data != a.data).sum()) for a in arrays.values())),
            # The shard's extraction time, shared by every family computed from its replays.
            "seconds_per_operator": round(seconds / len(records), 4),
            "family_version": family.version,
        }
        if with_figures:
            metadata["feature_map"] = preview(_feature_map(family, arrays, operator_indices))
        results[family_asset_name(family.name)] = ShardResult(
            ShardOutput(arrays, fingerprint=fingerprint), metadata
        )
    return results
