"""The project's local Dagster instance: its configuration, and creating it once under a file lock.

Two processes that create a fresh instance at once both run the SQLite schema migrations, and can leave
``runs.db`` with two alembic heads, unusable for good. So whoever creates or opens the instance for the
main job or the UI first takes ``fcntl.flock`` on ``$DAGSTER_HOME/.instance.lock``: the second process
waits (saying so) instead of racing. The configuration turns on run monitoring, so runs whose process
died (the orchestrator killed) are marked failed instead of staying STARTED forever, and run retries.

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
from typing import TextIO

__all__ = ["INSTANCE_YAML", "exclusive", "prepare_instance"]

LOCK_FILE = ".instance.lock"
# What main_job wrote before run monitoring was configured: replaced, since a user never edited it.
_PREVIOUS_DEFAULT = "telemetry:\n  enabled: false\n"
INSTANCE_YAML = """\
# Written by spinlock_assets (defs/instance.py); edit freely, it is only written when missing.
telemetry:
  enabled: false
# A run whose process died (orchestrator killed, machine rebooted) is marked FAILURE after the monitor
# notices, instead of staying STARTED forever; the default run launcher cannot resume runs (attempts 0).
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


def prepare_instance(home: Path) -> None:
    """Write ``home/dagster.yaml`` if missing, point ``DAGSTER_HOME`` at ``home`` and create (migrate) the
    instance there. Call it holding ``exclusive(home / LOCK_FILE)``."""
    import dagster as dg

    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists() or config.read_text() in ("", _PREVIOUS_DEFAULT):
        config.write_text(INSTANCE_YAML)
    os.environ["DAGSTER_HOME"] = str(home.absolute())
    with dg.DagsterInstance.get():  # creates the storage and runs its migrations, once, here
        pass


def main(argv: list[str]) -> int:
    home = Path(argv[0] if argv else os.environ.get("DAGSTER_HOME", "dagster_home"))
    with exclusive(home / LOCK_FILE, what="instance"):
        prepare_instance(home)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
