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
import os
from typing import Any

# torch's OpenMP runtime (libgomp) reads its wait policy once, when torch is first imported. Its default
# keeps idle intra-op threads spinning, and on cores shared with other processes each parallel region
# then waits for a descheduled spinner: the batched rollout engine (core/batching.py), which runs every op
# on the intra-op threads, measured 15.0 s instead of 0.11 s for one small rollout under load. Passive
# waiting changes no bits, only how idle threads wait; a policy the user set wins, and a process that
# imported torch before this package keeps torch's default.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

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
    "ENGINE_VERSION": "fingerprint",
    "execution_fingerprint": "fingerprint",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
