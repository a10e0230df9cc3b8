"""The executor does not change a single bit: a shard generated with the multiprocess executor (each step
in its own spawned process) equals the same shard generated in-process."""

from __future__ import annotations

import os

import dagster as dg
import pytest

from spinlock_assets.storage import ShardStore
from spinlock_assets_tests.conftest import tiny_spec
from spinlock_assets_tests.defs.helpers import SHARDS, tiny_definitions

ROOT_VARIABLE = "SPINLOCK_TEST_MULTIPROCESS_ROOT"


def multiprocess_generation_job() -> dg.JobDefinition:
    """Rebuilt in each step process (``dg.reconstructable``), so it reads its root from the environment."""
    defs = tiny_definitions(tiny_spec(), os.environ[ROOT_VARIABLE])
    job = dg.define_asset_job(
        "generate_multiprocess",
        selection=dg.AssetSelection.groups("inputs", "generation"),
        executor_def=dg.multiprocess_executor.configured({"max_concurrent": 2}),
    )
    return dg.Definitions(
        assets=defs.assets, asset_checks=defs.asset_checks, jobs=[job], resources=defs.resources
    ).resolve_job_def("generate_multiprocess")


@pytest.mark.slow
def test_multiprocess_executor_gives_the_same_bytes_as_in_process(tmp_path, monkeypatch):
    monkeypatch.setenv(ROOT_VARIABLE, str(tmp_path / "multiprocess"))
    with dg.instance_for_test() as instance:
        result = dg.execute_job(
            dg.reconstructable(multiprocess_generation_job),
            instance=instance,
            tags={"dagster/partition": SHARDS[1]},
        )
        assert result.success
        in_process = tiny_definitions(tiny_spec(), tmp_path / "in_process")
        assert (
            in_process.resolve_job_def("generate_shards")
            .execute_in_process(partition_key=SHARDS[1], instance=instance)
            .success
        )
    for asset, name in [
        ("base_features", "digests"),
        ("base_features", "series"),
        ("initial_conditions", "fields"),
    ]:
        a = ShardStore(tmp_path / "multiprocess").read(asset, SHARDS[1]).arrays[name].data
        b = ShardStore(tmp_path / "in_process").read(asset, SHARDS[1]).arrays[name].data
        assert a.tobytes() == b.tobytes(), f"{asset}/{name} depends on the executor"
