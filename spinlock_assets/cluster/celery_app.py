"""The Celery app a run worker serves: ``celery -A spinlock_assets.cluster.celery_app worker -Q cpu``.

It is the app of the instance's own ``CeleryRunLauncher`` (broker, backend and settings come from
``$DAGSTER_HOME/dagster.yaml``, the one place they are configured) with dagster-celery's run task
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
from typing import Any

from celery import Celery
from celery.signals import task_prerun
from dagster import DagsterInstance
from dagster._grpc.types import ExecuteRunArgs
from dagster._serdes import unpack_value
from dagster_celery.launcher import CeleryRunLauncher
from dagster_celery.tags import DAGSTER_CELERY_TASK_ID_TAG
from dagster_celery.tasks import create_execute_job_task

from ..constants import DEVICE_ENV_VAR
from ..core.fingerprint import execution_fingerprint, fingerprint_id
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
execute_job = create_execute_job_task(app)

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


@task_prerun.connect
def _tag_run(task: Any = None, kwargs: dict | None = None, **_: Any) -> None:
    if task is None or task.name != execute_job.name or not kwargs:
        return
    run_id = unpack_value(kwargs["execute_job_args_packed"], as_type=ExecuteRunArgs).run_id
    instance = _instance()
    # add_run_tags rewrites the run's whole tag set (read, merge, write): wait until the launcher has
    # written the Celery task id tag, or one of the two writes would drop the other's tags, and run
    # monitoring cannot find a run's task without that tag.
    deadline = time.monotonic() + TASK_ID_TAG_TIMEOUT_S
    while time.monotonic() < deadline:
        run = instance.get_run_by_id(run_id)
        if run is None or run.tags.get(DAGSTER_CELERY_TASK_ID_TAG) == task.request.id:
            break
        time.sleep(0.02)
    instance.add_run_tags(run_id, {WORKER_TAG: str(task.request.hostname), **_worker_tags()})
