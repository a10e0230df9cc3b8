"""The single ``dataset.h5`` view: HDF5 virtual datasets over every shard file, plus metadata.

Each consolidated dataset ``[N, ...]`` maps operator rows ``[start, stop)`` of each present shard
to that shard file through a *relative* path, which HDF5 resolves against the folder holding
dataset.h5: the data folder can be moved or copied as a whole. Rows of missing shards read as the
fill value (NaN for floats, 0 for integers, b"" for bytes), and each group's ``present`` mask says
which rows are real. Building reads shard files only (never opens them for writing), and publishes
dataset.h5 atomically, so readers that hold the old file open are not disturbed.

Building costs what changed, not what exists: a shard whose file keeps the size and mtime recorded
in the previous dataset.h5's shard table keeps its row without being opened; any other shard is
described by its manifest (``manifest.py``) or, failing that, its header and a fresh SHA-256. The
virtual mappings are then written through the low-level API (one reused selection per dataset), about
0.7 s for 40,000 mappings, so dataset.h5 is always written whole and never patched in place. Rows are
kept only from a previous dataset.h5 whose bytes still hash to the sha256 recorded when it was written
(``update_consolidated_dataset``'s ``previous_sha256``): an edited table is never trusted.

Rebuilding compares before it records: a shard file read afresh whose sha256 differs from the one the
previous dataset.h5 recorded, or from the one recorded at materialization (``recorded_sha256``, from the
Dagster instance), is refused with ``ShardChangedError`` unless the materialization record vouches for
the new bytes, so a file edited in place is never laundered into a fresh record. A kept row keeps the
sha256 checked when it was read: a file changed behind an unchanged size and mtime then fails every
later hash check against dataset.h5 (``storage.integrity``), it is never recorded anew.

A compact dataset (spec ``store_initial_conditions=False``) has initial_conditions shards without
``fields``, so dataset.h5 has no ``/inputs/fields``; ``/inputs`` holds ``ic_digest`` and its ``present``
mask still marks the rows whose initial_conditions shard exists (their ICs can be regenerated and checked).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Mapping, Sequence
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
    OutputExistsError,
    ShardArrayMissingError,
    ShardChangedError,
    ShardCorruptError,
)
from spinlock_assets.storage.layout import (
    ARRAY_ATTRS,
    DATASET_FILE,
    METADATA_GROUP,
    PRESENT,
    ROOT_ATTRS,
    SCHEMA_VERSION,
    SHARDS_TABLE,
    ConsolidatedSource,
    check_fixed_asset_arrays,
    decode_attr,
    encode_attr,
)
from spinlock_assets.storage.manifest import ShardRecord
from spinlock_assets.storage.shard_file import file_sha256
from spinlock_assets.storage.store import ShardStore

__all__ = [
    "Consolidation",
    "ConsolidatedSource",
    "RecordedSha256",
    "build_consolidated_dataset",
    "update_consolidated_dataset",
]

_DERIVED_ATTRS = ("schema_version", "n_operators", "family_versions", "fingerprints")
_TEXT_FIELDS = ("asset", "shard_key", "sha256", "code_version", "fingerprint_json")


@dataclass
class _Scan:
    """What one asset's present shards hold: one table row per shard, one reference per array."""

    source: ConsolidatedSource
    rows: list[dict[str, Any]] = field(default_factory=list)
    arrays: dict[str, ArrayInfo] = field(default_factory=dict)
    first_file: dict[str, Path] = field(default_factory=dict)


# (asset, shard keys) -> the sha256 recorded when each of those shards was materialized, by shard key
RecordedSha256 = Callable[[str, Sequence[str]], Mapping[str, str]]


@dataclass(frozen=True)
class Consolidation:
    """A written dataset.h5 (and the sha256 of its bytes) and what building it cost: shard records read
    (from manifests, or from headers and a fresh hash), the rest being rows of the previous dataset.h5
    whose file had not changed."""

    path: Path
    sha256: str
    shards_by_asset: dict[str, int]
    shards_read: int

    @property
    def shards_present(self) -> int:
        return sum(self.shards_by_asset.values())


def build_consolidated_dataset(
    store: ShardStore,
    out_path: str | Path,
    *,
    n_operators: int,
    shard_keys: Sequence[str],
    sources: Sequence[ConsolidatedSource],
    root_attrs: Mapping[str, Any],
    overwrite: bool = False,
    recorded_sha256: RecordedSha256 | None = None,
) -> Path:
    """Write ``out_path`` (normally ``<store.root>/dataset.h5``) as a view over the shards; return it.

    ``shard_keys`` must tile ``[0, n_operators)``; ``root_attrs`` needs ``spec_hash`` and ``spec_json``
    and may carry more attributes for ``/metadata``. Shards written for another spec hash raise
    ``SpecMismatchError``; shards of one asset that disagree on an array raise ``InconsistentShardsError``.
    An asset none of whose shards exists yet (a family not materialized) adds no paths; the validator
    reports a fixed asset in that state as missing required datasets. A shard of a fixed asset that
    breaks ``layout.check_fixed_asset_arrays`` (e.g. IC fields neither stored nor marked regenerated)
    raises ``ShardCorruptError``. ``recorded_sha256(asset, shard_keys)`` gives the sha256 recorded when
    those shards were materialized (by shard key; shards without a record are absent); a shard whose
    bytes differ from it, or from the sha256 the previous ``out_path`` recorded without a record vouching
    for the change, raises ``ShardChangedError``. Every shard is read afresh (from its manifest or its
    file).
    """
    return _consolidate(
        store,
        Path(out_path),
        n_operators,
        shard_keys,
        sources,
        root_attrs,
        overwrite=overwrite,
        recorded_sha256=recorded_sha256,
        previous_sha256=None,
    ).path


def update_consolidated_dataset(
    store: ShardStore,
    out_path: str | Path,
    *,
    n_operators: int,
    shard_keys: Sequence[str],
    sources: Sequence[ConsolidatedSource],
    root_attrs: Mapping[str, Any],
    previous_sha256: str | None,
    recorded_sha256: RecordedSha256 | None = None,
) -> Consolidation:
    """Rewrite ``out_path`` like :func:`build_consolidated_dataset`, reading only the shards that changed
    since it was last written (new, replaced or touched files); the result has the same content as a
    full rebuild. Rows are kept only from a previous ``out_path`` of the same spec whose bytes hash to
    ``previous_sha256`` (what was recorded when it was written); otherwise it is a full rebuild."""
    return _consolidate(
        store,
        Path(out_path),
        n_operators,
        shard_keys,
        sources,
        root_attrs,
        overwrite=True,
        recorded_sha256=recorded_sha256,
        previous_sha256=previous_sha256,
    )


def _consolidate(
    store: ShardStore,
    out_path: Path,
    n_operators: int,
    shard_keys: Sequence[str],
    sources: Sequence[ConsolidatedSource],
    root_attrs: Mapping[str, Any],
    *,
    overwrite: bool,
    recorded_sha256: RecordedSha256 | None,
    previous_sha256: str | None,
) -> Consolidation:
    ranges = _check_shard_keys(n_operators, shard_keys)
    _check_sources(sources)
    for key in ("spec_hash", "spec_json"):
        if not isinstance(root_attrs.get(key), str):
            raise ValueError(f"root_attrs[{key!r}]: expected a string, got {root_attrs.get(key)!r}")
    if not overwrite and out_path.exists():
        raise OutputExistsError(f"{out_path} already exists; pass overwrite=True to replace it")
    trusted = previous_sha256 is not None and out_path.is_file() and file_sha256(out_path) == previous_sha256
    previous = _previous(out_path, root_attrs["spec_hash"], sources) if trusted else {}
    scans = [
        _scan(store, source, ranges, root_attrs["spec_hash"], previous.get(source.asset))
        for source in sources
    ]
    scans = [scan for scan in scans if scan.rows]  # an asset with no shard yet has nothing to show
    read = [row for scan in scans for row in scan.rows if not row["reused"]]
    _check_recorded(read, _previous_sha256(out_path), recorded_sha256)
    metadata = _metadata_attrs(root_attrs, n_operators, scans)

    def fill(f: h5py.File) -> None:
        f.attrs.update({key: metadata[key] for key in ROOT_ATTRS})
        f.require_group(METADATA_GROUP).attrs.update(metadata)
        _write_shards_table(f, scans)
        for scan in scans:
            _write_source(f, out_path.parent, scan, n_operators)

    image = publish_hdf5(out_path, fill, overwrite=overwrite)
    return Consolidation(
        out_path,
        hashlib.sha256(image).hexdigest(),
        {scan.source.asset: len(scan.rows) for scan in scans},
        len(read),
    )


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


@dataclass(frozen=True)
class _Previous:
    """One asset's part of the previous dataset.h5: its rows by shard key and its array descriptions."""

    rows: dict[str, dict[str, Any]]
    arrays: dict[str, ArrayInfo]


def _previous(path: Path, spec_hash: str, sources: Sequence[ConsolidatedSource]) -> dict[str, _Previous]:
    """Per asset, what the previous dataset.h5 at ``path`` recorded, when it is one of this spec whose
    table records file sizes and mtimes and which maps every array the source needs; else nothing."""
    try:
        handle = h5py.File(path, "r")
    except (FileNotFoundError, OSError):
        return {}
    with handle:
        table = handle.get(SHARDS_TABLE)
        if handle[METADATA_GROUP].attrs.get("spec_hash") != spec_hash or table is None:
            return {}
        if not {"n_bytes", "mtime_ns", "arrays"} <= set(table.dtype.names or ()):
            return {}
        found: dict[str, _Previous] = {}
        records = table[()]
        # Column by column (one tolist each): per-record field access costs ~50 us a row at 10K shards.
        columns = {name: records[name].tolist() for name in table.dtype.names}
        for name in (*_TEXT_FIELDS, "arrays"):
            columns[name] = [value.decode() for value in columns[name]]
        columns["arrays"] = [json.loads(value) for value in columns["arrays"]]
        for values in zip(*columns.values(), strict=True):
            row = dict(zip(columns, values, strict=True))
            found.setdefault(row["asset"], _Previous({}, {})).rows[row["shard_key"]] = row
        for source in sources:
            if source.asset not in found:
                continue
            mapped = {name: handle[target] for name, target in source.arrays.items() if target in handle}
            if any(name not in mapped and name not in source.optional for name in source.arrays):
                del found[source.asset]  # the source asks for an array the old file did not map
                continue
            found[source.asset].arrays.update(
                {
                    name: ArrayInfo(
                        dataset.shape, dataset.dtype, {k: decode_attr(v) for k, v in dataset.attrs.items()}
                    )
                    for name, dataset in mapped.items()
                }
            )
    return found


def _scan(
    store: ShardStore,
    source: ConsolidatedSource,
    ranges: Mapping[str, tuple[int, int]],
    spec_hash: str,
    previous: _Previous | None,
) -> _Scan:
    scan = _Scan(source)
    for key, (start, stop) in sorted(ranges.items(), key=lambda item: item[1]):
        path = store.path(source.asset, key)
        try:
            stat = path.stat()
        except FileNotFoundError:
            continue
        old = previous.rows.get(key) if previous else None
        if old is not None and (int(old["n_bytes"]), int(old["mtime_ns"])) == (
            stat.st_size,
            stat.st_mtime_ns,
        ):
            scan.rows.append({**old, "path": path, "reused": True})
            continue
        record = store.record(source.asset, key, expected_spec_hash=spec_hash)
        if record is None:
            continue  # deleted since the stat
        scan.rows.append(_read_row(scan, record, start, stop))
    if previous and any(row["reused"] for row in scan.rows):  # kept rows must agree with the new ones
        for name, info in previous.arrays.items():
            _compare(scan, name, info, Path(f"the previous {DATASET_FILE}"))
    present = {tuple(row["arrays"]) for row in scan.rows}
    if len(present) > 1:
        first, *others = sorted(present)
        raise InconsistentShardsError(
            f"shards of asset {source.asset!r} hold different arrays: {list(first)} and {list(others[0])}"
        )
    return scan


def _read_row(scan: _Scan, record: ShardRecord, start: int, stop: int) -> dict[str, Any]:
    """The table row of a shard read afresh, after checking its arrays against the asset's others."""
    source = scan.source
    for name in source.arrays:
        if name in record.arrays:
            _compare(scan, name, record.arrays[name], record.path)
        elif name not in source.optional:
            raise ShardArrayMissingError(
                f"{record.path}: no array {name!r}; arrays present: {sorted(record.arrays)}"
            )
    arrays = {name: info.attrs for name, info in record.arrays.items()}
    problems = check_fixed_asset_arrays(
        source.asset, arrays, lambda name, path=record.path: f"{path}:/{name}"
    )
    if problems:  # e.g. an initial_conditions shard without fields that is not marked compact
        raise ShardCorruptError("; ".join(map(str, problems)))
    return {
        "asset": source.asset,
        "shard_key": record.attrs["shard_key"],
        "operator_start": start,
        "operator_stop": stop,
        "sha256": record.sha256,
        "code_version": str(record.attrs["code_version"]),
        "fingerprint_json": str(record.attrs["fingerprint_json"]),
        "n_bytes": record.n_bytes,
        "mtime_ns": record.mtime_ns,
        "path": record.path,
        "arrays": sorted(set(source.arrays) & set(record.arrays)),
        "reused": False,
    }


def _previous_sha256(path: Path) -> dict[tuple[str, str], str]:
    """What an existing dataset.h5 recorded per (asset, shard), trusted or not (it can only refuse a
    shard); empty when there is none to read."""
    from spinlock_assets.storage.integrity import shard_rows

    if not path.is_file():
        return {}
    try:
        with h5py.File(path, "r") as handle:
            return {(row.asset, row.shard_key): row.sha256 for row in shard_rows(handle)}
    except OSError:
        return {}  # an unreadable previous file records nothing; it is replaced


def _check_recorded(
    rows: Sequence[dict[str, Any]],
    previous: Mapping[tuple[str, str], str],
    recorded_sha256: RecordedSha256 | None,
) -> None:
    """Refuse a shard read afresh whose bytes differ from its materialization record, or from the previous
    dataset.h5's record without a materialization record vouching for the change."""
    keys: dict[str, list[str]] = {}
    for row in rows:
        keys.setdefault(row["asset"], []).append(row["shard_key"])
    recorded = {
        (asset, key): sha256
        for asset, shard_keys in keys.items()
        for key, sha256 in (recorded_sha256(asset, shard_keys) if recorded_sha256 else {}).items()
    }
    for row in rows:
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
    rows = [{**row, "arrays": json.dumps(row["arrays"])} for scan in scans for row in scan.rows]

    def text(name: str) -> tuple[str, str]:
        return name, f"S{max(1, *(len(row[name].encode()) for row in rows))}"

    dtype = [text("asset"), text("shard_key"), ("operator_start", "<i8"), ("operator_stop", "<i8")]
    dtype += [text(name) for name in _TEXT_FIELDS[2:]]
    # what lets the next build keep a row without opening its file: size, mtime and the arrays it maps
    dtype += [("n_bytes", "<i8"), ("mtime_ns", "<i8"), text("arrays")]
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
    relative_paths = _relative_paths(folder, scan.rows)  # once per shard file, not once per array
    for name, target in scan.source.arrays.items():
        if name not in scan.arrays:
            continue  # an optional array that no shard holds
        groups.setdefault(str(PurePosixPath(target).parent), []).append(PurePosixPath(target).name)
        info = scan.arrays[name]
        # h5py 3.16 writes garbage as the fill value of fixed-length bytes; HDF5's default (zeros) is b"".
        fill = {"fillvalue": np.nan} if info.dtype.kind == "f" else {}
        dataset = handle.create_virtual_dataset(
            target, _virtual_layout(relative_paths, scan, name, info, n_operators), **fill
        )
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


def _relative_paths(folder: Path, rows: Sequence[Any]) -> list[bytes]:
    """Each row's shard file relative to ``folder`` (where dataset.h5 lives), as the virtual mappings store
    it. A string cut for the files under ``folder`` (all of them, normally): ``os.path.relpath`` costs
    ~15 us a call, most of an update's time at tens of thousands of mappings."""
    prefix = os.path.join(os.path.abspath(folder), "")
    relative = []
    for row in rows:
        path = os.path.abspath(row["path"])
        inside = path[len(prefix) :] if path.startswith(prefix) else os.path.relpath(path, folder)
        relative.append(inside.replace(os.sep, "/").encode())
    return relative


def _virtual_layout(
    relative_paths: Sequence[bytes], scan: _Scan, name: str, info: ArrayInfo, n_operators: int
) -> h5py.VirtualLayout:
    """The mappings of array ``name`` to each present shard, set through the low-level property list
    with one reused selection per shard size: h5py's ``layout[a:b] = VirtualSource(...)`` builds two
    Python selection objects per mapping, which is most of the time at tens of thousands of shards."""
    rest = tuple(info.shape[1:])
    layout = h5py.VirtualLayout(shape=(n_operators, *rest), dtype=info.dtype)
    virtual = h5py.h5s.create_simple((n_operators, *rest))
    sources: dict[int, h5py.h5s.SpaceID] = {}
    dataset_name = name.encode()
    for row, relative in zip(scan.rows, relative_paths, strict=True):
        rows = row["operator_stop"] - row["operator_start"]
        source = sources.setdefault(rows, h5py.h5s.create_simple((rows, *rest)))
        virtual.select_hyperslab((row["operator_start"], *(0 for _ in rest)), (rows, *rest))
        layout.dcpl.set_virtual(virtual, relative, dataset_name, source)
    return layout
