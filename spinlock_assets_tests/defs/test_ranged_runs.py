"""Runs sized by work (``defs/ranges.py``): one run over a range of shards gives every shard the files, the
data version, the staleness and the check results it would have had in a run of its own."""

from __future__ import annotations

from typing import Any

import dagster as dg
import h5py
import numpy as np
import pytest
from dagster._core.definitions.data_version import DATA_VERSION_TAG, CachingStaleStatusResolver, StaleStatus
from dagster._core.event_api import PartitionKeyFilter
from dagster._core.loader import LoadingContextForTest

from spinlock_assets.core.budget import estimated_operator_seconds
from spinlock_assets.defs.jobs import FEATURES_JOB, GENERATION_JOB
from spinlock_assets.defs.main_job import consecutive, partition_args
from spinlock_assets.defs.ranges import MAX_SHARDS_PER_RUN, shards_per_run
from spinlock_assets.defs.verification.checks import NONFINITE_CHECK, REPLAY_CHECK
from spinlock_assets_tests.conftest import tiny_spec
from spinlock_assets_tests.defs.helpers import GENERATION, SHARDS, tiny_definitions

FAMILIES = ["spectral_features", "dynamics_features"]  # one derived from base series, one replayed
SHARD_ASSETS = [*GENERATION, *FAMILIES]


def _run(defs: dg.Definitions, job: str, shards: list[str], instance) -> dg.ExecuteInProcessResult:
    selected = defs.resolve_job_def(job)
    if job == FEATURES_JOB:
        selected = selected.get_subset(asset_selection={dg.AssetKey(f) for f in FAMILIES})
    result = selected.execute_in_process(instance=instance, **partition_args(shards))
    assert result.success
    return result


def _versions(instance, asset: str, shards: list[str] = SHARDS) -> dict[str, str]:
    latest = {
        key: instance.get_latest_data_version_record(dg.AssetKey(asset), partition_key=key) for key in shards
    }
    return {key: record.asset_materialization.tags[DATA_VERSION_TAG] for key, record in latest.items()}


@pytest.fixture(scope="module")
def alone_and_ranged(tmp_path_factory):
    """The three shards materialized once shard by shard and once as one range, each on its own root and
    instance (generation, then two derived families)."""
    roots = {way: tmp_path_factory.mktemp(way) for way in ("alone", "ranged")}
    with dg.instance_for_test() as alone, dg.instance_for_test() as ranged:
        defs = {way: tiny_definitions(tiny_spec(), root) for way, root in roots.items()}
        for job in (GENERATION_JOB, FEATURES_JOB):
            for key in SHARDS:
                _run(defs["alone"], job, [key], alone)
            runs = _run(defs["ranged"], job, SHARDS, ranged)
        yield roots, {"alone": alone, "ranged": ranged}, defs["ranged"], runs


def _contents(path) -> str:
    """Every dataset's dtype, shape and bytes and every attribute of an HDF5 file but its creation time
    (which its raw bytes hold too)."""
    with h5py.File(path, "r") as handle:
        contents: dict[str, Any] = {"/": {k: v for k, v in handle.attrs.items() if k != "created_utc"}}

        def visit(name: str, node: Any) -> None:
            if isinstance(node, h5py.Dataset):
                data = np.asarray(node[()])
                contents[name] = (data.dtype.str, data.shape, data.tobytes(), dict(node.attrs))

        handle.visititems(visit)
    return repr(contents)


def test_a_shard_is_byte_identical_materialized_alone_or_in_a_range(alone_and_ranged):
    roots, _, _, _ = alone_and_ranged
    for asset in SHARD_ASSETS:
        for key in SHARDS:
            alone, ranged = (_contents(roots[way] / asset / f"{key}.h5") for way in ("alone", "ranged"))
            assert alone == ranged, (asset, key)


def test_every_shard_of_a_range_has_its_own_data_version_the_one_it_has_alone(alone_and_ranged):
    _, instances, _, _ = alone_and_ranged
    for asset in SHARD_ASSETS:
        ranged = _versions(instances["ranged"], asset)
        assert ranged == _versions(instances["alone"], asset)
        assert len(set(ranged.values())) == len(SHARDS)  # not one version shared by the range


def test_every_shard_of_a_range_records_its_own_file(alone_and_ranged):
    roots, instances, _, _ = alone_and_ranged
    for asset in SHARD_ASSETS:
        for key in SHARDS:
            record = instances["ranged"].get_latest_data_version_record(dg.AssetKey(asset), partition_key=key)
            metadata = record.asset_materialization.metadata
            assert metadata["path"].value == str(roots["ranged"] / asset / f"{key}.h5")
            assert len(metadata["sha256"].value) == 64 and metadata["operators"].value == 4


def _stale(instance, defs: dg.Definitions, asset: str) -> dict[str, StaleStatus]:
    resolver = CachingStaleStatusResolver(
        instance, defs.resolve_asset_graph(), LoadingContextForTest(instance)
    )
    return {key: resolver.get_status(dg.AssetKey(asset), key) for key in SHARDS}


def test_staleness_after_a_range_is_per_shard(alone_and_ranged):
    _, instances, defs, _ = alone_and_ranged
    instance = instances["ranged"]
    for asset in SHARD_ASSETS:  # the provenance each shard recorded points at its own upstream shards
        assert set(_stale(instance, defs, asset).values()) == {StaleStatus.FRESH}, asset
    # One upstream shard changes: only that shard is stale downstream.
    instance.report_runless_asset_event(
        dg.AssetMaterialization(
            "operator_parameters", partition=SHARDS[1], tags={DATA_VERSION_TAG: "changed"}
        )
    )
    for asset in ("initial_conditions", "base_features"):
        stale = _stale(instance, defs, asset)
        assert stale == {
            SHARDS[0]: StaleStatus.FRESH,
            SHARDS[1]: StaleStatus.STALE,
            SHARDS[2]: StaleStatus.FRESH,
        }


def test_checks_of_a_range_are_recorded_per_shard(alone_and_ranged):
    _, instances, _, _ = alone_and_ranged
    instance = instances["ranged"]
    generation_run = instance.get_run_by_id(
        next(
            r.dagster_run.run_id
            for r in instance.get_run_records()
            if r.dagster_run.job_name == GENERATION_JOB
        )
    )
    for check in (REPLAY_CHECK, NONFINITE_CHECK):
        key = dg.AssetCheckKey(dg.AssetKey("base_features"), check)
        for shard in SHARDS:
            record = instance.event_log_storage.get_latest_asset_check_execution_by_key(
                [key], partition_filter=PartitionKeyFilter(key=shard)
            )[key]
            evaluation = record.event.asset_check_evaluation
            assert record.run_id == generation_run.run_id and evaluation.partition == shard
            assert evaluation.passed
        if check == REPLAY_CHECK:
            assert evaluation.metadata["exact"].value == 2  # two operators of that shard replayed


def test_a_range_is_one_run_per_job(alone_and_ranged):
    _, instances, _, _ = alone_and_ranged
    jobs = sorted(r.dagster_run.job_name for r in instances["ranged"].get_run_records())
    assert jobs == sorted([GENERATION_JOB, FEATURES_JOB])
    assert len(instances["alone"].get_run_records()) == 2 * len(SHARDS)


def test_runs_are_sized_by_estimated_work():
    cheap = tiny_spec(grid=(8, 8), steps=4, realizations=1)
    costly = tiny_spec(grid=(64, 64), steps=64, realizations=5)
    assert estimated_operator_seconds(costly) > 10 * estimated_operator_seconds(cheap)
    assert shards_per_run(cheap, 60) > shards_per_run(costly, 60) >= 1
    assert shards_per_run(cheap, 0) == 1  # 0 s of work per run: one shard per run
    assert shards_per_run(cheap, 1e9) == MAX_SHARDS_PER_RUN
    defs = tiny_definitions(cheap, "unused", run_seconds=60)
    policy = defs.resolve_asset_graph().get(dg.AssetKey("base_features")).backfill_policy
    assert policy.max_partitions_per_run == shards_per_run(cheap, 60)


def test_consecutive_shards_are_cut_into_runs_of_at_most_k():
    keys = [f"s{i}" for i in range(8)]
    assert consecutive(["s0", "s1", "s2", "s4", "s5", "s7"], keys, 2) == [
        ["s0", "s1"],
        ["s2"],
        ["s4", "s5"],
        ["s7"],
    ]
    assert consecutive(keys, keys, 100) == [keys]
    assert consecutive([], keys, 3) == []


def test_a_bad_run_seconds_setting_is_refused_naming_it(monkeypatch):
    from spinlock_assets.definitions import definitions_from_environment

    for bad in ("soon", "-5", "nan"):
        monkeypatch.setenv("SPINLOCK_RUN_SECONDS", bad)
        with pytest.raises(ValueError, match="SPINLOCK_RUN_SECONDS"):
            definitions_from_environment()


def test_the_main_job_suggests_larger_shards_only_when_they_are_cheap():
    from spinlock_assets.core.spec import DEFAULT_SPEC_PATH, load_spec
    from spinlock_assets.defs.main_job import small_shard_hint

    assert small_shard_hint(load_spec(DEFAULT_SPEC_PATH)) is None  # ~10 s per shard
    hint = small_shard_hint(tiny_spec(grid=(8, 8), steps=4, realizations=1))
    assert hint is not None and "shards of 1024 or more operators" in hint


def test_a_backfill_run_of_one_shard_is_a_range_of_one(tmp_path, alone_and_ranged):
    """The daemon launches a one-shard run of a multi-run backfill with range tags, not a partition key."""
    from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

    _, instances, _, _ = alone_and_ranged
    defs = tiny_definitions(tiny_spec(), tmp_path)
    tags = {ASSET_PARTITION_RANGE_START_TAG: SHARDS[1], ASSET_PARTITION_RANGE_END_TAG: SHARDS[1]}
    with dg.instance_for_test() as instance:
        for job in (GENERATION_JOB, FEATURES_JOB):
            assert defs.resolve_job_def(job).execute_in_process(instance=instance, tags=tags).success
        for asset in SHARD_ASSETS:
            assert (tmp_path / asset / f"{SHARDS[1]}.h5").is_file()
            assert _versions(instance, asset, [SHARDS[1]]) == _versions(
                instances["alone"], asset, [SHARDS[1]]
            )
