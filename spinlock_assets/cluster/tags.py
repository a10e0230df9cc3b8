"""Run tags a Celery run worker adds to each run it executes: where it ran and under which numerics."""

from __future__ import annotations

__all__ = ["DEVICE_TAG", "FINGERPRINT_ID_TAG", "FINGERPRINT_TAG", "WORKER_TAG"]

WORKER_TAG = "spinlock/worker"  # the Celery node name, <queue><n>@<host>
DEVICE_TAG = "spinlock/device"  # the torch device its rollouts ran on
FINGERPRINT_TAG = "spinlock/fingerprint"  # the execution fingerprint (JSON), as the shards record it
FINGERPRINT_ID_TAG = "spinlock/fingerprint_id"  # its short id, to filter runs by in the UI
