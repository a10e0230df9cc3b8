"""The rollout engine: one operator, M realizations batched, T states streamed one at a time.

``iterate_rollout`` turns the one-step map into a stream of states (state 0 is the initial condition);
``run_rollout`` consumes that stream once and computes, inline, everything generation stores: the F0
base series, one SHA-256 digest per realization over the exact float32 bytes of its states, the first
non-finite step, and (only when asked) the full trajectories. Generation and replay both call
``run_rollout``: there is no second implementation.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .features.base import step_features
from .operator import GeneratorNoise, StochasticCNN

__all__ = ["RolloutRecord", "iterate_rollout", "run_rollout", "FEATURE_CHUNK_STEPS"]

# Base features are computed on chunks of this many steps (x M realizations) at once: per-sample results
# are batch-invariant (tested), and batching amortises per-op overhead on small grids.
FEATURE_CHUNK_STEPS = 16


def iterate_rollout(
    operator: StochasticCNN, initial_condition: torch.Tensor, *, steps: int, noise_seeds: Sequence[int]
) -> Iterator[torch.Tensor]:
    """Yield the ``steps`` states ``[M, C, H, W]`` of M = len(noise_seeds) realizations, starting at the IC.

    Each realization is stepped on its own (batch of one), with noise only from ``noise_seeds[m]``.
    Batching realizations would be faster for small operators, but oneDNN picks convolution
    algorithms by batch size (measured: a 3->16 channel 3x3 conv at 64x64 gives other bits at batch
    5 than at batch 1), so realization m would depend on M. Yielded tensors are never modified.
    """
    if initial_condition.ndim != 3:
        raise ValueError(f"initial_condition must be [C, H, W]; got shape {tuple(initial_condition.shape)}")
    noises = [GeneratorNoise(seed, operator.device) for seed in noise_seeds]
    state = initial_condition.to(operator.device, torch.float32).unsqueeze(0).expand(len(noises), -1, -1, -1)
    state = state.contiguous()
    yield state
    for _ in range(steps - 1):
        state = torch.cat([operator.step(state[m : m + 1], noise) for m, noise in enumerate(noises)])
        yield state


@dataclass
class RolloutRecord:
    """What one rollout leaves behind.

    base_series: ``[M, T, C, 10]`` float32 F0 series. digests: M hex SHA-256 strings.
    first_nonfinite_step: ``[M]`` int32, -1 where every state is finite.
    trajectories: ``[M, T, C, H, W]`` float32 on the CPU, only when requested.
    """

    base_series: np.ndarray
    digests: list[str]
    first_nonfinite_step: np.ndarray
    trajectories: np.ndarray | None = None

    @property
    def diverged(self) -> bool:
        return bool((self.first_nonfinite_step >= 0).any())


class _DigestAccumulator:
    def __init__(self, n_realizations: int) -> None:
        self.hashes = [hashlib.sha256() for _ in range(n_realizations)]

    def update(self, cpu_states: np.ndarray) -> None:
        for realization_hash, state in zip(self.hashes, cpu_states, strict=True):
            realization_hash.update(np.ascontiguousarray(state, dtype="<f4").data)


class _BaseSeriesAccumulator:
    """Buffers up to FEATURE_CHUNK_STEPS states and computes their F0 rows in one batch."""

    def __init__(self, n_realizations: int, steps: int, channels: int) -> None:
        self.series = np.empty((n_realizations, steps, channels, 10), dtype=np.float32)
        self.pending: list[torch.Tensor] = []
        self.next_step = 0

    def update(self, state: torch.Tensor) -> None:
        self.pending.append(state)
        if len(self.pending) == FEATURE_CHUNK_STEPS:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        chunk = torch.stack(self.pending, dim=1)  # [M, k, C, H, W]
        m, k = chunk.shape[:2]
        rows = step_features(chunk.reshape(m * k, *chunk.shape[2:])).reshape(m, k, *chunk.shape[2:3], 10)
        self.series[:, self.next_step : self.next_step + k] = rows.cpu().numpy()
        self.next_step += k
        self.pending = []


def run_rollout(
    operator: StochasticCNN,
    initial_condition: torch.Tensor | np.ndarray,
    *,
    steps: int,
    noise_seeds: Sequence[int],
    keep_trajectories: bool = False,
) -> RolloutRecord:
    """Roll out once, computing base series, digests and divergence inline (see the module docstring)."""
    initial_condition = torch.as_tensor(initial_condition)
    n_realizations, channels = len(noise_seeds), initial_condition.shape[0]
    digests = _DigestAccumulator(n_realizations)
    features = _BaseSeriesAccumulator(n_realizations, steps, channels)
    trajectories = (
        np.empty((n_realizations, steps, *initial_condition.shape), dtype=np.float32) if keep_trajectories else None
    )
    for t, state in enumerate(iterate_rollout(operator, initial_condition, steps=steps, noise_seeds=noise_seeds)):
        cpu_states = state.cpu().numpy()
        digests.update(cpu_states)
        features.update(state)
        if trajectories is not None:
            trajectories[:, t] = cpu_states
    features.flush()
    nonfinite = features.series[..., -1] > 0  # [M, T, C] nonfinite_frac column
    any_nonfinite = nonfinite.any(axis=2)
    first = np.where(any_nonfinite.any(axis=1), any_nonfinite.argmax(axis=1), -1).astype(np.int32)
    return RolloutRecord(
        base_series=features.series,
        digests=[h.hexdigest() for h in digests.hashes],
        first_nonfinite_step=first,
        trajectories=trajectories,
    )
