"""F5 ``cross_channel``: how the channels of a state co-vary (per step) and lead one another (per trajectory).

Per (m, t), with R the C x C Pearson correlation matrix of the channels over the H*W pixels (population
moments; diagonal set to exactly 1, off-diagonal clamped to [-1, 1] against float32 rounding):
- eig_0 >= eig_1 >= eig_2: the top min(3, C) eigenvalues of R (``torch.linalg.eigvalsh`` in float32, ample
  for a symmetric C x C matrix with entries in [-1, 1]); missing ones (C < 3) are NaN;
- participation_ratio = (sum lambda)^2 / sum lambda^2, computed as C^2 / ||R||_F^2 (the same quantity: trace
  R = C and sum lambda^2 = ||R||_F^2, without the eigensolver's rounding); 1 = one mode, C = uncorrelated;
- corr_mean, corr_max, corr_min over the pairs i < j.
A channel that is constant over the pixels (max == min) has no correlation: that step's 7 values are NaN, as
they are for a step with any non-finite pixel in any channel.

Per m, the causal coupling uses the channel-mean series s_i(t) = <u_i(t)> (F0's ``mean``):
  coupling = max over tau in {1, 2, 3} (tau <= T-2) and i < j of |rho_ij(tau) - rho_ji(tau)|,
  rho_ij(tau) = Pearson corr over t = 0..T-1-tau of s_i(t) and s_j(t + tau) (each segment centred on its
  own mean). rho_ij(tau) - rho_ji(tau) is the antisymmetric part of the lagged correlation: 0 when no channel
  leads, up to 2. tau = 0 is left out because its antisymmetric part is identically 0. NaN when T < 3, when
  any state is non-finite, or when a lagged segment of some s_i is constant.
"""

from __future__ import annotations

import numpy as np

from ..lazy_torch import torch
from .family import ArraySpec, FeatureFamily, Needs, OperatorInputs
from .trajectory import SUMMARY_STATISTICS, rollout_tensor, time_realization_summary

__all__ = [
    "COUPLING_NAMES",
    "FAMILY",
    "FEATURE_NAMES",
    "MAX_LAG",
    "compute",
    "correlation_features",
    "coupling",
]

FEATURE_NAMES = ("eig_0", "eig_1", "eig_2", "participation_ratio", "corr_mean", "corr_max", "corr_min")
COUPLING_NAMES = ("lagged_antisymmetric_corr_max",)
MAX_LAG = 3
N_EIG = 3


def correlation_features(u: torch.Tensor) -> torch.Tensor:
    """``[T, C, H, W]`` -> ``[T, 7]`` (``FEATURE_NAMES`` order) for the states of one realization."""
    steps, channels = u.shape[:2]
    pixels = u.reshape(steps, channels, -1).to(torch.float32)
    valid = torch.isfinite(pixels).all(-1) & (pixels.amax(-1) > pixels.amin(-1))  # [T, C]
    valid = valid.all(-1)  # [T]
    pixels = torch.where(valid[:, None, None], pixels, 0.0)  # keep NaN out of the eigensolver
    centred = pixels - pixels.mean(-1, keepdim=True)
    scale = centred.square().mean(-1, keepdim=True).sqrt()
    z = centred / torch.where(scale > 0, scale, 1.0)
    # Elementwise products and torch.sum rather than a batched matmul: BLAS splits the pixel sum across
    # threads, so its rounding would depend on the thread count. Filling both triangles from one product
    # keeps R exactly symmetric.
    corr = torch.ones(steps, channels, channels, device=u.device)
    for a in range(channels):
        for b in range(a + 1, channels):
            corr[:, a, b] = corr[:, b, a] = (z[:, a] * z[:, b]).mean(-1).clamp(-1.0, 1.0)
    eye = torch.eye(channels, device=u.device)
    corr = torch.where(valid[:, None, None], corr, eye)  # degenerate steps: NaN'd below

    eig = torch.linalg.eigvalsh(corr).flip(-1)[:, :N_EIG]
    eig = torch.cat([eig, eig.new_full((steps, N_EIG - eig.shape[1]), float("nan"))], -1)
    participation = channels**2 / corr.square().sum((-2, -1))
    i, j = torch.triu_indices(channels, channels, 1, device=u.device)
    pairs = corr[:, i, j]
    pair_stats = [pairs.mean(-1), pairs.amax(-1), pairs.amin(-1)]
    out = torch.cat([eig, torch.stack([participation, *pair_stats], -1)], -1)
    # Padding NaNs (C < 3) are kept; everything of a degenerate step becomes NaN.
    return torch.where(valid[:, None], out, float("nan"))


def _pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``[n, C]``, ``[n, C]`` -> ``[C, C]``: [i, j] = corr(a[:, i], b[:, j]); NaN for a constant column."""
    a_centred, b_centred = a - a.mean(0), b - b.mean(0)
    cov = (a_centred[:, :, None] * b_centred[:, None, :]).mean(0)  # no BLAS: thread-count invariant
    a_scale, b_scale = a_centred.square().mean(0).sqrt(), b_centred.square().mean(0).sqrt()
    # Exact-constant test on the raw values: centring a constant in float32 need not give exact zeros.
    a_scale = torch.where(a.amax(0) > a.amin(0), a_scale, float("nan"))
    b_scale = torch.where(b.amax(0) > b.amin(0), b_scale, float("nan"))
    return cov / (a_scale[:, None] * b_scale[None, :])


def coupling(u: torch.Tensor) -> torch.Tensor:
    """``[T, C, H, W]`` -> ``[1]``: max lagged antisymmetric cross-correlation of the channel-mean series."""
    steps, channels = u.shape[:2]
    fields = u.reshape(steps, channels, -1).to(torch.float32)
    series = torch.where(torch.isfinite(fields).all(-1), fields.mean(-1), float("nan"))  # [T, C]
    i, j = torch.triu_indices(channels, channels, 1, device=u.device)
    values = []
    for tau in range(1, min(MAX_LAG, steps - 2) + 1):
        rho = _pearson(series[:-tau], series[tau:])
        values.append((rho - rho.T)[i, j].abs())
    if not values:
        return series.new_full((1,), float("nan"))
    return torch.cat(values).amax().reshape(1)  # amax propagates NaN


def compute(inputs: OperatorInputs) -> dict[str, np.ndarray]:
    """``series`` ``[M, T, 7]``, ``coupling`` ``[M, 1]``, ``summary`` ``[7, 4]`` float32 for one operator."""
    trajectories = rollout_tensor(inputs)
    m_count, steps, channels = trajectories.shape[:3]
    if channels < FAMILY.min_channels:
        raise ValueError(f"cross_channel needs at least {FAMILY.min_channels} channels, got C={channels}")
    series = torch.empty(m_count, steps, len(FEATURE_NAMES), device=trajectories.device)
    coupled = torch.empty(m_count, 1, device=trajectories.device)
    # One realization at a time: the calls never depend on M (batch invariance).
    for m in range(m_count):
        realization = trajectories[m].clone()
        series[m] = correlation_features(realization)
        coupled[m] = coupling(realization)
    summary = time_realization_summary(series)
    return {
        "series": series.cpu().numpy(),
        "coupling": coupled.cpu().numpy(),
        "summary": summary.cpu().numpy(),
    }


FAMILY = FeatureFamily(
    name="cross_channel",
    version="1.0.0",
    needs=Needs.ROLLOUT,
    description=(
        "How strongly the channels of each state are correlated over space (eigenvalues, participation "
        "ratio, pairwise correlations), and whether one channel's mean leads another's in time."
    ),
    arrays=(
        ArraySpec(
            name="series",
            axes=("realization", "time", "feature"),
            field_names=FEATURE_NAMES,
            description="Channel correlation structure of every state u[m, t].",
        ),
        ArraySpec(
            name="coupling",
            axes=("realization", "feature"),
            field_names=COUPLING_NAMES,
            description="max over tau<=3, i<j of |corr(s_i(t), s_j(t+tau)) - corr(s_j(t), s_i(t+tau))|.",
        ),
        ArraySpec(
            name="summary",
            axes=("feature", "statistic"),
            field_names=FEATURE_NAMES,
            description="(mean_t, std_t, final) of the realization-mean series, and std over m of mean_t.",
            axis_labels={"statistic": SUMMARY_STATISTICS},
        ),
    ),
    compute=compute,
    config={
        "correlation": "Pearson over pixels, population moments, diagonal 1, clamped to [-1, 1]",
        "n_eigenvalues": N_EIG,
        "eigensolver": "torch.linalg.eigvalsh, float32, descending, NaN-padded when C < 3",
        "participation_ratio": "C^2 / ||R||_F^2",
        "coupling_series": "pixel mean of each channel",
        "coupling_lags": list(range(1, MAX_LAG + 1)),
        "dtype": "float32",
        "std": "population",
    },
    min_channels=2,
)
