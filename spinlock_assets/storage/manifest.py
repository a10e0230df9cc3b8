"""Shard manifests: what a shard file held when it was written, in a small JSON file beside it.

``<root>/<asset>/<shard_key>.json`` records the file's SHA-256, size and modification time, its file
attributes and its array descriptions (shape, dtype, attributes). Consolidating ``dataset.h5`` over
10,000 shard files then reads 10,000 small JSON files instead of opening 10,000 HDF5 files and hashing
them. A manifest is trusted only while the shard file still has the recorded size and modification
time; any other file is described from its own header and hashed (``ShardStore.record``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from spinlock_assets.storage.arrays import ArrayInfo
from spinlock_assets.storage.shard_file import ShardHeader

__all__ = ["ShardRecord", "manifest_path", "read_manifest", "write_manifest"]

MANIFEST_SUFFIX = ".json"


@dataclass(frozen=True)
class ShardRecord:
    """A published shard file as consolidation needs it: identity, bytes and array descriptions."""

    path: Path
    sha256: str
    n_bytes: int
    mtime_ns: int
    attrs: dict[str, Any]
    arrays: dict[str, ArrayInfo]

    @classmethod
    def of(cls, header: ShardHeader, sha256: str) -> ShardRecord:
        """The record of a file described by ``header`` whose bytes hash to ``sha256``."""
        stat = header.path.stat()
        return cls(header.path, sha256, stat.st_size, stat.st_mtime_ns, header.attrs, header.arrays)

    def matches(self, stat: os.stat_result) -> bool:
        """Whether a file with this ``stat`` is still the one recorded (same size, same mtime)."""
        return (stat.st_size, stat.st_mtime_ns) == (self.n_bytes, self.mtime_ns)


def manifest_path(shard_path: Path) -> Path:
    return shard_path.with_suffix(MANIFEST_SUFFIX)


def write_manifest(record: ShardRecord) -> None:
    """Write the record beside its shard file (plain write: a torn manifest fails to parse and is ignored)."""
    document = {
        "sha256": record.sha256,
        "n_bytes": record.n_bytes,
        "mtime_ns": record.mtime_ns,
        "attrs": record.attrs,
        "arrays": {
            name: {"shape": list(info.shape), "dtype": info.dtype.str, "attrs": info.attrs}
            for name, info in record.arrays.items()
        },
    }
    manifest_path(record.path).write_text(json.dumps(document, default=_plain))


def read_manifest(shard_path: Path) -> ShardRecord | None:
    """The manifest of ``shard_path``, or None when there is none or it cannot be parsed."""
    try:
        document = json.loads(manifest_path(shard_path).read_text())
        arrays = {
            name: ArrayInfo(tuple(info["shape"]), np.dtype(info["dtype"]), info["attrs"])
            for name, info in document["arrays"].items()
        }
        return ShardRecord(
            shard_path,
            document["sha256"],
            document["n_bytes"],
            document["mtime_ns"],
            document["attrs"],
            arrays,
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serializable: {value!r}")
