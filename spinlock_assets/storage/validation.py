"""Validators of the written layout (``docs/hdf5-layout.md``): every violation, by HDF5 path.

Both return an empty list for a conforming file. ``validate_dataset_file`` reads only metadata,
the present masks and the shard table, so it is cheap on any dataset size; it also reports virtual
datasets whose shard files are not where dataset.h5 expects them (HDF5 would silently read fill values).
"""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath
from typing import Any

import h5py
import numpy as np

from spinlock_assets.storage.errors import StorageError
from spinlock_assets.storage.layout import (
    FIXED_ARRAYS,
    METADATA_ATTRS,
    METADATA_GROUP,
    PRESENT,
    ROOT_ATTRS,
    SCHEMA_VERSION,
    SHARDS_TABLE,
    Problem,
    check_array_attrs,
    check_fixed_asset_arrays,
    decode_attr,
)
from spinlock_assets.storage.shard_file import check_shard_header, read_shard_file, read_shard_header

__all__ = ["validate_dataset_file", "validate_shard_file"]

_TABLE_FIELDS = ("asset", "shard_key", "operator_start", "operator_stop", "sha256")


def validate_shard_file(path: str | Path, *, read_data: bool = True) -> list[Problem]:
    """Problems of one shard file; with ``read_data`` every array is read, which verifies its checksums."""
    path = Path(path)
    try:
        header = read_shard_header(path, check=False)
    except StorageError as exc:
        return [Problem(str(path), str(exc))]
    problems = check_shard_header(header)
    if not problems and path.name != f"{header.attrs['shard_key']}.h5":
        problems.append(
            Problem(str(path), f"file name must be '{header.attrs['shard_key']}.h5' (its @shard_key)")
        )
    if not problems:
        arrays = {name: info.attrs for name, info in header.arrays.items()}
        problems += check_fixed_asset_arrays(
            str(header.attrs["asset"]), arrays, lambda name: f"{path}:/{name}"
        )
    for name in header.arrays if read_data and not problems else ():
        try:
            read_shard_file(path, names=[name])
        except StorageError as exc:
            problems.append(Problem(f"{path}:/{name}", str(exc)))
    return problems


def validate_dataset_file(path: str | Path) -> list[Problem]:
    """Problems of a consolidated dataset.h5 against the layout, each naming the HDF5 path."""
    path = Path(path)
    if not path.is_file():
        return [Problem(str(path), "file does not exist")]
    try:
        with h5py.File(path, "r") as handle:
            return _validate(handle, path)
    except (OSError, KeyError, RuntimeError) as exc:  # h5py reports damaged object headers as KeyError
        return [Problem(str(path), f"cannot read as HDF5: {exc}")]


def _validate(handle: h5py.File, path: Path) -> list[Problem]:
    metadata = handle.get(METADATA_GROUP)
    if not isinstance(metadata, h5py.Group):
        return [Problem(METADATA_GROUP, "required group is missing")]
    attrs = {key: decode_attr(value) for key, value in metadata.attrs.items()}
    problems = _check_metadata(attrs)
    n_operators = attrs.get("n_operators")
    if problems or not isinstance(n_operators, int):
        return problems
    for key in ROOT_ATTRS:
        if decode_attr(handle.attrs.get(key)) != attrs[key]:
            problems.append(Problem("/", f"@{key} must equal {METADATA_GROUP}@{key} ({attrs[key]!r})"))
    datasets: dict[str, h5py.Dataset] = {}

    def collect(name: str, item: Any) -> None:  # returning anything but None would stop visititems
        if isinstance(item, h5py.Dataset) and not item.name.startswith(METADATA_GROUP + "/"):
            datasets[item.name] = item

    handle.visititems(collect)
    for name, dataset in datasets.items():
        problems += check_array_attrs(name, dataset.attrs, dataset.shape)
        if dataset.shape[:1] != (n_operators,):
            problems.append(
                Problem(name, f"expected {n_operators} rows on axis 0 (n_operators), got {dataset.shape}")
            )
        problems += _check_virtual_sources(dataset, path)
    problems += _check_fixed(handle)
    coverage = _shard_coverage(handle, n_operators, problems)
    groups = {str(PurePosixPath(name).parent) for name in datasets}
    for group in sorted(groups):
        problems += _check_group(handle[group], datasets, coverage, n_operators)
    problems += _check_family_versions(handle, json.loads(attrs["family_versions"]))
    return problems


def _check_metadata(attrs: dict[str, Any]) -> list[Problem]:
    missing = [key for key in METADATA_ATTRS if key not in attrs]
    if missing:
        return [Problem(METADATA_GROUP, f"missing attribute(s) {', '.join('@' + k for k in missing)}")]
    problems = []
    if attrs["schema_version"] != SCHEMA_VERSION:
        problems.append(
            Problem(
                METADATA_GROUP, f"@schema_version must be {SCHEMA_VERSION!r}, got {attrs['schema_version']!r}"
            )
        )
    if not isinstance(attrs["n_operators"], int) or attrs["n_operators"] < 1:
        problems.append(
            Problem(METADATA_GROUP, f"@n_operators must be a positive int, got {attrs['n_operators']!r}")
        )
    for key, kind in (("spec_json", dict), ("family_versions", dict), ("fingerprints", list)):
        try:
            value = json.loads(attrs[key])
        except (TypeError, ValueError):
            value = None
        if not isinstance(value, kind):
            problems.append(
                Problem(METADATA_GROUP, f"@{key} must be a JSON {kind.__name__}, got {attrs[key]!r}")
            )
    return problems


def _check_virtual_sources(dataset: h5py.Dataset, path: Path) -> list[Problem]:
    if not dataset.is_virtual:
        return []
    outside = sorted(
        {
            source.file_name
            for source in dataset.virtual_sources()
            if PurePosixPath(source.file_name).is_absolute() or ".." in PurePosixPath(source.file_name).parts
        }
    )
    if outside:  # the layout maps by paths relative to the data folder, and only inside it
        return [Problem(dataset.name, f"maps rows to {outside[0]!r}, outside the data folder; refused")]
    missing = sorted(
        {
            source.file_name
            for source in dataset.virtual_sources()
            if source.file_name != "." and not (path.parent / source.file_name).is_file()
        }
    )
    if not missing:
        return []
    return [
        Problem(
            dataset.name,
            f"{len(missing)} shard file(s) it maps are missing relative to {path.parent} "
            f"(first: {missing[0]}); their rows would read as fill values. Move the data folder as a whole, "
            "or rebuild dataset.h5",
        )
    ]


def _check_fixed(handle: h5py.File) -> list[Problem]:
    problems = []
    for asset in dict.fromkeys(row.asset for row in FIXED_ARRAYS):
        paths = {row.name: row.path for row in FIXED_ARRAYS if row.asset == asset}
        found = {name: handle[path].attrs for name, path in paths.items() if path in handle}
        problems += check_fixed_asset_arrays(asset, found, paths.__getitem__)
    for row in FIXED_ARRAYS:
        dataset = handle.get(row.path)
        if dataset is None:
            continue
        if dataset.dtype != np.dtype(row.dtype) or dataset.ndim != len(row.axes):
            problems.append(
                Problem(
                    row.path,
                    f"expected dtype {np.dtype(row.dtype)} and rank {len(row.axes)} {row.axes}, "
                    f"got {dataset.dtype} and rank {dataset.ndim}",
                )
            )
    return problems


def _shard_coverage(handle: h5py.File, n_operators: int, problems: list[Problem]) -> dict[str, np.ndarray]:
    """Per asset, the 0/1 mask of operators whose shard the shard table lists."""
    table = handle.get(SHARDS_TABLE)
    if not isinstance(table, h5py.Dataset) or table.dtype.names is None:
        problems.append(Problem(SHARDS_TABLE, "required compound dataset is missing"))
        return {}
    absent = [name for name in _TABLE_FIELDS if name not in table.dtype.names]
    if absent:
        problems.append(Problem(SHARDS_TABLE, f"missing fields {absent}"))
        return {}
    coverage: dict[str, np.ndarray] = {}
    for row in table[()]:
        mask = coverage.setdefault(row["asset"].decode(), np.zeros(n_operators, dtype=np.uint8))
        mask[int(row["operator_start"]) : int(row["operator_stop"])] = 1
    return coverage


def _check_group(
    group: h5py.Group, datasets: dict[str, h5py.Dataset], coverage: dict[str, np.ndarray], n_operators: int
) -> list[Problem]:
    names = sorted(
        PurePosixPath(name).name for name in datasets if str(PurePosixPath(name).parent) == group.name
    )
    fields = sorted(name for name in names if name != PRESENT)
    problems = []
    try:
        declared = json.loads(decode_attr(group.attrs.get("field_names", "null")))
    except (TypeError, ValueError):
        declared = None
    if declared != fields:
        problems.append(
            Problem(group.name, f"@field_names must list the group's datasets {fields}, got {declared!r}")
        )
    present = group.get(PRESENT)
    if present is None or present.shape != (n_operators,) or present.dtype != np.uint8:
        return [
            *problems,
            Problem(
                f"{group.name}/{PRESENT}", f"required uint8 [{n_operators}] mask is missing or malformed"
            ),
        ]
    mask = present[()]
    if not np.isin(mask, (0, 1)).all():
        problems.append(Problem(present.name, "values must be 0 or 1"))
    asset = decode_attr(group.attrs.get("asset"))
    expected = coverage.get(asset, np.zeros(n_operators, dtype=np.uint8))
    if not np.array_equal(mask, expected):
        wrong = np.flatnonzero(mask != expected)
        problems.append(
            Problem(
                present.name,
                f"disagrees with {SHARDS_TABLE} for asset {asset!r} at operators {wrong[:8].tolist()}",
            )
        )
    return problems


def _check_family_versions(handle: h5py.File, family_versions: dict[str, str]) -> list[Problem]:
    features = handle.get("/features")
    found = (
        {}
        if features is None
        else {name: item for name, item in features.items() if isinstance(item, h5py.Group)}
    )
    problems = [
        Problem("/metadata", f"@family_versions names {family!r}, but /features/{family} does not exist")
        for family in family_versions
        if family not in found
    ]
    for family, group in found.items():
        for name, dataset in group.items():
            if name == PRESENT:
                continue
            version = decode_attr(dataset.attrs.get("version"))
            if family_versions.get(family) != version:
                problems.append(
                    Problem(
                        dataset.name,
                        f"@version {version!r} differs from /metadata@family_versions[{family!r}]",
                    )
                )
    return problems
