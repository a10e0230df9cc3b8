"""The main job: growing a dataset is one command (``--grow-to N``)."""

from __future__ import annotations

import dagster as dg
import h5py
import pytest

from spinlock_assets.defs.main_job import main
from spinlock_assets_tests.conftest import tiny_spec
from spinlock_assets_tests.defs.helpers import SHARDS, materialize, tiny_definitions

FAMILY = "dynamics_features"  # needs only the stored base series: no replay, quick


@pytest.mark.slow
def test_growing_generates_the_new_shards_backfills_materialized_families_and_updates_dataset_h5(
    tmp_path, monkeypatch
):
    spec_path, data_root, home = tmp_path / "spec.json", tmp_path / "data", tmp_path / "home"
    spec_path.write_text(tiny_spec(n_operators=8).to_json())
    monkeypatch.setenv("SPINLOCK_SPEC", str(spec_path))
    monkeypatch.setenv("SPINLOCK_DATA_ROOT", str(data_root))
    assert main(["--dagster-home", str(home), "--verify-sample", "2"]) == 0
    with dg.DagsterInstance.from_config(str(home)) as instance:
        for key in SHARDS[:2]:  # a family materialized on the dataset as it is
            assert materialize(
                tiny_definitions(tiny_spec(n_operators=8), data_root), [FAMILY], instance, key
            ).success
    before = {key: (data_root / "base_features" / f"{key}.h5").read_bytes() for key in SHARDS[:2]}

    assert main(["--dagster-home", str(home), "--verify-sample", "2", "--grow-to", "12"]) == 0

    assert tiny_spec(n_operators=12).to_json() == spec_path.read_text()
    with dg.DagsterInstance.from_config(str(home)) as instance:
        for asset in ("base_features", FAMILY):
            assert instance.get_materialized_partitions(dg.AssetKey(asset)) == set(SHARDS)
    assert before == {key: (data_root / "base_features" / f"{key}.h5").read_bytes() for key in SHARDS[:2]}
    with h5py.File(data_root / "dataset.h5", "r") as handle:
        assert handle["/metadata"].attrs["n_operators"] == 12
        assert handle["/features/dynamics/present"][...].tolist() == [1] * 12
