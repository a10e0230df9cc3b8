"""Generation assets through Dagster: exact file paths, round trips, lineage metadata, growth."""

from __future__ import annotations

import dataclasses

import dagster as dg
import numpy as np
import pytest

from spinlock_assets.core.verification import verify
from spinlock_assets.storage import ShardStore, file_sha256
from spinlock_assets.storage.reader import open_dataset
from spinlock_assets_tests.conftest import tiny_spec
from spinlock_assets_tests.defs.helpers import GENERATION, SHARDS, generate, materialize, tiny_definitions


@pytest.fixture
def instance():
    with dg.instance_for_test() as instance:
        yield instance


def test_each_generation_asset_writes_one_file_per_shard_at_its_exact_path(tmp_path, instance):
    defs = tiny_definitions(tiny_spec(), tmp_path)
    result = materialize(defs, GENERATION, instance, SHARDS[1])
    assert result.success
    for asset in GENERATION:
        assert (tmp_path / asset / "ops-000004-000007.h5").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [*GENERATION, "spec.json"]
    )  # + the spec marker
    contents = ShardStore(tmp_path).read("operator_parameters", SHARDS[1])
    assert list(contents.arrays["operator_index"].data) == [4, 5, 6, 7]
    assert contents.attrs["spec_hash"] == tiny_spec().spec_hash


def test_materializations_carry_lineage_metadata(tmp_path, instance):
    defs = tiny_definitions(tiny_spec(), tmp_path)
    result = materialize(defs, GENERATION, instance, SHARDS[0])
    events = {
        e.asset_key.to_user_string(): e.materialization for e in result.get_asset_materialization_events()
    }
    base = events["base_features"].metadata
    path = tmp_path / "base_features" / "ops-000000-000003.h5"
    assert base["path"].value == str(path)
    assert base["sha256"].value == file_sha256(path)
    assert base["operators"].value == 4
    assert base["spec_hash"].value == tiny_spec().spec_hash
    assert base["code_version"].value.startswith("base-")
    assert base["fingerprint"].value["device_type"] == "cpu"
    assert base["diverged_operators"].value == 0
    assert events["base_features"].tags.get("dagster/data_version")


def test_rematerializing_a_shard_gives_the_same_data_version(tmp_path, instance):
    defs = tiny_definitions(tiny_spec(), tmp_path)
    versions = []
    for _ in range(2):
        result = materialize(defs, GENERATION, instance, SHARDS[2])
        event = next(
            e for e in result.get_asset_materialization_events() if e.asset_key.path == ["base_features"]
        )
        versions.append(event.materialization.tags["dagster/data_version"])
    assert versions[0] == versions[1]


def test_growing_the_dataset_adds_shards_and_changes_no_existing_shard(tmp_path, instance):
    small = tiny_spec(n_operators=8)
    generate(tiny_definitions(small, tmp_path), instance, SHARDS[:2])
    store = ShardStore(tmp_path)
    before = {(a, k): store.sha256(a, k) for a in GENERATION for k in SHARDS[:2]}
    grown = tiny_definitions(dataclasses.replace(small, n_operators=12), tmp_path)
    assert grown.resolve_job_def("generate_shards").partitions_def.get_partition_keys() == SHARDS
    generate(grown, instance, SHARDS[2:])
    assert {(a, k): store.sha256(a, k) for a in GENERATION for k in SHARDS[:2]} == before
    assert all(store.exists(a, SHARDS[2]) for a in GENERATION)


def test_operator_data_does_not_depend_on_shard_size(tmp_path, instance):
    generate(tiny_definitions(tiny_spec(), tmp_path / "by4"), instance)
    by6 = tiny_spec(shard_size=6)
    generate(tiny_definitions(by6, tmp_path / "by6"), instance, ["ops-000000-000005", "ops-000006-000011"])
    for asset, name in [
        ("base_features", "series"),
        ("base_features", "digests"),
        ("initial_conditions", "fields"),
    ]:
        four = np.concatenate([ShardStore(tmp_path / "by4").read(asset, k).arrays[name].data for k in SHARDS])
        six = np.concatenate(
            [
                ShardStore(tmp_path / "by6").read(asset, k).arrays[name].data
                for k in ["ops-000000-000005", "ops-000006-000011"]
            ]
        )
        assert np.array_equal(four, six, equal_nan=four.dtype.kind == "f"), (
            f"{asset}/{name} depends on the shard size"
        )


def test_dataset_file_replays_every_operator_bit_exactly(tmp_path, instance):
    defs = tiny_definitions(tiny_spec(), tmp_path)
    generate(defs, instance)
    assert materialize(defs, ["dataset"], instance).success
    with open_dataset(tmp_path / "dataset.h5") as reader:
        assert reader.file["/parameters/params"].shape == (12, 10)
        statuses = [verify(reader.operator(i)).status for i in range(12)]
    assert statuses == ["exact"] * 12


def _dataset_metadata(result) -> dict:
    (event,) = result.get_asset_materialization_events()
    return {key: value.value for key, value in event.materialization.metadata.items()}


def test_dataset_updates_read_only_new_shards_of_the_dataset_h5_the_instance_recorded(tmp_path, instance):
    import h5py

    defs = tiny_definitions(tiny_spec(), tmp_path)
    generate(defs, instance, SHARDS[:2])
    first = _dataset_metadata(materialize(defs, ["dataset"], instance))
    assert (first["shard_files"], first["shard_files_read"]) == (6, 6)
    assert first["sha256"] == file_sha256(tmp_path / "dataset.h5")
    generate(defs, instance, SHARDS[2:])
    second = _dataset_metadata(materialize(defs, ["dataset"], instance))
    assert (second["shard_files"], second["shard_files_read"]) == (9, 3)  # the new shard's files only
    assert second["shards_present"] == dict.fromkeys(GENERATION, 3)
    with h5py.File(tmp_path / "dataset.h5", "r+") as handle:  # not the file the instance recorded
        handle["/metadata"].attrs["note"] = "edited"
    third = _dataset_metadata(materialize(defs, ["dataset"], instance))
    assert third["shard_files_read"] == 9  # nothing kept from it: every shard read and checked again


def test_missing_shard_is_masked_in_the_dataset_not_zero(tmp_path, instance):
    import h5py

    defs = tiny_definitions(tiny_spec(), tmp_path)
    generate(defs, instance, [SHARDS[0], SHARDS[2]])
    assert materialize(defs, ["dataset"], instance).success
    with h5py.File(tmp_path / "dataset.h5") as f:
        assert list(f["/verification/present"][...]) == [1] * 4 + [0] * 4 + [1] * 4
        assert np.isnan(f["/features/base/series"][4:8]).all()
        assert not np.isnan(f["/features/base/series"][0:4]).all()


def test_materializations_show_captioned_figures_numeric_scalars_and_a_fingerprint(tmp_path, instance):
    defs = tiny_definitions(tiny_spec(), tmp_path)
    result = materialize(defs, GENERATION, instance, SHARDS[1])
    events = {
        e.asset_key.path[-1]: e.materialization.metadata for e in result.get_asset_materialization_events()
    }
    initial_fields = events["initial_conditions"]["initial_fields"].value
    assert initial_fields.startswith("![Initial condition") and "operators 4–7" in initial_fields
    energy = events["base_features"]["energy_over_time"].value
    assert "data:image/png;base64," in energy and "logarithmic y axis" in energy.split("\n\n")[1]
    base = events["base_features"]
    # Floats, so the Plots tab charts them across partitions.
    for key in ("mean_initial_energy", "mean_final_energy", "seconds_per_operator"):
        assert isinstance(base[key], dg.FloatMetadataValue), key
    assert isinstance(base["diverged_operators"], dg.IntMetadataValue)
    for asset in ("operator_parameters", "initial_conditions"):
        assert events[asset]["fingerprint"].value["numpy"] == np.__version__, asset


def test_a_missing_upstream_shard_fails_saying_what_to_run_first(tmp_path, instance):
    defs = tiny_definitions(tiny_spec(), tmp_path)
    result = materialize(defs, ["base_features"], instance, SHARDS[2], raise_on_error=False)
    assert not result.success
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    data = failure.step_failure_data
    assert data.user_failure_data is not None, "a dg.Failure, not a wrapped stack trace"
    asset = data.user_failure_data.metadata["input_asset"].value  # whichever input loads first
    assert asset in ("operator_parameters", "initial_conditions")
    assert data.user_failure_data.description == (
        f"base_features cannot read its input: {asset} has not been materialized for partition "
        f"{SHARDS[2]}. Run generate_shards for partition {SHARDS[2]} first (or materialize {asset} for "
        f"{SHARDS[2]} from its asset page), then re-run this partition."
    )
    assert data.user_failure_data.metadata["run_first"].value == "generate_shards"
