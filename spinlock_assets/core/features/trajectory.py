"""Helpers shared by the feature families that work on a trajectory ``[M, T, C, H, W]`` or on its series:
the validated replayed rollout, time split into bounded chunks, the time/realization summary, and the OLS
slope over normalised time."""

from __future__ import annotations

import numpy as np

from ..lazy_torch import torch
from .family import OperatorInputs

__all__ = [
    "CHUNK_NUMEL",
    "SUMMARY_STATISTICS",
    "ols_slope",
    "rollout_tensor",
    "time_chunks",
    "time_realization_summary",
]

SUMMARY_STATISTICS = ("time_mean", "time_std", "final", "realization_std_of_time_mean")

# Work on at most this many field values per FFT call (8 MiB of float32 input). The spectra and the per-mode
# temporaries built from them are a small multiple of this, so peak memory stays bounded whatever T, M or the
# grid is, instead of growing with a whole-trajectory FFT.
CHUNK_NUMEL = 1 << 21


def time_chunks(steps: int, step_numel: int, budget: int = CHUNK_NUMEL) -> list[slice]:
    """Split ``range(steps)`` into consecutive slices of at most ``max(1, budget // step_numel)`` steps.

    The split depends only on (steps, step_numel), never on M, so one realization is always processed by
    the same sequence of calls whether it is computed alone or inside a batch (bit-identical results).
    """
    size = max(1, budget // max(1, step_numel))
    return [slice(start, min(start + size, steps)) for start in range(0, steps, size)]


def time_realization_summary(series: torch.Tensor) -> torch.Tensor:
    """``[M, T, *rest]`` -> ``[*rest, 4]`` in ``SUMMARY_STATISTICS`` order (population std; NaN propagates).

    time_mean, time_std and final are taken over t of the realization-mean series; the 4th statistic is the
    std over m of each realization's time mean. A NaN anywhere in the reduced values gives NaN (never skipped:
    dropping diverged realizations would silently bias the summary).
    """
    realization_mean = series.mean(0)
    per_realization = series.mean(1)
    stats = [
        realization_mean.mean(0),
        realization_mean.std(0, correction=0),
        realization_mean[-1],
        per_realization.std(0, correction=0),
    ]
    return torch.stack(stats, -1)


def rollout_tensor(inputs: OperatorInputs) -> torch.Tensor:
    """``inputs.trajectories`` as a float32 ``[M, T, C, H, W]`` tensor on its own device (validated)."""
    if inputs.trajectories is None:
        raise ValueError("this family needs trajectories (Needs.ROLLOUT); got trajectories=None")
    trajectories = torch.as_tensor(inputs.trajectories).to(torch.float32)
    if trajectories.ndim != 5 or 0 in trajectories.shape:
        raise ValueError(
            f"trajectories must be a non-empty [M, T, C, H, W] tensor, got {tuple(trajectories.shape)}"
        )
    return trajectories


def ols_slope(y: np.ndarray, axis: int = -1) -> np.ndarray:
    """OLS slope of ``y`` against τ = t/(T−1) along ``axis`` (NaN when T < 2; NaN in y propagates)."""
    steps = y.shape[axis]
    if steps < 2:
        return np.full(np.delete(y.shape, axis), np.nan)
    tau = np.arange(steps) / (steps - 1)
    tau -= tau.mean()
    shape = [1] * y.ndim
    shape[axis] = steps
    centred = y - y.mean(axis=axis, keepdims=True)
    return (centred * tau.reshape(shape)).sum(axis=axis) / float(tau @ tau)
