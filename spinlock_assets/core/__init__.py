"""spinlock_assets.core: the pure library (numpy + torch, no Dagster).

Rebuild and replay operator 42 of a dataset in a notebook::

    from spinlock_assets.storage import open_dataset
    from spinlock_assets.core import replay, verify

    record = open_dataset("data/dataset.h5").operator(42)
    trajectories = replay(record)          # [M, T, C, H, W] float32, bit-exact
    print(verify(record).status)           # "exact"

Names are resolved lazily so that importing a light module (``core.spec``) never imports torch: the
Dagster code server imports the spec at load time and torch only inside asset bodies.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "DatasetSpec": "spec",
    "ParameterSpace": "spec",
    "SpecError": "spec",
    "load_spec": "spec",
    "OperatorSeeds": "seeds",
    "operator_seeds": "seeds",
    "OperatorHyperparameters": "parameters",
    "map_parameters": "parameters",
    "sobol_points": "parameters",
    "OperatorRecord": "record",
    "ParameterTable": "generation",
    "operator_parameters": "generation",
    "generate_initial_conditions": "generation",
    "operator_records": "generation",
    "roll_out": "generation",
    "initial_condition": "initial_conditions",
    "StochasticCNN": "operator",
    "build_operator": "operator",
    "RolloutRecord": "rollout",
    "iterate_rollout": "rollout",
    "run_rollout": "rollout",
    "Verification": "verification",
    "replay": "verification",
    "replay_rollout": "verification",
    "verify": "verification",
    "verify_operator": "verification",
    "execution_fingerprint": "fingerprint",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
