"""Verification: asset checks (replay digests, shard integrity, finite-or-flagged), the ``verify_now`` job
that evaluates a budgeted rotating sample of them, and the schedule that launches it."""

from .checks import build_checks
from .schedules import build_verification_schedule
from .verify_now import build_verify_now_job

__all__ = ["build_checks", "build_verification_schedule", "build_verify_now_job"]
