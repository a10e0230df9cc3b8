"""A tiny spec-conformant dataset writer, for tests and for documenting readers (cf. The Well's dummy data).

The values are random (``numpy.random.default_rng(seed)``), not rollouts; the shapes, dtypes,
attributes and paths are exactly those of a real dataset, and ``ic_digest`` is the real SHA-256
of the stored initial condition.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from spinlock_assets.core.features.base import SERIES_FIELDS, SUMMARY_FIELDS
from spinlock_assets.core.shards import parse_shard_key, shard_ranges
from spinlock_assets.storage.arrays import StoredArray
from spinlock_assets.storage.consolidated import build_consolidated_dataset
from spinlock_assets.storage.layout import (
    BASE_FEATURES_ASSET,
    DATASET_FILE,
    FIXED_ARRAYS,
    FIXED_SOURCES,
)
from spinlock_assets.storage.store import ShardStore

__all__ = ["tiny_spec_json", "write_tiny_dataset"]

_N_PARAMS, _N_HYPER = 4, 3


def tiny_spec_json(*, n_operators: int, shard_size: int, seed: int, dims: dict[str, int]) -> str:
    """The spec JSON of a tiny dataset; its SHA-256 is the dataset's spec hash."""
    return json.dumps(
        {"n_operators": n_operators, "shard_size": shard_size, "seed": seed, **dims}, sort_keys=True
    )


def write_tiny_dataset(
    root: str | os.PathLike[str],
    *,
    n_operators: int = 8,
    shard_size: int = 4,
    seed: int = 0,
    realizations: int = 2,
    steps: int = 3,
    channels: int = 2,
    size: int = 4,
    trajectories: bool = False,
    skip: Iterable[tuple[str, str]] = (),
) -> Path:
    """Write shard files of the fixed assets under ``root`` and ``root/dataset.h5``; return dataset.h5.

    ``skip`` lists ``(asset, shard_key)`` pairs left unwritten, to produce a dataset with missing shards.
    """
    rng = np.random.default_rng(seed)
    dims = {"realizations": realizations, "steps": steps, "channels": channels, "size": size}
    spec_json = tiny_spec_json(n_operators=n_operators, shard_size=shard_size, seed=seed, dims=dims)
    spec_hash = hashlib.sha256(spec_json.encode()).hexdigest()
    store = ShardStore(root)
    skipped = set(skip)
    keys = [shard.key for shard in shard_ranges(n_operators, shard_size)]
    for key in keys:
        start, stop = parse_shard_key(key).bounds
        for asset, arrays in _shard_arrays(rng, start, stop, dims, trajectories=trajectories).items():
            if (asset, key) in skipped:
                continue
            attrs = {
                "spec_hash": spec_hash,
                "spec_json": spec_json,
                "code_version": "tiny-1",
                "fingerprint_json": json.dumps({"device": "cpu", "writer": "write_tiny_dataset"}),
                "package_version": "0.0.0",
                "created_utc": "2000-01-01T00:00:00+00:00",
            }
            store.write(asset, key, arrays, attrs)
    return build_consolidated_dataset(
        store,
        store.root / DATASET_FILE,
        n_operators=n_operators,
        shard_keys=keys,
        sources=FIXED_SOURCES,
        root_attrs={"spec_hash": spec_hash, "spec_json": spec_json, "root_seed": seed},
    )


def _shard_arrays(
    rng: np.random.Generator, start: int, stop: int, dims: dict[str, int], *, trajectories: bool
) -> dict[str, dict[str, StoredArray]]:
    n, m, t, c, s = stop - start, dims["realizations"], dims["steps"], dims["channels"], dims["size"]
    fields = rng.standard_normal((n, c, s, s), dtype=np.float32)
    data = {
        "params": rng.random((n, _N_PARAMS)),
        "hyperparameters": rng.random((n, _N_HYPER)),
        "operator_index": np.arange(start, stop, dtype=np.int64),
        "weight_seed": rng.integers(0, 2**63 - 1, n),
        "ic_seed": rng.integers(0, 2**63 - 1, n),
        "probe_seed": rng.integers(0, 2**63 - 1, n),
        "noise_seeds": rng.integers(0, 2**63 - 1, (n, m)),
        "fields": fields,
        "ic_digest": np.array(
            [hashlib.sha256(f.tobytes()).hexdigest().encode() for f in fields], dtype="S64"
        ),
        "series": rng.standard_normal((n, m, t, c, len(SERIES_FIELDS)), dtype=np.float32),
        "summary": rng.standard_normal((n, c, len(SUMMARY_FIELDS), 2), dtype=np.float32),
        "digests": np.array(
            [[rng.bytes(32).hex().encode() for _ in range(m)] for _ in range(n)], dtype="S64"
        ),
        "first_nonfinite_step": np.full((n, m), -1, dtype=np.int32),
        "trajectories": rng.standard_normal((n, m, t, c, s, s), dtype=np.float32),
    }
    field_names = {
        "params": tuple(f"p{i}" for i in range(_N_PARAMS)),
        "hyperparameters": ("layers", "width", "log_sigma"),
        "series": SERIES_FIELDS,
        "summary": SUMMARY_FIELDS,
    }
    result: dict[str, dict[str, StoredArray]] = {}
    for row in FIXED_ARRAYS:
        if row.name == "trajectories" and not trajectories:
            continue
        result.setdefault(row.asset, {})[row.name] = StoredArray(
            data=data[row.name].astype(row.dtype),
            axes=row.axes,
            version="1",
            source="inline" if row.asset == BASE_FEATURES_ASSET else "generated",
            field_names=field_names.get(row.name),
            description=f"tiny random stand-in for {row.path}",
            compress=data[row.name].dtype.kind == "f" and data[row.name].ndim > 2,
            axis_labels={"statistic": ("mean", "std")} if row.name == "summary" else {},
        )
    return result
