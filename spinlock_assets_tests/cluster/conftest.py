"""The cluster tests need the Debian packages ``postgresql`` and ``redis-server`` (``scripts/test.sh``
installs them as root). Without them the end-to-end tests skip, unless ``SPINLOCK_REQUIRE_CLUSTER=1``
(CI), where they fail."""

from __future__ import annotations

import glob
import os
import shutil

import pytest


@pytest.fixture(scope="session")
def cluster_services() -> None:
    missing = [name for name, found in (
        ("postgresql", glob.glob("/usr/lib/postgresql/*/bin/pg_ctl")),
        ("redis-server", shutil.which("redis-server")),
    ) if not found]  # fmt: skip
    if not missing:
        return
    reason = f"not installed: {', '.join(missing)} (as root: bash scripts/install_services.sh)"
    if os.environ.get("SPINLOCK_REQUIRE_CLUSTER") == "1":
        pytest.fail(f"SPINLOCK_REQUIRE_CLUSTER=1 but {reason}", pytrace=False)
    pytest.skip(reason)
