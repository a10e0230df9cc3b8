"""Bumping a family's version marks exactly that family stale, seen through a real dagster dev's GraphQL."""

from __future__ import annotations

import os

import pytest

from spinlock_assets_tests.conftest import tiny_spec
from spinlock_assets_tests.e2e.dagster_dev import dagster_dev

PLUGIN = """
import numpy as np
from spinlock_assets.core.features.family import ArraySpec, FeatureFamily, Needs
from spinlock_assets.core.features.registry import register_family


def _final_mean(inputs):
    return {{"final_mean": inputs.base_series[:, -1, :, 0].astype(np.float32)}}


register_family(FeatureFamily(
    name="probe", version="{version}", needs=Needs.BASE_SERIES,
    description="Mean of the final state per realization and channel.",
    arrays=(ArraySpec("final_mean", ("realization", "channel"), ()),), compute=_final_mean,
))
"""

SHARD = "ops-000000-000003"
_STALE = """
query($keys: [AssetKeyInput!], $partition: String) { assetNodes(assetKeys: $keys) {
  assetKey { path } staleStatus(partition: $partition) staleCauses(partition: $partition) { reason } } }
"""


def _stale_status(dev, assets):
    variables = {"keys": [{"path": [a]} for a in assets], "partition": SHARD}
    nodes = dev.graphql(_STALE, variables)["assetNodes"]
    return {node["assetKey"]["path"][-1]: node["staleStatus"] for node in nodes}


@pytest.mark.slow
def test_bumping_a_family_version_marks_exactly_that_family_stale(tmp_path):
    plugin_dir = tmp_path / "plugins"
    plugin_dir.mkdir()
    plugin = plugin_dir / "probe_family.py"
    plugin.write_text(PLUGIN.format(version="1.0.0"))
    env = {
        "SPINLOCK_PLUGINS": "probe_family",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(plugin_dir), os.environ.get("PYTHONPATH")])),
    }
    generation = ["operator_parameters", "initial_conditions", "base_features"]
    assets = [*generation, "probe_features", "dynamics_features"]
    with dagster_dev(tmp_path / "server", tiny_spec(), env=env) as dev:
        backfill = dev.launch_backfill(assets, [SHARD])
        assert dev.wait_backfill(backfill, timeout=300) == "COMPLETED_SUCCESS", dev.describe_backfill(
            backfill
        )
        assert set(_stale_status(dev, assets).values()) == {"FRESH"}

        plugin.write_text(PLUGIN.format(version="1.1.0"))
        dev.client.reload_repository_location(dev.location_name)
        status = _stale_status(dev, assets)
    assert status.pop("probe_features") == "STALE"
    assert set(status.values()) == {"FRESH"}, status
