"""Read a dataset for replay: ``open_dataset(path)`` on ``dataset.h5`` or on the data folder holding it.

Everything a replay needs per operator comes from the file: the spec (``/metadata@spec_json``), the
parameter point, the seeds, the initial condition, the stored digests and base series, and the
execution fingerprint of the shard it was generated in (``/metadata/shards``).
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np

from spinlock_assets.core.record import OperatorRecord
from spinlock_assets.core.spec import DatasetSpec
from spinlock_assets.storage.errors import ShardMissingError, StorageError
from spinlock_assets.storage.operator_arrays import stored_records

__all__ = ["DATASET_FILE", "DatasetReader", "open_dataset"]

DATASET_FILE = "dataset.h5"
_PARAMETER_PATHS = {
    "params": "/parameters/params",
    "operator_index": "/parameters/operator_index",
    "weight_seed": "/parameters/seeds/weight_seed",
    "ic_seed": "/parameters/seeds/ic_seed",
    "probe_seed": "/parameters/seeds/probe_seed",
    "noise_seeds": "/parameters/seeds/noise_seeds",
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
        self._shards = self.file["/metadata/shards"][...]

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
        row = self._shard_row("base_features", index)
        return None if row is None else json.loads(row["fingerprint_json"])

    def _shard_row(self, asset: str, index: int):
        for row in self._shards:
            if row["asset"] == asset.encode() and row["operator_start"] <= index < row["operator_stop"]:
                return row
        return None

    def _require_shard_file(self, asset: str, index: int) -> None:
        """A shard listed when dataset.h5 was built but deleted since would read as fill values: refuse."""
        row = self._shard_row(asset, index)
        path = self.path.parent / asset / f"{row['shard_key'].decode()}.h5" if row is not None else None
        if path is None or not path.is_file():
            raise ShardMissingError(
                f"operator {index}: the {asset} shard file is missing ({path or 'never built'})"
            )

    def operator(self, index: int) -> OperatorRecord:
        """Operator ``index``: rebuildable and replayable, with its stored digests when generated."""
        if not 0 <= index < self.n_operators:
            raise IndexError(f"operator index {index} outside 0..{self.n_operators - 1}")
        for asset in ("operator_parameters", "initial_conditions"):
            self._require_shard_file(asset, index)
        row = slice(index, index + 1)
        parameters = {name: self.file[path][row] for name, path in _PARAMETER_PATHS.items()}
        base = None
        if self._shard_row("base_features", index) is not None:
            self._require_shard_file("base_features", index)
            base = {
                "digests": self.file["/verification/digests"][row],
                "series": self.file["/features/base/series"][row],
            }
        fields = np.asarray(self.file["/inputs/fields"][row])
        return stored_records(self.spec, parameters, fields, base, self.fingerprint(index))[0]


def open_dataset(path: str | Path) -> DatasetReader:
    """Open ``dataset.h5`` (or the data folder that holds it) for reading operators."""
    return DatasetReader(path)
