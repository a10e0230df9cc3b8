"""Read a dataset for replay: ``open_dataset(path)`` on ``dataset.h5`` or on the data folder holding it.

Everything a replay needs per operator comes from the file: the spec (``/metadata@spec_json``), the
parameter point, the seeds, the initial condition, the stored digests and base series, and the
execution fingerprint of the shard it was generated in (``/metadata/shards``). A compact dataset has no
``/inputs/fields``: the initial condition is regenerated from its ``ic_seed`` and checked against
``/inputs/ic_digest`` (``operator_arrays.initial_condition_fields``).
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py

from spinlock_assets.core.record import OperatorRecord
from spinlock_assets.core.spec import DatasetSpec
from spinlock_assets.storage.errors import ShardCorruptError, ShardMissingError, StorageError
from spinlock_assets.storage.layout import BASE_FEATURES_ASSET, DATASET_FILE, GENERATION_ASSETS
from spinlock_assets.storage.operator_arrays import stored_records
from spinlock_assets.storage.shard_file import read_shard_header

__all__ = ["DatasetReader", "open_dataset"]

_PARAMETER_PATHS = {
    "params": "/parameters/params",
    "operator_index": "/parameters/operator_index",
    "weight_seed": "/parameters/seeds/weight_seed",
    "ic_seed": "/parameters/seeds/ic_seed",
    "probe_seed": "/parameters/seeds/probe_seed",
    "noise_seeds": "/parameters/seeds/noise_seeds",
}
_IC_PATHS = {"fields": "/inputs/fields", "ic_digest": "/inputs/ic_digest"}  # no fields in the compact form


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
        row = self._shard_row(BASE_FEATURES_ASSET, index)
        return None if row is None else json.loads(row["fingerprint_json"])

    def _shard_row(self, asset: str, index: int):
        for row in self._shards:
            if row["asset"] == asset.encode() and row["operator_start"] <= index < row["operator_stop"]:
                return row
        return None

    def _shard_path(self, asset: str, index: int) -> Path | None:
        row = self._shard_row(asset, index)
        return self.path.parent / asset / f"{row['shard_key'].decode()}.h5" if row is not None else None

    def _require_shard_file(self, asset: str, index: int) -> None:
        """A shard listed when dataset.h5 was built but deleted since would read as fill values, and one
        replaced by another shard's file would read as that shard's rows: refuse both."""
        path = self._shard_path(asset, index)
        if path is None or not path.is_file():
            raise ShardMissingError(
                f"operator {index}: the {asset} shard file is missing ({path or 'never built'})"
            )
        attrs = read_shard_header(path, check=False).attrs  # ShardCorruptError naming it if unreadable
        if (attrs.get("asset"), attrs.get("shard_key")) != (asset, path.stem):
            found = f"asset {attrs.get('asset')!r}, shard {attrs.get('shard_key')!r}"
            raise ShardCorruptError(
                f"{path}: file attributes say {found}; it is not the shard file dataset.h5 was built over "
                "(replaced or renamed by hand?): rematerialize it"
            )

    def operator(self, index: int) -> OperatorRecord:
        """Operator ``index``: rebuildable and replayable, with its stored digests when generated."""
        if not 0 <= index < self.n_operators:
            raise IndexError(f"operator index {index} outside 0..{self.n_operators - 1}")
        generated = self._shard_row(BASE_FEATURES_ASSET, index) is not None
        assets = GENERATION_ASSETS if generated else GENERATION_ASSETS[:2]
        for asset in assets:
            self._require_shard_file(asset, index)
        row = slice(index, index + 1)
        try:
            parameters = {name: self.file[path][row] for name, path in _PARAMETER_PATHS.items()}
            base = None
            if generated:
                base = {
                    "digests": self.file["/verification/digests"][row],
                    "series": self.file["/features/base/series"][row],
                }
            initial_conditions = {
                name: self.file[path][row] for name, path in _IC_PATHS.items() if path in self.file
            }
        except OSError as exc:  # HDF5 names no source file when a chunk of one fails its checksum
            files = ", ".join(str(self._shard_path(asset, index)) for asset in assets)
            raise ShardCorruptError(
                f"operator {index}: cannot be read through {self.path} ({exc}); one of its shard files is "
                f"damaged or truncated ({files}): find it with validate_shard_file and rematerialize it"
            ) from None
        return stored_records(self.spec, parameters, initial_conditions, base, self.fingerprint(index))[0]


def open_dataset(path: str | Path) -> DatasetReader:
    """Open ``dataset.h5`` (or the data folder that holds it) for reading operators."""
    return DatasetReader(path)
