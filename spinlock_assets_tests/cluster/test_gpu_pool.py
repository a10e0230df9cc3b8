"""GPU-aware scheduling in the definitions: a code location whose rollouts run on a GPU (a ``cuda``
Celery worker sets ``SPINLOCK_DEVICE=cuda``) puts every step that rolls out in the ``gpu`` pool; on the
CPU no step claims it."""

from __future__ import annotations

from pathlib import Path

import pytest

from spinlock_assets.definitions import build_definitions
from spinlock_assets.defs.constants import GPU_POOL
from spinlock_assets.defs.resources import RolloutResource
from spinlock_assets_tests.conftest import tiny_spec

ROLLOUT_STEPS = {"base_features", "spectral_features"}  # the generation rollout; the features' replays


def pools(device: str, root: Path) -> tuple[dict[str, str | None], dict[str, str | None]]:
    """The pool of each asset's step and of each check's step, by name."""
    defs = build_definitions(tiny_spec(), root, rollout=RolloutResource(device=device))
    assets = {name: defs.resolve_assets_def(name).op.pool for name in ("operator_parameters", *ROLLOUT_STEPS)}
    checks = {
        f"{key.asset_key.path[-1]}:{key.name}": check.node_def.pool
        for check in defs.asset_checks or ()
        for key in check.check_keys
    }
    return assets, checks


@pytest.mark.parametrize("device", ["cuda", "cuda:1"])
def test_rollout_steps_claim_the_gpu_pool_on_a_gpu(device: str, tmp_path: Path) -> None:
    assets, checks = pools(device, tmp_path)
    assert {name for name, pool in assets.items() if pool == GPU_POOL} == ROLLOUT_STEPS
    assert {name for name, pool in checks.items() if pool == GPU_POOL} == {
        "base_features:replay_matches_stored_digests"
    }


def test_no_step_claims_the_gpu_pool_on_the_cpu(tmp_path: Path) -> None:
    assets, checks = pools("cpu", tmp_path)
    assert GPU_POOL not in {*assets.values(), *checks.values()}
