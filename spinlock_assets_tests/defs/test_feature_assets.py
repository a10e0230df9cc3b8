"""Derived families through Dagster: one replay feeds many, registration of a new family, staleness,
verification while extracting."""

from __future__ import annotations

import dagster as dg
import h5py
import numpy as np
import pytest

from spinlock_assets.core.features.family import ArraySpec, FeatureFamily, Needs, OperatorInputs
from spinlock_assets.core.features.registry import FAMILIES, get_family
from spinlock_assets.storage import ShardStore
from spinlock_assets_tests.conftest import tiny_spec
from spinlock_assets_tests.defs.helpers import SHARDS, generate, materialize, tiny_definitions


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """A tiny dataset with every shard generated; tests copy nothing and write only family files."""
    root = tmp_path_factory.mktemp("data")
    with dg.instance_for_test() as instance:
        generate(tiny_definitions(tiny_spec(), root), instance)
        yield root, instance


def _metadata(result, asset):
    event = next(e for e in result.get_asset_materialization_events() if e.asset_key.path == [asset])
    return {key: value.value for key, value in event.materialization.metadata.items()}


def test_three_replay_families_in_one_run_replay_each_operator_once(generated):
    root, instance = generated
    defs = tiny_definitions(tiny_spec(), root)
    selection = ["spectral_features", "invariant_drift_features", "cross_channel_features"]
    result = materialize(defs, selection, instance, SHARDS[0])
    assert result.success
    for asset in selection:
        metadata = _metadata(result, asset)
        assert metadata["rollouts_replayed"] == 4  # 4 operators, not 12
        assert metadata["replay_exact"] == 4
        assert (root / asset / "ops-000000-000003.h5").is_file()


def test_base_series_family_needs_no_replay(generated):
    root, instance = generated
    result = materialize(tiny_definitions(tiny_spec(), root), ["dynamics_features"], instance, SHARDS[1])
    assert _metadata(result, "dynamics_features")["rollouts_replayed"] == 0


def test_family_arrays_are_self_describing(generated):
    root, instance = generated
    materialize(tiny_definitions(tiny_spec(), root), ["spectral_features"], instance, SHARDS[2])
    with h5py.File(root / "spectral_features" / "ops-000008-000011.h5") as f:
        series = f["series"]
        assert series.shape == (4, 3, 6, 2, 17)
        for attr in ("feature_names", "version", "source", "config", "axes"):
            assert attr in series.attrs
        assert series.attrs["source"] == "replay"


def _mean_energy(inputs: OperatorInputs) -> dict[str, np.ndarray]:
    energy = (inputs.trajectories.numpy() ** 2).mean(axis=(1, 3, 4))  # [M, C]
    return {"mean_energy": energy.astype(np.float32)}


MEAN_ENERGY = FeatureFamily(
    name="mean_energy",
    version="0.1.0",
    needs=Needs.ROLLOUT,
    description="Time-averaged energy per realization and channel.",
    arrays=(ArraySpec("mean_energy", ("realization", "feature"), ("c0", "c1")),),
    compute=_mean_energy,
)


def test_a_new_family_materializes_through_the_public_registration_path(generated):
    root, instance = generated
    families = [*(f for f in FAMILIES.values() if f.name != "base"), MEAN_ENERGY]
    defs = tiny_definitions(tiny_spec(), root, families=families)
    assert "mean_energy_features" in {
        k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()
    }
    result = materialize(defs, ["mean_energy_features"], instance, SHARDS[0])
    assert result.success
    stored = ShardStore(root).read("mean_energy_features", SHARDS[0]).arrays["mean_energy"]
    assert stored.data.shape == (4, 3, 2) and np.isfinite(stored.data).all()


def test_replay_that_does_not_match_the_stored_digest_fails_naming_the_operator(tmp_path):
    with dg.instance_for_test() as instance:
        defs = tiny_definitions(tiny_spec(), tmp_path)
        generate(defs, instance, SHARDS[:1])
        with h5py.File(tmp_path / "base_features" / "ops-000000-000003.h5", "r+") as f:
            f["digests"][2, 1] = b"0" * 64  # operator 2, realization 1
        result = materialize(defs, ["spectral_features"], instance, SHARDS[0], raise_on_error=False)
    assert not result.success
    message = str(result.get_step_failure_events()[0].step_failure_data.error)
    assert "operators [2]" in message
    assert not (tmp_path / "spectral_features").exists() or not any(
        (tmp_path / "spectral_features").iterdir()
    )


def test_unknown_family_name_lists_known_ones():
    with pytest.raises(ValueError, match="spectral"):
        get_family("spectrl")


def test_family_materializations_show_a_named_feature_map_and_numeric_scalars(generated):
    root, instance = generated
    result = materialize(tiny_definitions(tiny_spec(), root), ["spectral_features"], instance, SHARDS[1])
    event = next(e for e in result.get_asset_materialization_events())
    metadata = event.materialization.metadata
    caption = metadata["feature_map"].value.split("\n\n")[1]
    assert caption.startswith("spectral / summary (channel 0, statistic time_mean): operators 4–7")
    assert "column standard deviation" in caption
    assert isinstance(metadata["replay_exact"], dg.IntMetadataValue)
    assert metadata["replay_not_reproduced"].value == 0
    assert isinstance(metadata["seconds_per_operator"], dg.FloatMetadataValue)


def test_a_damaged_base_features_shard_fails_saying_which_job_to_rerun(tmp_path):
    with dg.instance_for_test() as instance:
        defs = tiny_definitions(tiny_spec(), tmp_path)
        generate(defs, instance, SHARDS[:1])
        (tmp_path / "base_features" / f"{SHARDS[0]}.h5").write_bytes(b"not hdf5")
        result = materialize(defs, ["spectral_features"], instance, SHARDS[0], raise_on_error=False)
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    description = failure.step_failure_data.user_failure_data.description
    assert description.startswith(
        f"replay_feature_families cannot read its input: the base_features file of partition {SHARDS[0]} "
        "cannot be used (ShardCorruptError)."
    )
    assert f"Run generate_shards for partition {SHARDS[0]} first" in description


def test_dataset_is_rebuilt_once_a_new_family_has_landed(tmp_path):
    """``dataset`` asks for a rebuild after new shards or a new family land, and not again until more do."""
    defs = tiny_definitions(tiny_spec(), tmp_path)

    def requested(instance, cursor):
        result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)
        return result.get_num_requested(dg.AssetKey("dataset")), result.cursor

    with dg.instance_for_test() as instance:
        _, cursor = requested(instance, None)  # the first evaluation only starts the cursor
        generate(defs, instance, SHARDS[:1])
        count, cursor = requested(instance, cursor)
        assert count == 1, "new shards: rebuild"
        assert materialize(defs, ["dataset"], instance).success
        count, cursor = requested(instance, cursor)
        assert count == 0, "nothing new since the rebuild"
        assert materialize(defs, ["spectral_features"], instance, SHARDS[0]).success
        count, cursor = requested(instance, cursor)
        assert count == 1, "a new family: rebuild"
