"""The written layout: the validators accept conforming files and name the HDF5 path of each violation."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import pytest

from spinlock_assets.core.shards import ShardRange, parse_shard_key
from spinlock_assets.storage import (
    FIXED_SOURCES,
    Problem,
    family_source,
    validate_dataset_file,
    validate_shard_file,
    write_shard_file,
)
from spinlock_assets.storage.testing import write_tiny_dataset
from spinlock_assets_tests.storage.helpers import shard_arrays, shard_attrs


def _paths(problems: list[Problem]) -> list[str]:
    return [problem.path for problem in problems]


def test_tiny_dataset_and_its_shards_are_valid(tmp_path: Path) -> None:
    assert validate_dataset_file(write_tiny_dataset(tmp_path, trajectories=True)) == []
    shards = sorted(tmp_path.rglob("ops-*.h5"))
    assert len(shards) == 6 and all(validate_shard_file(path) == [] for path in shards)


def test_wrong_feature_names_length_is_reported_at_its_path(tmp_path: Path) -> None:
    dataset = write_tiny_dataset(tmp_path)
    with h5py.File(dataset, "r+") as handle:
        handle["/features/base/series"].attrs["feature_names"] = json.dumps(["mean", "std"])
    problems = validate_dataset_file(dataset)
    assert problems == [
        Problem("/features/base/series", "@feature_names must have 10 entries (feature axis), got 2")
    ]


def test_missing_metadata_attribute_is_reported(tmp_path: Path) -> None:
    dataset = write_tiny_dataset(tmp_path)
    with h5py.File(dataset, "r+") as handle:
        del handle["/metadata"].attrs["spec_hash"]
    assert validate_dataset_file(dataset) == [Problem("/metadata", "missing attribute(s) @spec_hash")]


def test_missing_array_attribute_is_reported(tmp_path: Path) -> None:
    dataset = write_tiny_dataset(tmp_path)
    with h5py.File(dataset, "r+") as handle:
        del handle["/parameters/seeds/ic_seed"].attrs["axes"]
    assert validate_dataset_file(dataset) == [
        Problem("/parameters/seeds/ic_seed", "missing attribute(s) @axes")
    ]


def test_tampered_present_mask_is_reported(tmp_path: Path) -> None:
    dataset = write_tiny_dataset(tmp_path)
    with h5py.File(dataset, "r+") as handle:
        handle["/inputs/present"][6] = 0
    assert _paths(validate_dataset_file(dataset)) == ["/inputs/present"]


def test_missing_required_dataset_is_reported(tmp_path: Path) -> None:
    dataset = write_tiny_dataset(tmp_path)
    with h5py.File(dataset, "r+") as handle:
        del handle["/verification/digests"]
    problems = validate_dataset_file(dataset)
    assert Problem("/verification/digests", "required dataset (asset 'base_features') is missing") in problems


def test_ic_fields_may_be_absent_only_when_marked_regenerated(tmp_path: Path) -> None:
    dataset = write_tiny_dataset(tmp_path)
    with h5py.File(dataset, "r+") as handle:
        del handle["/inputs/fields"]
        handle["/inputs"].attrs["field_names"] = json.dumps(["ic_digest"])
    problems = validate_dataset_file(dataset)
    assert _paths(problems) == ["/inputs/fields"] and "only the compact form" in problems[0].message
    with h5py.File(dataset, "r+") as handle:  # the compact form: digests only, marked in their @config
        handle["/inputs/ic_digest"].attrs["config"] = json.dumps({"fields": "regenerated"})
    assert validate_dataset_file(dataset) == []


def test_shard_file_missing_behind_a_virtual_dataset_is_reported(tmp_path: Path) -> None:
    dataset = write_tiny_dataset(tmp_path)
    (tmp_path / "initial_conditions" / "ops-000004-000007.h5").unlink()
    problems = validate_dataset_file(dataset)
    assert _paths(problems) == ["/inputs/fields", "/inputs/ic_digest"]
    assert "initial_conditions/ops-000004-000007.h5" in problems[0].message


def test_not_a_dataset_file_is_one_problem(tmp_path: Path) -> None:
    path = tmp_path / "dataset.h5"
    path.write_bytes(b"\0" * 100)
    assert _paths(validate_dataset_file(path)) == [str(path)]
    assert validate_dataset_file(tmp_path / "absent.h5") == [
        Problem(str(tmp_path / "absent.h5"), "file does not exist")
    ]


def test_shard_validator_names_the_array_and_the_file_name(tmp_path: Path) -> None:
    path = tmp_path / "ops-000000-000003.h5"
    write_shard_file(path, shard_arrays(4), shard_attrs(0, 4))
    with h5py.File(path, "r+") as handle:
        handle["summary"].attrs["axis_labels"] = json.dumps({"statistic": ["mean"]})
    assert validate_shard_file(path) == [
        Problem(f"{path}:/summary", "@axis_labels['statistic'] must have 2 entries, got 1")
    ]
    renamed = path.rename(tmp_path / "ops-000004-000007.h5")
    with h5py.File(renamed, "r+") as handle:
        handle["summary"].attrs["axis_labels"] = json.dumps({"statistic": ["mean", "std"]})
    assert validate_shard_file(renamed) == [
        Problem(str(renamed), "file name must be 'ops-000000-000003.h5' (its @shard_key)")
    ]


def test_shard_keys_are_zero_padded_inclusive_ranges() -> None:
    # [32, 64) -> ops-000032-000063; lexical order equals numeric order up to 10^6 operators.
    assert ShardRange(32, 64).key == "ops-000032-000063"
    assert parse_shard_key("ops-000032-000063").bounds == (32, 64)
    assert sorted(ShardRange(s, s + 8).key for s in (800, 96, 8)) == [
        "ops-000008-000015",
        "ops-000096-000103",
        "ops-000800-000807",
    ]
    for bad in ("ops-32-63", "ops-000063-000032", "x"):
        with pytest.raises(ValueError, match="shard key"):
            parse_shard_key(bad)


def test_fixed_sources_use_the_documented_paths() -> None:
    tables = {source.asset: dict(source.arrays) for source in FIXED_SOURCES}
    assert tables["operator_parameters"] == {
        "params": "/parameters/params",
        "hyperparameters": "/parameters/hyperparameters",
        "operator_index": "/parameters/operator_index",
        "weight_seed": "/parameters/seeds/weight_seed",
        "ic_seed": "/parameters/seeds/ic_seed",
        "probe_seed": "/parameters/seeds/probe_seed",
        "noise_seeds": "/parameters/seeds/noise_seeds",
    }
    assert tables["initial_conditions"] == {"fields": "/inputs/fields", "ic_digest": "/inputs/ic_digest"}
    assert tables["base_features"] == {
        "series": "/features/base/series",
        "summary": "/features/base/summary",
        "digests": "/verification/digests",
        "first_nonfinite_step": "/verification/first_nonfinite_step",
        "trajectories": "/trajectories/states",
    }
    assert family_source("spectral", ["series"]).arrays == {"series": "/features/spectral/series"}
    assert family_source("spectral", ["series"]).asset == "spectral_features"


def test_present_mask_values_are_zero_or_one(tmp_path: Path) -> None:
    dataset = write_tiny_dataset(tmp_path)
    with h5py.File(dataset, "r+") as handle:
        handle["/parameters/present"][0] = 2
    problems = validate_dataset_file(dataset)
    assert Problem("/parameters/present", "values must be 0 or 1") in problems
    assert set(_paths(problems)) == {"/parameters/present"}
