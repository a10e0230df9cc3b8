"""Read a dataset for replay: ``open_dataset(path)`` on ``dataset.h5`` or on the data folder holding it.

Everything a replay needs per operator comes from the file: the spec (``/metadata@spec_json``), the
parameter point, the seeds, the initial condition, the stored digests and base series, and the
execution fingerprint of the shard it was generated in (``/metadata/shards``). A compact dataset has no
``/inputs/fields``: the initial condition is regenerated from its ``ic_seed`` and checked against
``/inputs/ic_digest`` (``operator_arrays.initial_condition_fields``).

Nothing is read from a file that lies about itself (``storage.integrity``): links, a spec that disagrees
with the arrays and mappings that disagree with ``/metadata/shards`` refuse the file (or, with
``strict=False``, are listed in ``structure_problems`` and refuse every operator), and an operator whose
row holds another operator's index or seeds is refused. :meth:`DatasetReader.check_operators` adds the
shard files' sha256 against those recorded when dataset.h5 was built.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import h5py
import numpy as np

from spinlock_assets.core.record import OperatorRecord
from spinlock_assets.core.shards import ShardRange

if TYPE_CHECKING:
    from spinlock_assets.core.verification import StoredFamily
from spinlock_assets.storage.errors import ShardCorruptError, ShardMissingError, StorageError
from spinlock_assets.storage.integrity import (
    check_operator_identity,
    check_shard_files,
    shard_rows,
    structure_problems,
)
from spinlock_assets.storage.layout import (
    BASE_FEATURES_ASSET,
    DATASET_FILE,
    GENERATION_ASSETS,
    PRESENT,
    Problem,
)
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
    """An open ``dataset.h5``. Use as a context manager, or call :meth:`close`.

    ``strict`` (the default) refuses a file with structure problems (``storage.integrity``) when opened;
    without it they are kept in ``structure_problems`` for a caller that reports them (``info``, ``verify``).
    Links are always refused: following one would read another file under a trusted path.
    """

    def __init__(self, path: str | Path, *, strict: bool = True) -> None:
        path = Path(path)
        self.path = path / DATASET_FILE if path.is_dir() else path
        if not self.path.is_file():
            raise ShardMissingError(f"no dataset file at {self.path}; materialize the 'dataset' asset first")
        self.file = h5py.File(self.path, "r")
        try:
            self._open(strict)
        except BaseException:
            self.file.close()
            raise

    def _open(self, strict: bool) -> None:
        if "/metadata" not in self.file or "spec_json" not in self.file["/metadata"].attrs:
            raise StorageError(f"{self.path} is not a spinlock dataset (no /metadata@spec_json)")
        spec, problems = structure_problems(self.file)
        if spec is None or (problems and strict):
            more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
            raise ShardCorruptError(f"{self.path}: {problems[0]}{more}; refused: rebuild dataset.h5")
        self.spec = spec
        self.structure_problems: list[Problem] = problems
        self._shards = self.file["/metadata/shards"][...]
        self._rows = shard_rows(self.file)

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
        wrong = self.structure_problems or check_operator_identity(self.file, self.spec, np.array([index]))
        if wrong:  # a row that holds another operator would replay, exactly, the wrong one
            first = wrong[0] if isinstance(wrong, list) else wrong[index][0]
            raise ShardCorruptError(f"operator {index}: {self.path} does not hold it as recorded: {first}")
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

    def stored_features(self, index: int) -> dict[str, StoredFamily]:
        """Operator ``index``'s stored feature values by family (families whose shard holds it), with their
        versions: what :func:`~spinlock_assets.core.verification.compare_features` recomputes."""
        from spinlock_assets.core.verification import StoredFamily

        versions = json.loads(self.file["/metadata"].attrs.get("family_versions", "{}"))
        features: dict[str, StoredFamily] = {}
        for family, group in self.file.get("/features", {}).items():
            if not group[PRESENT][index]:
                continue
            arrays = {name: data[index] for name, data in group.items() if name != PRESENT}
            if family == "base":  # the series is compared by classify, from the record
                arrays.pop("series", None)
            features[family] = StoredFamily(str(versions.get(family, "")), arrays)
        return features

    def check_operators(
        self, indices: np.ndarray, *, all_files: bool = False
    ) -> dict[int | None, list[Problem]]:
        """Integrity problems of the operators ``indices``, by operator (``None``: problems of the whole file,
        i.e. ``structure_problems`` and, with ``all_files``, shard files holding none of ``indices``).

        Per operator: its row's index and seeds (``integrity.check_operator_identity``) and the sha256 of
        every shard file holding it, whatever the asset, against ``/metadata/shards``. Raises
        ``ShardMissingError`` first when a shard file a replay reads is gone (see :meth:`require_shards`).
        """
        indices = np.asarray(indices, dtype=np.int64)
        self.require_shards(indices)
        problems: dict[int | None, list[Problem]] = {}
        if self.structure_problems:
            problems[None] = list(self.structure_problems)
            return problems
        problems.update(check_operator_identity(self.file, self.spec, indices))
        for row in self._rows:
            held = indices[(indices >= row.start) & (indices < row.stop)]
            if not (held.size or all_files):
                continue
            found = check_shard_files(self.path.parent, [row], spec_hash=self.spec.spec_hash)
            for index in (held.tolist() or [None]) if found else []:
                problems.setdefault(index, []).extend(found)
        return problems

    def require_shards(self, indices: np.ndarray) -> None:
        """Raise ``ShardMissingError`` unless every shard a replay of ``indices`` reads is listed in
        dataset.h5 and still on disk: HDF5 reads the rows of a vanished shard file as fill values (NaN
        parameters, zero seeds), never as an error, and a shard generated after dataset.h5 was built is
        not mapped."""

        size = self.spec.shard_size
        for asset in GENERATION_ASSETS:  # what a replay reads: a missing file stops it before any work
            readable = np.zeros(self.n_operators, dtype=bool)
            for row in self._rows:
                if row.asset == asset and (self.path.parent / row.relative_path).is_file():
                    readable[row.start : row.stop] = True
            missing = indices[~readable[indices]]
            if missing.size:
                start = int(missing[0]) - int(missing[0]) % size
                more = f" (and {missing.size - 1} more of the chosen operators)" if missing.size > 1 else ""
                raise ShardMissingError(
                    f"operator {missing[0]}{more}: shard {asset}/{ShardRange(start, start + size).key}.h5 "
                    f"is missing under {self.path.parent}; generate it and rebuild dataset.h5"
                )


def open_dataset(path: str | Path, *, strict: bool = True) -> DatasetReader:
    """Open ``dataset.h5`` (or the data folder holding it) for reading operators (see ``DatasetReader``)."""
    return DatasetReader(path, strict=strict)
