"""The single ``dataset.h5`` view: HDF5 virtual datasets over every shard file, plus metadata.

Each consolidated dataset ``[N, ...]`` maps operator rows ``[start, stop)`` of each present shard
to that shard file through a *relative* path, which HDF5 resolves against the folder holding
dataset.h5: the data folder can be moved or copied as a whole. Rows of missing shards read as the
fill value (NaN for floats, 0 for integers, b"" for bytes), and each group's ``present`` mask says
which rows are real. Building reads shard files only (never opens them for writing), and publishes
dataset.h5 atomically, so readers that hold the old file open are not disturbed.

Rebuilding compares before it records: a shard file whose sha256 differs from the one the previous
dataset.h5 recorded, or from the one recorded at materialization (``recorded_sha256``, from the Dagster
instance), is refused with ``ShardChangedError`` unless the materialization record vouches for the new
bytes, so a file edited in place is never laundered into a fresh record.

A compact dataset (spec ``store_initial_conditions=False``) has initial_conditions shards without
``fields``, so dataset.h5 has no ``/inputs/fields``; ``/inputs`` holds ``ic_digest`` and its ``present``
mask still marks the rows whose initial_conditions shard exists (their ICs can be regenerated and checked).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import h5py
import numpy as np

from spinlock_assets.core.shards import parse_shard_key
from spinlock_assets.storage.arrays import ArrayInfo
from spinlock_assets.storage.atomic import publish_hdf5
from spinlock_assets.storage.errors import (
    InconsistentShardsError,
    ShardArrayMissingError,
    ShardChangedError,
    ShardCorruptError,
)
from spinlock_assets.storage.layout import (
    ARRAY_ATTRS,
    METADATA_GROUP,
    PRESENT,
    ROOT_ATTRS,
    SCHEMA_VERSION,
    SHARDS_TABLE,
    ConsolidatedSource,
    check_fixed_asset_arrays,
    encode_attr,
)
from spinlock_assets.storage.store import ShardStore

__all__ = ["ConsolidatedSource", "build_consolidated_dataset"]

_DERIVED_ATTRS = ("schema_version", "n_operators", "family_versions", "fingerprints")


@dataclass
class _Scan:
    """What one asset's present shards hold: one table row per shard, one reference per array."""

    source: ConsolidatedSource
    rows: list[dict[str, Any]] = field(default_factory=list)
    arrays: dict[str, ArrayInfo] = field(default_factory=dict)
    first_file: dict[str, Path] = field(default_factory=dict)


def build_consolidated_dataset(
    store: ShardStore,
    out_path: str | Path,
    *,
    n_operators: int,
    shard_keys: Sequence[str],
    sources: Sequence[ConsolidatedSource],
    root_attrs: Mapping[str, Any],
    overwrite: bool = False,
    recorded_sha256: Mapping[tuple[str, str], str] | None = None,
) -> Path:
    """Write ``out_path`` (normally ``<store.root>/dataset.h5``) as a view over the shards; return it.

    ``shard_keys`` must tile ``[0, n_operators)``; ``root_attrs`` needs ``spec_hash`` and ``spec_json``
    and may carry more attributes for ``/metadata``. Shards written for another spec hash raise
    ``SpecMismatchError``; shards of one asset that disagree on an array raise ``InconsistentShardsError``.
    An asset none of whose shards exists yet (a family not materialized) adds no paths; the validator
    reports a fixed asset in that state as missing required datasets. A shard of a fixed asset that
    breaks ``layout.check_fixed_asset_arrays`` (e.g. IC fields neither stored nor marked regenerated)
    raises ``ShardCorruptError``. ``recorded_sha256`` maps ``(asset, shard_key)`` to the sha256 recorded when
    that shard was materialized; a shard whose bytes differ from it, or from the sha256 the previous
    ``out_path`` recorded without ``recorded_sha256`` vouching for the change, raises ``ShardChangedError``.
    """
    out_path = Path(out_path)
    ranges = _check_shard_keys(n_operators, shard_keys)
    _check_sources(sources)
    for key in ("spec_hash", "spec_json"):
        if not isinstance(root_attrs.get(key), str):
            raise ValueError(f"root_attrs[{key!r}]: expected a string, got {root_attrs.get(key)!r}")
    scans = [_scan(store, source, ranges, root_attrs["spec_hash"]) for source in sources]
    scans = [scan for scan in scans if scan.rows]  # an asset with no shard yet has nothing to show
    _check_recorded(scans, _previous_sha256(out_path), recorded_sha256 or {})
    metadata = _metadata_attrs(root_attrs, n_operators, scans)

    def fill(f: h5py.File) -> None:
        f.attrs.update({key: metadata[key] for key in ROOT_ATTRS})
        f.require_group(METADATA_GROUP).attrs.update(metadata)
        _write_shards_table(f, scans)
        for scan in scans:
            _write_source(f, out_path.parent, scan, n_operators)

    publish_hdf5(out_path, fill, overwrite=overwrite)
    return out_path


def _check_shard_keys(n_operators: int, shard_keys: Sequence[str]) -> dict[str, tuple[int, int]]:
    if n_operators < 1:
        raise ValueError(f"n_operators: expected >= 1, got {n_operators}")
    ranges = {key: parse_shard_key(key).bounds for key in shard_keys}
    expected_start = 0
    for key, (start, stop) in sorted(ranges.items(), key=lambda item: item[1]):
        if start != expected_start or stop > n_operators:
            raise ValueError(
                f"shard_keys must tile operators [0, {n_operators}) without gaps or overlaps: "
                f"expected a shard starting at {expected_start}, got {key!r}"
            )
        expected_start = stop
    if expected_start != n_operators:
        raise ValueError(f"shard_keys cover operators [0, {expected_start}), expected [0, {n_operators})")
    return ranges


def _check_sources(sources: Sequence[ConsolidatedSource]) -> None:
    owners: dict[str, str] = {}  # HDF5 group -> the one asset whose arrays it holds
    for source in sources:
        for name, target in source.arrays.items():
            parts = PurePosixPath(target).parts
            if len(parts) < 3 or parts[0] != "/" or f"/{parts[1]}" == METADATA_GROUP or parts[-1] == PRESENT:
                raise ValueError(
                    f"asset {source.asset!r} array {name!r}: target must be an absolute path /group/.../name "
                    f"outside {METADATA_GROUP} and not named {PRESENT!r}, got {target!r}"
                )
            group = str(PurePosixPath(target).parent)
            if owners.setdefault(group, source.asset) != source.asset:
                raise ValueError(
                    f"group {group!r} would hold arrays of assets {owners[group]!r} and {source.asset!r}; "
                    "give each asset its own group so its present mask is unambiguous"
                )
    targets = [target for source in sources for target in source.arrays.values()]
    for target in targets:
        parents = {str(parent) for parent in PurePosixPath(target).parents}
        clash = next((other for other in targets if other in parents), None)
        if clash or targets.count(target) > 1:
            raise ValueError(f"target paths collide: {target!r} and {clash or target!r}")


def _scan(
    store: ShardStore, source: ConsolidatedSource, ranges: Mapping[str, tuple[int, int]], spec_hash: str
) -> _Scan:
    scan = _Scan(source)
    for key, (start, stop) in sorted(ranges.items(), key=lambda item: item[1]):
        if not store.exists(source.asset, key):
            continue
        header = store.read_header(source.asset, key, expected_spec_hash=spec_hash)
        for name in source.arrays:
            if name in header.arrays:
                _compare(scan, name, header.arrays[name], header.path)
            elif name not in source.optional:
                raise ShardArrayMissingError(
                    f"{header.path}: no array {name!r}; arrays present: {sorted(header.arrays)}"
                )
        arrays = {name: info.attrs for name, info in header.arrays.items()}
        problems = check_fixed_asset_arrays(
            source.asset, arrays, lambda name, path=header.path: f"{path}:/{name}"
        )
        if problems:  # e.g. an initial_conditions shard without fields that is not marked compact
            raise ShardCorruptError("; ".join(map(str, problems)))
        present = sorted(set(source.arrays) & set(header.arrays))
        if scan.rows and present != scan.rows[0]["arrays"]:
            raise InconsistentShardsError(
                f"{header.path}: holds arrays {present}, "
                f"but {scan.rows[0]['path']} holds {scan.rows[0]['arrays']}"
            )
        scan.rows.append(
            {
                "asset": source.asset,
                "shard_key": key,
                "operator_start": start,
                "operator_stop": stop,
                "sha256": store.sha256(source.asset, key),
                "code_version": str(header.attrs["code_version"]),
                "fingerprint_json": str(header.attrs["fingerprint_json"]),
                "path": header.path,
                "arrays": present,
            }
        )
    return scan


def _previous_sha256(path: Path) -> dict[tuple[str, str], str]:
    """What an existing dataset.h5 recorded per (asset, shard); empty when there is none to read."""
    from spinlock_assets.storage.integrity import shard_rows

    if not path.is_file():
        return {}
    try:
        with h5py.File(path, "r") as handle:
            return {(row.asset, row.shard_key): row.sha256 for row in shard_rows(handle)}
    except OSError:
        return {}  # an unreadable previous file records nothing; it is replaced


def _check_recorded(
    scans: Sequence[_Scan],
    previous: Mapping[tuple[str, str], str],
    recorded: Mapping[tuple[str, str], str],
) -> None:
    for row in (row for scan in scans for row in scan.rows):
        key, actual = (row["asset"], row["shard_key"]), row["sha256"]
        if key in recorded and recorded[key] != actual:
            raise ShardChangedError(
                f"{row['path']}: sha256 is {actual}, but {recorded[key]} was recorded when it was "
                "materialized: the file changed outside the pipeline; rematerialize it"
            )
        if key in previous and previous[key] != actual and key not in recorded:
            raise ShardChangedError(
                f"{row['path']}: sha256 is {actual}, but the previous dataset.h5 recorded {previous[key]} "
                "and no materialization vouches for the change: rematerialize the shard (or delete "
                "dataset.h5 to accept the files as they are)"
            )


def _compare(scan: _Scan, name: str, info: ArrayInfo, path: Path) -> None:
    """Record the first shard's description of ``name``; every later shard must match it exactly."""
    reference = scan.arrays.setdefault(name, info)
    first = scan.first_file.setdefault(name, path)
    checks = [("dtype", reference.dtype, info.dtype), ("shape[1:]", reference.shape[1:], info.shape[1:])]
    checks += [(f"@{key}", reference.attrs.get(key), info.attrs.get(key)) for key in ARRAY_ATTRS]
    for what, expected, actual in checks:
        if expected != actual:
            raise InconsistentShardsError(
                f"array {name!r} of asset {scan.source.asset!r}: {what} is {actual!r} in {path} "
                f"but {expected!r} in {first}; rematerialize the stale shards so all use one definition"
            )


def _metadata_attrs(
    root_attrs: Mapping[str, Any], n_operators: int, scans: Sequence[_Scan]
) -> dict[str, Any]:
    family_versions: dict[str, str] = {}
    for scan in scans:
        for name, target in scan.source.arrays.items():
            parts = PurePosixPath(target).parts  # ("/", "features", <family>, <array>)
            if name in scan.arrays and parts[1] == "features" and len(parts) == 4:
                version = scan.arrays[name].attrs["version"]
                if family_versions.setdefault(parts[2], version) != version:
                    raise InconsistentShardsError(
                        f"family {parts[2]!r}: arrays disagree on @version ({family_versions[parts[2]]!r} "
                        f"and {version!r} at {target!r})"
                    )
    fingerprints = sorted({row["fingerprint_json"] for scan in scans for row in scan.rows})
    derived = {
        "schema_version": SCHEMA_VERSION,
        "n_operators": n_operators,
        "family_versions": family_versions,
        "fingerprints": [json.loads(text) for text in fingerprints],
    }
    for key in _DERIVED_ATTRS:
        if key in root_attrs and _plain(root_attrs[key]) != _plain(derived[key]):
            raise ValueError(
                f"root_attrs[{key!r}]: the shards give {derived[key]!r}, got {root_attrs[key]!r}"
            )
    return {key: encode_attr(value) for key, value in {**root_attrs, **derived}.items()}


def _plain(value: Any) -> Any:
    """JSON text and Python objects compare equal when they hold the same value."""
    if isinstance(value, str) and value[:1] in "[{":
        return json.loads(value)
    return value


def _write_shards_table(handle: h5py.File, scans: Sequence[_Scan]) -> None:
    rows = [row for scan in scans for row in scan.rows]
    text_fields = ("asset", "shard_key", "sha256", "code_version", "fingerprint_json")
    dtype = [(name, f"S{max(1, *(len(row[name].encode()) for row in rows))}") for name in text_fields[:2]]
    dtype += [("operator_start", "<i8"), ("operator_stop", "<i8")]
    dtype += [(name, f"S{max(1, *(len(row[name].encode()) for row in rows))}") for name in text_fields[2:]]
    table = np.array([tuple(row[name] for name, _ in dtype) for row in rows], dtype=dtype)
    dataset = handle.create_dataset(SHARDS_TABLE, data=table, track_times=False)
    dataset.attrs.update(
        {
            "axes": encode_attr(["shard"]),
            "feature_names": encode_attr([name for name, _ in dtype]),
            "description": "one row per shard file present when dataset.h5 was built (sha256 of its bytes)",
        }
    )


def _write_source(handle: h5py.File, folder: Path, scan: _Scan, n_operators: int) -> None:
    groups: dict[str, list[str]] = {}  # only groups that get a dataset: optional arrays may be absent
    for name, target in scan.source.arrays.items():
        if name not in scan.arrays:
            continue  # an optional array that no shard holds
        groups.setdefault(str(PurePosixPath(target).parent), []).append(PurePosixPath(target).name)
        info = scan.arrays[name]
        layout = h5py.VirtualLayout(shape=(n_operators, *info.shape[1:]), dtype=info.dtype)
        for row in scan.rows:
            relative = Path(os.path.relpath(row["path"], folder)).as_posix()
            rows = row["operator_stop"] - row["operator_start"]
            source = h5py.VirtualSource(relative, name, shape=(rows, *info.shape[1:]), dtype=info.dtype)
            layout[row["operator_start"] : row["operator_stop"]] = source
        # h5py 3.16 writes garbage as the fill value of fixed-length bytes; HDF5's default (zeros) is b"".
        fill = {"fillvalue": np.nan} if info.dtype.kind == "f" else {}
        dataset = handle.create_virtual_dataset(target, layout, **fill)
        dataset.attrs.update(info.attrs)
    present = np.zeros(n_operators, dtype=np.uint8)
    for row in scan.rows:
        present[row["operator_start"] : row["operator_stop"]] = 1
    for group_path, names in groups.items():
        group = handle.require_group(group_path)
        group.attrs.update({"asset": scan.source.asset, "field_names": encode_attr(sorted(names))})
        mask = group.create_dataset(PRESENT, data=present, track_times=False)
        mask.attrs.update(
            {
                "axes": encode_attr(["operator"]),
                "feature_names": encode_attr([]),
                "version": SCHEMA_VERSION,
                "source": "derived",
                "config": encode_attr({}),
                "description": f"1 where the shard file of asset {scan.source.asset!r} was present, else 0",
                "axis_labels": encode_attr({}),
            }
        )
