"""Invalid inputs are refused before any work, with an error naming what is wrong and what is expected:
spec files, parameter points, feature family names and partition (shard) keys."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import dagster as dg
import numpy as np
import pytest

from spinlock_assets.core.budget import check_disk
from spinlock_assets.core.features.family import ArraySpec, FeatureFamily
from spinlock_assets.core.features.registry import FAMILIES, get_family, register_family
from spinlock_assets.core.generation import operator_parameters
from spinlock_assets.core.parameters import PARAMETER_NAMES, map_parameters
from spinlock_assets.core.shards import parse_shard_key
from spinlock_assets.core.spec import SpecError, load_spec
from spinlock_assets.definitions import _spec_from_environment, build_definitions
from spinlock_assets.storage import ShardStore
from spinlock_assets_tests.conftest import tiny_spec
from spinlock_assets_tests.defs.helpers import GENERATION, materialize, tiny_definitions
from spinlock_assets_tests.faults.helpers import child_env, start_child

# (field named in the error, change to a valid spec's JSON)
BAD_SPECS = {
    "no-operators": ("n_operators", {"n_operators": 0}),
    "negative-seed": ("root_seed", {"root_seed": -1}),
    "one-step": ("steps", {"steps": 1}),
    "grid-below-kernel": ("grid", {"grid": [4, 4]}),
    "inverted-noise-range": (
        "parameter_space.noise_sigma",
        {"parameter_space": {"noise_sigma": [0.1, 0.001]}},
    ),
    "inverted-layer-range": ("parameter_space.n_layers", {"parameter_space": {"n_layers": [5, 2]}}),
    "unknown-policy": (
        "parameter_space.policies",
        {"parameter_space": {"policies": ["residual", "leapfrog"]}},
    ),
    "unknown-activation": ("parameter_space.activations", {"parameter_space": {"activations": ["swish"]}}),
    "misspelled-key": ("spec", {"stpes": 6}),
    # Issue #17: what JSON admits and a spec never does.
    "infinite-bound": (
        "parameter_space.weight_gain",
        {"parameter_space": {"weight_gain": [0.5, float("inf")]}},
    ),
    "nan-bound": ("parameter_space.noise_sigma", {"parameter_space": {"noise_sigma": [float("nan"), 0.1]}}),
    "string-bounds": ("parameter_space.dt", {"parameter_space": {"dt": ["0.01", "0.5"]}}),
    "boolean-seed": ("root_seed", {"root_seed": True}),
    "boolean-kernel": ("parameter_space.kernel_sizes", {"parameter_space": {"kernel_sizes": [True]}}),
    "boolean-steps": ("steps", {"steps": True}),
    "float-steps": ("steps", {"steps": 1e9}),
    "numeric-name": ("name", {"name": 5}),
    "null-parameter-space": ("parameter_space", {"parameter_space": None}),
    "scalar-widths": ("parameter_space.widths", {"parameter_space": {"widths": 5}}),
    "null-widths": ("parameter_space.widths", {"parameter_space": {"widths": None}}),
    "null-grid": ("grid", {"grid": None}),
    "string-grid": ("grid", {"grid": "16x16"}),
    "numeric-activation": ("parameter_space.activations", {"parameter_space": {"activations": [1]}}),
}


def _bad_spec_file(tmp_path, change) -> str:
    data = json.loads(tiny_spec().to_json())
    for key, value in change.items():
        data[key] = {**data[key], **value} if isinstance(value, dict) else value
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(data))
    return str(path)


@pytest.mark.parametrize("case", BAD_SPECS)
def test_invalid_spec_file_is_refused_naming_the_field(tmp_path, monkeypatch, case):
    field, change = BAD_SPECS[case]
    path = _bad_spec_file(tmp_path, change)
    with pytest.raises(SpecError, match=re.escape(field)) as raised:
        load_spec(path)
    assert raised.value.field_name == field
    monkeypatch.setenv("SPINLOCK_SPEC", path)  # the composition root refuses it the same way
    with pytest.raises(SpecError, match=re.escape(field)):
        _spec_from_environment()


# (fields named, change): valid specs that cannot run on any machine this project targets
TOO_LARGE = {
    "huge-grid": ("grid", {"grid": [100000, 100000]}),
    "huge-steps": ("steps", {"steps": 1_000_000_000}),
    "huge-widths": (
        "parameter_space.widths",
        {"parameter_space": {"widths": [1_000_000]}, "grid": [4096, 4096]},
    ),
}


@pytest.mark.parametrize("case", TOO_LARGE)
def test_a_spec_too_large_for_this_machine_is_refused_with_the_numbers(tmp_path, case):
    field, change = TOO_LARGE[case]
    spec = load_spec(_bad_spec_file(tmp_path, change))  # valid, just too large
    with pytest.raises(SpecError, match=r"GiB") as raised:
        build_definitions(spec, tmp_path / "data")
    assert field in raised.value.field_name and "fit in memory" in str(raised.value)
    assert not (tmp_path / "data").exists()


def test_a_shard_larger_than_the_free_disk_is_refused(tmp_path):
    with pytest.raises(SpecError, match=r"one shard to fit on disk.*GiB free"):
        check_disk(tiny_spec(), tmp_path, free=1000)


def _family(**changes) -> FeatureFamily:
    return dataclasses.replace(get_family("spectral"), **changes)


@pytest.mark.parametrize(
    "family, message",
    [
        (_family(name="evil/name"), "name must be an identifier"),
        (_family(name="plugin", arrays=(ArraySpec("../../parameters/params", ("time",), ()),)), "array name"),
        (_family(name="plugin", arrays=(ArraySpec("present", ("time",), ()),)), "array name"),
        (_family(name="plugin", version=""), "version must be a non-empty string"),
        (_family(name="plugin", arrays=(ArraySpec("a", ("planet",), ()),)), "neither known nor labelled"),
    ],
)
def test_a_malformed_plugin_family_is_refused_at_registration(family, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        register_family(family)
    assert family.name not in FAMILIES


@pytest.mark.slow
def test_the_main_job_refuses_a_bad_spec_in_one_line(tmp_path):
    spec = _bad_spec_file(tmp_path, {"parameter_space": {"weight_gain": [0.5, float("inf")]}})
    env = child_env(Path(spec), tmp_path / "data")
    log = tmp_path / "main.log"
    child = start_child(
        ["-m", "spinlock_assets.defs.main_job", "--dagster-home", str(tmp_path / "home")], env, log
    )
    assert child.wait(timeout=300) == 2
    lines = [line for line in log.read_text().splitlines() if "Warning" not in line and line.strip()]
    lines = [line for line in lines if not line.startswith("  ")]  # warnings' source lines
    assert lines == [
        "main job: error: invalid dataset spec: parameter_space.weight_gain must be two finite numbers "
        "(low, high); got (0.5, inf)"
    ]


def test_unreadable_spec_file_is_refused_naming_the_file(tmp_path):
    (tmp_path / "broken.json").write_text('{"root_seed": 7,')
    with pytest.raises(SpecError, match="valid JSON.*broken.json"):
        load_spec(tmp_path / "broken.json")
    with pytest.raises(SpecError, match="readable JSON file.*absent.json"):
        load_spec(tmp_path / "absent.json")


@pytest.mark.slow
def test_code_location_with_an_invalid_spec_fails_to_load_and_creates_nothing(tmp_path):
    data_root = tmp_path / "data"
    env = child_env(_bad_spec_file(tmp_path, {"n_operators": 0}), data_root)
    log = tmp_path / "load.log"
    child = start_child(["-c", "import spinlock_assets.definitions"], env, log)
    assert child.wait(timeout=120) != 0
    assert "SpecError: invalid dataset spec: n_operators must be an integer >= 1; got 0" in log.read_text()
    assert not data_root.exists()


@pytest.mark.parametrize(
    "point",
    [
        np.full(len(PARAMETER_NAMES), 0.5) + np.eye(len(PARAMETER_NAMES))[3],  # 1.5 in one coordinate
        np.full(len(PARAMETER_NAMES), -0.1),
        np.full(len(PARAMETER_NAMES), np.nan),
        np.full(len(PARAMETER_NAMES) - 1, 0.5),
    ],
    ids=["above-one", "negative", "nan", "wrong-length"],
)
def test_out_of_range_parameter_point_is_refused(point):
    with pytest.raises(ValueError, match=r"parameter point must have shape \(10,\) with values in \[0, 1\]"):
        map_parameters(point, tiny_spec().parameter_space)


def test_operator_range_outside_the_dataset_is_refused():
    with pytest.raises(ValueError, match=r"operator range \[8, 13\) is outside the dataset's 0..12"):
        operator_parameters(tiny_spec(), 8, 13)


def test_unknown_feature_family_is_refused_listing_the_known_ones():
    with pytest.raises(ValueError, match="unknown feature family 'spectrall'") as raised:
        get_family("spectrall")
    assert all(repr(name) in str(raised.value) for name in FAMILIES)


@pytest.mark.parametrize(
    "key, expected",
    [
        ("ops-4-7", r"shard key must look like 'ops-\d{6}-\d{6}'"),
        ("ops-000000-000003.h5", r"shard key must look like 'ops-\d{6}-\d{6}'"),
        ("../ops-000000-000003", r"shard key must look like 'ops-\d{6}-\d{6}'"),
        ("", r"shard key must look like 'ops-\d{6}-\d{6}'"),
        ("ops-000007-000004", r"shard key.*(must look like 'ops-\d{6}-\d{6}'|4 is before first operator 7)"),
    ],
)
def test_invalid_partition_key_is_refused_showing_the_expected_form(tmp_path, key, expected):
    for use in (parse_shard_key, lambda k: ShardStore(tmp_path).path("base_features", k)):
        with pytest.raises(ValueError, match=expected):
            use(key)
    assert list(tmp_path.iterdir()) == []


def test_materializing_a_partition_the_spec_does_not_have_is_refused_before_any_work(tmp_path, instance):
    data_root = tmp_path / "data"
    with pytest.raises(dg.DagsterUnknownPartitionError, match="ops-000012-000015"):
        materialize(tiny_definitions(tiny_spec(), data_root), GENERATION, instance, "ops-000012-000015")
    assert not data_root.exists() or not any(data_root.rglob("*.h5"))
