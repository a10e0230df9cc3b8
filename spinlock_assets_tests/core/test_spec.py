from __future__ import annotations

import dataclasses
import json

import pytest

from spinlock_assets.core.initial_conditions import IC_FAMILIES
from spinlock_assets.core.spec import (
    DEFAULT_SPEC_PATH,
    IC_FAMILY_NAMES,
    DatasetSpec,
    ParameterSpace,
    SpecError,
    load_spec,
)
from spinlock_assets_tests.conftest import tiny_spec


@pytest.mark.parametrize(
    ("overrides", "field_name"),
    [
        ({"n_operators": 0}, "n_operators"),
        ({"shard_size": -1}, "shard_size"),
        ({"steps": 1}, "steps"),
        ({"realizations": 0}, "realizations"),
        ({"channels": 0}, "channels"),
        ({"grid": (4, 4)}, "grid"),
        ({"root_seed": -3}, "root_seed"),
        ({"store_trajectories": 1}, "store_trajectories"),
        ({"store_initial_conditions": "false"}, "store_initial_conditions"),
    ],
)
def test_invalid_spec_names_the_field(overrides, field_name):
    with pytest.raises(SpecError) as error:
        tiny_spec(**overrides)
    assert error.value.field_name == field_name
    assert field_name in str(error.value)


@pytest.mark.parametrize(
    ("space", "field_name"),
    [
        ({"noise_sigma": (0.1, 0.01)}, "parameter_space.noise_sigma"),
        ({"policies": ("residual", "leapfrog")}, "parameter_space.policies"),
        ({"ic_families": ("white_noise",)}, "parameter_space.ic_families"),
        ({"kernel_sizes": (4,)}, "parameter_space.kernel_sizes"),
        ({"n_layers": (4, 2)}, "parameter_space.n_layers"),
        ({"alpha": (0.2, 1.5)}, "parameter_space.alpha"),
    ],
)
def test_invalid_parameter_space_names_the_field_and_allowed_values(space, field_name):
    with pytest.raises(SpecError) as error:
        ParameterSpace(**space)
    assert error.value.field_name == field_name
    if field_name == "parameter_space.policies":
        assert "autoregressive" in str(error.value) and "leapfrog" in str(error.value)


def test_grid_smaller_than_largest_kernel_is_refused():
    with pytest.raises(SpecError, match="grid"):
        tiny_spec(grid=(8, 8), parameter_space=ParameterSpace(kernel_sizes=(3, 9)))


def test_spec_round_trips_through_json_and_keeps_its_hash(tmp_path):
    spec = tiny_spec()
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec.to_dict()))
    loaded = load_spec(path)
    assert loaded == spec
    assert loaded.spec_hash == spec.spec_hash


def test_spec_hash_ignores_dataset_size_and_sharding_but_not_content():
    spec = tiny_spec()
    assert spec.with_operators(1200).spec_hash == spec.spec_hash
    assert dataclasses.replace(spec, shard_size=6).spec_hash == spec.spec_hash
    assert dataclasses.replace(spec, steps=7).spec_hash != spec.spec_hash
    assert dataclasses.replace(spec, root_seed=8).spec_hash != spec.spec_hash


def test_compact_storage_flag_round_trips_and_is_part_of_the_hash(tmp_path):
    compact = tiny_spec(store_initial_conditions=False)
    path = tmp_path / "spec.json"
    path.write_text(compact.to_json())
    assert load_spec(path) == compact and not load_spec(path).store_initial_conditions
    assert compact.spec_hash != tiny_spec().spec_hash  # the two forms never share a data root
    assert dataclasses.replace(compact, store_trajectories=True).spec_hash != compact.spec_hash


def test_specs_that_store_their_ics_keep_the_hash_they_had_before_the_flag_existed():
    spec = load_spec(DEFAULT_SPEC_PATH)
    assert spec.store_initial_conditions
    assert spec.spec_hash == "33cfb4cd62de3870"  # the hash of the shipped default spec, quoted in README.md


def test_unknown_keys_in_a_spec_file_are_refused(tmp_path):
    data = tiny_spec().to_dict() | {"n_operator": 5}
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(data))
    with pytest.raises(SpecError, match="n_operator"):
        load_spec(path)


def test_unreadable_spec_file_names_the_file(tmp_path):
    with pytest.raises(SpecError, match="missing.json"):
        load_spec(tmp_path / "missing.json")


def test_spec_ic_families_match_the_generators():
    assert IC_FAMILY_NAMES == IC_FAMILIES


def test_default_parameter_space_is_the_original_systems_ranges():
    spec = DatasetSpec(root_seed=0, n_operators=1, shard_size=1)
    assert spec.parameter_space.n_layers == (2, 5) and spec.parameter_space.kernel_sizes == (3, 5, 7)
