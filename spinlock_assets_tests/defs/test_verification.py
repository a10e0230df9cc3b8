"""Asset checks, the verify_now job and the verification schedule, through Dagster."""

from __future__ import annotations

import datetime
import time

import dagster as dg
import h5py
import pytest
from dagster._core.event_api import PartitionKeyFilter

from spinlock_assets.core.rotation import rotation_period, rotation_sample
from spinlock_assets.defs.shard_assets import recorded_sha256
from spinlock_assets.defs.verification.checks import NONFINITE_CHECK, REPLAY_CHECK
from spinlock_assets.defs.verification.verify_now import (
    VERIFY_OP,
    VerifyConfig,
    current_rotation,
    plan_verification,
)
from spinlock_assets_tests.conftest import tiny_spec
from spinlock_assets_tests.defs.helpers import GENERATION, SHARDS, generate, tiny_definitions

REPLAY_KEY = dg.AssetCheckKey(dg.AssetKey("base_features"), REPLAY_CHECK)
TICK = datetime.datetime(2026, 11, 26, 3, tzinfo=datetime.timezone.utc)


def _verify_now(defs, instance, **config):
    """One verify_now run (as launched from the Launchpad) with ``config``; its result."""
    return defs.resolve_job_def("verify_now").execute_in_process(
        instance=instance, run_config={"ops": {VERIFY_OP: {"config": config}}}, raise_on_error=False
    )


def _evaluations(result) -> dict[tuple[str, str, str], dg.AssetCheckEvaluation]:
    return {
        (e.asset_key.path[-1], e.asset_check_key.name, e.partition): e
        for e in result.get_asset_check_evaluations()
    }


def _summary(result) -> dict[str, object]:
    (output,) = [e for e in result.all_events if e.event_type_value == "STEP_OUTPUT"]
    return {key: value.value for key, value in output.step_output_data.metadata.items()}


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
    # integrity of the files just written is left to verify_now (jobs.build_jobs)
    assert names == [("base_features", NONFINITE_CHECK), ("base_features", REPLAY_CHECK)]
    assert all(e.passed and e.partition == SHARDS[1] for e in evaluations)


def test_verify_now_with_its_defaults_checks_the_rotation_and_records_results_per_shard(generated):
    defs, instance, _ = generated
    result = _verify_now(defs, instance, rotation=3, operator_budget=4, file_budget=100)
    assert result.success
    evaluations = _evaluations(result)
    assert all(e.passed for e in evaluations.values())
    # 4 operators spread over the 12 (one every 3); files of every shard (feature families never materialized)
    replayed = {key[2]: e for key, e in evaluations.items() if key[1] == REPLAY_CHECK}
    assert sorted(replayed) == SHARDS
    assert [replayed[key].metadata["verified_operators"].value for key in SHARDS] == ["0, 3", "6", "9"]
    files = sorted((asset, key) for asset, name, key in evaluations if name == "shard_file_intact")
    assert files == sorted((asset, key) for asset in GENERATION for key in SHARDS)
    summary = _summary(result)
    assert {k: summary[k] for k in ("operators_verified", "exact", "mismatched", "diverged")} == {
        "operators_verified": 4,
        "exact": 4,
        "mismatched": 0,
        "diverged": 0,
    }
    assert all(isinstance(value, (int, float)) for value in summary.values())  # plain numbers, no JSON
    assert summary["rotations_to_replay_every_operator"] == 3 and summary["files_checked"] == 9
    # recorded per partition, like a partitioned check run (read back from the instance)
    record = instance.event_log_storage.get_latest_asset_check_execution_by_key(
        [REPLAY_KEY], partition_filter=PartitionKeyFilter(key=SHARDS[1])
    )[REPLAY_KEY]
    assert record.run_id == result.run_id and record.partition == SHARDS[1]


def test_verify_now_replays_exactly_the_named_operators(generated):
    defs, instance, _ = generated
    result = _verify_now(defs, instance, operators=[10, 11])
    replay = _evaluations(result)[("base_features", REPLAY_CHECK, SHARDS[2])]
    assert result.success and replay.passed
    assert replay.metadata["verified_operators"].value == "10, 11" and replay.metadata["exact"].value == 2


def test_a_forged_digest_fails_the_run_as_tampering_with_the_operator_named(generated):
    """A digest overwritten while the series still matches the replay bit for bit: no real change of
    numerics does that, so the check reports tampering (an error), not a mismatch."""
    defs, instance, root = generated
    with h5py.File(root / "base_features" / f"{SHARDS[0]}.h5", "r+") as f:
        f["digests"][1, 0] = b"f" * 64
    result = _verify_now(defs, instance, shards=[SHARDS[0]], operator_budget=4)
    assert not result.success
    evaluation = _evaluations(result)[("base_features", REPLAY_CHECK, SHARDS[0])]
    assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.ERROR
    assert evaluation.metadata["tampered"].value == 1 and evaluation.metadata["mismatched"].value == 0
    assert evaluation.metadata["tampered_operators"].value == "1"
    assert _summary(result)["tampered"] == 1


def test_integrity_detects_a_shard_changed_after_materialization(generated):
    defs, instance, root = generated
    with h5py.File(root / "initial_conditions" / f"{SHARDS[1]}.h5", "r+") as f:
        f["fields"][0, 0, 0, 0] += 1.0
    result = _verify_now(defs, instance, shards=[SHARDS[1]])
    evaluation = _evaluations(result)[("initial_conditions", "shard_file_intact", SHARDS[1])]
    assert not result.success and not evaluation.passed
    assert "sha256" in evaluation.metadata["problems"].value
    assert evaluation.metadata["problem_count"].value == 1


def test_never_materialized_shards_and_families_get_no_check_result(tmp_path):
    with dg.instance_for_test() as instance:
        defs = tiny_definitions(tiny_spec(), tmp_path)
        generate(defs, instance, shards=[SHARDS[1]])
        result = _verify_now(defs, instance, operator_budget=12, file_budget=100)
    assert result.success
    evaluations = _evaluations(result)
    assert {key[2] for key in evaluations} == {SHARDS[1]}  # no green check on shards never generated
    assert {key[0] for key in evaluations} == set(GENERATION)  # nor on feature families never replayed
    assert _summary(result)["operators_verified"] == 4


def test_rotations_spread_the_budget_and_cover_every_item_once_per_period():
    n, budget = 1000, 64
    period = rotation_period(n, budget)
    samples = [rotation_sample(n, budget, tick) for tick in range(period)]
    assert period == 16 and all(len(sample) <= budget for sample in samples)
    assert sorted(i for sample in samples for i in sample) == list(range(n))  # each exactly once
    assert samples[0][1] - samples[0][0] == period  # spread evenly over the whole range
    assert rotation_sample(n, budget, period + 5) == samples[5]


def test_the_plan_is_bounded_by_the_budgets_whatever_n():
    for n_operators in (1_024, 1_000_000):
        spec = tiny_spec(n_operators=n_operators, shard_size=32)
        plan = plan_verification(VerifyConfig(operator_budget=64, file_budget=30), spec, 10, rotation=17)
        assert sum(map(len, plan.replays.values())) <= 64 and len(plan.file_shards) == 3


def test_schedule_requests_one_verify_now_run_for_the_rotation(generated):
    defs, instance, _ = generated
    context = dg.build_schedule_context(
        instance=instance, scheduled_execution_time=TICK, repository_def=defs.get_repository_def()
    )
    schedule = defs.resolve_schedule_def("verify_replay_sample")
    (request,) = schedule.evaluate_tick(context).run_requests
    assert request.job_name in (None, "verify_now") and schedule.job_name == "verify_now"
    rotation = request.run_config["ops"][VERIFY_OP]["config"]["rotation"]
    assert rotation == current_rotation(TICK.timestamp()) and request.run_key == f"verify-{rotation}"
    assert schedule.description


def test_schedule_skips_when_nothing_is_materialized(tmp_path):
    with dg.instance_for_test() as instance:
        defs = tiny_definitions(tiny_spec(), tmp_path)
        context = dg.build_schedule_context(instance=instance, scheduled_execution_time=TICK)
        result = defs.resolve_schedule_def("verify_replay_sample").evaluate_tick(context)
    assert not result.run_requests and "no materialized" in result.skip_message


@pytest.mark.slow
def test_a_tick_over_thousands_of_materialized_shards_launches_one_run_at_constant_cost(tmp_path):
    spec = tiny_spec(n_operators=64_000, shard_size=32)  # 2,000 shards
    defs = tiny_definitions(spec, tmp_path)
    keys = defs.resolve_job_def("generate_shards").partitions_def.get_partition_keys()
    schedule = defs.resolve_schedule_def("verify_replay_sample")
    store = defs.resources["dataset"].store
    with dg.instance_for_test() as instance:
        seconds, recorded_so_far = {}, 0
        for n_materialized in (100, len(keys)):
            for key in keys[recorded_so_far:n_materialized]:
                path = dg.MetadataValue.path(str(store.path("base_features", key)))
                metadata = {"sha256": "0" * 64, "path": path}
                instance.report_runless_asset_event(
                    dg.AssetMaterialization("base_features", partition=key, metadata=metadata)
                )
            context = dg.build_schedule_context(
                instance=instance, scheduled_execution_time=TICK, repository_def=defs.get_repository_def()
            )
            started = time.perf_counter()
            requests = schedule.evaluate_tick(context).run_requests
            seconds[n_materialized] = time.perf_counter() - started
            recorded_so_far = n_materialized
            assert len(requests) == 1  # one run per tick, whatever the number of shards
        assert len(instance.get_materialized_partitions(dg.AssetKey("base_features"))) == len(keys)
        # the run's queries touch the budget's shards only
        plan = plan_verification(VerifyConfig(), spec, 3, rotation=current_rotation(TICK.timestamp()))
        started = time.perf_counter()
        recorded = recorded_sha256(instance, store, "base_features", plan.file_shards)
        assert time.perf_counter() - started < 1.0 and sorted(recorded) == plan.file_shards
    assert max(seconds.values()) < 1.0, seconds
