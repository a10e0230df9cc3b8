"""The Celery app a run worker serves: ``celery -A spinlock_assets.cluster.celery_app worker -Q cpu``.

It is the app of the instance's own ``CeleryRunLauncher`` (broker, backend and settings come from
``$DAGSTER_HOME/dagster.yaml``, the one place they are configured) with the launcher's run task
registered, so a worker executes whole runs in its warm pool process. Importing this module also
imports torch and the code location in the worker's parent process: the pool process forked from it
(again after a crash) starts with both loaded, and a run pays for neither.

Before each run the worker tags it with where it ran and under which numerics:
``spinlock/worker`` (the Celery node), ``spinlock/device`` and ``spinlock/fingerprint`` (the execution
fingerprint every shard it writes records), so the run list shows which worker and GPU made which data.
"""

from __future__ import annotations

import functools
import json
import os
import time

from celery import Celery, Task
from dagster import DagsterInstance
from dagster._cli.api import _execute_run_command_body
from dagster._grpc.types import ExecuteRunArgs
from dagster._serdes import unpack_value
from dagster_celery.config import TASK_EXECUTE_JOB_NAME
from dagster_celery.launcher import CeleryRunLauncher
from dagster_celery.tags import DAGSTER_CELERY_TASK_ID_TAG
from dagster_shared.serdes.serdes import JsonSerializableValue

from ..core.fingerprint import execution_fingerprint, fingerprint_id
from ..defs.constants import DEVICE_ENV_VAR
from .tags import DEVICE_TAG, FINGERPRINT_ID_TAG, FINGERPRINT_TAG, WORKER_TAG

__all__ = ["app", "execute_job"]

TASK_ID_TAG_TIMEOUT_S = 10.0


def _launcher_app() -> Celery:
    with DagsterInstance.get() as instance:
        launcher = instance.run_launcher
    if not isinstance(launcher, CeleryRunLauncher):
        raise RuntimeError(
            f"$DAGSTER_HOME/dagster.yaml configures {type(launcher).__name__}, not CeleryRunLauncher: "
            "a Celery run worker would never receive a run (see deploy/dagster.celery.yaml)"
        )
    return launcher.celery


app = _launcher_app()

# Warm start: the code location (and torch with it) is imported once here, in the worker's parent.
import torch  # noqa: E402, F401

import spinlock_assets.definitions  # noqa: E402, F401


@functools.cache
def _instance() -> DagsterInstance:
    # One instance per pool process, opened on its first run (after the fork, so no shared connections).
    return DagsterInstance.get()


@functools.cache
def _worker_tags() -> dict[str, str]:
    device = os.environ.get(DEVICE_ENV_VAR) or "cpu"
    fingerprint = execution_fingerprint(device)
    return {
        DEVICE_TAG: device,
        FINGERPRINT_TAG: json.dumps(fingerprint, sort_keys=True),
        FINGERPRINT_ID_TAG: fingerprint_id(fingerprint),
    }


def _tag_run(instance: DagsterInstance, run_id: str, task_id: str, hostname: str) -> None:
    # add_run_tags rewrites the run's whole tag set (read, merge, write): wait until the launcher has
    # written the Celery task id tag, or one of the two writes would drop the other's tags, and run
    # monitoring cannot find a run's task without that tag.
    deadline = time.monotonic() + TASK_ID_TAG_TIMEOUT_S
    while time.monotonic() < deadline:
        run = instance.get_run_by_id(run_id)
        if run is None or run.tags.get(DAGSTER_CELERY_TASK_ID_TAG) == task_id:
            break
        time.sleep(0.02)
    instance.add_run_tags(run_id, {WORKER_TAG: hostname, **_worker_tags()})


@app.task(bind=True, name=TASK_EXECUTE_JOB_NAME, track_started=True)
def execute_job(task: Task, execute_job_args_packed: JsonSerializableValue) -> int:
    """dagster-celery's run task (``dagster_celery.tasks.create_execute_job_task``, same name and
    arguments), except that it keeps one instance per worker process, where dagster-celery opens one per
    run (a new PostgreSQL storage: ~0.3 s of round trips at every run start), and tags the run first."""
    args = unpack_value(execute_job_args_packed, as_type=ExecuteRunArgs)
    instance = _instance()
    _tag_run(instance, args.run_id, str(task.request.id), str(task.request.hostname))
    return _execute_run_command_body(
        run_id=args.run_id,
        instance=instance,
        write_stream_fn=lambda _event: None,  # events go to the instance; nobody reads a stream here
        set_exit_code_on_failure=args.set_exit_code_on_failure is not False,
    )
