"""The written HDF5 layout: names, required attributes, the fixed path table and shard keys.

``docs/hdf5-layout.md`` is the prose version of this module; ``validation.py`` enforces it on files.
Everything here is pure (no file access), so writers check their input against the same rules
that the validators apply to files.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "PARAMETERS_ASSET",
    "INITIAL_CONDITIONS_ASSET",
    "BASE_FEATURES_ASSET",
    "GENERATION_ASSETS",
    "DATASET_FILE",
    "SPEC_MARKER_FILE",
    "SCHEMA_VERSION",
    "ARRAY_SOURCES",
    "ARRAY_ATTRS",
    "SHARD_FILE_ATTRS",
    "METADATA_ATTRS",
    "ROOT_ATTRS",
    "OPERATOR_AXIS",
    "FEATURE_AXIS",
    "PRESENT",
    "METADATA_GROUP",
    "SHARDS_TABLE",
    "Problem",
    "FixedArray",
    "FIXED_ARRAYS",
    "ConsolidatedSource",
    "FIXED_SOURCES",
    "IC_FIELDS_REGENERATED",
    "family_source",
    "encode_attr",
    "decode_attr",
    "check_array_attrs",
    "check_fixed_asset_arrays",
]

SCHEMA_VERSION = "1.0"

# Where an array's values come from: computed while the rollout streams, by replay, from other stored
# arrays, drawn from seeds (parameters, ICs), or given by the user.
ARRAY_SOURCES = ("inline", "replay", "derived", "generated", "input")

# Attributes every stored array carries; the JSON-encoded ones are lists or objects.
ARRAY_ATTRS = ("axes", "feature_names", "version", "source", "config", "description", "axis_labels")
_JSON_ARRAY_ATTRS = ("axes", "feature_names", "config", "axis_labels")

# File attributes of a shard file. ``operator_stop`` is exclusive.
SHARD_FILE_ATTRS = (
    "schema_version",
    "asset",
    "shard_key",
    "operator_start",
    "operator_stop",
    "spec_hash",
    "spec_json",
    "code_version",
    "fingerprint_json",
    "package_version",
    "created_utc",
)

# Attributes of ``/metadata`` in dataset.h5; ``ROOT_ATTRS`` repeat on ``/`` for a first look.
METADATA_ATTRS = (
    "schema_version",
    "spec_json",
    "spec_hash",
    "n_operators",
    "family_versions",
    "fingerprints",
)
ROOT_ATTRS = ("schema_version", "spec_hash", "n_operators")

OPERATOR_AXIS = "operator"  # axis 0 of every per-operator array
FEATURE_AXIS = "feature"  # the axis that ``@feature_names`` names, when an array has one
PRESENT = "present"  # uint8 [N] mask in each data group of dataset.h5
METADATA_GROUP = "/metadata"
SHARDS_TABLE = "/metadata/shards"


@dataclass(frozen=True)
class Problem:
    """One violation of the layout: the HDF5 path (or file) where it is, and what is wrong."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


@dataclass(frozen=True)
class FixedArray:
    """An array of a fixed (non-family) asset: where it goes in dataset.h5, its dtype and axes."""

    asset: str
    name: str
    path: str
    dtype: str
    axes: tuple[str, ...]
    optional: bool = False


# The generation assets: each is a Dagster asset and the folder of its shard files under the data root.
PARAMETERS_ASSET = "operator_parameters"
INITIAL_CONDITIONS_ASSET = "initial_conditions"
BASE_FEATURES_ASSET = "base_features"
GENERATION_ASSETS = (PARAMETERS_ASSET, INITIAL_CONDITIONS_ASSET, BASE_FEATURES_ASSET)
DATASET_FILE = "dataset.h5"  # the consolidated view, at the top of the data root
SPEC_MARKER_FILE = "spec.json"  # the spec a data root belongs to, written by the first run
_PARAMS, _ICS, _BASE = GENERATION_ASSETS
_OP, _OP_M = ("operator",), ("operator", "realization")
FIXED_ARRAYS: tuple[FixedArray, ...] = (
    FixedArray(_PARAMS, "params", "/parameters/params", "<f8", ("operator", "feature")),
    FixedArray(_PARAMS, "hyperparameters", "/parameters/hyperparameters", "<f8", ("operator", "feature")),
    FixedArray(_PARAMS, "operator_index", "/parameters/operator_index", "<i8", _OP),
    FixedArray(_PARAMS, "weight_seed", "/parameters/seeds/weight_seed", "<i8", _OP),
    FixedArray(_PARAMS, "ic_seed", "/parameters/seeds/ic_seed", "<i8", _OP),
    FixedArray(_PARAMS, "probe_seed", "/parameters/seeds/probe_seed", "<i8", _OP),
    FixedArray(_PARAMS, "noise_seeds", "/parameters/seeds/noise_seeds", "<i8", _OP_M),
    # Optional only in the compact form, which ic_digest@config marks (check_fixed_asset_arrays).
    FixedArray(_ICS, "fields", "/inputs/fields", "<f4", ("operator", "channel", "y", "x"), optional=True),
    FixedArray(_ICS, "ic_digest", "/inputs/ic_digest", "|S64", _OP),
    FixedArray(_BASE, "series", "/features/base/series", "<f4", (*_OP_M, "time", "channel", "feature")),
    FixedArray(
        _BASE, "summary", "/features/base/summary", "<f4", ("operator", "channel", "feature", "statistic")
    ),
    FixedArray(_BASE, "digests", "/verification/digests", "|S64", _OP_M),
    FixedArray(_BASE, "first_nonfinite_step", "/verification/first_nonfinite_step", "<i4", _OP_M),
    FixedArray(
        _BASE,
        "trajectories",
        "/trajectories/states",
        "<f4",
        (*_OP_M, "time", "channel", "y", "x"),
        optional=True,
    ),
)


# The compact form of initial_conditions (spec store_initial_conditions=False) stores no ``fields``;
# ``ic_digest@config["fields"]`` then has this value, and readers regenerate each IC from its ic_seed and
# check it against its digest (``storage.operator_arrays.initial_condition_fields``).
IC_FIELDS_REGENERATED = "regenerated"


@dataclass(frozen=True)
class ConsolidatedSource:
    """Which arrays of one asset's shard files appear in dataset.h5, and under which HDF5 paths.

    ``optional`` names arrays that may be absent from every shard (then dataset.h5 has no such path);
    an array present in some shards of an asset and absent from others is always an error.
    """

    asset: str
    arrays: Mapping[str, str]
    optional: frozenset[str] = field(default_factory=frozenset)


def _fixed_source(asset: str) -> ConsolidatedSource:
    rows = [row for row in FIXED_ARRAYS if row.asset == asset]
    return ConsolidatedSource(
        asset=asset,
        arrays={row.name: row.path for row in rows},
        optional=frozenset(row.name for row in rows if row.optional),
    )


FIXED_SOURCES: tuple[ConsolidatedSource, ...] = tuple(_fixed_source(asset) for asset in GENERATION_ASSETS)


def family_source(
    family_name: str, array_names: Iterable[str], *, asset: str | None = None
) -> ConsolidatedSource:
    """Map a derived feature family's arrays to ``/features/<family>/<array>``.

    The asset defaults to ``<family>_features``, the naming the base family's ``base_features`` uses.
    """
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", family_name):
        raise ValueError(f"family name must be an identifier, got {family_name!r}")
    arrays = {name: f"/features/{family_name}/{name}" for name in array_names}
    if not arrays:
        raise ValueError(f"family {family_name!r}: expected at least one array name, got none")
    return ConsolidatedSource(asset=asset or f"{family_name}_features", arrays=arrays)


def encode_attr(value: Any) -> str | int | float | bool:
    """An HDF5-storable attribute: scalars as themselves, lists/mappings as JSON text.

    h5py cannot store ``numpy.str_`` (``<U``) values, so strings are passed through ``str()``.
    """
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value)
    if isinstance(value, str):
        return str(value)
    return json.dumps(value, sort_keys=True)


def decode_attr(value: Any) -> Any:
    """An attribute as read by h5py, as a plain Python value (JSON text is left as text)."""
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.generic):
        return value.item()
    return value


def _json(attrs: Mapping[str, Any], key: str, where: str, problems: list[Problem]) -> Any:
    try:
        return json.loads(decode_attr(attrs[key]))
    except (TypeError, ValueError) as exc:
        problems.append(Problem(where, f"@{key} must be JSON text, got {attrs[key]!r} ({exc})"))
        return None


def check_array_attrs(where: str, attrs: Mapping[str, Any], shape: tuple[int, ...]) -> list[Problem]:
    """Problems of one array's attributes (raw, as stored) against its shape; empty when it conforms."""
    missing = [key for key in ARRAY_ATTRS if key not in attrs]
    if missing:
        return [Problem(where, f"missing attribute(s) {', '.join('@' + k for k in missing)}")]
    problems: list[Problem] = []
    axes, names, config, labels = (_json(attrs, key, where, problems) for key in _JSON_ARRAY_ATTRS)
    for key, value, kind in (("axes", axes, list), ("feature_names", names, list), ("config", config, dict)):
        if value is not None and not isinstance(value, kind):
            problems.append(Problem(where, f"@{key} must be a JSON {kind.__name__}, got {value!r}"))
    if labels is not None and not isinstance(labels, dict):
        problems.append(Problem(where, f"@axis_labels must be a JSON object, got {labels!r}"))
    if decode_attr(attrs["source"]) not in ARRAY_SOURCES:
        problems.append(Problem(where, f"@source must be one of {ARRAY_SOURCES}, got {attrs['source']!r}"))
    if not decode_attr(attrs["version"]):
        problems.append(Problem(where, "@version must be a non-empty string"))
    if problems:
        return problems
    if len(axes) != len(shape):
        return [Problem(where, f"@axes must name each of the {len(shape)} dimensions, got {axes!r}")]
    if axes[0] != OPERATOR_AXIS or len(set(axes)) != len(axes):
        return [Problem(where, f"@axes must be distinct names starting with {OPERATOR_AXIS!r}, got {axes!r}")]
    sizes = dict(zip(axes, shape, strict=True))
    if FEATURE_AXIS in sizes and len(names) != sizes[FEATURE_AXIS]:
        problems.append(
            Problem(
                where,
                f"@feature_names must have {sizes[FEATURE_AXIS]} entries (feature axis), got {len(names)}",
            )
        )
    if FEATURE_AXIS not in sizes and names:
        problems.append(
            Problem(where, f"@feature_names has {len(names)} entries but @axes has no {FEATURE_AXIS!r}")
        )
    for axis, axis_labels in labels.items():
        if axis not in sizes:
            problems.append(Problem(where, f"@axis_labels names axis {axis!r}, which is not in @axes {axes}"))
        elif len(axis_labels) != sizes[axis]:
            problems.append(
                Problem(
                    where, f"@axis_labels[{axis!r}] must have {sizes[axis]} entries, got {len(axis_labels)}"
                )
            )
    return problems


def _fields_regenerated(digest_attrs: Mapping[str, Any]) -> bool:
    """Whether raw ``ic_digest`` attributes mark the compact form (``@config["fields"] == "regenerated"``)."""
    try:
        config = json.loads(decode_attr(digest_attrs.get("config", "{}")))
    except (TypeError, ValueError):
        return False  # an unreadable @config is reported by check_array_attrs
    return isinstance(config, dict) and config.get("fields") == IC_FIELDS_REGENERATED


def check_fixed_asset_arrays(
    asset: str, arrays: Mapping[str, Mapping[str, Any]], location: Callable[[str], str]
) -> list[Problem]:
    """Problems of the arrays (name -> raw attributes) one fixed asset holds, in a shard file or dataset.h5:
    every required array is there, and ``initial_conditions`` is in one of its two forms, ``fields``
    stored or marked regenerated, never both and never neither. ``location(name)`` names where an array
    is. Empty for assets that are not fixed."""
    rows = [row for row in FIXED_ARRAYS if row.asset == asset]
    problems = [
        Problem(location(row.name), f"required dataset (asset {asset!r}) is missing")
        for row in rows
        if not row.optional and row.name not in arrays
    ]
    if asset != _ICS or "ic_digest" not in arrays:
        return problems
    regenerated = _fields_regenerated(arrays["ic_digest"])
    if regenerated and "fields" in arrays:
        problems.append(
            Problem(
                location("fields"),
                f'present, but ic_digest@config says "fields": "{IC_FIELDS_REGENERATED}" (compact storage)',
            )
        )
    if not regenerated and "fields" not in arrays:
        problems.append(
            Problem(
                location("fields"),
                f"required dataset (asset {asset!r}) is missing; only the compact form, marked by "
                f'ic_digest@config "fields": "{IC_FIELDS_REGENERATED}", leaves it out',
            )
        )
    return problems
