"""Progress of long steps: operators done / total, rate and ETA, logged through Dagster's context.log."""

from __future__ import annotations

import time
from typing import Any

__all__ = ["ProgressLog"]


class ProgressLog:
    """A ``progress(done, total)`` callback; logs at most every ``interval_s`` seconds, and at the end."""

    def __init__(self, log: Any, *, label: str = "operators", interval_s: float = 5.0) -> None:
        self.log, self.label, self.interval_s = log, label, interval_s
        self.started = self.last = time.monotonic()

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if self.log is None or (done < total and now - self.last < self.interval_s):
            return
        self.last = now
        rate = done / max(now - self.started, 1e-9)
        eta = (total - done) / rate if rate else float("inf")
        self.log.info(f"{self.label} {done}/{total} ({rate:.2f}/s, ETA {eta:.0f} s)")
