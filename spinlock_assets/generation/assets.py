"""Per-shard generation: parameters -> initial conditions -> one seeded rollout with inline base features.

Asset bodies load, call ``core``/``storage`` and describe the result; the IO manager owns the files.
"""

import dagster as dg

from .. import plots
from ..constants import GENERATION_GROUP, INPUTS_GROUP, OWNERS
from ..core.features.base import FAMILY as BASE
from ..core.features.base import SERIES_FIELDS
from ..io_manager import ShardOutput
from ..resources import DatasetResource, RolloutResource
from ..storage.operator_arrays import ENGINE_VERSION

__all__ = ["IO_MANAGER_KEY", "build_generation_assets", "load_records", "BASE_CODE_VERSION"]

IO_MANAGER_KEY = "shard_io_manager"
# base family version + engine version: a change of either marks base features (and replays) stale.
BASE_CODE_VERSION = f"base-{BASE.version}+engine-{ENGINE_VERSION}"


def arrays_of(contents) -> dict:
    """The numpy arrays of loaded shard contents, by name."""
    return {name: array.data for name, array in contents.arrays.items()}


def load_records(
    dataset: DatasetResource, operator_parameters, initial_conditions, base_features=None
) -> list:
    """Replayable records of one shard from its loaded shard contents (with stored digests when
    ``base_features`` is given)."""
    import json

    from ..storage.operator_arrays import stored_records

    fingerprint = json.loads(base_features.attrs["fingerprint_json"]) if base_features is not None else None
    return stored_records(
        dataset.spec,
        arrays_of(operator_parameters),
        initial_conditions.arrays["fields"].data,
        arrays_of(base_features) if base_features is not None else None,
        fingerprint,
    )


def preview(png: bytes, alt: str) -> dg.MetadataValue:
    """A small rendered image for the UI's metadata panel."""
    return dg.MetadataValue.md(plots.markdown_image(png, alt))


def shard_output(output: ShardOutput, **metadata) -> dg.Output:
    return dg.Output(output, data_version=dg.DataVersion(output.content_version), metadata=metadata)


def build_generation_assets(partitions: dg.PartitionsDefinition) -> list[dg.AssetsDefinition]:
    """The three generation assets over the given shard partitions."""
    common = dict(partitions_def=partitions, owners=OWNERS, io_manager_key=IO_MANAGER_KEY)

    @dg.asset(group_name=INPUTS_GROUP, code_version="1", kinds={"numpy", "hdf5"}, **common)
    def operator_parameters(context: dg.AssetExecutionContext, dataset: DatasetResource) -> dg.Output:
        """Unit-cube parameter points (scrambled Sobol), mapped hyperparameters and seeds of the shard's
        operators."""
        from ..core.generation import operator_parameters as draw_parameters
        from ..core.shards import parse_shard_key
        from ..storage.operator_arrays import parameter_arrays

        shard = parse_shard_key(context.partition_key)
        table = draw_parameters(dataset.spec, shard.start, shard.stop)
        policies = [hp.policy for hp in table.hyperparameters]
        return shard_output(
            ShardOutput(parameter_arrays(table, dataset.spec)),
            operators=len(table),
            policies=dg.MetadataValue.json({p: policies.count(p) for p in sorted(set(policies))}),
        )

    @dg.asset(group_name=INPUTS_GROUP, code_version="1", kinds={"numpy", "hdf5"}, **common)
    def initial_conditions(dataset: DatasetResource, operator_parameters) -> dg.Output:
        """Initial fields [C, H, W] of the shard's operators, each drawn from its ic_seed in its IC family."""
        from ..core.generation import generate_initial_conditions
        from ..storage.operator_arrays import initial_condition_arrays, parameter_table

        table = parameter_table(dataset.spec, arrays_of(operator_parameters))
        fields = generate_initial_conditions(dataset.spec, table)
        families = [hp.ic_family for hp in table.hyperparameters]
        return shard_output(
            ShardOutput(initial_condition_arrays(fields, dataset.spec.parameter_space.ic_families)),
            preview=preview(plots.ic_grid(fields), "initial conditions, channel 0"),
            operators=len(fields),
            ic_families=dg.MetadataValue.json({f: families.count(f) for f in sorted(set(families))}),
        )

    @dg.asset(group_name=GENERATION_GROUP, code_version=BASE_CODE_VERSION, kinds={"torch", "hdf5"}, **common)
    def base_features(
        context: dg.AssetExecutionContext,
        dataset: DatasetResource,
        rollout: RolloutResource,
        operator_parameters,
        initial_conditions,
    ) -> dg.Output:
        """Base feature series and summaries plus per-realization trajectory digests, computed inline
        during the one seeded generation rollout of each operator."""
        import time

        from ..storage.operator_arrays import base_feature_arrays

        records = load_records(dataset, operator_parameters, initial_conditions)
        started = time.perf_counter()
        rollouts = list(
            rollout.roll_out(records, keep_trajectories=dataset.spec.store_trajectories, log=context.log)
        )
        seconds = time.perf_counter() - started
        diverged = [record.index for record, result in zip(records, rollouts, strict=True) if result.diverged]
        if diverged:
            context.log.warning(f"{len(diverged)} operators diverged (NaN/Inf), flagged and kept: {diverged}")
        arrays = base_feature_arrays(rollouts, BASE, store_trajectories=dataset.spec.store_trajectories)
        energy = plots.energy_curves(arrays["series"].data, energy_column=SERIES_FIELDS.index("energy"))
        return shard_output(
            ShardOutput(arrays, fingerprint=rollout.fingerprint()),
            preview=preview(energy, "log10 energy over time per realization"),
            operators=len(records),
            diverged_operators=len(diverged),
            diverged_indices=dg.MetadataValue.json(diverged),
            rollout_seconds=round(seconds, 3),
            seconds_per_operator=round(seconds / len(records), 4),
        )

    return [operator_parameters, initial_conditions, base_features]
