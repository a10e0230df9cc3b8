"""SIGKILL of a whole ``dagster dev`` (webserver, daemon, code server, run worker) mid-run: reopening the
instance as ``scripts/ui.sh`` does (``python -m spinlock_assets.defs.instance``) marks the dead run FAILURE
instead of leaving it STARTED forever (Dagster's default run launcher gives run monitoring no worker
health check), the shard it was writing is absent or whole, and relaunching finishes it."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys

import dagster as dg
import pytest
import yaml

from spinlock_assets.defs.instance import INSTANCE_YAML
from spinlock_assets.defs.jobs import GENERATION_JOB
from spinlock_assets.storage import ShardStore
from spinlock_assets.storage.store import pid_alive
from spinlock_assets_tests.conftest import tiny_spec
from spinlock_assets_tests.defs.helpers import GENERATION, SHARDS
from spinlock_assets_tests.e2e.dagster_dev import REPO_ROOT, DagsterDev, poll
from spinlock_assets_tests.faults.helpers import temp_files


def _worker_pid(dagster_home, run_id: str) -> int:
    """The pid of the run's worker process, from its engine events."""
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        events = instance.all_logs(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT)
    pids = [e.dagster_event.engine_event_data.metadata.get("pid") for e in events]
    return int([pid for pid in pids if pid is not None][-1].value)


def _monitoring_yaml() -> str:
    """The project's configuration without telemetry (DagsterDev writes it), polling every few seconds."""
    config = yaml.safe_load(INSTANCE_YAML)
    config.pop("telemetry")
    config["run_monitoring"]["poll_interval_seconds"] = 3
    config["run_retries"]["enabled"] = False  # the dead run itself must end FAILURE; relaunched below
    return yaml.safe_dump(config)


@pytest.mark.slow
def test_a_run_killed_with_dagster_dev_is_failed_by_monitoring_after_restart(tmp_path) -> None:
    spec = tiny_spec(grid=(48, 48), steps=160)  # a few seconds per operator: the run is killed mid-way
    first = DagsterDev.start(tmp_path, spec, instance_yaml=_monitoring_yaml())
    try:
        run_id = first.launch_run(GENERATION_JOB, tags={"dagster/partition": SHARDS[0]})
        poll(lambda: first.run(run_id)["status"] == "STARTED" or None, timeout=120, what="run start")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(first.process.pid, signal.SIGKILL)  # the orchestrator and its run die at once
        first.process.wait(timeout=30)
        first._stopped = True
        first._log_file.close()
    # The run worker may outlive the process group by a moment (another group, or not reaped yet): the
    # claim is about reopening once it is gone.
    worker = _worker_pid(first.dagster_home, run_id)
    poll(lambda: not pid_alive(worker) or None, timeout=60, what=f"run worker {worker} to exit")
    reopened = subprocess.run(
        [sys.executable, "-m", "spinlock_assets.defs.instance", str(first.dagster_home)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO_ROOT,
    )
    assert reopened.returncode == 0 and f"run {run_id}: its worker process is gone" in reopened.stderr
    second = DagsterDev.start(tmp_path, spec, instance_yaml=_monitoring_yaml())
    try:
        assert second.run(run_id)["status"] == "FAILURE"
        store = ShardStore(second.data_root)
        for asset in GENERATION:  # a shard is whole or absent, never half-written
            if store.exists(asset, SHARDS[0]):
                store.read(asset, SHARDS[0])
        store.remove_stale_temp_files("base_features", min_age_s=0)
        assert not [p for p in temp_files(second.data_root) if "base_features" in str(p)]
        rerun = second.launch_run(GENERATION_JOB, tags={"dagster/partition": SHARDS[0]})
        assert second.wait_run(rerun, timeout=300) == "SUCCESS"
    finally:
        second.stop()
