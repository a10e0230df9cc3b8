"""The local Dagster instance survives concurrency and crashes: two first-time main jobs at once leave one
usable instance (it is created and migrated once, under a file lock), and its configuration turns on run
monitoring (dead runs are failed, not left STARTED) and run retries."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import dagster as dg
import pytest
import yaml

from spinlock_assets.defs.instance import INSTANCE_YAML, LOCK_FILE, exclusive, prepare_instance
from spinlock_assets_tests.conftest import tiny_spec
from spinlock_assets_tests.faults.helpers import child_env, start_child, write_spec_file


def test_the_instance_configuration_monitors_runs_and_retries_them(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    (tmp_path / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")  # what main_job wrote before
    prepare_instance(tmp_path)
    config = yaml.safe_load((tmp_path / "dagster.yaml").read_text())
    assert config == yaml.safe_load(INSTANCE_YAML)
    assert config["run_monitoring"]["max_resume_run_attempts"] == 0  # the default launcher cannot resume
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        assert instance.run_monitoring_enabled and instance.run_retries_enabled


def test_a_user_edited_configuration_is_kept(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    (tmp_path / "dagster.yaml").write_text("telemetry:\n  enabled: true\n")
    prepare_instance(tmp_path)
    assert (tmp_path / "dagster.yaml").read_text() == "telemetry:\n  enabled: true\n"


def test_the_lock_serializes_and_says_who_waits(tmp_path: Path, capsys) -> None:
    order: list[str] = []
    with exclusive(tmp_path / LOCK_FILE, what="first"):
        waiter = threading.Thread(target=_take, args=(tmp_path / LOCK_FILE, order))
        waiter.start()
        time.sleep(0.5)
        order.append("first done")
    waiter.join(timeout=30)
    assert order == ["first done", "second"]
    assert f"holds {tmp_path / LOCK_FILE}; waiting" in capsys.readouterr().err


def _take(path: Path, order: list[str]) -> None:
    import os

    # flock locks belong to the open file description, so a second open() in this process contends too.
    with exclusive(path, what=f"second (pid {os.getpid()})"):
        order.append("second")


@pytest.mark.slow
def test_two_first_time_main_jobs_at_once_leave_a_usable_instance(tmp_path: Path) -> None:
    home, spec = tmp_path / "home", write_spec_file(tiny_spec(), tmp_path / "spec.json")
    children = []
    for name in ("a", "b"):  # both create the instance at once; then the data root serializes them
        log = tmp_path / f"{name}.log"
        env = child_env(spec, tmp_path / "data")
        args = ["-m", "spinlock_assets.defs.main_job", "--dagster-home", str(home), "--verify-sample", "2"]
        children.append((start_child(args, env, log), log))
    for child, log in children:
        assert child.wait(timeout=600) == 0, log.read_text()[-3000:]
    with dg.DagsterInstance.from_config(str(home)) as instance:
        # one run over the 3 shards (runs sized by work) and dataset.h5, then dataset.h5 again (shards done)
        runs = instance.get_runs()
        assert len(runs) == 1 + 1 + 1 and all(run.status == dg.DagsterRunStatus.SUCCESS for run in runs)
    logs = [log.read_text() for _, log in children]
    assert sum("waiting for it to finish" in text for text in logs) >= 1, logs
