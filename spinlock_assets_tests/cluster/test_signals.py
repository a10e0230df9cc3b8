"""Deployment processes stop on SIGTERM even when started from a shell's background job."""

from __future__ import annotations

import signal
import subprocess
import sys

from spinlock_assets.cluster.deployment import with_sigint_restored

# Prints whether SIGINT has Python's default handler (it is SIG_IGN when inherited ignored).
_PROBE = [
    sys.executable,
    "-c",
    "import signal; print(signal.getsignal(signal.SIGINT) is signal.default_int_handler)",
]


def _ignore_sigint() -> None:  # what a non-interactive shell does to a background job
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def test_a_process_started_with_sigint_ignored_gets_the_default_back():
    """Dagster maps SIGTERM to its SIGINT handler: with SIGINT inherited ignored, SIGTERM would be
    ignored too (the code server then outlived ``down``'s 30 s). The wrapper restores it, and the
    inheritance it undoes is real."""
    plain = subprocess.run(_PROBE, preexec_fn=_ignore_sigint, capture_output=True, text=True, check=True)
    assert plain.stdout.strip() == "False"
    wrapped = with_sigint_restored(_PROBE)
    restored = subprocess.run(wrapped, preexec_fn=_ignore_sigint, capture_output=True, text=True, check=True)
    assert restored.stdout.strip() == "True"
