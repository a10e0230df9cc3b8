"""Conversion between the core's per-operator objects and the stored arrays of the fixed assets.

Writers (the Dagster assets) and readers (``open_dataset``, replay) both go through here, so the
names, dtypes and attributes of ``operator_parameters``, ``initial_conditions`` and ``base_features``
are defined once, and every reader gets IC fields from :func:`initial_condition_fields`, stored or (the
compact form) regenerated and checked against their digests. No torch import: this runs in light
processes too.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from spinlock_assets.core.features.family import FeatureFamily
from spinlock_assets.core.fingerprint import ENGINE_VERSION
from spinlock_assets.core.generation import ParameterTable, generate_initial_conditions, operator_records
from spinlock_assets.core.parameters import (
    HYPERPARAMETER_FIELDS,
    PARAMETER_NAMES,
    hyperparameter_table,
    map_parameters,
)
from spinlock_assets.core.record import OperatorRecord
from spinlock_assets.core.seeds import OperatorSeeds
from spinlock_assets.core.spec import DatasetSpec
from spinlock_assets.storage.arrays import StoredArray
from spinlock_assets.storage.errors import InitialConditionMismatchError
from spinlock_assets.storage.layout import IC_FIELDS_REGENERATED

__all__ = [
    "base_feature_arrays",
    "family_arrays",
    "ic_digest",
    "initial_condition_arrays",
    "initial_condition_fields",
    "parameter_arrays",
    "parameter_table",
    "stored_records",
]


def ic_digest(field: np.ndarray) -> bytes:
    """Hex SHA-256 of an initial condition's float32 bytes."""
    return hashlib.sha256(np.ascontiguousarray(field, dtype="<f4").data).hexdigest().encode()


def parameter_arrays(table: Any, spec: DatasetSpec) -> dict[str, StoredArray]:
    """Arrays of ``operator_parameters`` for a :class:`~spinlock_assets.core.generation.ParameterTable`."""
    hyper, categories = hyperparameter_table(list(table.hyperparameters), spec.parameter_space)
    seeds = table.seeds

    def seed_column(name: str) -> StoredArray:
        values = np.array([getattr(s, name) for s in seeds], dtype=np.int64)
        return StoredArray(values, ("operator",), "1", "generated", description=f"{name} of each operator")

    return {
        "params": StoredArray(
            table.params,
            ("operator", "feature"),
            "1",
            "generated",
            PARAMETER_NAMES,
            config={"sampler": "scipy.stats.qmc.Sobol, scrambled, seeded from root_seed"},
            description="unit-cube parameter point of each operator",
        ),
        "hyperparameters": StoredArray(
            hyper,
            ("operator", "feature"),
            "1",
            "generated",
            HYPERPARAMETER_FIELDS,
            config={"categories": categories},
            description="hyperparameters mapped from params (categorical columns index config.categories)",
        ),
        "operator_index": StoredArray(
            table.operator_index, ("operator",), "1", "generated", description="global operator index"
        ),
        "weight_seed": seed_column("weight_seed"),
        "ic_seed": seed_column("ic_seed"),
        "probe_seed": seed_column("probe_seed"),
        "noise_seeds": StoredArray(
            np.array([s.noise_seeds for s in seeds], dtype=np.int64),
            ("operator", "realization"),
            "1",
            "generated",
            description="noise seed of each realization",
        ),
    }


def initial_condition_arrays(
    fields: np.ndarray, ic_families: Sequence[str], *, store_fields: bool = True
) -> dict[str, StoredArray]:
    """Arrays of ``initial_conditions``: the fields ``[n, C, H, W]`` and their digests; with
    ``store_fields=False`` (the spec's compact mode) the digests alone, their ``@config`` marking that
    readers regenerate the fields from ``ic_seed``. The default form is unchanged, byte for byte."""
    digest_config: dict[str, Any] = {}
    description = "SHA-256 of each initial condition's float32 bytes"
    arrays = {}
    if store_fields:
        arrays["fields"] = StoredArray(
            fields,
            ("operator", "channel", "y", "x"),
            "1",
            "generated",
            compress=True,
            config={"families": list(ic_families)},
            description="initial condition of each operator",
        )
    else:
        digest_config = {
            "fields": IC_FIELDS_REGENERATED,
            "generator": "spinlock_assets.core.generation.generate_initial_conditions",
            "seed": "ic_seed",
            "families": list(ic_families),
        }
        description += (
            "; the fields are not stored: readers regenerate them from ic_seed (and the IC family and scale "
            "of params) and check them against it"
        )
    arrays["ic_digest"] = StoredArray(
        np.array([ic_digest(f) for f in fields], dtype="S64"),
        ("operator",),
        "1",
        "generated",
        config=digest_config,
        description=description,
    )
    return arrays


def base_feature_arrays(
    rollouts: Sequence[Any], base: FeatureFamily, *, store_trajectories: bool
) -> dict[str, StoredArray]:
    """Arrays of ``base_features`` from the shard's :class:`RolloutRecord` s, in operator order."""
    from spinlock_assets.core.features.base import summarize

    config = dict(base.config) | {"engine_version": ENGINE_VERSION}
    series = np.stack([r.base_series for r in rollouts])
    arrays = {
        "series": StoredArray(
            series,
            ("operator", *base.array("series").axes),
            base.version,
            "inline",
            base.array("series").field_names,
            config=config,
            compress=True,
            description=base.array("series").description,
        ),
        "summary": StoredArray(
            np.stack([summarize(r.base_series) for r in rollouts]),
            ("operator", *base.array("summary").axes),
            base.version,
            "inline",
            base.array("summary").field_names,
            config=config,
            axis_labels=dict(base.array("summary").axis_labels),
            description=base.array("summary").description,
        ),
        "digests": StoredArray(
            np.array([r.digests for r in rollouts], dtype="S64"),
            ("operator", "realization"),
            ENGINE_VERSION,
            "inline",
            description="SHA-256 over the float32 bytes of every state of each realization",
        ),
        "first_nonfinite_step": StoredArray(
            np.stack([r.first_nonfinite_step for r in rollouts]).astype(np.int32),
            ("operator", "realization"),
            ENGINE_VERSION,
            "inline",
            description="first time step with a NaN/Inf value, -1 if none",
        ),
    }
    if store_trajectories:
        arrays["trajectories"] = StoredArray(
            np.stack([r.trajectories for r in rollouts]),
            ("operator", "realization", "time", "channel", "y", "x"),
            ENGINE_VERSION,
            "inline",
            compress=True,
            description="full states (validation datasets only)",
        )
    return arrays


def family_arrays(
    family: FeatureFamily, results: Sequence[Mapping[str, np.ndarray]], source: str
) -> dict[str, StoredArray]:
    """Stack one family's per-operator results into its stored arrays (operator axis first)."""
    return {
        spec.name: StoredArray(
            np.stack([np.asarray(r[spec.name], dtype=np.float32) for r in results]),
            ("operator", *spec.axes),
            family.version,
            source,
            spec.field_names,
            config=dict(family.config),
            axis_labels=dict(spec.axis_labels),
            description=spec.description,
            compress=True,
        )
        for spec in family.arrays
    }


def parameter_table(spec: DatasetSpec, parameters: Mapping[str, np.ndarray]) -> ParameterTable:
    """The :class:`ParameterTable` of a stored ``operator_parameters`` shard (hyperparameters re-mapped from
    ``params`` through the one mapping; seeds as stored)."""
    index = np.asarray(parameters["operator_index"])
    params = np.asarray(parameters["params"])
    seeds = tuple(
        OperatorSeeds(
            weight_seed=int(parameters["weight_seed"][row]),
            ic_seed=int(parameters["ic_seed"][row]),
            probe_seed=int(parameters["probe_seed"][row]),
            noise_seeds=tuple(int(s) for s in parameters["noise_seeds"][row]),
        )
        for row in range(len(index))
    )
    return ParameterTable(
        start=int(index[0]),
        stop=int(index[-1]) + 1,
        params=params,
        hyperparameters=tuple(map_parameters(point, spec.parameter_space) for point in params),
        seeds=seeds,
    )


def initial_condition_fields(
    spec: DatasetSpec, parameters: Mapping[str, np.ndarray], initial_conditions: Mapping[str, np.ndarray]
) -> np.ndarray:
    """``[n, C, H, W]`` float32 initial conditions of a stored range, from its ``operator_parameters`` and
    ``initial_conditions`` arrays (by name): the stored ``fields`` or, in the compact form (no ``fields``),
    each IC regenerated from its ``ic_seed`` and checked bit for bit against its stored ``ic_digest``.

    Raises ``InitialConditionMismatchError`` naming the operators whose IC no longer regenerates exactly.
    """
    return _initial_condition_fields(spec, parameter_table(spec, parameters), initial_conditions)


def _initial_condition_fields(
    spec: DatasetSpec, table: ParameterTable, initial_conditions: Mapping[str, np.ndarray]
) -> np.ndarray:
    if "fields" in initial_conditions:
        return np.asarray(initial_conditions["fields"])
    fields = generate_initial_conditions(spec, table)
    regenerated = np.array([ic_digest(f) for f in fields], dtype="S64")
    wrong = table.operator_index[regenerated != np.asarray(initial_conditions["ic_digest"])].tolist()
    if wrong:
        # Returning these fields would replay every rollout from another state than generation used.
        raise InitialConditionMismatchError(
            f"operators {wrong}: the initial condition regenerated from ic_seed differs from the stored "
            "ic_digest, so it no longer regenerates bit-exactly: the IC generator's numerics changed (e.g. "
            f"another numpy version; numpy {np.__version__} here) or the digest was altered. The dataset "
            "does not store its IC fields (store_initial_conditions=false), so they cannot be read: use the "
            "numpy version that generated the dataset, or regenerate it"
        )
    return fields


def stored_records(
    spec: DatasetSpec,
    parameters: Mapping[str, np.ndarray],
    initial_conditions: Mapping[str, np.ndarray],
    base: Mapping[str, np.ndarray] | None = None,
    fingerprint: dict | None = None,
) -> list[OperatorRecord]:
    """Replayable records of a stored range from its arrays by name: ``operator_parameters``,
    ``initial_conditions`` (see :func:`initial_condition_fields`) and, when given, ``base_features`` (stored
    digests and base series)."""
    table = parameter_table(spec, parameters)
    return operator_records(
        spec,
        table,
        _initial_condition_fields(spec, table, initial_conditions),
        digests=None if base is None else np.char.decode(np.asarray(base["digests"])),
        base_series=None if base is None else base["series"],
        fingerprint=fingerprint,
    )
