"""F1 ``spectral``: radial power-spectrum shape of every state, per realization, step and channel.

Definitions (P is the Parseval-weighted half-plane power of ``fourier``; "AC" means every mode but DC, i.e.
k >= 0.5; means over modes are full-plane means, i.e. weighted by the half-plane weights):

- Shells: 7 radial shells ``[e_r, e_{r+1})`` from the edges (0.5, 1.5, 2.5, 4.5, 8.5, 16.5, 32.5, 64.5), each
  clipped to ``k <= k_max = min(H, W)/2`` (= H/2 on square grids), plus an 8th outer shell holding every other AC
  mode (the corner ``k > k_max``; on grids with k_max > 64.5 also ``64.5 <= k <= k_max``). So the 8 shell powers
  partition the AC power and sum to 1. A clipped-away shell is empty and its power is 0 (on 64x64, shell 6).
- shell_power_r = sum_shell P / (sum_AC P + eps); dc_fraction = P(0) / (sum P + eps).
- centroid_k = sum_AC k P / (sum_AC P + eps); bandwidth_k = sqrt(sum_AC (k - centroid)^2 P / (sum_AC P + eps)).
- dominant_k: the integer ring n >= 1 (modes with round(k) = n) of maximal ring-mean P; dominant_power is that
  mean. Ties go to the smallest n, so a sine of integer wavenumber k gives dominant_k = k.
- slope: OLS slope of log(shell-mean P + eps) against log(shell-centre k) over the shells containing at least
  one mode; the shell centre is the mean k of its modes (no power weighting).
- flatness = exp(mean_AC log(|X|^2 + eps)) / (mean_AC |X|^2 + eps), over full-plane AC modes.
- rolloff_k: the smallest mode wavenumber k with sum_{AC, k' <= k} P >= 0.85 sum_AC P.
- anisotropy = (sum_{|kx|>|ky|} P - sum_{|ky|>|kx|} P) / (both + eps): +1 when the field varies only along x
  (the last axis, wave vector along x, i.e. vertical stripes), -1 when it varies only along y.

A field with no AC power (constant field) gets the values the eps-regularised ratios give: shell powers,
centroid, bandwidth, anisotropy and slope 0, flatness 1; dominant_k, dominant_power and rolloff_k are defined
as 0 (all power sits at k = 0). So every finite state yields finite features. A state with any non-finite
pixel, or whose power overflows float32, yields NaN for all 17 features of that (m, t, c).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch

from .family import EPS, ArraySpec, FeatureFamily, Needs, OperatorInputs
from .fourier import half_plane_weights, power_spectrum, time_chunks, wavenumbers

__all__ = [
    "FAMILY",
    "FEATURE_NAMES",
    "ROLLOFF_FRACTION",
    "SHELL_EDGES",
    "SUMMARY_STATISTICS",
    "compute",
    "rollout_tensor",
    "spectral_features",
    "time_realization_summary",
]

SHELL_EDGES = (0.5, 1.5, 2.5, 4.5, 8.5, 16.5, 32.5, 64.5)
N_SHELLS = len(SHELL_EDGES)  # 7 radial shells between the edges + 1 outer shell
ROLLOFF_FRACTION = 0.85
FEATURE_NAMES = tuple(f"shell_power_{r}" for r in range(N_SHELLS)) + (
    "dc_fraction",
    "centroid_k",
    "bandwidth_k",
    "dominant_k",
    "dominant_power",
    "slope",
    "flatness",
    "rolloff_k",
    "anisotropy",
)
SUMMARY_STATISTICS = ("time_mean", "time_std", "final", "realization_std_of_time_mean")


@dataclass(frozen=True)
class _Grid:
    """Per-(H, W, device) constants over the flattened half plane (N modes, index 0 is DC)."""

    k: torch.Tensor  # [N]
    weights: torch.Tensor  # [N] Parseval weights
    linear: torch.Tensor  # [N, 12]: shells 0..7, AC indicator, k, |kx|>|ky|, |ky|>|kx| (DC row all 0)
    rings: torch.Tensor  # [N, n_rings] membership of ring n = round(k), n >= 1
    ring_k: torch.Tensor  # [n_rings]
    ring_counts: torch.Tensor  # [n_rings] number of full-plane modes per ring
    slope_shells: torch.Tensor  # [S] indices of shells with at least one mode
    slope_counts: torch.Tensor  # [S] full-plane modes in those shells
    slope_weights: torch.Tensor  # [S] OLS weights: slope = log(shell mean) @ slope_weights
    flat_weights: torch.Tensor  # [N-1] full-plane averaging weights over AC modes
    n_ac: float  # number of full-plane AC modes (H*W - 1)
    order: torch.Tensor  # [N-1] AC mode indices sorted by k
    k_sorted: torch.Tensor  # [N-1]


@functools.lru_cache(maxsize=16)
def _grid(height: int, width: int, device: str) -> _Grid:
    ky, kx = (g.double() for g in wavenumbers(height, width))
    ky, kx = torch.broadcast_tensors(ky, kx)
    k = torch.sqrt(kx**2 + ky**2).flatten()
    w = half_plane_weights(width).double().repeat(height)
    ac = k > 0
    k_max = min(height, width) / 2
    edges = torch.tensor(SHELL_EDGES, dtype=torch.float64)
    # Edges are half-integers and k^2 is an integer, so no k ever lies on an edge.
    radial = torch.searchsorted(edges, k, right=True) - 1  # -1 below 0.5, 7 at/above 64.5
    shell = torch.where((k > k_max) | (radial >= N_SHELLS - 1), N_SHELLS - 1, radial)
    shell_onehot = torch.nn.functional.one_hot(shell.clamp_min(0), N_SHELLS).double() * ac[:, None]
    ax, ay = kx.abs().flatten(), ky.abs().flatten()
    linear = torch.cat(
        [shell_onehot, torch.stack([ac.double(), k, (ax > ay).double(), (ay > ax).double()], 1)], 1
    ) * ac[:, None]

    ring = torch.round(k).long()
    n_rings = int(ring.max())
    rings = torch.nn.functional.one_hot(ring, n_rings + 1)[:, 1:].double() * ac[:, None]
    ring_counts = (w[:, None] * rings).sum(0)

    shell_counts = (w[:, None] * shell_onehot).sum(0)
    nonempty = torch.nonzero(shell_counts > 0).flatten()
    centres = (w * k) @ shell_onehot[:, nonempty] / shell_counts[nonempty]
    x = torch.log(centres)
    sxx = ((x - x.mean()) ** 2).sum()
    # Fewer than two non-empty shells (only on grids below 4x4): the slope is undefined -> NaN weights.
    slope_weights = (x - x.mean()) / sxx if len(nonempty) >= 2 else torch.full_like(x, float("nan"))

    order = torch.argsort(k[1:], stable=True) + 1
    f32 = functools.partial(torch.Tensor.to, device=device, dtype=torch.float32)
    return _Grid(
        k=f32(k),
        weights=f32(w),
        linear=f32(linear),
        rings=f32(rings),
        ring_k=f32(torch.arange(1, n_rings + 1, dtype=torch.float64)),
        ring_counts=f32(ring_counts.clamp_min(1)),  # an empty ring then has mean 0 and never wins
        slope_shells=nonempty.to(device),
        slope_counts=f32(shell_counts[nonempty]),
        slope_weights=f32(slope_weights),
        flat_weights=f32(w[1:] / w[1:].sum()),
        n_ac=float(w[1:].sum()),
        order=order.to(device),
        k_sorted=f32(k[order]),
    )


def spectral_features(u: torch.Tensor) -> torch.Tensor:
    """The 17 features (``FEATURE_NAMES`` order) of each field: ``[..., H, W]`` -> ``[..., 17]`` float32."""
    lead, (height, width) = u.shape[:-2], u.shape[-2:]
    g = _grid(height, width, str(u.device))
    fields = u.reshape(-1, height, width).to(torch.float32)
    finite = torch.isfinite(fields).all(-1).all(-1)
    # Non-finite fields are zeroed only to keep NaN out of sort/argmax; their features are set to NaN below.
    fields = torch.where(finite[:, None, None], fields, 0.0)
    power = power_spectrum(fields).flatten(1)  # [B, N] unweighted |X|^2
    pw = power * g.weights
    total = pw.sum(-1)
    lin = pw @ g.linear
    ac = lin[:, 8]
    ac_eps = ac + EPS

    shells = lin[:, :N_SHELLS] / ac_eps[:, None]
    dc_fraction = pw[:, 0] / (total + EPS)
    centroid = lin[:, 9] / ac_eps
    # Direct second moment, not E[k^2] - centroid^2, which cancels catastrophically for narrow spectra.
    bandwidth = torch.sqrt(((g.k[1:] - centroid[:, None]).square() * pw[:, 1:]).sum(-1) / ac_eps)
    ring_mean = (pw @ g.rings) / g.ring_counts
    dominant_power, arg = ring_mean.max(-1)
    dominant_k = torch.where(dominant_power > 0, g.ring_k[arg], 0.0)
    shell_mean = lin[:, g.slope_shells] / g.slope_counts
    slope = torch.log(shell_mean + EPS) @ g.slope_weights
    flatness = torch.exp(torch.log(power[:, 1:] + EPS) @ g.flat_weights) / (ac / g.n_ac + EPS)
    cumulative = torch.cumsum(pw[:, g.order], -1)
    # Threshold from the cumulative sum's own last entry, so it is always reached (no float32 mismatch).
    index = torch.searchsorted(cumulative, ROLLOFF_FRACTION * cumulative[:, -1:]).clamp_max(len(g.order) - 1)
    rolloff = torch.where(cumulative[:, -1] > 0, g.k_sorted[index[:, 0]], 0.0)
    x_dom, y_dom = lin[:, 10], lin[:, 11]
    anisotropy = (x_dom - y_dom) / (x_dom + y_dom + EPS)

    scalars = [dc_fraction, centroid, bandwidth, dominant_k, dominant_power, slope, flatness, rolloff, anisotropy]
    out = torch.cat([shells, torch.stack(scalars, -1)], -1)
    valid = (finite & torch.isfinite(total))[:, None] & torch.isfinite(out)
    return torch.where(valid, out, float("nan")).reshape(*lead, len(FEATURE_NAMES))


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
        raise ValueError(f"trajectories must be a non-empty [M, T, C, H, W] tensor, got {tuple(trajectories.shape)}")
    return trajectories


def compute(inputs: OperatorInputs) -> dict[str, np.ndarray]:
    """``series`` ``[M, T, C, 17]`` and ``summary`` ``[C, 17, 4]`` float32 for one operator."""
    trajectories = rollout_tensor(inputs)
    m_count, steps, channels, height, width = trajectories.shape
    series = torch.empty(m_count, steps, channels, len(FEATURE_NAMES), device=trajectories.device)
    # One realization and one fixed time chunk at a time: the calls never depend on M (batch invariance).
    for m in range(m_count):
        for chunk in time_chunks(steps, channels * height * width):
            series[m, chunk] = spectral_features(trajectories[m, chunk].clone())
    summary = time_realization_summary(series)
    return {"series": series.cpu().numpy(), "summary": summary.cpu().numpy()}


FAMILY = FeatureFamily(
    name="spectral",
    version="1.0.0",
    needs=Needs.ROLLOUT,
    description=(
        "How each state's variance is spread over spatial scales: radial power-spectrum shell fractions, "
        "centroid, peak, slope, flatness and anisotropy per realization, time step and channel."
    ),
    arrays=(
        ArraySpec(
            name="series",
            axes=("realization", "time", "channel", "feature"),
            field_names=FEATURE_NAMES,
            description="Spectral features of every state u[m, t, c].",
        ),
        ArraySpec(
            name="summary",
            axes=("channel", "feature", "statistic"),
            field_names=FEATURE_NAMES,
            description="(mean_t, std_t, final) of the realization-mean series, and std over m of mean_t.",
            axis_labels={"statistic": SUMMARY_STATISTICS},
        ),
    ),
    compute=compute,
    config={
        "fft": "rfft2, norm=ortho, half-plane columns weighted x2 (Parseval)",
        "wavenumber": "integer cycles per domain in each direction, ky wrapped to [-H/2, H/2)",
        "shell_edges": list(SHELL_EDGES),
        "n_shells": N_SHELLS,
        "k_max": "min(H, W) / 2",
        "outer_shell": "all AC modes with k > k_max or k >= 64.5",
        "dominant": "integer rings round(k) >= 1, ring-mean power, ties to smallest k",
        "slope_centre": "mean k of the shell's modes",
        "rolloff_fraction": ROLLOFF_FRACTION,
        "eps": EPS,
        "dtype": "float32",
        "std": "population",
    },
)
