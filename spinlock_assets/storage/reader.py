"""Read a dataset for replay: ``open_dataset(path)`` on ``dataset.h5`` or on the data folder holding it.

Everything a replay needs per operator comes from the file: the spec (``/metadata@spec_json``), the
parameter point, the seeds, the initial condition, the stored digests and base series, and the
execution fingerprint of the shard it was generated in (``/metadata/shards``). A compact dataset has no
``/inputs/fields``: the initial condition is regenerated from its ``ic_seed`` and checked against
``/inputs/ic_digest`` (``operator_arrays.initial_condition_fields``).

Finding an operator costs the same at 10 shards or 10,000: its shard is ``index // shard_size`` (shards
are fixed size), looked up in a dict built once from ``/metadata/shards``, and its rows are read from
the shard files the table names: a read through a virtual dataset intersects the selection with
every mapping (~8 ms per array at 3,000 shards), a read from the shard file does not.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np

from spinlock_assets.core.record import OperatorRecord
from spinlock_assets.core.spec import DatasetSpec
from spinlock_assets.storage.errors import ShardCorruptError, ShardMissingError, StorageError
from spinlock_assets.storage.layout import (
    BASE_FEATURES_ASSET,
    DATASET_FILE,
    GENERATION_ASSETS,
    INITIAL_CONDITIONS_ASSET,
    PARAMETERS_ASSET,
    SHARDS_TABLE,
    decode_attr,
)
from spinlock_assets.storage.operator_arrays import stored_records

__all__ = ["DatasetReader", "open_dataset"]

# The arrays a replay needs, by asset (shard-file names; the same arrays dataset.h5 maps under /parameters,
# /inputs and /features/base, /verification). A compact initial_conditions shard has no fields.
_REPLAY_ARRAYS = {
    PARAMETERS_ASSET: ("params", "operator_index", "weight_seed", "ic_seed", "probe_seed", "noise_seeds"),
    INITIAL_CONDITIONS_ASSET: ("fields", "ic_digest"),
    BASE_FEATURES_ASSET: ("digests", "series"),
}


class DatasetReader:
    """An open ``dataset.h5``. Use as a context manager, or call :meth:`close`."""

    def __init__(self, path: str | Path) -> None:
        path = Path(path)
        self.path = path / DATASET_FILE if path.is_dir() else path
        if not self.path.is_file():
            raise ShardMissingError(f"no dataset file at {self.path}; materialize the 'dataset' asset first")
        self.file = h5py.File(self.path, "r")
        try:
            self.spec = DatasetSpec.from_json(self.file["/metadata"].attrs["spec_json"])
        except KeyError:
            self.file.close()
            raise StorageError(f"{self.path} is not a spinlock dataset (no /metadata@spec_json)") from None
        # (asset, first operator of the shard) -> its table row: one dict lookup per asset and operator
        self._shards = {
            (row["asset"].decode(), int(row["operator_start"])): row for row in self.file[SHARDS_TABLE][()]
        }

    def __enter__(self) -> DatasetReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.file.close()

    @property
    def n_operators(self) -> int:
        return self.spec.n_operators

    @property
    def families(self) -> list[str]:
        return sorted(self.file["/features"].keys()) if "/features" in self.file else []

    def present(self, group: str, index: int) -> bool:
        return bool(self.file[f"{group}/present"][index])

    def fingerprint(self, index: int) -> dict | None:
        """The execution fingerprint of the base_features shard holding operator ``index``."""
        row = self._shard_row(BASE_FEATURES_ASSET, index)
        return None if row is None else json.loads(row["fingerprint_json"])

    def _shard_row(self, asset: str, index: int):
        start = index - index % self.spec.shard_size
        return self._shards.get((asset, start))

    def _shard_path(self, asset: str, index: int) -> Path | None:
        row = self._shard_row(asset, index)
        return self.path.parent / asset / f"{row['shard_key'].decode()}.h5" if row is not None else None

    def _read_rows(self, asset: str, index: int) -> dict[str, np.ndarray]:
        """Operator ``index``'s row of the replay arrays of its ``asset`` shard, read from the shard file.

        A shard listed when dataset.h5 was built but deleted since, or replaced by another shard's file
        (whose rows would be another shard's operators), is refused."""
        path = self._shard_path(asset, index)
        if path is None or not path.is_file():
            raise ShardMissingError(
                f"operator {index}: the {asset} shard file is missing ({path or 'never built'})"
            )
        try:
            with h5py.File(path, "r") as handle:
                attrs = {key: decode_attr(handle.attrs.get(key)) for key in ("asset", "shard_key")}
                row = index - int(handle.attrs.get("operator_start", -1))
                arrays = {
                    name: handle[name][row : row + 1] for name in _REPLAY_ARRAYS[asset] if name in handle
                }
        except (
            OSError,
            KeyError,
            RuntimeError,
        ) as exc:  # HDF5 checksum failures, truncation, damaged headers
            raise ShardCorruptError(
                f"operator {index}: {path} cannot be read ({exc}); the shard file is damaged or truncated: "
                "find it with validate_shard_file and rematerialize it"
            ) from None
        if (attrs["asset"], attrs["shard_key"]) != (asset, path.stem):
            raise ShardCorruptError(
                f"{path}: file attributes say asset {attrs['asset']!r}, shard {attrs['shard_key']!r}; it "
                "is not the shard file dataset.h5 was built over (replaced or renamed by hand?): "
                "rematerialize it"
            )
        return arrays

    def operator(self, index: int) -> OperatorRecord:
        """Operator ``index``: rebuildable and replayable, with its stored digests when generated."""
        if not 0 <= index < self.n_operators:
            raise IndexError(f"operator index {index} outside 0..{self.n_operators - 1}")
        generated = self._shard_row(BASE_FEATURES_ASSET, index) is not None
        parameters, initial_conditions, *base = (
            self._read_rows(asset, index)
            for asset in (GENERATION_ASSETS if generated else GENERATION_ASSETS[:2])
        )
        return stored_records(
            self.spec, parameters, initial_conditions, base[0] if base else None, self.fingerprint(index)
        )[0]


def open_dataset(path: str | Path) -> DatasetReader:
    """Open ``dataset.h5`` (or the data folder that holds it) for reading operators."""
    return DatasetReader(path)
