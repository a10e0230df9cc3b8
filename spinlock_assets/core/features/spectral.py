"""F1 ``spectral``: radial power-spectrum shape of every state, per realization, step and channel.

Definitions (P is the Parseval-weighted half-plane power of ``fourier``; "AC" means every mode but DC, i.e.
k >= 0.5; means over modes are full-plane means, i.e. weighted by the half-plane weights):

- Shells: 7 radial shells ``[e_r, e_{r+1})`` from the edges (0.5, 1.5, 2.5, 4.5, 8.5, 16.5, 32.5, 64.5),
  each clipped to ``k <= k_max = min(H, W)/2`` (= H/2 on square grids), plus an 8th outer shell holding every
  other AC mode (the corner ``k > k_max``; on grids with k_max > 64.5 also ``64.5 <= k <= k_max``). So the 8
  shell powers partition the AC power and sum to 1. A clipped-away shell is empty and its power is 0 (on
  64x64 grids: shell 6).
- shell_power_r = sum_shell P / (sum_AC P + eps); dc_fraction = P(0) / (sum P + eps).
- centroid_k = sum_AC k P / (sum_AC P + eps);
  bandwidth_k = sqrt(sum_AC (k - centroid)^2 P / (sum_AC P + eps)).
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

from ..lazy_torch import torch
from .family import EPS, ArraySpec, FeatureFamily, Needs, OperatorInputs
from .fourier import half_plane_weights, power_spectrum, wavenumbers
from .trajectory import SUMMARY_STATISTICS, rollout_tensor, time_chunks, time_realization_summary

__all__ = [
    "FAMILY",
    "FEATURE_NAMES",
    "ROLLOFF_FRACTION",
    "SHELL_EDGES",
    "compute",
    "spectral_features",
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


@dataclass(frozen=True)
class _Grid:
    """Per-(H, W, device) constants. AC modes are kept sorted by k, so every shell and ring is a slice."""

    order: torch.Tensor  # [N-1] flat half-plane indices of the AC modes sorted by k (index 0 is DC)
    k: torch.Tensor  # [N-1] k of the sorted AC modes
    weights: torch.Tensor  # [N-1] Parseval weights of the sorted AC modes
    x_dominant: torch.Tensor  # [N-1] 1 where |kx| > |ky|
    y_dominant: torch.Tensor  # [N-1] 1 where |ky| > |kx|
    flat_weights: torch.Tensor  # [N-1] full-plane averaging weights (weights / their sum)
    n_ac: float  # number of full-plane AC modes (H*W - 1)
    shells: tuple[tuple[int, int], ...]  # N_SHELLS slices of the sorted modes (possibly empty)
    rings: tuple[tuple[int, int], ...]  # slices of ring n = round(k) = 1, 2, ...
    ring_counts: torch.Tensor  # [n_rings] full-plane modes per ring
    slope_shells: tuple[int, ...]  # shells with at least one mode
    slope_counts: torch.Tensor  # [S] full-plane modes of those shells
    slope_weights: torch.Tensor  # [S] OLS weights: slope = sum(log shell mean * weights)


def _slices(labels: torch.Tensor, n: int) -> tuple[tuple[int, int], ...]:
    """Slices of the sorted label vector holding label 0..n-1 (labels are non-decreasing)."""
    bounds = torch.searchsorted(labels, torch.arange(n + 1)).tolist()
    return tuple(zip(bounds[:-1], bounds[1:], strict=True))


@functools.lru_cache(maxsize=16)
def _grid(height: int, width: int, device: str) -> _Grid:
    ky, kx = (g.double() for g in wavenumbers(height, width))
    ky, kx = (g.flatten() for g in torch.broadcast_tensors(ky, kx))
    k = torch.sqrt(kx**2 + ky**2)
    w = half_plane_weights(width).double().repeat(height)
    order = torch.argsort(k[1:], stable=True) + 1
    k, w, kx, ky = k[order], w[order], kx[order], ky[order]

    k_max = min(height, width) / 2
    edges = torch.tensor(SHELL_EDGES, dtype=torch.float64)
    # Edges are half-integers and k^2 is an integer, so no k ever lies on an edge.
    radial = torch.searchsorted(edges, k, right=True) - 1  # 0..6 inside the edges, 7 at/above 64.5
    shell = torch.where((k > k_max) | (radial >= N_SHELLS - 1), N_SHELLS - 1, radial)
    ring = torch.round(k).long() - 1  # ring n = round(k) >= 1 at label n - 1
    n_rings = int(ring.max()) + 1
    shells, rings = _slices(shell, N_SHELLS), _slices(ring, n_rings)

    shell_counts = torch.stack([w[a:b].sum() for a, b in shells])
    nonempty = tuple(r for r in range(N_SHELLS) if shell_counts[r] > 0)
    centres = torch.stack([(w[a:b] * k[a:b]).sum() / shell_counts[r] for r, (a, b) in enumerate(shells)])
    x = torch.log(centres[list(nonempty)])
    # Fewer than two non-empty shells (only on grids below 4x4): the slope is undefined -> NaN weights.
    slope_weights = (x - x.mean()) / ((x - x.mean()) ** 2).sum() if len(nonempty) >= 2 else x * float("nan")

    f32 = functools.partial(torch.Tensor.to, device=device, dtype=torch.float32)
    return _Grid(
        order=order.to(device),
        k=f32(k),
        weights=f32(w),
        x_dominant=f32((kx.abs() > ky.abs()).double()),
        y_dominant=f32((ky.abs() > kx.abs()).double()),
        flat_weights=f32(w / w.sum()),
        n_ac=float(w.sum()),
        shells=shells,
        rings=rings,
        # An empty ring (none on grids >= 2x2) would get mean 0 and never win the argmax.
        ring_counts=f32(torch.stack([w[a:b].sum() for a, b in rings]).clamp_min(1)),
        slope_shells=nonempty,
        slope_counts=f32(shell_counts[list(nonempty)]),
        slope_weights=f32(slope_weights),
    )


def _segment_sums(values: torch.Tensor, slices: tuple[tuple[int, int], ...]) -> torch.Tensor:
    """``[B, N]`` -> ``[B, len(slices)]`` sums over column slices (an empty slice sums to 0)."""
    return torch.stack([values[:, a:b].sum(-1) for a, b in slices], -1)


def spectral_features(u: torch.Tensor) -> torch.Tensor:
    """The 17 features (``FEATURE_NAMES`` order) of each field: ``[..., H, W]`` -> ``[..., 17]`` float32.

    Every reduction is a ``torch.sum`` over the mode axis of a [B, N] tensor, never a BLAS product: a sum
    with several outputs runs serially per output, so its rounding does not depend on the thread count,
    while MKL's sgemm splits its inner dimension across threads.
    """
    lead, (height, width) = u.shape[:-2], u.shape[-2:]
    g = _grid(height, width, str(u.device))
    fields = u.reshape(-1, height, width).to(torch.float32)
    finite = torch.isfinite(fields).all(-1).all(-1)
    # Non-finite fields are zeroed only to keep NaN out of sort/argmax; their features are set to NaN below.
    fields = torch.where(finite[:, None, None], fields, 0.0)
    power = power_spectrum(fields).flatten(1)  # [B, N] unweighted |X|^2, index 0 is DC
    dc = power[:, 0]
    ac_power = power[:, g.order]  # [B, N-1] sorted by k
    pw = ac_power * g.weights
    ac = pw.sum(-1)
    ac_eps = ac + EPS
    total = dc + ac

    shells = _segment_sums(pw, g.shells) / ac_eps[:, None]
    dc_fraction = dc / (total + EPS)
    centroid = (pw * g.k).sum(-1) / ac_eps
    # Direct second moment, not E[k^2] - centroid^2, which cancels catastrophically for narrow spectra.
    bandwidth = torch.sqrt(((g.k - centroid[:, None]).square() * pw).sum(-1) / ac_eps)
    ring_mean = _segment_sums(pw, g.rings) / g.ring_counts
    dominant_power, arg = ring_mean.max(-1)  # ties: first maximum, i.e. the smallest ring
    dominant_k = torch.where(dominant_power > 0, (arg + 1).to(torch.float32), 0.0)
    shell_mean = _segment_sums(pw, tuple(g.shells[r] for r in g.slope_shells)) / g.slope_counts
    log_mean = torch.log(shell_mean + EPS)
    # OLS weights sum to 0 only up to float32 rounding; shifting y by its first entry changes nothing
    # mathematically but makes a flat spectrum give exactly 0 and reduces cancellation.
    slope = ((log_mean - log_mean[:, :1]) * g.slope_weights).sum(-1)
    flatness = torch.exp((torch.log(ac_power + EPS) * g.flat_weights).sum(-1)) / (ac / g.n_ac + EPS)
    cumulative = torch.cumsum(pw, -1)
    # Threshold from the cumulative sum's own last entry, so it is always reached (no float32 mismatch).
    index = torch.searchsorted(cumulative, ROLLOFF_FRACTION * cumulative[:, -1:]).clamp_max(pw.shape[-1] - 1)
    rolloff = torch.where(cumulative[:, -1] > 0, g.k[index[:, 0]], 0.0)
    x_dom, y_dom = (pw * g.x_dominant).sum(-1), (pw * g.y_dominant).sum(-1)
    anisotropy = (x_dom - y_dom) / (x_dom + y_dom + EPS)

    scalars = [
        dc_fraction,
        centroid,
        bandwidth,
        dominant_k,
        dominant_power,
        slope,
        flatness,
        rolloff,
        anisotropy,
    ]
    out = torch.cat([shells, torch.stack(scalars, -1)], -1)
    valid = (finite & torch.isfinite(total))[:, None] & torch.isfinite(out)
    return torch.where(valid, out, float("nan")).reshape(*lead, len(FEATURE_NAMES))


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
