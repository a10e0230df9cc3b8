"""Three shards materialized at once by three ``dagster asset materialize`` processes against one data
root and one instance, with the project's in-process runs and with the multiprocess executor (every step
in its own process): every shard file is valid, dataset.h5 builds over them and every operator replays
bit-exactly."""

from __future__ import annotations

import json

import dagster as dg
import pytest

from spinlock_assets.core.verification import verify
from spinlock_assets.storage import validate_dataset_file, validate_shard_file
from spinlock_assets.storage.reader import open_dataset
from spinlock_assets_tests.conftest import tiny_spec
from spinlock_assets_tests.defs.helpers import GENERATION, SHARDS, materialize, tiny_definitions
from spinlock_assets_tests.faults.helpers import child_env, start_child, temp_files, write_spec_file

# (code location, run config, what its log says): the project's default runs every step of a run in its
# process; the multiprocess location runs each step in its own process, forked from a server that has
# the location preloaded (spawning would re-import torch and dagster per step: seconds each on 2 cores).
_MULTIPROCESS_LOCATION = "spinlock_assets_tests.faults.multiprocess_location"
_FORKSERVER = {"start_method": {"forkserver": {"preload_modules": [_MULTIPROCESS_LOCATION]}}}
EXECUTORS = {
    "in-process-runs": ("spinlock_assets.definitions", {}, "Executing steps in process"),
    "multiprocess": (
        _MULTIPROCESS_LOCATION,
        {"execution": {"config": _FORKSERVER}},
        "using multiprocess executor",
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("executor", EXECUTORS)
def test_shards_materialized_concurrently_are_all_valid_and_replay_exactly(tmp_path, executor):
    location, run_config, executor_line = EXECUTORS[executor]
    spec, data_root, home = tiny_spec(), tmp_path / "data", tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    with dg.DagsterInstance.from_config(str(home)):
        pass  # create the instance's SQLite schema once, as a deployment's instance exists before its runs
    env = child_env(write_spec_file(spec, tmp_path / "spec.json"), data_root, DAGSTER_HOME=str(home))
    command = ["-m", "dagster", "asset", "materialize", "-m", location, "--select", ",".join(GENERATION)]
    command += ["--config-json", json.dumps(run_config)] if run_config else []
    children = {
        key: start_child([*command, "--partition", key], env, tmp_path / f"{key}.log") for key in SHARDS
    }
    for key, child in children.items():
        assert child.wait(timeout=300) == 0, (tmp_path / f"{key}.log").read_text()[-5000:]
    for key in SHARDS:  # the intended executor ran them
        assert executor_line in (tmp_path / f"{key}.log").read_text()

    with dg.DagsterInstance.from_config(str(home)) as instance:
        runs = instance.get_run_records()
        assert len(runs) == 3 and all(r.dagster_run.status == dg.DagsterRunStatus.SUCCESS for r in runs)
        for run in runs:  # every check of every run was recorded, and passed (read from the event log:
            # the console of a multiprocess run may end before a step's last event is printed)
            events = instance.all_logs(
                run.dagster_run.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION
            )
            evaluations = [e.dagster_event.event_specific_data for e in events]
            assert len(evaluations) == 5 and all(e.passed for e in evaluations), evaluations
        assert instance.get_materialized_partitions(dg.AssetKey("base_features")) == set(SHARDS)
    assert temp_files(data_root) == []
    for asset in GENERATION:
        for key in SHARDS:
            assert validate_shard_file(data_root / asset / f"{key}.h5") == []

    with dg.instance_for_test() as instance:
        assert materialize(tiny_definitions(spec, data_root), ["dataset"], instance).success
    assert validate_dataset_file(data_root / "dataset.h5") == []
    with open_dataset(data_root) as reader:
        statuses = [verify(reader.operator(i)).status for i in range(spec.n_operators)]
    assert statuses == ["exact"] * spec.n_operators
