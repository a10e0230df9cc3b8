"""Fixtures of the fault tests: one tiny dataset generated once per session, copied by each test that
damages it."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from spinlock_assets_tests.conftest import tiny_spec
from spinlock_assets_tests.defs.helpers import generate, materialize, tiny_definitions
from spinlock_assets_tests.faults.helpers import copy_root


@pytest.fixture(scope="session")
def generated_root(tmp_path_factory) -> Path:
    """Every generation shard of ``tiny_spec()`` plus ``dataset.h5``, materialized through Dagster.
    Read-only: tests that change files work on a copy (``data_root``)."""
    root = tmp_path_factory.mktemp("generated") / "data"
    with dg.instance_for_test() as instance:
        defs = tiny_definitions(tiny_spec(), root)
        generate(defs, instance)
        assert materialize(defs, ["dataset"], instance).success
    return root


@pytest.fixture
def data_root(generated_root: Path, tmp_path: Path) -> Path:
    """A private copy of the generated dataset."""
    return copy_root(generated_root, tmp_path / "data")


@pytest.fixture
def instance():
    with dg.instance_for_test() as instance:
        yield instance
