"""Verification: asset checks (replay digests, shard integrity, finite-or-flagged) and the schedule that
replays a rotating sample of operators."""

from .checks import build_checks
from .schedules import build_verification_schedule

__all__ = ["build_checks", "build_verification_schedule"]
