"""The determinism contract on CUDA. Skipped where torch sees no GPU (CI has none): run on a GPU machine
with ``pytest spinlock_assets_tests/core/test_cuda_determinism.py``; ``benchmarks/bench_cuda.py`` checks
the same at the benchmark's 64x64 scale."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from spinlock_assets.core import rollout
from spinlock_assets.core.fingerprint import execution_fingerprint
from spinlock_assets.core.generation import (
    roll_out,
)
from spinlock_assets.core.operator import build_operator
from spinlock_assets.core.parameters import OperatorHyperparameters
from spinlock_assets.core.rollout import run_rollout
from spinlock_assets.core.verification import verify
from spinlock_assets_tests.conftest import tiny_spec
from spinlock_assets_tests.core.test_rollout_determinism import _records, digests_in_fresh_processes

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_cuda_replay_is_bit_exact_in_two_fresh_processes():
    spec = tiny_spec(n_operators=4, grid=(32, 32))
    here = [r.digests for r in roll_out(_records(spec), device="cuda")]
    assert digests_in_fresh_processes(spec, "cuda") == [here, here]


def test_cuda_realization_is_identical_batched_or_alone():
    hp = OperatorHyperparameters(2, 16, 3, "gelu", 0.05, 1.0, "residual", 0.1, None, "blobs", 0.5)
    operator = build_operator(hp, channels=3, weight_seed=1, device="cuda")
    ic = np.random.default_rng(0).standard_normal((3, 64, 64)).astype(np.float32)
    seeds = [11, 12, 13, 14, 15]
    batched = run_rollout(operator, ic, steps=8, noise_seeds=seeds)  # graphed steps (CUDA_GRAPH_MIN_STEPS)
    for m, seed in enumerate(seeds):
        assert run_rollout(operator, ic, steps=8, noise_seeds=[seed]).digests[0] == batched.digests[m]


def test_cpu_generated_operator_verified_on_cuda_is_classified_not_failed():
    """Another fingerprint: digests may differ, and then the status says how far apart, never 'mismatch'."""
    spec = tiny_spec(n_operators=4)
    cpu_fingerprint = execution_fingerprint("cpu")
    for record in _records(spec):
        stored = next(roll_out([record]))
        record = dataclasses.replace(
            record, digests=tuple(stored.digests), base_series=stored.base_series, fingerprint=cpu_fingerprint
        )
        assert verify(record, device="cuda").status in ("exact", "within_tolerance", "diverged")


@pytest.mark.parametrize(
    "hp",
    [
        OperatorHyperparameters(2, 16, 3, "gelu", 0.05, 1.0, "residual", 0.1, None, "blobs", 0.5),
        OperatorHyperparameters(4, 48, 5, "tanh", 0.1, 1.5, "convex", None, 0.5, "blobs", 0.5),
    ],
    ids=["small", "wide"],
)
def test_cuda_graph_steps_are_bit_identical_to_eager_steps(hp, monkeypatch):
    """Steps 2.. replay a CUDA graph of the eager step; digests and F0 rows must not change (a graph that
    replayed stale noise or stale inputs would change both)."""
    operator = build_operator(hp, channels=3, weight_seed=2, device="cuda")
    ic = np.random.default_rng(1).standard_normal((3, 64, 64)).astype(np.float32)
    seeds = [21, 22, 23]
    captures = []
    original = rollout._CudaGraphStep.__init__

    def counting(self, *args, **kwargs):
        captures.append(1)
        original(self, *args, **kwargs)

    monkeypatch.setattr(rollout._CudaGraphStep, "__init__", counting)
    graphed = run_rollout(operator, ic, steps=12, noise_seeds=seeds)
    assert captures == [1]
    monkeypatch.setattr(rollout, "CUDA_GRAPH_MIN_STEPS", 10**9)
    eager = run_rollout(operator, ic, steps=12, noise_seeds=seeds)
    assert captures == [1]
    assert graphed.digests == eager.digests
    assert np.array_equal(graphed.base_series, eager.base_series, equal_nan=True)
