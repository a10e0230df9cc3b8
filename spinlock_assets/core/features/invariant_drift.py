"""F3 ``invariant_drift``: how five norms of each channel drift over a trajectory, at three spatial scales.

Scales: ``raw`` = u; ``low`` = periodic Gaussian blur with sigma = 2 px, applied as the Fourier multiplier
exp(-2 pi^2 sigma^2 (kx^2/W^2 + ky^2/H^2)); ``high`` = raw - low.

Norms I(t) of each field (pixel means; periodic):
- L1 = <|u|>, L2 = sqrt(<u^2>), Linf = max|u|, TV = <|u(x+1) - u(x)| + |u(y+1) - u(y)|> (forward differences);
- entropy: Shannon entropy in nats of the pixel values in 32 equal-width bins spanning that field's own
  [min, max] (the maximum falls in the last bin). A field with max == min has entropy 0. Entropy is
  scale-invariant, so a field that is constant up to float32 FFT roundoff (e.g. the filtered scales of a
  constant field on odd grids such as 33x35; exact on 32x32, 48x40, 64x64) gets the roundoff's entropy.

Metrics over the T-1 increments D(t) = I(t+1) - I(t) (population std):
- mean_drift = mean(D) / (|I(0)| + eps); drift_std = std(D) / (|I(0)| + eps);
- log_ratio = log((|I(T-1)| + eps) / (|I(0)| + eps)); monotonicity = |mean(sign D)| in [0, 1] (steps with
  D == 0 count as 0, so a constant norm has monotonicity 0).

Columns: norm -> metric -> scale, e.g. ``L1_mean_drift_raw, L1_mean_drift_low, L1_mean_drift_high,
L1_drift_std_raw, ...`` (5 x 4 x 3 = 60). A state with any non-finite pixel makes all its norms NaN, and a
norm series with any NaN step makes all 4 metrics of that (norm, scale) NaN. T = 1 (no increment) gives NaN
for mean_drift, drift_std and monotonicity.
"""

from __future__ import annotations

import numpy as np

from ..lazy_torch import torch
from .family import EPS, ArraySpec, FeatureFamily, Needs, OperatorInputs
from .fourier import gaussian_lowpass, gaussian_multiplier
from .trajectory import rollout_tensor, time_chunks

__all__ = [
    "ENTROPY_BINS",
    "FAMILY",
    "FEATURE_NAMES",
    "METRICS",
    "NORMS",
    "SCALES",
    "SIGMA_PX",
    "SUMMARY_STATISTICS",
    "compute",
    "drift_metrics",
    "invariant_norms",
]

NORMS = ("L1", "L2", "Linf", "entropy", "TV")
METRICS = ("mean_drift", "drift_std", "log_ratio", "monotonicity")
SCALES = ("raw", "low", "high")
FEATURE_NAMES = tuple(f"{n}_{m}_{s}" for n in NORMS for m in METRICS for s in SCALES)
SUMMARY_STATISTICS = ("mean_over_realizations", "std_over_realizations")
SIGMA_PX = 2.0
ENTROPY_BINS = 32


def _entropy(fields: torch.Tensor) -> torch.Tensor:
    """Histogram entropy (nats) of each row: ``[B, P]`` -> ``[B]``; NaN where the range is non-finite."""
    low, high = fields.amin(-1, keepdim=True), fields.amax(-1, keepdim=True)
    span = high - low
    usable = torch.isfinite(span)[:, 0]
    # span/32 is exact (power of two), so bin edges are low + b*span/32 up to one rounding of the quotient.
    width = torch.where(span > 0, span / ENTROPY_BINS, 1.0)
    # Clamping the integers also tames the cast of NaN/Inf in unusable rows, which become NaN below.
    bins = ((fields - low) / width).long().clamp_(0, ENTROPY_BINS - 1)
    counts = torch.zeros(fields.shape[0], ENTROPY_BINS, dtype=torch.int32, device=fields.device)
    counts.scatter_add_(1, bins, torch.ones((), dtype=torch.int32, device=fields.device).expand_as(bins))
    p = counts.to(torch.float32) / fields.shape[-1]
    entropy = 0.0 - torch.xlogy(p, p).sum(-1)  # 0.0 - x, not -x: a constant field gives +0.0, not -0.0
    return torch.where(usable, entropy, float("nan"))


def _total_variation(fields: torch.Tensor) -> torch.Tensor:
    """<|u(x+1) - u(x)| + |u(y+1) - u(y)|> with periodic wrap: ``[..., H, W]`` -> ``[...]``."""
    # Interior differences plus the wrap-around column/row, without materialising rolled copies.
    dx = (fields[..., 1:] - fields[..., :-1]).abs().sum((-2, -1)) + (
        fields[..., 0] - fields[..., -1]
    ).abs().sum(-1)
    dy = (fields[..., 1:, :] - fields[..., :-1, :]).abs().sum((-2, -1)) + (
        (fields[..., 0, :] - fields[..., -1, :]).abs().sum(-1)
    )
    return (dx + dy) / (fields.shape[-2] * fields.shape[-1])


def invariant_norms(u: torch.Tensor, multiplier: torch.Tensor | None = None) -> torch.Tensor:
    """Norms of every field at every scale: ``[..., H, W]`` -> ``[..., 5, 3]`` (``NORMS`` x ``SCALES``).

    ``multiplier`` optionally reuses a precomputed ``gaussian_multiplier(H, W, SIGMA_PX)``.
    """
    lead, (height, width) = u.shape[:-2], u.shape[-2:]
    raw = u.reshape(-1, height, width).to(torch.float32)
    finite = torch.isfinite(raw).all(-1).all(-1)
    raw = torch.where(finite[:, None, None], raw, 0.0)  # keep NaN out of the FFT and the histogram
    low = gaussian_lowpass(raw, SIGMA_PX, multiplier)
    fields = torch.stack([raw, low, raw - low], 1)  # [B, 3, H, W]
    magnitude = fields.abs()
    norms = [
        magnitude.mean((-2, -1)),
        fields.square().mean((-2, -1)).sqrt(),
        magnitude.amax((-2, -1)),
        _entropy(fields.flatten(2).flatten(0, 1)).reshape(-1, len(SCALES)),
        _total_variation(fields),
    ]
    out = torch.stack(norms, 1)  # [B, 5, 3]
    out = torch.where(finite[:, None, None] & torch.isfinite(out), out, float("nan"))
    return out.reshape(*lead, len(NORMS), len(SCALES))


def drift_metrics(norms: torch.Tensor) -> torch.Tensor:
    """``[T, *rest]`` norm series -> ``[*rest, 4]`` metrics (``METRICS`` order) along the time axis 0."""
    first, last = norms[0].abs(), norms[-1].abs()
    nan = torch.full_like(first, float("nan"))
    if norms.shape[0] >= 2:
        increments = norms[1:] - norms[:-1]
        mean_drift = increments.mean(0) / (first + EPS)
        drift_std = increments.std(0, correction=0) / (first + EPS)
        monotonicity = torch.sign(increments).mean(0).abs()
    else:
        mean_drift, drift_std, monotonicity = nan, nan, nan
    log_ratio = torch.log((last + EPS) / (first + EPS))
    out = torch.stack([mean_drift, drift_std, log_ratio, monotonicity], -1)
    # log_ratio only reads the end points; a NaN step anywhere invalidates the whole series' metrics.
    complete = torch.isfinite(norms).all(0)[..., None]
    return torch.where(complete & torch.isfinite(out), out, float("nan"))


def compute(inputs: OperatorInputs) -> dict[str, np.ndarray]:
    """``per_trajectory`` ``[M, C, 60]`` and ``summary`` ``[C, 60, 2]`` float32 for one operator."""
    trajectories = rollout_tensor(inputs)
    m_count, steps, channels, height, width = trajectories.shape
    multiplier = gaussian_multiplier(height, width, SIGMA_PX, trajectories.device)
    per_trajectory = torch.empty(m_count, channels, len(FEATURE_NAMES), device=trajectories.device)
    norms = torch.empty(steps, channels, len(NORMS), len(SCALES), device=trajectories.device)
    # One realization and one fixed time chunk at a time: the calls never depend on M (batch invariance).
    for m in range(m_count):
        for chunk in time_chunks(steps, channels * height * width):
            norms[chunk] = invariant_norms(trajectories[m, chunk].clone(), multiplier)
        metrics = drift_metrics(norms)  # [C, 5, 3, 4]
        per_trajectory[m] = metrics.transpose(-1, -2).reshape(channels, -1)  # norm -> metric -> scale
    summary = torch.stack([per_trajectory.mean(0), per_trajectory.std(0, correction=0)], -1)
    return {"per_trajectory": per_trajectory.cpu().numpy(), "summary": summary.cpu().numpy()}


FAMILY = FeatureFamily(
    name="invariant_drift",
    version="1.0.0",
    needs=Needs.ROLLOUT,
    description=(
        "How the L1, L2, max, entropy and total-variation norms of each channel drift from the initial "
        "condition over a trajectory, on the raw field and on its Gaussian low- and high-pass parts."
    ),
    arrays=(
        ArraySpec(
            name="per_trajectory",
            axes=("realization", "channel", "feature"),
            field_names=FEATURE_NAMES,
            description="Drift metrics of each norm at each scale, per realization and channel.",
        ),
        ArraySpec(
            name="summary",
            axes=("channel", "feature", "statistic"),
            field_names=FEATURE_NAMES,
            description="Mean and population std over realizations of per_trajectory.",
            axis_labels={"statistic": SUMMARY_STATISTICS},
        ),
    ),
    compute=compute,
    config={
        "norms": list(NORMS),
        "metrics": list(METRICS),
        "scales": list(SCALES),
        "column_order": "norm, metric, scale",
        "lowpass": "periodic Gaussian, Fourier multiplier exp(-2 pi^2 sigma^2 (kx^2/W^2 + ky^2/H^2))",
        "sigma_px": SIGMA_PX,
        "entropy_bins": ENTROPY_BINS,
        "entropy_range": "per-field min/max",
        "entropy_units": "nats",
        "tv": "periodic forward differences, pixel mean of |dx| + |dy|",
        "eps": EPS,
        "dtype": "float32",
        "std": "population",
    },
)
