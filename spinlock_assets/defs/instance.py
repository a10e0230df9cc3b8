"""The project's local Dagster instance: its configuration, and creating it once under a file lock.

Two processes that create a fresh instance at once both run the SQLite schema migrations, and can leave
``runs.db`` with two alembic heads, unusable for good. So whoever creates or opens the instance for the
main job or the UI first takes ``fcntl.flock`` on ``$DAGSTER_HOME/.instance.lock``: the second process
waits (saying so) instead of racing. The configuration turns on run monitoring (runs that never start
are failed after a timeout) and run retries. Dagster's default run launcher cannot tell the monitor
whether a run's worker is alive, so a run whose process died with the orchestrator would stay STARTED
forever: opening the instance here (main job, ``scripts/ui.sh``) fails every in-progress run of this
local instance whose worker process no longer exists (``fail_dead_runs``).

``python -m spinlock_assets.defs.instance DAGSTER_HOME`` writes the configuration if missing and creates
the instance under the lock (``scripts/ui.sh`` runs it before ``dagster dev``).
"""

from __future__ import annotations

import fcntl
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

__all__ = ["INSTANCE_YAML", "exclusive", "fail_dead_runs", "prepare_instance"]

LOCK_FILE = ".instance.lock"
# What main_job wrote before run monitoring was configured: replaced, since a user never edited it.
_PREVIOUS_DEFAULT = "telemetry:\n  enabled: false\n"
INSTANCE_YAML = """\
# Written by spinlock_assets (defs/instance.py); edit freely, it is only written when missing.
telemetry:
  enabled: false
# Runs that never start are failed after start_timeout_seconds; the default run launcher can neither
# resume runs (attempts 0) nor report a dead worker, so spinlock_assets.defs.instance fails those when
# the instance is opened (scripts/ui.sh, the main job).
run_monitoring:
  enabled: true
  start_timeout_seconds: 180
  max_resume_run_attempts: 0
  poll_interval_seconds: 60
# A failed run is retried once (shards are written atomically, so a retry starts from a clean state).
run_retries:
  enabled: true
  max_retries: 1
"""


@contextmanager
def exclusive(path: Path, *, what: str, stream: TextIO | None = None) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` for the block; when another process holds it, say so on
    ``stream`` and wait for it. The lock dies with its process, so a killed holder never blocks anyone."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            message = f"{what}: {holder} holds {path}; waiting for it to finish"
            print(message, file=stream or sys.stderr, flush=True)
            fcntl.flock(handle, fcntl.LOCK_EX)
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}")
        handle.flush()
        try:
            yield
        finally:
            handle.truncate(0)
            fcntl.flock(handle, fcntl.LOCK_UN)


def prepare_instance(home: Path) -> list[str]:
    """Write ``home/dagster.yaml`` if missing, point ``DAGSTER_HOME`` at ``home``, create (migrate) the
    instance there and fail its dead runs (``fail_dead_runs``, whose ids are returned). Call it holding
    ``exclusive(home / LOCK_FILE)``."""
    import dagster as dg

    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists() or config.read_text() in ("", _PREVIOUS_DEFAULT):
        config.write_text(INSTANCE_YAML)
    os.environ["DAGSTER_HOME"] = str(home.absolute())
    with dg.DagsterInstance.get() as instance:  # creates the storage and runs its migrations, once, here
        return fail_dead_runs(instance)


def fail_dead_runs(instance: Any) -> list[str]:
    """Mark FAILURE every STARTING/STARTED run whose worker process (the pid its engine events name) no
    longer exists; return their ids. Only for a local SQLite instance, whose runs all ran on this host: a
    pid says nothing about a run on another machine. A pid reused since counts as alive (left alone)."""
    import dagster as dg
    from dagster._core.storage.runs import SqliteRunStorage

    from spinlock_assets.storage.store import pid_alive

    if not isinstance(instance.run_storage, SqliteRunStorage):
        return []
    in_progress = [dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED]
    failed = []
    for record in instance.get_run_records(filters=dg.RunsFilter(statuses=in_progress)):
        run = record.dagster_run
        pids = [
            int(entry.dagster_event.engine_event_data.metadata["pid"].value)
            for entry in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.ENGINE_EVENT)
            if "pid" in (entry.dagster_event.engine_event_data.metadata or {})
        ]
        if pids and not pid_alive(pids[-1]):
            instance.report_run_failed(
                run, f"run worker (pid {pids[-1]}) is gone: the process running it died (killed, crashed)"
            )
            failed.append(run.run_id)
    return failed


def main(argv: list[str]) -> int:
    home = Path(argv[0] if argv else os.environ.get("DAGSTER_HOME", "dagster_home"))
    with exclusive(home / LOCK_FILE, what="instance"):
        for run_id in prepare_instance(home):
            print(f"run {run_id}: its worker process is gone; marked failed", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
