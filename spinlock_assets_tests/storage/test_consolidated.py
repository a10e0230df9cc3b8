"""dataset.h5: a plain-h5py view over the shard files that shows missing shards and never mixes specs.

Shards of the tiny dataset (8 operators, shard size 4): ops-000000-000003 and ops-000004-000007.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import h5py
import numpy as np
import pytest

from spinlock_assets.core.shards import parse_shard_key
from spinlock_assets.storage import (
    FIXED_SOURCES,
    ConsolidatedSource,
    InconsistentShardsError,
    OutputExistsError,
    ShardChangedError,
    ShardCorruptError,
    ShardStore,
    SpecMismatchError,
    build_consolidated_dataset,
    family_source,
    file_sha256,
    update_consolidated_dataset,
    validate_dataset_file,
)
from spinlock_assets.storage.integrity import check_shard_files, shard_rows
from spinlock_assets.storage.testing import write_tiny_dataset
from spinlock_assets_tests.storage.helpers import shard_arrays, shard_attrs

KEYS = ["ops-000000-000003", "ops-000004-000007"]


def _root_attrs(dataset: Path) -> dict[str, object]:
    with h5py.File(dataset, "r") as handle:
        return {key: handle["/metadata"].attrs[key] for key in ("spec_hash", "spec_json")}


def _rebuild(
    root: Path, sources: Sequence[ConsolidatedSource] = FIXED_SOURCES, *, overwrite: bool = True
) -> Path:
    """Rebuild dataset.h5 over the shard files as they are now: the tests here change shards on purpose,
    so every present file is vouched for as if it had just been materialized."""
    dataset = root / "dataset.h5"
    return build_consolidated_dataset(
        ShardStore(root),
        dataset,
        n_operators=8,
        shard_keys=KEYS,
        sources=sources,
        root_attrs=_root_attrs(dataset),
        overwrite=overwrite,
        recorded_sha256=_vouching(_vouched(root, KEYS, sources)),
    )


def _vouching(vouched: dict[tuple[str, str], str]):
    """``recorded_sha256`` for the consolidation functions: these records, as an instance would give them."""
    return lambda asset, keys: {key: vouched[asset, key] for key in keys if (asset, key) in vouched}


def _write_toy_family(root: Path, versions: dict[str, str]) -> None:
    """Shards of asset ``toy_features`` (arrays series, summary...) for the tiny dataset's spec."""
    spec = {key: str(value) for key, value in _root_attrs(root / "dataset.h5").items()}
    for key, version in versions.items():
        start, stop = parse_shard_key(key).bounds
        attrs = shard_attrs(start, stop, asset="toy_features", **spec)
        ShardStore(root).write("toy_features", key, shard_arrays(4, version=version), attrs)


def test_plain_h5py_reads_the_same_values_as_the_shards(tmp_path: Path) -> None:
    dataset = write_tiny_dataset(tmp_path)
    store = ShardStore(tmp_path)
    with h5py.File(dataset, "r") as handle:
        params = handle["/parameters/params"][...]
        fields_5 = handle["/inputs/fields"][5]
        feature_names = json.loads(handle["/features/base/series"].attrs["feature_names"])
        spec = json.loads(handle["/metadata"].attrs["spec_json"])
    expected = np.concatenate([store.read("operator_parameters", key).arrays["params"].data for key in KEYS])
    assert params.shape == (8, 4) and np.array_equal(params, expected)
    assert np.array_equal(fields_5, store.read("initial_conditions", KEYS[1]).arrays["fields"].data[1])
    assert feature_names[:2] == ["mean", "std"] and spec["n_operators"] == 8
    assert validate_dataset_file(dataset) == []


def test_missing_shard_shows_as_absent_with_fill_values(tmp_path: Path) -> None:
    dataset = write_tiny_dataset(tmp_path, skip=[("base_features", KEYS[1])])
    with h5py.File(dataset, "r") as handle:
        assert handle["/features/base/present"][...].tolist() == [1, 1, 1, 1, 0, 0, 0, 0]
        assert handle["/verification/present"][...].tolist() == [1, 1, 1, 1, 0, 0, 0, 0]
        assert handle["/parameters/present"][...].tolist() == [1] * 8
        series = handle["/features/base/series"][...]
        assert np.isfinite(series[:4]).all() and np.isnan(series[4:]).all()
        assert handle["/verification/digests"][4:].tolist() == [[b"", b""]] * 4
        assert (handle["/verification/first_nonfinite_step"][4:] == 0).all()
        shards = handle["/metadata/shards"][...]
    assert [(row["asset"], row["shard_key"]) for row in shards if row["asset"] == b"base_features"] == [
        (b"base_features", KEYS[0].encode())
    ]
    assert validate_dataset_file(dataset) == []


def test_moving_the_whole_root_keeps_dataset_readable_from_any_directory(tmp_path: Path, monkeypatch) -> None:
    write_tiny_dataset(tmp_path / "data")
    with h5py.File(tmp_path / "data" / "dataset.h5", "r") as handle:
        before = handle["/features/base/series"][...]
    shutil.move(tmp_path / "data", tmp_path / "moved")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    with h5py.File(tmp_path / "moved" / "dataset.h5", "r") as handle:
        after = handle["/features/base/series"][...]
    assert np.isfinite(after).all() and np.array_equal(before, after)
    assert validate_dataset_file(tmp_path / "moved" / "dataset.h5") == []


def test_rebuilding_does_not_change_any_shard_file(tmp_path: Path) -> None:
    write_tiny_dataset(tmp_path)
    shards = sorted(p for p in tmp_path.rglob("ops-*.h5"))
    before = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in shards}
    _rebuild(tmp_path)
    assert {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in shards} == before
    assert len(before) == 6


def test_existing_dataset_is_not_replaced_unless_told(tmp_path: Path) -> None:
    write_tiny_dataset(tmp_path)
    with pytest.raises(OutputExistsError, match="overwrite=True"):
        _rebuild(tmp_path, overwrite=False)


def test_shard_of_another_spec_is_never_mixed_in(tmp_path: Path) -> None:
    dataset = write_tiny_dataset(tmp_path)
    before = hashlib.sha256(dataset.read_bytes()).hexdigest()
    store = ShardStore(tmp_path)
    other = store.read("base_features", KEYS[1])
    store.write(
        "base_features", KEYS[1], other.arrays, {**other.attrs, "spec_hash": "0" * 64}, overwrite=True
    )
    spec_hash = _root_attrs(dataset)["spec_hash"]
    with pytest.raises(SpecMismatchError) as raised:
        _rebuild(tmp_path)
    assert "0" * 64 in str(raised.value) and spec_hash in str(raised.value) and KEYS[1] in str(raised.value)
    assert hashlib.sha256(dataset.read_bytes()).hexdigest() == before  # the old view is untouched


def test_shards_with_different_family_versions_are_refused(tmp_path: Path) -> None:
    write_tiny_dataset(tmp_path)
    _write_toy_family(tmp_path, {KEYS[0]: "1", KEYS[1]: "2"})
    with pytest.raises(InconsistentShardsError, match="@version is '2' in .*ops-000004-000007.h5 but '1'"):
        _rebuild(tmp_path, [*FIXED_SOURCES, family_source("toy", ["series", "summary"])])


def test_family_arrays_appear_under_features_family(tmp_path: Path) -> None:
    dataset = write_tiny_dataset(tmp_path)
    _write_toy_family(tmp_path, {KEYS[0]: "3"})
    _rebuild(tmp_path, [*FIXED_SOURCES, family_source("toy", ["series", "summary"])])
    with h5py.File(dataset, "r") as handle:
        assert handle["/features/toy/series"].shape == (8, 2, 5, 3)
        assert handle["/features/toy/present"][...].tolist() == [1, 1, 1, 1, 0, 0, 0, 0]
        assert json.loads(handle["/metadata"].attrs["family_versions"]) == {"base": "1", "toy": "3"}
    assert validate_dataset_file(dataset) == []


def test_family_without_any_shard_adds_no_paths(tmp_path: Path) -> None:
    dataset = write_tiny_dataset(tmp_path)
    _rebuild(tmp_path, [*FIXED_SOURCES, family_source("toy", ["series"])])
    with h5py.File(dataset, "r") as handle:
        assert list(handle["/features"]) == ["base"]
        assert json.loads(handle["/metadata"].attrs["family_versions"]) == {"base": "1"}
    assert validate_dataset_file(dataset) == []


def test_optional_trajectories_absent_means_no_trajectories_group(tmp_path: Path) -> None:
    with h5py.File(write_tiny_dataset(tmp_path), "r") as handle:
        assert "trajectories" not in handle
    with h5py.File(write_tiny_dataset(tmp_path / "with", trajectories=True), "r") as handle:
        assert handle["/trajectories/states"].shape == (8, 2, 3, 2, 4, 4)


def test_ic_shards_without_fields_build_only_when_marked_regenerated(tmp_path: Path) -> None:
    dataset = write_tiny_dataset(tmp_path)
    for key in KEYS:
        with h5py.File(ShardStore(tmp_path).path("initial_conditions", key), "r+") as handle:
            del handle["fields"]
    with pytest.raises(ShardCorruptError, match="only the compact form"):
        _rebuild(tmp_path)
    for key in KEYS:  # the compact form: ic_digest marked, so readers regenerate the fields
        with h5py.File(ShardStore(tmp_path).path("initial_conditions", key), "r+") as handle:
            handle["ic_digest"].attrs["config"] = json.dumps({"fields": "regenerated"})
    _rebuild(tmp_path)
    with h5py.File(dataset, "r") as handle:
        assert "fields" not in handle["/inputs"] and handle["/inputs/present"][()].tolist() == [1] * 8
    assert validate_dataset_file(dataset) == []


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        (["ops-000000-000003"], r"cover operators \[0, 4\), expected \[0, 8\)"),
        (["ops-000000-000004", "ops-000004-000007"], "expected a shard starting at 5"),
        (["ops-000000-000003", "ops-000004-000009"], "without gaps or overlaps"),
    ],
)
def test_shard_keys_must_tile_the_operators(tmp_path: Path, keys: list[str], message: str) -> None:
    dataset = write_tiny_dataset(tmp_path)
    with pytest.raises(ValueError, match=message):
        build_consolidated_dataset(
            ShardStore(tmp_path),
            dataset,
            n_operators=8,
            shard_keys=keys,
            sources=FIXED_SOURCES,
            root_attrs=_root_attrs(dataset),
            overwrite=True,
        )


@pytest.mark.parametrize(
    "sources",
    [
        [ConsolidatedSource("a", {"x": "/g/b"}), ConsolidatedSource("b", {"y": "/g/b/c"})],
        [ConsolidatedSource("a", {"x": "/g/b", "y": "/g/b"})],
        [ConsolidatedSource("a", {"x": "/g/x"}), ConsolidatedSource("b", {"y": "/g/y"})],
        [ConsolidatedSource("a", {"x": "/metadata/x"})],
        [ConsolidatedSource("a", {"x": "/g/present"})],
    ],
)
def test_sources_whose_paths_collide_are_refused_before_reading(tmp_path: Path, sources: list) -> None:
    with pytest.raises(ValueError, match="collide|would hold arrays of assets|target must be"):
        build_consolidated_dataset(
            ShardStore(tmp_path),
            tmp_path / "dataset.h5",
            n_operators=8,
            shard_keys=KEYS,
            sources=sources,
            root_attrs={"spec_hash": "0" * 64, "spec_json": "{}"},
        )
    assert not (tmp_path / "dataset.h5").exists()


def test_given_family_versions_must_agree_with_the_shards(tmp_path: Path) -> None:
    dataset = write_tiny_dataset(tmp_path)
    with pytest.raises(
        ValueError, match="root_attrs\\['family_versions'\\]: the shards give \\{'base': '1'\\}"
    ):
        build_consolidated_dataset(
            ShardStore(tmp_path),
            dataset,
            n_operators=8,
            shard_keys=KEYS,
            sources=FIXED_SOURCES,
            root_attrs={**_root_attrs(dataset), "family_versions": {"base": "2"}},
            overwrite=True,
        )


def _content(path: Path) -> dict[str, object]:
    """Every attribute and every dataset's values (missing rows included) of an HDF5 file, by path."""
    found: dict[str, object] = {}

    def visit(name: str, item: h5py.Group | h5py.Dataset) -> None:
        found[f"{name}@"] = {key: str(value) for key, value in item.attrs.items()}
        if isinstance(item, h5py.Dataset):
            found[name] = item[()].tobytes()  # NaN fill values compare equal as bytes

    with h5py.File(path, "r") as handle:
        found["/@"] = {key: str(value) for key, value in handle.attrs.items()}
        handle.visititems(visit)
    return found


def _vouched(root: Path, keys: Sequence[str], sources: Sequence[ConsolidatedSource]) -> dict:
    """Every present shard file's sha256, as if each had just been materialized."""
    store = ShardStore(root)
    return {
        (source.asset, key): store.sha256(source.asset, key)
        for source in sources
        for key in keys
        if store.exists(source.asset, key)
    }


def _update(
    root: Path,
    n_operators: int,
    keys: Sequence[str],
    sources: Sequence[ConsolidatedSource] = FIXED_SOURCES,
    *,
    vouched: dict | None = None,
    previous_sha256: str | None = None,
):
    """Update dataset.h5 over the shard files as they are now; by default the previous dataset.h5 is the one
    recorded (its sha256 as it is) and every present file is vouched for."""
    dataset = root / "dataset.h5"
    return update_consolidated_dataset(
        ShardStore(root),
        dataset,
        n_operators=n_operators,
        shard_keys=keys,
        sources=sources,
        root_attrs=_root_attrs(dataset),
        previous_sha256=previous_sha256 or file_sha256(dataset),
        recorded_sha256=_vouching(_vouched(root, keys, sources) if vouched is None else vouched),
    )


def test_an_update_reads_only_the_changed_shards_and_equals_a_full_rebuild(tmp_path: Path) -> None:
    keys = [f"ops-{start:06d}-{start + 3:06d}" for start in range(0, 24, 4)]
    held_back = ("base_features", keys[4])
    write_tiny_dataset(tmp_path, n_operators=24, shard_size=4, skip=[held_back])
    assert _update(tmp_path, 24, keys).shards_read == 0  # nothing changed since write_tiny_dataset built it

    store = ShardStore(tmp_path)
    rewritten = store.read("base_features", keys[1])
    arrays = {name: array for name, array in rewritten.arrays.items()}
    arrays["summary"] = dataclasses.replace(arrays["summary"], data=arrays["summary"].data + 1)
    store.write("base_features", keys[1], arrays, rewritten.attrs, overwrite=True)
    source = store.read("base_features", keys[0])  # stand-in content for the shard materialized late
    late = {name: dataclasses.replace(array, data=array.data.copy()) for name, array in source.arrays.items()}
    start, stop = parse_shard_key(keys[4]).bounds
    store.write(
        "base_features",
        keys[4],
        late,
        {**source.attrs, "operator_start": start, "operator_stop": stop, "shard_key": keys[4]},
    )

    update = _update(tmp_path, 24, keys)
    assert (update.shards_present, update.shards_read) == (18, 2)
    full = build_consolidated_dataset(
        store,
        tmp_path / "full.h5",
        n_operators=24,
        shard_keys=keys,
        sources=FIXED_SOURCES,
        root_attrs=_root_attrs(tmp_path / "dataset.h5"),
    )
    assert _content(update.path) == _content(full)
    with h5py.File(update.path, "r") as handle:
        assert handle["/features/base/present"][...].tolist() == [1] * 24
        assert np.array_equal(handle["/features/base/summary"][4:8], arrays["summary"].data)
    assert validate_dataset_file(update.path) == []


def test_an_update_refuses_a_replaced_shard_that_disagrees_with_the_kept_ones(tmp_path: Path) -> None:
    write_tiny_dataset(tmp_path)
    _write_toy_family(tmp_path, {KEYS[0]: "1", KEYS[1]: "1"})
    toy = [*FIXED_SOURCES, family_source("toy", ["series", "summary"])]
    _rebuild(tmp_path, toy)
    (tmp_path / "toy_features" / f"{KEYS[1]}.h5").unlink()
    _write_toy_family(tmp_path, {KEYS[1]: "2"})
    with pytest.raises(InconsistentShardsError, match="@version"):
        _update(tmp_path, 8, KEYS, toy)


def test_an_update_keeps_rows_only_of_the_dataset_h5_it_was_told_about(tmp_path: Path) -> None:
    write_tiny_dataset(tmp_path)
    assert _update(tmp_path, 8, KEYS).shards_read == 0
    with h5py.File(tmp_path / "dataset.h5", "r+") as handle:  # an edited table is not the recorded file
        handle["/metadata"].attrs["note"] = "edited"
    assert _update(tmp_path, 8, KEYS, previous_sha256="0" * 64).shards_read == 6  # read afresh, all of them


def test_an_update_never_records_a_changed_shard(tmp_path: Path) -> None:
    write_tiny_dataset(tmp_path)
    path = tmp_path / "base_features" / f"{KEYS[1]}.h5"
    recorded = file_sha256(path)
    with h5py.File(path, "r+") as handle:
        handle["summary"][0] += 1.0
    with pytest.raises(ShardChangedError, match="previous dataset.h5 recorded"):
        _update(tmp_path, 8, KEYS, vouched={})  # changed in place, no materialization vouches for it
    with pytest.raises(ShardChangedError, match="when it was materialized"):
        _update(tmp_path, 8, KEYS, vouched={("base_features", KEYS[1]): recorded})
    # Changed behind its recorded size and mtime, the row is kept with the sha256 checked when it was
    # read: the file now fails every hash check against dataset.h5, it is never recorded anew.
    write_tiny_dataset(tmp_path / "again")
    path = tmp_path / "again" / "base_features" / f"{KEYS[1]}.h5"
    stat = path.stat()
    with h5py.File(path, "r+") as handle:
        handle["summary"][0] += 1.0
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert path.stat().st_size == stat.st_size
    assert _update(tmp_path / "again", 8, KEYS).shards_read == 0
    with h5py.File(tmp_path / "again" / "dataset.h5", "r") as handle:
        problems = check_shard_files(tmp_path / "again", shard_rows(handle))
    assert [problem.path for problem in problems] == [str(path)] and "sha256" in problems[0].message
