"""One stored array: its data, the attributes that make it self-describing, and how it is laid out on disk.

Every dataset is chunked and carries Fletcher-32 checksums, so a damaged byte of data fails the read
instead of returning wrong numbers. ``compress`` adds gzip + shuffle with one operator per chunk, so
reading one operator decompresses only that operator.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from spinlock_assets.storage.errors import ShardCorruptError
from spinlock_assets.storage.layout import check_array_attrs, encode_attr

__all__ = ["StoredArray", "ArrayInfo", "check_stored_array", "write_array", "read_array", "chunk_shape"]

# HDF5's default chunk cache holds 1 MiB per dataset; a larger chunk is re-read on every partial access.
_CHUNK_BYTES = 1 << 20
_GZIP_LEVEL = 4
_STORABLE_KINDS = "biufS"  # bool, integers, floats, fixed-length bytes: no object or unicode arrays


@dataclass(frozen=True, eq=False)
class StoredArray:
    """One array of a shard plus the attributes that make it self-describing.

    ``data`` is ``[n_operators_in_shard, ...]``; ``axes`` names every axis, ``"operator"`` first.
    ``field_names`` names the entries of the ``"feature"`` axis (required iff there is one);
    ``axis_labels`` names the entries of any other axis. ``compress`` asks for gzip + shuffle
    with one operator per chunk (for float arrays that compress well).
    """

    data: np.ndarray
    axes: tuple[str, ...]
    version: str
    source: str
    field_names: tuple[str, ...] | None = None
    config: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""
    compress: bool = False
    axis_labels: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def hdf5_attrs(self) -> dict[str, str | int | float | bool]:
        """The attributes as stored: lists and mappings as JSON text."""
        raw: dict[str, Any] = {
            "axes": list(self.axes),
            "feature_names": list(self.field_names or ()),
            "version": self.version,
            "source": self.source,
            "config": dict(self.config),
            "description": self.description,
            "axis_labels": {axis: list(labels) for axis, labels in self.axis_labels.items()},
        }
        return {key: encode_attr(value) for key, value in raw.items()}


@dataclass(frozen=True)
class ArrayInfo:
    """Shape, dtype and decoded attributes of one stored array (JSON attributes stay text)."""

    shape: tuple[int, ...]
    dtype: np.dtype
    attrs: dict[str, Any]


def check_stored_array(name: str, array: StoredArray, operator_start: int, operator_stop: int) -> None:
    """Raise ``ValueError`` naming the array, the expected and the actual value if it cannot be stored."""
    if not name or "/" in name or name == ".":
        raise ValueError(f"array name must be a plain HDF5 name without '/', got {name!r}")
    data = array.data
    if not isinstance(data, np.ndarray) or data.ndim == 0:
        raise ValueError(
            f"array {name!r}: expected a numpy array with an operator axis, got {type(data).__name__}"
        )
    if data.shape[0] != operator_stop - operator_start:
        raise ValueError(
            f"array {name!r}: expected {operator_stop - operator_start} rows on axis 0 (operators "
            f"{operator_start}..{operator_stop - 1}), got {data.shape[0]} (shape {data.shape})"
        )
    if data.dtype.kind not in _STORABLE_KINDS:
        raise ValueError(
            f"array {name!r}: dtype {data.dtype} cannot be stored; use numbers, bool or bytes (S)"
        )
    try:
        attrs = array.hdf5_attrs()
    except TypeError as exc:
        raise ValueError(
            f"array {name!r}: config and axis_labels must be JSON-serialisable ({exc})"
        ) from None
    problems = check_array_attrs(f"array {name!r}", attrs, data.shape)
    if problems:
        raise ValueError("; ".join(str(problem) for problem in problems))


def chunk_shape(shape: tuple[int, ...], itemsize: int, *, one_operator: bool) -> tuple[int, ...]:
    """One operator per chunk (or as many as fit in 1 MiB), then halve inner axes until it fits 1 MiB."""
    row_bytes = math.prod(shape[1:]) * itemsize
    rows = 1 if one_operator else max(1, min(shape[0], _CHUNK_BYTES // max(row_bytes, 1)))
    chunk = [rows, *shape[1:]]
    axis = 1
    while axis < len(chunk) and math.prod(chunk) * itemsize > _CHUNK_BYTES:
        if chunk[axis] > 1:
            chunk[axis] = -(-chunk[axis] // 2)
        else:
            axis += 1
    return tuple(chunk)


def write_array(group: h5py.Group, name: str, array: StoredArray) -> None:
    """Create dataset ``name`` in ``group`` with the array's data, layout options and attributes."""
    data = np.ascontiguousarray(array.data)
    options: dict[str, Any] = {"track_times": False}  # no timestamps: same content, same bytes
    if data.size:  # HDF5 cannot chunk an empty extent, and such an array holds no data to protect
        options.update(chunks=chunk_shape(data.shape, data.dtype.itemsize, one_operator=array.compress))
        options.update(fletcher32=True)
        if array.compress:
            options.update(compression="gzip", compression_opts=_GZIP_LEVEL, shuffle=True)
    dataset = group.create_dataset(name, data=data, **options)
    dataset.attrs.update(array.hdf5_attrs())


def read_array(dataset: h5py.Dataset, path: Path, info: ArrayInfo) -> StoredArray:
    """The dataset's data and attributes; a failed read (checksum, truncation) is ``ShardCorruptError``."""
    try:
        data = dataset[()]
    except (OSError, RuntimeError) as exc:
        raise ShardCorruptError(
            f"{path}: array {dataset.name!r} cannot be read ({exc}); rematerialize it"
        ) from None
    attrs = info.attrs
    return StoredArray(
        data=data,
        axes=tuple(json.loads(attrs["axes"])),
        version=attrs["version"],
        source=attrs["source"],
        field_names=tuple(json.loads(attrs["feature_names"])) or None,
        config=json.loads(attrs["config"]),
        description=attrs["description"],
        compress=dataset.compression is not None,
        axis_labels={axis: tuple(labels) for axis, labels in json.loads(attrs["axis_labels"]).items()},
    )
