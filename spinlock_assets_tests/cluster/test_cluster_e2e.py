"""End-to-end on the real deployment: PostgreSQL instance, Redis broker, two warm Celery run workers, a
gRPC code server, the webserver and the daemon, all started here by ``spinlock_assets.cluster``.

One deployment is shared by the module (starting one costs ~30 s on two cores). The tests run in order
on disjoint partitions of one data root, so each later test also proves that what the earlier ones
stored does not change: 8 shards through the daemon, 2 with a worker SIGKILLed mid-run, 2 with Redis
and 2 with PostgreSQL stopped mid-backfill. Runs are sized by work, here two shards per run.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.events import DagsterEventType, RunFailureReason
from dagster._core.storage.dagster_run import DagsterRunStatus
from dagster._core.storage.tags import RUN_FAILURE_REASON_TAG

from spinlock_assets.cluster.deployment import Deployment
from spinlock_assets.cluster.lifecycle import down, up
from spinlock_assets.cluster.tags import FINGERPRINT_ID_TAG, FINGERPRINT_TAG, WORKER_TAG
from spinlock_assets.core.budget import estimated_operator_seconds
from spinlock_assets.core.fingerprint import fingerprint_id
from spinlock_assets.core.verification import verify
from spinlock_assets.definitions import build_definitions
from spinlock_assets.defs.ranges import shards_per_run
from spinlock_assets.storage import ShardStore
from spinlock_assets.storage.operator_arrays import stored_records
from spinlock_assets_tests.conftest import tiny_spec

from .helpers import (
    GENERATION_ASSETS,
    array_contents,
    backfill_runs,
    cluster_instance,
    launch_backfill,
    materialized_partitions,
    poll,
    run_partitions,
    temp_files,
    wait_backfill,
)

pytestmark = pytest.mark.slow

SHARD_SIZE = 64  # a base_features step of ~1 s: long enough to be killed in the middle
SPEC = tiny_spec(n_operators=14 * SHARD_SIZE, shard_size=SHARD_SIZE, grid=(8, 8), channels=1, steps=4,
                 realizations=1, name="cluster")  # fmt: skip
KEYS = [f"ops-{i * SHARD_SIZE:06d}-{(i + 1) * SHARD_SIZE - 1:06d}" for i in range(14)]
FIRST, KILLED = KEYS[:8], KEYS[8:10]
OUTAGE = {"redis": KEYS[10:12], "postgres": KEYS[12:14]}
OUTAGE_S = 5
BACKFILL_TIMEOUT_S = 300
# Runs sized by work: two shards per run (the default would put all eight in one run, on one worker).
RUN_SECONDS = 2.5 * SHARD_SIZE * estimated_operator_seconds(SPEC)
RUN_TIMEOUT_S = 120  # one run of two shards here: ~5 s on 2 quiet cores, generous for a loaded machine


@pytest.fixture(scope="module")
def deployment(tmp_path_factory, cluster_services: None) -> Iterator[Deployment]:
    directory = tmp_path_factory.mktemp("cluster")
    spec_path = directory / "spec.json"
    spec_path.write_text(SPEC.to_json())
    saved = os.environ.get("SPINLOCK_RUN_SECONDS")
    os.environ["SPINLOCK_RUN_SECONDS"] = str(RUN_SECONDS)  # every process of the deployment reads it
    try:
        deployment = up(directory / "deployment", cpu_workers=2, spec=str(spec_path))
    finally:
        os.environ.pop("SPINLOCK_RUN_SECONDS")
        if saved is not None:
            os.environ["SPINLOCK_RUN_SECONDS"] = saved
    try:
        yield deployment
    finally:
        down(deployment.directory)  # raises if any process had to be SIGKILLed
        shutil.rmtree(deployment.postgres_dir, ignore_errors=True)
    # Nothing of it is left: no process works in its folders (every process it started, Redis and
    # PostgreSQL included, runs in one of them).
    folders = (str(deployment.directory), deployment.postgres_dir)
    assert [cwd for cwd in _working_directories() if cwd.startswith(folders)] == []


def _working_directories() -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                found.append(os.readlink(entry / "cwd"))
    return found


@pytest.fixture(scope="module")
def instance(deployment: Deployment) -> Iterator[dg.DagsterInstance]:
    with cluster_instance(deployment) as instance:
        yield instance


def data_root(deployment: Deployment) -> Path:
    return Path(deployment.environment()["SPINLOCK_DATA_ROOT"])


def file_states(root: Path) -> dict[Path, tuple[str, int]]:
    """sha256 and modification time of every published file under ``root``."""
    return {
        path: (hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns)
        for path in sorted(root.rglob("*.h5"))
    }


def replay_statuses(root: Path, keys: list[str]) -> set[str]:
    """Replay every operator of the shards ``keys`` from their files; the set of verification statuses."""
    store = ShardStore(root)
    statuses = set()
    for key in keys:
        params, ics, base = (store.read(asset, key) for asset in GENERATION_ASSETS)
        records = stored_records(
            SPEC,
            {name: array.data for name, array in params.arrays.items()},
            {name: array.data for name, array in ics.arrays.items()},
            {name: array.data for name, array in base.arrays.items()},
            json.loads(base.attrs["fingerprint_json"]),
        )
        statuses |= {verify(record).status for record in records}
    return statuses


def assert_complete_and_exact(instance: dg.DagsterInstance, root: Path, keys: list[str]) -> None:
    for asset in GENERATION_ASSETS:
        counts = materialized_partitions(instance, asset)
        assert {key: counts.get(key) for key in keys} == dict.fromkeys(keys, 1), asset
        assert sorted(p.name for p in (root / asset).iterdir() if p.name in {f"{k}.h5" for k in keys}) == [
            f"{key}.h5" for key in keys
        ]
    assert replay_statuses(root, keys) == {"exact"}
    assert temp_files(root) == []


def test_backfill_runs_on_two_warm_workers_once_per_shard_and_bit_identical_to_in_process(
    deployment: Deployment, instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    backfill_id = launch_backfill(deployment, FIRST)
    assert wait_backfill(instance, backfill_id, BACKFILL_TIMEOUT_S) == "COMPLETED_SUCCESS"
    runs = backfill_runs(instance, backfill_id)
    assert sorted(key for run in runs for key in run_partitions(run, KEYS)) == FIRST
    assert len(runs) == len(FIRST) // shards_per_run(SPEC, RUN_SECONDS) == 4  # ranges of two shards
    assert {run.status for run in runs} == {DagsterRunStatus.SUCCESS}
    assert {run.tags[WORKER_TAG].split("@")[0] for run in runs} == {"cpu1", "cpu2"}  # both workers ran

    root = data_root(deployment)
    assert_complete_and_exact(instance, root, FIRST)

    # The worker's fingerprint is on its runs, and is the one the shards it wrote record.
    for run in runs:
        fingerprint = json.loads(run.tags[FINGERPRINT_TAG])
        assert run.tags[FINGERPRINT_ID_TAG] == fingerprint_id(fingerprint)
        for key in run_partitions(run, KEYS):
            [record] = instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=dg.AssetKey("base_features"), asset_partitions=[key]), limit=1
            ).records
            assert record.run_id == run.run_id
            assert record.asset_materialization.metadata["fingerprint"].value == fingerprint

    # The same partitions materialized in this process, into another root: the same arrays, bit for bit
    # (the files' own bytes differ: they record their creation time).
    local_root = tmp_path / "in_process"
    defs = build_definitions(SPEC, local_root)
    with dg.instance_for_test() as local_instance:
        for key in FIRST:
            result = dg.materialize(
                list(defs.assets), selection=GENERATION_ASSETS, partition_key=key,
                resources=defs.resources, instance=local_instance,
            )  # fmt: skip
            assert result.success
    for asset in GENERATION_ASSETS:
        for key in FIRST:
            cluster_file, local_file = root / asset / f"{key}.h5", local_root / asset / f"{key}.h5"
            assert array_contents(cluster_file) == array_contents(local_file), f"{asset} {key}"


def _pid_running_step(instance: dg.DagsterInstance, backfill_id: str, step: str) -> tuple[str, int] | None:
    for run in backfill_runs(instance, backfill_id):
        for record in instance.get_records_for_run(run.run_id, of_type=DagsterEventType.STEP_START).records:
            event = record.event_log_entry.dagster_event
            if event is not None and event.step_key == step:
                return run.run_id, event.pid
    return None


def test_a_worker_killed_mid_run_fails_the_run_and_its_retry_completes_the_shard(
    deployment: Deployment, instance: dg.DagsterInstance
) -> None:
    root = data_root(deployment)
    before = file_states(root)
    backfill_id = launch_backfill(deployment, KILLED)
    run_id, pid = poll(
        lambda: _pid_running_step(instance, backfill_id, "base_features"),
        timeout=BACKFILL_TIMEOUT_S, what="a run in its base_features step", interval=0.05,
    )  # fmt: skip
    os.kill(pid, signal.SIGKILL)  # the worker's pool process, in the middle of the rollout

    assert wait_backfill(instance, backfill_id, BACKFILL_TIMEOUT_S) == "COMPLETED_SUCCESS"
    runs = backfill_runs(instance, backfill_id)
    killed = instance.get_run_by_id(run_id)
    assert killed is not None and killed.status == DagsterRunStatus.FAILURE
    [retry] = [run for run in runs if run.tags.get("dagster/parent_run_id") == run_id]
    assert retry.status == DagsterRunStatus.SUCCESS
    assert run_partitions(retry, KEYS) == run_partitions(killed, KEYS) == KILLED

    assert_complete_and_exact(instance, root, KILLED)
    assert {path: state for path, state in file_states(root).items() if path in before} == before
    assert all(deployment.alive(name) for name in deployment.workers())  # Celery replaced the process


def outage_timeout(instance: dg.DagsterInstance) -> float:
    """The longest a backfill of two shards (one run) may take after an outage: a run the daemon
    marked STARTING but could not hand to Celery is failed after the instance's start timeout (plus a
    monitoring poll), and its retry then runs."""
    return (
        instance.run_monitoring_start_timeout_seconds
        + 2 * instance.run_monitoring_poll_interval_seconds
        + RUN_TIMEOUT_S
    )


@pytest.mark.parametrize("service", ["redis", "postgres"])
def test_a_service_stopped_mid_backfill_then_restarted_loses_nothing(
    deployment: Deployment, instance: dg.DagsterInstance, service: str
) -> None:
    root = data_root(deployment)
    before = file_states(root)
    keys = OUTAGE[service]
    backfill_id = launch_backfill(deployment, keys)

    def started() -> list | None:
        return [
            r for r in backfill_runs(instance, backfill_id) if r.status == DagsterRunStatus.STARTED
        ] or None

    poll(started, timeout=BACKFILL_TIMEOUT_S, what="a run in a worker", interval=0.2)
    server = deployment.redis if service == "redis" else deployment.postgres
    server.stop()  # Redis: launches fail. PostgreSQL: the running run cannot record its events and fails.
    time.sleep(OUTAGE_S)
    server.start()

    status = wait_backfill(instance, backfill_id, outage_timeout(instance))
    missing = [k for k in keys if k not in materialized_partitions(instance, "base_features")]
    runs = backfill_runs(instance, backfill_id)
    retries = [r.run_id for r in runs if "dagster/parent_run_id" in r.tags]
    reasons = {
        r.run_id[:8]: r.tags.get(RUN_FAILURE_REASON_TAG) for r in runs if r.status == DagsterRunStatus.FAILURE
    }
    print(
        f"after the {service} restart: backfill {status}, {len(retries)} retried runs, failed runs {reasons}"
    )
    print(f"missing {missing}")
    # A run a worker received rides the outage out, or is failed by the worker when it cannot start it:
    # only a run the daemon could not hand to Celery (so no worker tagged it) is left to the start timeout.
    timed_out = [
        r for r in runs if r.tags.get(RUN_FAILURE_REASON_TAG) == RunFailureReason.START_TIMEOUT.value
    ]
    assert [r.run_id for r in timed_out if WORKER_TAG in r.tags] == []
    if status != "COMPLETED_SUCCESS":
        # It failed clearly: every failed run says why, and a new backfill of what is missing completes it.
        failed = [r for r in backfill_runs(instance, backfill_id) if r.status == DagsterRunStatus.FAILURE]
        assert failed and missing
        resumed = launch_backfill(deployment, missing)
        assert wait_backfill(instance, resumed, outage_timeout(instance)) == "COMPLETED_SUCCESS"
    else:
        assert not missing

    assert_complete_and_exact(instance, root, keys)
    assert {path: state for path, state in file_states(root).items() if path in before} == before
    assert all(deployment.alive(name) for name in deployment.processes)  # every process rode it out
