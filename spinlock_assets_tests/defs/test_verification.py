"""Asset checks and the verification schedule, through Dagster."""

from __future__ import annotations

import datetime

import dagster as dg
import h5py
import pytest

from spinlock_assets.core.verification import rotating_sample
from spinlock_assets.defs.verification.checks import NONFINITE_CHECK, REPLAY_CHECK, integrity_check_key
from spinlock_assets_tests.conftest import tiny_spec
from spinlock_assets_tests.defs.helpers import SHARDS, generate, tiny_definitions

REPLAY_KEY = dg.AssetCheckKey(dg.AssetKey("base_features"), REPLAY_CHECK)


def _run_checks(defs, instance, partition_key, check_keys, run_config=None):
    job = defs.resolve_job_def("verify_shards").get_subset(
        asset_selection=set(), asset_check_selection=set(check_keys)
    )
    result = job.execute_in_process(
        partition_key=partition_key, instance=instance, run_config=run_config, raise_on_error=False
    )
    return {e.asset_check_key.name: e for e in result.get_asset_check_evaluations()}


@pytest.fixture
def generated(tmp_path):
    with dg.instance_for_test() as instance:
        defs = tiny_definitions(tiny_spec(), tmp_path)
        generate(defs, instance)
        yield defs, instance, tmp_path


def test_generation_runs_the_replay_and_finite_checks_per_partition_and_they_pass(tmp_path):
    with dg.instance_for_test() as instance:
        defs = tiny_definitions(tiny_spec(), tmp_path)
        result = defs.resolve_job_def("generate_shards").execute_in_process(
            partition_key=SHARDS[1], instance=instance
        )
    evaluations = result.get_asset_check_evaluations()
    names = sorted((e.asset_key.path[-1], e.asset_check_key.name) for e in evaluations)
    # integrity of the files just written is left to the verification schedule (jobs.build_jobs)
    assert names == [("base_features", NONFINITE_CHECK), ("base_features", REPLAY_CHECK)]
    assert all(e.passed and e.partition == SHARDS[1] for e in evaluations)


def test_a_scheduled_verification_run_checks_every_shard_file_and_passes(generated):
    defs, instance, _ = generated
    context = dg.build_schedule_context(
        instance=instance,
        scheduled_execution_time=datetime.datetime(2026, 11, 26, 3, tzinfo=datetime.timezone.utc),
        repository_def=defs.get_repository_def(),
    )
    request = defs.resolve_schedule_def("verify_replay_sample").evaluate_tick(context).run_requests[1]
    job = defs.resolve_job_def("verify_shards").get_subset(
        asset_selection=set(), asset_check_selection=set(request.asset_check_keys)
    )
    result = job.execute_in_process(
        partition_key=request.partition_key, instance=instance, run_config=request.run_config
    )
    evaluations = result.get_asset_check_evaluations()
    assert {e.asset_check_key for e in evaluations} == set(request.asset_check_keys)
    assert all(e.passed for e in evaluations)


def test_replay_check_verifies_the_configured_window(generated):
    defs, instance, _ = generated
    config = {"ops": {f"base_features_{REPLAY_CHECK}": {"config": {"operators_per_shard": 2, "rotation": 1}}}}
    evaluation = _run_checks(defs, instance, SHARDS[2], [REPLAY_KEY], config)[REPLAY_CHECK]
    assert evaluation.passed
    assert evaluation.metadata["verified_indices"].value == [10, 11]
    assert evaluation.metadata["exact"].value == 2 and evaluation.metadata["mismatched"].value == []


def test_replay_check_fails_with_the_tampered_operator_named(generated):
    """A digest overwritten while the series still matches the replay bit for bit: no real change of
    numerics does that, so the check reports tampering (an error), not a mismatch."""
    defs, instance, root = generated
    with h5py.File(root / "base_features" / f"{SHARDS[0]}.h5", "r+") as f:
        f["digests"][1, 0] = b"f" * 64
    config = {"ops": {f"base_features_{REPLAY_CHECK}": {"config": {"operators_per_shard": 4, "rotation": 0}}}}
    evaluation = _run_checks(defs, instance, SHARDS[0], [REPLAY_KEY], config)[REPLAY_CHECK]
    assert not evaluation.passed
    assert evaluation.metadata["tampered"].value == [1] and evaluation.metadata["mismatched"].value == []
    assert evaluation.severity == dg.AssetCheckSeverity.ERROR


def test_integrity_check_detects_a_shard_changed_after_materialization(generated):
    defs, instance, root = generated
    with h5py.File(root / "initial_conditions" / f"{SHARDS[1]}.h5", "r+") as f:
        f["fields"][0, 0, 0, 0] += 1.0
    key = dg.AssetCheckKey(dg.AssetKey("initial_conditions"), "shard_file_intact")
    evaluation = _run_checks(defs, instance, SHARDS[1], [key])["shard_file_intact"]
    assert not evaluation.passed
    assert "sha256" in str(evaluation.metadata["problems"].value)


def test_rotating_windows_cover_every_operator_in_a_known_number_of_ticks():
    # shard 16..31 with 5 operators per tick: ceil(16/5) = 4 ticks cover it
    covered = set().union(*(rotating_sample(16, 32, 5, tick) for tick in range(4)))
    assert covered == set(range(16, 32))
    assert rotating_sample(16, 32, 5, 0) == rotating_sample(16, 32, 5, 4)
    assert rotating_sample(0, 4, 10, 3) == [0, 1, 2, 3]


def test_schedule_requests_one_check_only_run_per_materialized_shard(generated):
    defs, instance, _ = generated
    tick = datetime.datetime(2026, 11, 26, 3, tzinfo=datetime.timezone.utc)
    context = dg.build_schedule_context(
        instance=instance, scheduled_execution_time=tick, repository_def=defs.get_repository_def()
    )
    requests = defs.resolve_schedule_def("verify_replay_sample").evaluate_tick(context).run_requests
    assert [r.partition_key for r in requests] == SHARDS
    rotation = int(tick.timestamp() // 86_400)
    for request in requests:
        assert request.asset_selection == []
        assert set(request.asset_check_keys) == {
            REPLAY_KEY,
            dg.AssetCheckKey(dg.AssetKey("base_features"), NONFINITE_CHECK),
            *(integrity_check_key(a) for a in ("operator_parameters", "initial_conditions", "base_features")),
        }
        assert request.run_config["ops"][f"base_features_{REPLAY_CHECK}"]["config"]["rotation"] == rotation


def test_schedule_skips_when_nothing_is_materialized(tmp_path):
    with dg.instance_for_test() as instance:
        defs = tiny_definitions(tiny_spec(), tmp_path)
        context = dg.build_schedule_context(
            instance=instance, scheduled_execution_time=datetime.datetime(2026, 1, 1)
        )
        result = defs.resolve_schedule_def("verify_replay_sample").evaluate_tick(context)
    assert not result.run_requests and "no materialized" in result.skip_message
