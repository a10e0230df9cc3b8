"""One HDF5 file per (asset, shard): self-describing arrays over a contiguous operator range.

Axis 0 of every array is the operator within the shard: row ``r`` is global operator
``operator_start + r``. Files are published atomically (``atomic.py``), so a reader sees a whole
file or none; reads name the file in every error.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from spinlock_assets.core.shards import parse_shard_key
from spinlock_assets.storage.arrays import ArrayInfo, StoredArray, check_stored_array, read_array, write_array
from spinlock_assets.storage.atomic import publish_hdf5
from spinlock_assets.storage.errors import (
    ShardArrayMissingError,
    ShardCorruptError,
    ShardExistsError,
    ShardMissingError,
    SpecMismatchError,
)
from spinlock_assets.storage.layout import (
    SCHEMA_VERSION,
    SHARD_FILE_ATTRS,
    Problem,
    check_array_attrs,
    decode_attr,
    encode_attr,
)

__all__ = [
    "ShardFileInfo",
    "ShardHeader",
    "ShardContents",
    "write_shard_file",
    "read_shard_header",
    "check_shard_header",
    "read_shard_file",
    "file_sha256",
]


@dataclass(frozen=True)
class ShardFileInfo:
    """A published shard file: where it is, the SHA-256 of its bytes, and its size."""

    path: Path
    sha256: str
    n_bytes: int


@dataclass(frozen=True)
class ShardHeader:
    """A shard file's attributes and array descriptions, read without any array data."""

    path: Path
    attrs: dict[str, Any]
    arrays: dict[str, ArrayInfo]


@dataclass(frozen=True)
class ShardContents:
    """A shard file read into memory: file attributes and the arrays asked for."""

    path: Path
    attrs: dict[str, Any]
    arrays: dict[str, StoredArray]


def file_sha256(path: str | Path) -> str:
    """SHA-256 hex digest of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def write_shard_file(
    path: str | Path, arrays: Mapping[str, StoredArray], attrs: Mapping[str, Any], *, overwrite: bool = False
) -> ShardFileInfo:
    """Write ``arrays`` and file ``attrs`` to ``path`` atomically; every check runs before any write.

    ``attrs`` needs every key of ``layout.SHARD_FILE_ATTRS`` except ``schema_version`` and
    ``created_utc``, which the writer fills in when absent. Raises ``ValueError`` for bad input and
    ``ShardExistsError`` when ``path`` exists and ``overwrite`` is false.
    """
    path = Path(path)
    file_attrs = _complete_file_attrs(attrs)
    for name, array in arrays.items():
        check_stored_array(name, array, file_attrs["operator_start"], file_attrs["operator_stop"])

    def fill(handle: h5py.File) -> None:
        handle.attrs.update({key: encode_attr(value) for key, value in file_attrs.items()})
        for name, array in arrays.items():
            write_array(handle, name, array)

    image = publish_hdf5(path, fill, overwrite=overwrite, exists_error=ShardExistsError)
    return ShardFileInfo(path=path, sha256=hashlib.sha256(image).hexdigest(), n_bytes=len(image))


def read_shard_header(
    path: str | Path, *, expected_spec_hash: str | None = None, check: bool = True
) -> ShardHeader:
    """File attributes and array shapes/dtypes/attributes of a shard, without reading array data.

    With ``check`` (the default) a header that breaks the layout raises ``ShardCorruptError`` and a
    different spec hash ``SpecMismatchError``; without it the header is returned as found (validators).
    """
    path = Path(path)
    with _open(path) as handle:
        return _header(handle, path, expected_spec_hash) if check else _describe(handle, path)


def read_shard_file(
    path: str | Path, *, expected_spec_hash: str | None = None, names: Iterable[str] | None = None
) -> ShardContents:
    """Read a shard's file attributes and the arrays in ``names`` (all when None).

    Raises ``ShardMissingError``, ``ShardCorruptError``, ``SpecMismatchError`` (when
    ``expected_spec_hash`` differs from the file's) or ``ShardArrayMissingError``, each naming the file.
    """
    path = Path(path)
    with _open(path) as handle:
        header = _header(handle, path, expected_spec_hash)
        wanted = list(header.arrays) if names is None else list(names)
        absent = [name for name in wanted if name not in header.arrays]
        if absent:
            raise ShardArrayMissingError(
                f"{path}: no array(s) {absent}; arrays present: {sorted(header.arrays)}"
            )
        arrays = {name: read_array(handle[name], path, header.arrays[name]) for name in wanted}
    return ShardContents(path=path, attrs=header.attrs, arrays=arrays)


def _complete_file_attrs(attrs: Mapping[str, Any]) -> dict[str, Any]:
    given = dict(attrs)
    if given.get("schema_version", SCHEMA_VERSION) != SCHEMA_VERSION:
        raise ValueError(
            f"file attribute 'schema_version': expected {SCHEMA_VERSION!r}, got {given['schema_version']!r}"
        )
    given.setdefault("schema_version", SCHEMA_VERSION)
    given.setdefault("created_utc", datetime.now(timezone.utc).isoformat(timespec="seconds"))
    missing = [key for key in SHARD_FILE_ATTRS if key not in given]
    if missing:
        raise ValueError(f"file attributes missing: {missing} (required: {list(SHARD_FILE_ATTRS)})")
    for key in ("operator_start", "operator_stop"):
        if not isinstance(given[key], (int, np.integer)) or isinstance(given[key], bool):
            raise ValueError(f"file attribute {key!r}: expected an int, got {given[key]!r}")
        given[key] = int(given[key])
    key_range = parse_shard_key(str(given["shard_key"])).bounds
    if key_range != (given["operator_start"], given["operator_stop"]):
        raise ValueError(
            f"file attributes operator_start/operator_stop: expected {key_range} from shard key "
            f"{given['shard_key']!r}, got ({given['operator_start']}, {given['operator_stop']})"
        )
    for key in ("spec_json", "fingerprint_json"):
        try:
            json.loads(given[key])
        except (TypeError, ValueError) as exc:
            raise ValueError(
                f"file attribute {key!r}: expected JSON text, got {given[key]!r} ({exc})"
            ) from None
    return given


@contextmanager
def _open(path: Path) -> Iterator[h5py.File]:
    """``h5py.File(path, "r")`` whose failures become ``ShardMissingError`` / ``ShardCorruptError``."""
    if not path.is_file():
        raise ShardMissingError(f"{path}: shard file does not exist")
    try:
        handle = h5py.File(path, "r")
    except OSError as exc:
        raise ShardCorruptError(
            f"{path}: not a readable HDF5 file ({exc}); it is truncated or damaged, rematerialize it"
        ) from None
    with handle:
        yield handle


def _describe(handle: h5py.File, path: Path) -> ShardHeader:
    # h5py reports a damaged object header as KeyError ("bad object header version number") or OSError.
    try:
        attrs = {key: decode_attr(value) for key, value in handle.attrs.items()}
        arrays: dict[str, ArrayInfo] = {}
        for name in handle:
            item = handle[name]
            if not isinstance(item, h5py.Dataset):
                raise ShardCorruptError(f"{path}: unexpected object {name!r}; shard files hold datasets only")
            attributes = {key: decode_attr(value) for key, value in item.attrs.items()}
            arrays[name] = ArrayInfo(tuple(item.shape), item.dtype, attributes)
    except (OSError, RuntimeError, KeyError) as exc:
        raise ShardCorruptError(f"{path}: damaged HDF5 metadata ({exc}); rematerialize the shard") from None
    return ShardHeader(path=path, attrs=attrs, arrays=arrays)


def check_shard_header(header: ShardHeader) -> list[Problem]:
    """Problems of a shard's attributes and array descriptions against the layout; empty when it conforms."""
    where = str(header.path)
    missing = [key for key in SHARD_FILE_ATTRS if key not in header.attrs]
    if missing:
        return [Problem(where, f"not a shard file of this layout: file attributes missing: {missing}")]
    attrs = header.attrs
    if attrs["schema_version"] != SCHEMA_VERSION:
        return [
            Problem(
                where,
                f"@schema_version is {attrs['schema_version']!r}, this package reads {SCHEMA_VERSION!r}",
            )
        ]
    problems = []
    try:
        key_range = parse_shard_key(str(attrs["shard_key"])).bounds
    except ValueError as exc:
        key_range = None
        problems.append(Problem(where, f"@shard_key: {exc}"))
    if key_range is not None and key_range != (attrs["operator_start"], attrs["operator_stop"]):
        problems.append(
            Problem(
                where,
                f"@operator_start/@operator_stop: expected {key_range} from @shard_key "
                f"{attrs['shard_key']!r}, got ({attrs['operator_start']}, {attrs['operator_stop']})",
            )
        )
    n_rows = int(attrs["operator_stop"]) - int(attrs["operator_start"])
    for name, info in header.arrays.items():
        problems += check_array_attrs(f"{where}:/{name}", info.attrs, info.shape)
        if info.shape[:1] != (n_rows,):
            problems.append(
                Problem(f"{where}:/{name}", f"expected {n_rows} rows on axis 0, got shape {info.shape}")
            )
    return problems


def _header(handle: h5py.File, path: Path, expected_spec_hash: str | None) -> ShardHeader:
    header = _describe(handle, path)
    problems = check_shard_header(header)
    if problems:
        raise ShardCorruptError("; ".join(str(problem) for problem in problems))
    if expected_spec_hash is not None and header.attrs["spec_hash"] != expected_spec_hash:
        raise SpecMismatchError(
            f"{path}: written for spec hash {header.attrs['spec_hash']!r}, expected {expected_spec_hash!r}; "
            "a changed dataset spec needs a new dataset root (shards of different specs are never mixed)"
        )
    return header
