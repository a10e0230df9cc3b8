"""The Celery app a run worker serves: ``celery -A spinlock_assets.cluster.celery_app worker -Q cpu``.

It is the app of the instance's own ``CeleryRunLauncher`` (broker, backend and settings come from
``$DAGSTER_HOME/dagster.yaml``, the one place they are configured) with the launcher's run task
registered, so a worker executes whole runs in its warm pool process. Importing this module also
imports torch and the code location in the worker's parent process: the pool process forked from it
(again after a crash) starts with both loaded, and a run pays for neither.

Before each run the worker tags it with where it ran and under which numerics:
``spinlock/worker`` (the Celery node), ``spinlock/device`` and ``spinlock/fingerprint`` (the execution
fingerprint every shard it writes records), so the run list shows which worker and GPU made which data.

A run is STARTING from the daemon's launch until the worker records RUN_START, and run monitoring only
times STARTING runs out (it asks Celery about a run's task once the run is STARTED). A worker that dies on
a database error in between (PostgreSQL restarting) would leave its run STARTING for the whole start
timeout. So the worker rides out a short outage before the run starts (``OUTAGE_RETRY_S``), and a run it
could not start is reported failed, which run retries rerun at once.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import time
from collections.abc import Callable
from typing import TypeVar

import sqlalchemy.exc
from celery import Celery, Task
from dagster import DagsterInstance
from dagster._cli.api import _execute_run_command_body
from dagster._core.events import JobFailureData, RunFailureReason
from dagster._core.storage.dagster_run import DagsterRunStatus
from dagster._grpc.types import ExecuteRunArgs
from dagster._serdes import unpack_value
from dagster_celery.config import TASK_EXECUTE_JOB_NAME
from dagster_celery.launcher import CeleryRunLauncher
from dagster_celery.tags import DAGSTER_CELERY_TASK_ID_TAG
from dagster_postgres.utils import DagsterPostgresException
from dagster_shared.serdes.serdes import JsonSerializableValue

from ..core.fingerprint import execution_fingerprint, fingerprint_id
from ..defs.constants import DEVICE_ENV_VAR
from .tags import DEVICE_TAG, FINGERPRINT_ID_TAG, FINGERPRINT_TAG, WORKER_TAG

__all__ = ["app", "execute_job"]

TASK_ID_TAG_TIMEOUT_S = 10.0
# How long a run's worker keeps retrying the instance before giving up on starting the run. dagster-postgres
# retries only new connections, ~11 s in all, so one attempt may run that much past this budget: with the
# tag wait it stays well inside run monitoring's start_timeout_seconds (60 s, deploy/dagster.celery.yaml).
OUTAGE_RETRY_S = 20.0
# What an unreachable PostgreSQL raises: a refused or dropped connection (psycopg2's errors wrapped by
# SQLAlchemy), or dagster-postgres giving up its own connection retries.
OUTAGE_ERRORS = (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError, DagsterPostgresException)

T = TypeVar("T")
logger = logging.getLogger(__name__)


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


def _until_reachable(call: Callable[[], T], what: str, deadline: float) -> T:
    """``call()``, retried with backoff while the instance's database is unreachable, until ``deadline``
    (``time.monotonic()``); then its error is raised. Only for calls that are safe to repeat."""
    delay = 0.5
    while True:
        try:
            return call()
        except OUTAGE_ERRORS as error:
            if time.monotonic() + delay > deadline:
                raise
            logger.warning("%s: the instance is unreachable, retrying in %.1f s: %s", what, delay, error)
        time.sleep(delay)
        delay = min(2 * delay, 4.0)


def _fail_if_not_started(run_id: str, error: BaseException | None, deadline: float) -> None:
    """Report the run failed if it is still STARTING: this worker could not start it, and run monitoring
    would only fail it after the start timeout. Run retries then rerun it at once. Best effort: if the
    instance stays unreachable, the start timeout remains the bound."""

    def fail() -> None:
        instance = _instance()
        run = instance.get_run_by_id(run_id)
        if run is None or run.status not in (DagsterRunStatus.NOT_STARTED, DagsterRunStatus.STARTING):
            return  # started (its own failure is recorded) or already failed
        reason = f"{type(error).__name__}: {error}" if error is not None else "see the worker's log"
        instance.report_run_failed(
            run,
            f"The run worker could not start this run ({reason}); failed now so that run retries "
            "rerun it instead of run monitoring's start timeout.",
            JobFailureData(error=None, failure_reason=RunFailureReason.RUN_EXCEPTION),
        )

    try:  # a few seconds at least, but never so long that the start timeout could fail the run too
        _until_reachable(fail, f"failing run {run_id}", max(deadline, time.monotonic() + 5.0))
    except Exception:
        logger.exception("run %s stays STARTING until run monitoring's start timeout", run_id)


@app.task(bind=True, name=TASK_EXECUTE_JOB_NAME, track_started=True)
def execute_job(task: Task, execute_job_args_packed: JsonSerializableValue) -> int:
    """dagster-celery's run task (``dagster_celery.tasks.create_execute_job_task``, same name and
    arguments), except that it keeps one instance per worker process, where dagster-celery opens one per
    run (a new PostgreSQL storage: ~0.3 s of round trips at every run start), tags the run first, rides
    out a short database outage before the run starts and fails a run it could not start."""
    args = unpack_value(execute_job_args_packed, as_type=ExecuteRunArgs)
    deadline = time.monotonic() + OUTAGE_RETRY_S
    try:
        # Both are idempotent (the tags are merged), so repeating them after a dropped connection is safe.
        instance = _until_reachable(_instance, f"opening the instance for run {args.run_id}", deadline)
        _until_reachable(
            lambda: _tag_run(instance, args.run_id, str(task.request.id), str(task.request.hostname)),
            f"tagging run {args.run_id}",
            deadline,
        )
        result = _execute_run_command_body(
            run_id=args.run_id,
            instance=instance,
            write_stream_fn=lambda _event: None,  # events go to the instance; nobody reads a stream here
            set_exit_code_on_failure=args.set_exit_code_on_failure is not False,
        )
    except Exception as error:
        _fail_if_not_started(args.run_id, error, deadline)
        raise
    if result:  # the run failed, or never started (RUN_START could not be recorded)
        _fail_if_not_started(args.run_id, None, deadline)
    return result
