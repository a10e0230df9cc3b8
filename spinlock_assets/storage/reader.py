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

Finding an operator costs the same at 10 shards or 10,000: its shard is ``index // shard_size`` (shards
are fixed size), looked up in a dict built once from ``/metadata/shards``, and its rows are read from
the shard files the table names (the files dataset.h5's mappings were checked to point at when it was
opened): a read through a virtual dataset intersects the selection with every mapping (~8 ms per array
at 3,000 shards), a read from the shard file does not.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
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
    ShardRow,
    check_operator_identity,
    check_shard_files,
    operator_identity_problems,
    shard_rows,
    structure_problems,
)
from spinlock_assets.storage.layout import (
    BASE_FEATURES_ASSET,
    DATASET_FILE,
    GENERATION_ASSETS,
    INITIAL_CONDITIONS_ASSET,
    PARAMETERS_ASSET,
    PRESENT,
    Problem,
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
_SEEDS = ("weight_seed", "ic_seed", "probe_seed", "noise_seeds")
_IDENTITY_ATTRS = ("asset", "shard_key", "spec_hash")


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
        self._rows = shard_rows(self.file)
        # (asset, first operator of the shard) -> its table row: one dict lookup per asset and operator
        self._shards = {(row.asset, row.start): row for row in self._rows}
        self._assets = sorted({row.asset for row in self._rows})

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
        return None if row is None else json.loads(row.fingerprint_json)

    def _shard_row(self, asset: str, index: int) -> ShardRow | None:
        return self._shards.get((asset, index - index % self.spec.shard_size))

    def _read_rows(
        self, asset: str, index: int, names: Iterable[str], optional: Iterable[str] = ()
    ) -> dict[str, np.ndarray]:
        """Operator ``index``'s row of the arrays ``names`` of its ``asset`` shard (those of ``optional`` when
        present), read from the shard file.

        A shard listed when dataset.h5 was built but deleted since would read as fill values through
        dataset.h5, and one replaced by another shard's (or another spec's) file would read as that file's
        rows: both are refused."""
        row = self._shard_row(asset, index)
        path = self.path.parent / row.relative_path if row is not None else None
        if path is None or not path.is_file():
            raise ShardMissingError(
                f"operator {index}: the {asset} shard file is missing ({path or 'never built'})"
            )
        try:
            with h5py.File(path, "r") as handle:
                found = tuple(decode_attr(handle.attrs.get(key)) for key in _IDENTITY_ATTRS)
                position = index - row.start
                wanted = [name for name in names if name not in optional or name in handle]
                arrays = {name: handle[name][position : position + 1] for name in wanted}
        except (OSError, KeyError, RuntimeError) as exc:  # failed checksums, truncation, damaged headers
            raise ShardCorruptError(
                f"operator {index}: {path} cannot be read ({exc}); the shard file is damaged or truncated: "
                "find it with validate_shard_file and rematerialize it"
            ) from None
        if found != (asset, row.shard_key, self.spec.spec_hash):
            raise ShardCorruptError(
                f"{path}: file attributes say (asset, shard, spec hash) {found}; it is not the shard file "
                "dataset.h5 was built over (replaced or renamed by hand?): rematerialize it"
            )
        return arrays

    def operator(self, index: int) -> OperatorRecord:
        """Operator ``index``: rebuildable and replayable, with its stored digests when generated."""
        if not 0 <= index < self.n_operators:
            raise IndexError(f"operator index {index} outside 0..{self.n_operators - 1}")
        if self.structure_problems:  # mappings that lie make every row of the file suspect
            first = self.structure_problems[0]
            raise ShardCorruptError(f"operator {index}: {self.path} does not hold it as recorded: {first}")
        generated = self._shard_row(BASE_FEATURES_ASSET, index) is not None
        parameters, initial_conditions, *base = (
            self._read_rows(asset, index, _REPLAY_ARRAYS[asset], optional=("fields",))
            for asset in (GENERATION_ASSETS if generated else GENERATION_ASSETS[:2])
        )
        seeds = {name: parameters[name] for name in _SEEDS if name in parameters}
        wrong = operator_identity_problems(self.spec, [index], parameters.get("operator_index"), seeds)
        if wrong:  # a row that holds another operator would replay, exactly, the wrong one
            raise ShardCorruptError(
                f"operator {index}: {self.path} does not hold it as recorded: {wrong[index][0]}"
            )
        return stored_records(
            self.spec, parameters, initial_conditions, base[0] if base else None, self.fingerprint(index)
        )[0]

    def stored_features(self, index: int) -> dict[str, StoredFamily]:
        """Operator ``index``'s stored feature values by family (families whose shard holds it), with their
        versions: what :func:`~spinlock_assets.core.verification.compare_features` recomputes. Read from
        the shard files, like :meth:`operator`."""
        from spinlock_assets.core.verification import StoredFamily

        versions = json.loads(self.file["/metadata"].attrs.get("family_versions", "{}"))
        features: dict[str, StoredFamily] = {}
        for family, group in self.file.get("/features", {}).items():
            asset = decode_attr(group.attrs.get("asset"))
            if self._shard_row(asset, index) is None:  # present = 0
                continue
            skip = {PRESENT, "series"} if family == "base" else {PRESENT}  # classify compares the series
            names = [name for name in group if name not in skip]
            arrays = self._read_rows(asset, index, names)
            features[family] = StoredFamily(
                str(versions.get(family, "")), {name: values[0] for name, values in arrays.items()}
            )
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
        held: dict[ShardRow, list[int]] = {}
        for index in np.unique(indices).tolist():
            for asset in self._assets:
                row = self._shard_row(asset, index)
                if row is not None:
                    held.setdefault(row, []).append(index)
        for row in self._rows if all_files else held:
            found = check_shard_files(self.path.parent, [row], spec_hash=self.spec.spec_hash)
            for index in held.get(row, [None]) if found else []:
                problems.setdefault(index, []).extend(found)
        return problems

    def require_shards(self, indices: np.ndarray) -> None:
        """Raise ``ShardMissingError`` unless every shard a replay of ``indices`` reads is listed in
        dataset.h5 and still on disk: HDF5 reads the rows of a vanished shard file as fill values (NaN
        parameters, zero seeds), never as an error, and a shard generated after dataset.h5 was built is
        not mapped."""
        size = self.spec.shard_size
        missing: dict[str, list[int]] = {}
        for index in np.unique(np.asarray(indices, dtype=np.int64)).tolist():
            for asset in GENERATION_ASSETS:  # what a replay reads: a missing file stops it before any work
                row = self._shard_row(asset, index)
                if row is None or not (self.path.parent / row.relative_path).is_file():
                    missing.setdefault(asset, []).append(index)
        for asset in GENERATION_ASSETS:
            if asset in missing:
                first, *rest = missing[asset]
                start = first - first % size
                more = f" (and {len(rest)} more of the chosen operators)" if rest else ""
                raise ShardMissingError(
                    f"operator {first}{more}: shard {asset}/{ShardRange(start, start + size).key}.h5 "
                    f"is missing under {self.path.parent}; generate it and rebuild dataset.h5"
                )


def open_dataset(path: str | Path, *, strict: bool = True) -> DatasetReader:
    """Open ``dataset.h5`` (or the data folder holding it) for reading operators (see ``DatasetReader``)."""
    return DatasetReader(path, strict=strict)
