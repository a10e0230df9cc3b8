"""Integrity of a dataset.h5 from the data alone: does every row read what its shard table says it is?

``validation.py`` checks that a file has the written layout; this module checks that what it reads is the
data the layout promises, with nothing but the files (no Dagster instance):

- no soft or external links (a link can make any path read another file's data);
- ``/metadata@spec_json`` is a valid spec whose hash, ``n_operators`` and shapes agree with the arrays;
- every data array is a virtual dataset whose mappings send the rows of each shard in ``/metadata/shards``
  to that shard's file, relative to the data folder and never outside it, and to all of that file's rows;
- every shard file is the one recorded: its bytes hash to the sha256 recorded in ``/metadata/shards``
  when dataset.h5 was built (a replaced, truncated or edited file does not), and its attributes name
  the asset, shard and spec hash (HDF5 reads an unreadable source file as fill values, silently);
- each operator's row says what it is: ``operator_index`` equals the row and the stored seeds equal
  those derived from ``(root_seed, index)`` (``core.seeds``), so moved or swapped rows are caught.

Every check returns a list of :class:`~spinlock_assets.storage.layout.Problem`, empty when it holds.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import h5py
import numpy as np
from h5py import h5s

from spinlock_assets.core.parameters import HYPERPARAMETER_FIELDS, PARAMETER_NAMES
from spinlock_assets.core.seeds import operator_seeds
from spinlock_assets.core.spec import DatasetSpec
from spinlock_assets.storage.errors import StorageError
from spinlock_assets.storage.layout import (
    FIXED_ARRAYS,
    METADATA_GROUP,
    PRESENT,
    SHARDS_TABLE,
    Problem,
    decode_attr,
)
from spinlock_assets.storage.shard_file import file_sha256, read_shard_header

__all__ = [
    "ShardRow",
    "check_dataset",
    "check_links",
    "check_mappings",
    "check_operator_identity",
    "check_shard_files",
    "operator_identity_problems",
    "check_spec",
    "shard_rows",
    "structure_problems",
]

_FIXED_NAMES = {row.path: row.name for row in FIXED_ARRAYS}
_SHARD_FIELDS = ("asset", "shard_key", "operator_start", "operator_stop", "sha256", "fingerprint_json")
_SEED_PATHS = {
    "weight_seed": "/parameters/seeds/weight_seed",
    "ic_seed": "/parameters/seeds/ic_seed",
    "probe_seed": "/parameters/seeds/probe_seed",
    "noise_seeds": "/parameters/seeds/noise_seeds",
}


@dataclass(frozen=True)
class ShardRow:
    """One row of ``/metadata/shards``: a shard file present when dataset.h5 was built."""

    asset: str
    shard_key: str
    start: int
    stop: int
    sha256: str
    fingerprint_json: str

    @property
    def relative_path(self) -> str:
        return f"{self.asset}/{self.shard_key}.h5"


def shard_rows(handle: h5py.File) -> list[ShardRow]:
    """The shard table of an open dataset.h5 (empty when missing or malformed: the validator says so)."""
    table = handle.get(SHARDS_TABLE)
    if not isinstance(table, h5py.Dataset) or not set(_SHARD_FIELDS) <= set(table.dtype.names or ()):
        return []
    return [
        ShardRow(
            row["asset"].decode(),
            row["shard_key"].decode(),
            int(row["operator_start"]),
            int(row["operator_stop"]),
            row["sha256"].decode(),
            row["fingerprint_json"].decode(),
        )
        for row in table[()]
    ]


def check_links(handle: h5py.File) -> list[Problem]:
    """Soft and external links anywhere in the file: dataset.h5 holds hard links only, and an external link
    would read another file's data under a trusted path."""
    problems: list[Problem] = []

    def visit(name: str, link: h5py.HardLink | h5py.SoftLink | h5py.ExternalLink) -> None:
        if isinstance(link, h5py.ExternalLink):
            problems.append(Problem(f"/{name}", f"external link to {link.filename}:{link.path}; refused"))
        elif isinstance(link, h5py.SoftLink):
            problems.append(Problem(f"/{name}", f"soft link to {link.path}; refused"))

    handle.visititems_links(visit)
    return problems


def _data_datasets(handle: h5py.File) -> dict[str, h5py.Dataset]:
    """Every dataset outside /metadata, by absolute path (callers check links first)."""
    found: dict[str, h5py.Dataset] = {}

    def collect(name: str, item: object) -> None:  # returning anything but None would stop visititems
        if isinstance(item, h5py.Dataset) and not item.name.startswith(METADATA_GROUP + "/"):
            found[item.name] = item

    handle.visititems(collect)
    return found


def _expected_shapes(spec: DatasetSpec) -> dict[str, tuple[int, ...]]:
    """Per path, the shape the spec gives (fixed arrays and registered families)."""
    from spinlock_assets.core.features.registry import FAMILIES

    n, m, t, c, (h, w) = spec.n_operators, spec.realizations, spec.steps, spec.channels, spec.grid
    shapes: dict[str, tuple[int, ...]] = {
        "/parameters/params": (n, len(PARAMETER_NAMES)),
        "/parameters/hyperparameters": (n, len(HYPERPARAMETER_FIELDS)),
        "/parameters/operator_index": (n,),
        "/parameters/seeds/weight_seed": (n,),
        "/parameters/seeds/ic_seed": (n,),
        "/parameters/seeds/probe_seed": (n,),
        "/parameters/seeds/noise_seeds": (n, m),
        "/inputs/fields": (n, c, h, w),
        "/inputs/ic_digest": (n,),
        "/verification/digests": (n, m),
        "/verification/first_nonfinite_step": (n, m),
        "/trajectories/states": (n, m, t, c, h, w),
    }
    for family in FAMILIES.values():
        group = "/features/base" if family.name == "base" else f"/features/{family.name}"
        for array in family.arrays:
            shapes[f"{group}/{array.name}"] = (n, *array.shape(realizations=m, steps=t, channels=c))
    return shapes


def check_spec(handle: h5py.File) -> tuple[DatasetSpec | None, list[Problem]]:
    """The spec of ``/metadata@spec_json`` and the problems of its agreement with the file: a valid spec,
    the same hash as ``@spec_hash``, the same ``n_operators`` as ``@n_operators`` and as the arrays' rows
    (``n_operators`` is outside the spec hash, so lowering it would silently hide operators), and the
    shapes it gives (a spec claiming more steps than stored would make a replay allocate for them)."""
    attrs = handle[METADATA_GROUP].attrs if METADATA_GROUP in handle else {}
    try:
        spec = DatasetSpec.from_json(decode_attr(attrs["spec_json"]))
    except KeyError:
        return None, [Problem(METADATA_GROUP, "missing @spec_json")]
    except (TypeError, ValueError) as exc:  # SpecError is a ValueError
        return None, [Problem(f"{METADATA_GROUP}@spec_json", f"not a valid dataset spec: {exc}")]
    problems = []
    for key, expected in (("spec_hash", spec.spec_hash), ("n_operators", spec.n_operators)):
        if decode_attr(attrs.get(key)) != expected:
            problems.append(
                Problem(
                    f"{METADATA_GROUP}@{key}",
                    f"is {decode_attr(attrs.get(key))!r}, @spec_json gives {expected!r}",
                )
            )
    expected_shapes = _expected_shapes(spec)
    for name, dataset in _data_datasets(handle).items():
        expected = expected_shapes.get(name)
        if PurePosixPath(name).name == PRESENT:
            expected = (spec.n_operators,)
        if expected is None:
            expected = (spec.n_operators, *dataset.shape[1:])  # an array of a family not registered here
        if dataset.shape != expected:
            problems.append(
                Problem(name, f"shape {dataset.shape} disagrees with @spec_json, which gives {expected}")
            )
    return spec, problems


def check_mappings(handle: h5py.File, *, rows: Sequence[ShardRow] | None = None) -> list[Problem]:
    """Every data array (``present`` masks aside) is a virtual dataset, and each of its mappings sends
    the rows ``[start, stop)`` of a shard listed for the group's asset to all rows of the same-named
    array of exactly that shard's file, by a path relative to the data folder."""
    rows = shard_rows(handle) if rows is None else rows
    problems = []
    for name, dataset in _data_datasets(handle).items():
        if PurePosixPath(name).name == PRESENT:
            continue
        if not dataset.is_virtual:
            problems.append(
                Problem(name, "is stored in dataset.h5 itself, not mapped to shard files; refused")
            )
            continue
        asset = decode_attr(dataset.parent.attrs.get("asset"))
        problems += _check_dataset_mappings(dataset, [row for row in rows if row.asset == asset])
    return problems


def _check_dataset_mappings(dataset: h5py.Dataset, rows: Sequence[ShardRow]) -> list[Problem]:
    expected_name = _FIXED_NAMES.get(dataset.name, PurePosixPath(dataset.name).name)
    by_range = {(row.start, row.stop): row for row in rows}
    mapped: list[tuple[int, int]] = []
    problems = []
    for source in dataset.virtual_sources():
        target = PurePosixPath(source.file_name)
        if target.is_absolute() or ".." in target.parts or source.file_name in ("", "."):
            problems.append(
                Problem(dataset.name, f"maps rows to {source.file_name!r}, outside the data folder; refused")
            )
            continue
        first, last = source.vspace.get_select_bounds()
        start, stop = int(first[0]), int(last[0]) + 1
        row = by_range.get((start, stop))
        where = f"rows [{start}, {stop})"
        if row is None:
            problems.append(
                Problem(
                    dataset.name,
                    f"{where} map to {source.file_name}, but {SHARDS_TABLE} lists no shard for them",
                )
            )
            continue
        mapped.append((start, stop))
        if source.file_name != row.relative_path or source.dset_name.lstrip("/") != expected_name:
            problems.append(
                Problem(
                    dataset.name,
                    f"{where} map to {source.file_name}:/{source.dset_name.lstrip('/')}, but {SHARDS_TABLE} "
                    f"says they are {row.relative_path}:/{expected_name}",
                )
            )
        # build_consolidated_dataset maps whole source files (an ALL selection), onto whole rows.
        whole_rows = (stop - start) * int(np.prod(dataset.shape[1:], dtype=np.int64))
        if (
            source.src_space.get_select_type() != h5s.SEL_ALL
            or source.vspace.get_select_npoints() != whole_rows
        ):
            problems.append(
                Problem(dataset.name, f"{where} do not map to all rows of {source.file_name}, in order")
            )
    unmapped = sorted(set(by_range) - set(mapped))
    if unmapped or len(mapped) != len(set(mapped)):
        problems.append(
            Problem(
                dataset.name,
                f"maps shards {unmapped or 'more than once'} listed in {SHARDS_TABLE} wrongly: their rows "
                "would read as fill values or twice",
            )
        )
    return problems


def check_shard_files(
    folder: Path, rows: Iterable[ShardRow], *, spec_hash: str | None = None
) -> list[Problem]:
    """Each listed shard file exists, names its asset, shard and spec hash, and hashes to the sha256
    recorded when dataset.h5 was built (a replaced, truncated or edited file does not)."""
    problems = []
    for row in rows:
        path = folder / row.relative_path
        if not path.is_file():
            problems.append(Problem(str(path), f"shard file listed in {SHARDS_TABLE} is missing"))
            continue
        actual = file_sha256(path)
        if actual != row.sha256:
            problems.append(
                Problem(
                    str(path),
                    f"sha256 is {actual}, but dataset.h5 recorded {row.sha256}: the file changed since "
                    "dataset.h5 was built (rematerialize it; rebuild dataset.h5 if the change is legitimate)",
                )
            )
            continue
        try:
            attrs = read_shard_header(path, check=False).attrs
        except StorageError as exc:
            problems.append(Problem(str(path), str(exc)))
            continue
        found = (attrs.get("asset"), attrs.get("shard_key"), attrs.get("spec_hash"))
        wanted = (row.asset, row.shard_key, spec_hash if spec_hash is not None else attrs.get("spec_hash"))
        if found != wanted:
            problems.append(
                Problem(
                    str(path), f"file attributes say (asset, shard, spec hash) {found}, expected {wanted}"
                )
            )
    return problems


def check_operator_identity(
    handle: h5py.File, spec: DatasetSpec, indices: np.ndarray
) -> dict[int, list[Problem]]:
    """Problems by operator: rows ``indices`` of dataset.h5 hold the operators they are for
    (:func:`operator_identity_problems`). Rows whose parameters are absent (``present`` 0) are skipped."""
    indices = np.unique(np.asarray(indices, dtype=np.int64))
    if "/parameters/present" not in handle or "/parameters/operator_index" not in handle or not indices.size:
        return {}
    indices = indices[_read_rows(handle["/parameters/present"], indices) == 1]
    if not indices.size:
        return {}
    seeds = {name: _read_rows(handle[path], indices) for name, path in _SEED_PATHS.items() if path in handle}
    return operator_identity_problems(
        spec, indices, _read_rows(handle["/parameters/operator_index"], indices), seeds
    )


def operator_identity_problems(
    spec: DatasetSpec,
    indices: Sequence[int] | np.ndarray,
    operator_index: np.ndarray | None,
    seeds: Mapping[str, np.ndarray],
) -> dict[int, list[Problem]]:
    """Problems by operator: the stored rows of ``indices`` (``operator_index`` and the ``seeds`` arrays, one
    row per index, wherever they were read from) say which operator they are: ``operator_index`` equals
    the index and each stored seed equals the one derived from ``(root_seed, index)`` (``core.seeds``),
    so moved or swapped rows are caught. A missing ``operator_index`` is a problem of every index."""
    problems: dict[int, list[Problem]] = {}
    for position, index in enumerate(np.asarray(indices, dtype=np.int64).tolist()):
        if operator_index is None or int(operator_index[position]) != index:
            found = "missing" if operator_index is None else f"is {int(operator_index[position])}"
            where = f"/parameters/operator_index[{index}]"
            problems[index] = [Problem(where, f"{found}: row {index} holds another operator")]
            continue
        derived = operator_seeds(spec.root_seed, index, spec.realizations)
        wrong = [
            name
            for name, values in seeds.items()
            if np.atleast_1d(values[position]).tolist() != list(np.atleast_1d(getattr(derived, name)))
        ]
        if wrong:
            problems[index] = [
                Problem(
                    f"/parameters/seeds[{index}]",
                    f"{','.join(wrong)} differ from those derived from (root_seed {spec.root_seed}, {index})",
                )
            ]
    return problems


def _read_rows(dataset: h5py.Dataset, indices: np.ndarray) -> np.ndarray:
    """Rows ``indices`` (sorted, distinct) of a dataset: a point selection for a few, the whole array (one
    read, then numpy) for many, where HDF5's point selection is the slower of the two."""
    if indices.size * 8 < dataset.shape[0]:
        return dataset[indices]
    return dataset[()][indices]


def structure_problems(handle: h5py.File) -> tuple[DatasetSpec | None, list[Problem]]:
    """The spec and the file-wide problems: links (then nothing else is looked at: following one is what
    must not happen), the spec against the arrays, the mappings against the shard table."""
    problems = check_links(handle)
    if problems:
        return None, problems
    spec, problems = check_spec(handle)
    if spec is not None:
        problems += check_mappings(handle)
    return spec, problems


def check_dataset(
    path: str | Path, *, operators: np.ndarray | None = None, all_files: bool = True
) -> list[Problem]:
    """Every integrity check of this module on ``dataset.h5``: for the ``operators`` given (all when None),
    and the sha256 of every shard file (``all_files``) or only of those holding those operators."""
    path = Path(path)
    try:
        with h5py.File(path, "r") as handle:
            spec, problems = structure_problems(handle)
            if spec is None or problems:  # rows and files of a file that lies about itself mean nothing
                return problems
            chosen = np.arange(spec.n_operators) if operators is None else np.asarray(operators)
            for found in check_operator_identity(handle, spec, chosen).values():
                problems += found
            rows = shard_rows(handle)
    except (OSError, KeyError, RuntimeError) as exc:
        return [Problem(str(path), f"cannot read as HDF5: {exc}")]
    touched = (
        rows if all_files else [row for row in rows if ((chosen >= row.start) & (chosen < row.stop)).any()]
    )
    return problems + check_shard_files(path.parent, touched, spec_hash=spec.spec_hash)
