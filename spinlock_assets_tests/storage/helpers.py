"""Small shard contents shared by the storage tests (a 4-array toy asset with 3 feature columns)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np

from spinlock_assets.storage import StoredArray

SPEC_JSON = json.dumps({"n_operators": 8, "shard_size": 4, "seed": 7})
SPEC_HASH = hashlib.sha256(SPEC_JSON.encode()).hexdigest()


def shard_attrs(
    start: int, stop: int, *, spec_hash: str = SPEC_HASH, spec_json: str = SPEC_JSON, asset: str = "toy"
) -> dict[str, Any]:
    return {
        "asset": asset,
        "shard_key": f"ops-{start:06d}-{stop - 1:06d}",
        "operator_start": start,
        "operator_stop": stop,
        "spec_hash": spec_hash,
        "spec_json": spec_json,
        "code_version": "1",
        "fingerprint_json": json.dumps({"device": "cpu"}),
        "package_version": "0.1.0",
        "created_utc": "2000-01-01T00:00:00+00:00",
    }


def shard_arrays(n_rows: int, *, seed: int = 0, version: str = "1") -> dict[str, StoredArray]:
    rng = np.random.default_rng(seed)
    return {
        "series": StoredArray(
            data=rng.standard_normal((n_rows, 2, 5, 3), dtype=np.float32),
            axes=("operator", "realization", "time", "feature"),
            field_names=("a", "b", "c"),
            version=version,
            source="inline",
            config={"eps": 1e-12, "nested": {"k": [1, 2]}},
            description="toy series",
            compress=True,
        ),
        "summary": StoredArray(
            data=rng.standard_normal((n_rows, 3, 2)),
            axes=("operator", "feature", "statistic"),
            field_names=("x", "y", "z"),
            version=version,
            source="derived",
            axis_labels={"statistic": ("mean", "std")},
        ),
        "seed": StoredArray(
            data=rng.integers(0, 2**62, n_rows), axes=("operator",), version="1", source="generated"
        ),
        "digest": StoredArray(
            data=np.array(
                [hashlib.sha256(bytes([i])).hexdigest().encode() for i in range(n_rows)], dtype="S64"
            ),
            axes=("operator",),
            version="1",
            source="inline",
        ),
    }
