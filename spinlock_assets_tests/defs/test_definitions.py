from __future__ import annotations

import json
import subprocess
import sys

import dagster as dg

from spinlock_assets.definitions import defs


def test_definitions_load_with_every_asset_group_and_job():
    dg.Definitions.validate_loadable(defs)
    graph = defs.resolve_asset_graph()
    keys = {key.to_user_string() for key in graph.get_all_asset_keys()}
    assert {"operator_parameters", "initial_conditions", "base_features", "dataset"} <= keys
    assert {"spectral_features", "dynamics_features", "invariant_drift_features"} <= keys
    for job in ("generate_shards", "replay_features", "consolidate_dataset"):
        assert defs.resolve_job_def(job) is not None


def test_every_asset_has_a_description_and_code_version():
    graph = defs.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        assert node.description, f"{key} has no description"
        assert node.code_version, f"{key} has no code_version"


def test_loading_definitions_does_not_import_torch():
    """Code servers stay light: torch is imported inside asset bodies and resources only."""
    code = "import sys, spinlock_assets.definitions; print(json.dumps('torch' in sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", "import json;" + code], capture_output=True, text=True, check=True
    )
    assert json.loads(out.stdout) is False
