"""F0 ``base``: ten per-channel scalar series computed inline from every rollout state, and their summary.

``step_features`` turns states ``[B, C, H, W]`` into rows ``[B, C, 10]`` (columns ``SERIES_FIELDS``) with
periodic boundaries, pixel means ⟨·⟩ and unit grid spacing:

- ``mean`` ⟨u⟩; ``std`` √⟨(u−⟨u⟩)²⟩ (population, two-pass so a large mean does not cancel it away);
- ``min``, ``max``; ``energy`` ⟨u²⟩; ``l1`` ⟨|u|⟩; ``linf`` max|u|;
- ``grad_energy`` ⟨(∂x u)² + (∂y u)²⟩ with central differences ∂x u = (u(x+1) − u(x−1))/2;
- ``tv`` ⟨|u(x+1) − u(x)| + |u(y+1) − u(y)|⟩ (forward differences);
- ``nonfinite_frac``: the fraction of the channel's pixels that are NaN or ±Inf. It is per (sample,
  channel); when it is > 0 the other nine columns of that (sample, channel) are NaN. Another channel of
  the same sample keeps its values (differences never mix channels). A finite field whose squares
  overflow float32 (|u| > ~1.8e19) has ``energy`` = +Inf with ``nonfinite_frac`` = 0: kept, not clipped.

Bit-exact batch invariance: a row depends only on its own sample, bit for bit, whatever the batch size,
the sample's position, the thread count or the device. Library reductions (``torch.sum``) do not promise
that: CPU sums over one output split across threads, and CUDA picks its reduction tree from the number
of outputs. So every sum here is a fixed pairwise tree of elementwise adds (``_pairwise_sum``), whose
order depends only on H·W; min/max and the non-finite count are exact, so their order is irrelevant.

``summarize`` reduces a series ``[M, T, C, 10]`` to ``[C, 30, 2]``: for each (m, c) and each of
``SUMMARY_SERIES`` the six ``SUMMARY_STATISTICS`` (column order series-major, statistic-minor, e.g.
``mean_initial, mean_final, ..., std_initial, ...``), then mean and population std over realizations.
- ``initial`` x(0), ``final`` x(T−1), ``time_mean``, ``time_std`` (population over t);
- ``slope``: OLS slope against τ = t/(T−1) ∈ [0, 1] of log(x + EPS) for the non-negative series (std,
  energy, grad_energy, linf) and of x itself for ``mean``; NaN when T < 2;
- ``blowup_t``: (first t with nonfinite_frac > 0)/T, or 1.0. It is a property of the channel, so it is
  the same for the five series (kept so every series block has the same six columns).
A realization with a non-finite step has NaN time statistics (NaN is kept, never zeroed), so the mean
over realizations of those columns is NaN too; ``blowup_t`` stays finite.
"""

from __future__ import annotations

import numpy as np

from ..lazy_torch import torch
from .family import EPS, ArraySpec, FeatureFamily, Needs, OperatorInputs
from .trajectory import ols_slope

__all__ = [
    "FAMILY",
    "REALIZATION_STATISTICS",
    "SERIES_FIELDS",
    "SUMMARY_FIELDS",
    "SUMMARY_SERIES",
    "SUMMARY_STATISTICS",
    "compute",
    "step_features",
    "summarize",
]

SERIES_FIELDS: tuple[str, ...] = (
    "mean",
    "std",
    "min",
    "max",
    "energy",
    "l1",
    "linf",
    "grad_energy",
    "tv",
    "nonfinite_frac",
)
SUMMARY_SERIES: tuple[str, ...] = ("mean", "std", "energy", "grad_energy", "linf")
SUMMARY_STATISTICS: tuple[str, ...] = ("initial", "final", "time_mean", "time_std", "slope", "blowup_t")
SUMMARY_FIELDS: tuple[str, ...] = tuple(f"{x}_{stat}" for x in SUMMARY_SERIES for stat in SUMMARY_STATISTICS)
REALIZATION_STATISTICS: tuple[str, ...] = ("mean_over_realizations", "std_over_realizations")

_NONFINITE = SERIES_FIELDS.index("nonfinite_frac")
_SUMMARY_COLUMNS = [SERIES_FIELDS.index(name) for name in SUMMARY_SERIES]
# Bounds the temporary memory of ``compute`` (about 9 float32 copies of a chunk); results do not depend on it.
_COMPUTE_CHUNK_ELEMENTS = 1 << 22


def _pairwise_sum(q: torch.Tensor, *, overwrite: bool = False) -> torch.Tensor:
    """Sum over the last axis by a fixed pairwise tree: ``[..., N]`` → ``[...]``.

    Each level adds the second half onto the first (an odd leftover joins element 0), so the rounding
    depends only on N and the row's values; elementwise adds are correctly rounded on every device.
    Levels run in place (fresh buffers page-fault on the CPU); ``overwrite`` lets the first level
    clobber ``q`` too, otherwise it writes a new half-size buffer.
    """
    n = q.shape[-1]
    while n > 1:
        half = n // 2
        if overwrite:
            head = q[..., :half]
            head += q[..., half : 2 * half]
        else:
            head, overwrite = q[..., :half] + q[..., half : 2 * half], True
        if n % 2:
            head[..., :1] += q[..., 2 * half : n]
        q, n = head, half
    return q[..., 0]


def step_features(states: torch.Tensor) -> torch.Tensor:
    """F0 rows of a batch of states: ``[B, C, H, W]`` float32 → ``[B, C, 10]`` float32, same device.

    Columns are in ``SERIES_FIELDS`` order. Each row is a pure function of its own (sample, channel),
    bit-identical for any batch composition (see the module docstring).
    """
    if states.ndim != 4:
        raise ValueError(f"states must be [B, C, H, W]; got shape {tuple(states.shape)}")
    x = states.to(torch.float32)
    b, c, h, w = x.shape
    n = h * w
    flat = x.reshape(b, c, n)
    lo, hi = flat.amin(dim=-1), flat.amax(dim=-1)  # exact in any order; aminmax is ~20x slower on CPU
    mean = _pairwise_sum(flat) / n

    # One stacked buffer so a single tree sums all six pixel quantities; ops write into it (with one
    # temporary) because every fresh CPU allocation of this size costs page faults.
    q = torch.empty((b, c, 6, h, w), dtype=torch.float32, device=x.device)
    torch.sub(x, mean[..., None, None], out=q[:, :, 0]).square_()
    torch.mul(x, x, out=q[:, :, 1])
    torch.abs(x, out=q[:, :, 2])
    # Periodic neighbours as views of one circularly padded copy (4 rolls cost ~3x more on the CPU).
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1), mode="circular")  # [B, C, H+2, W+2]
    xp, xm = padded[..., 1:-1, 2:], padded[..., 1:-1, :-2]  # u(x+1), u(x-1) along W
    yp, ym = padded[..., 2:, 1:-1], padded[..., :-2, 1:-1]  # u(y+1), u(y-1) along H
    torch.sub(xp, x, out=q[:, :, 3]).abs_()
    torch.sub(xp, xm, out=q[:, :, 4]).square_()  # (2 ∂x u)²
    tmp = torch.sub(yp, x).abs_()
    q[:, :, 3] += tmp
    q[:, :, 4] += torch.sub(yp, ym, out=tmp).square_()  # + (2 ∂y u)²
    torch.sub(x, x, out=q[:, :, 5]).nan_to_num_(1.0)  # 1 where u is NaN/±Inf (u−u is 0 iff finite)
    # Row 5 sums small integers, exact in float32 up to 2^24 pixels.
    sums = _pairwise_sum(q.view(b, c, 6, n), overwrite=True) / n

    rows = torch.stack(
        (
            mean,
            sums[..., 0].sqrt(),
            lo,
            hi,
            sums[..., 1],
            sums[..., 2],
            torch.maximum(hi, lo.neg()),
            sums[..., 4] * 0.25,  # the /2 of each central difference, squared; exact power-of-two scaling
            sums[..., 3],
            sums[..., 5],
        ),
        dim=-1,
    )
    rows[..., :_NONFINITE].masked_fill_((sums[..., 5] > 0).unsqueeze(-1), float("nan"))
    return rows


def summarize(series: np.ndarray) -> np.ndarray:
    """Summary of an F0 series: ``[M, T, C, 10]`` → ``[C, 30, 2]`` float32 (float64 internally).

    Feature axis: ``SUMMARY_FIELDS``; last axis: (mean over realizations, population std over them).
    """
    a = np.asarray(series, dtype=np.float64)
    if a.ndim != 4 or a.shape[-1] != len(SERIES_FIELDS) or a.shape[1] < 1:
        raise ValueError(f"series must be [M, T, C, {len(SERIES_FIELDS)}] with T >= 1; got shape {a.shape}")
    steps = a.shape[1]
    x = a[..., _SUMMARY_COLUMNS]  # [M, T, C, 5]
    nonfinite = a[..., _NONFINITE] > 0  # [M, T, C]
    blowup = np.where(nonfinite.any(axis=1), nonfinite.argmax(axis=1) / steps, 1.0)  # [M, C]
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        logged = x.copy()
        logged[..., 1:] = np.log(x[..., 1:] + EPS)  # every summary series but `mean` is non-negative
        stats = np.stack(
            (
                x[:, 0],
                x[:, -1],
                x.mean(axis=1),
                x.std(axis=1),
                ols_slope(logged, axis=1),
                np.broadcast_to(blowup[..., None], blowup.shape + (len(SUMMARY_SERIES),)),
            ),
            axis=-1,
        )  # [M, C, 5, 6]: series-major, statistic-minor once flattened
        per_realization = stats.reshape(*stats.shape[:2], len(SUMMARY_FIELDS))
        summary = np.stack((per_realization.mean(axis=0), per_realization.std(axis=0)), axis=-1)
    return summary.astype(np.float32)


def compute(inputs: OperatorInputs) -> dict[str, np.ndarray]:
    """F0 of one operator from its trajectories ``[M, T, C, H, W]``.

    Returns ``{"series": [M, T, C, 10], "summary": [C, 30, 2]}`` float32. Rows are computed in chunks of
    whole states; by batch invariance they equal, byte for byte, the rows computed inline per step.
    """
    if inputs.trajectories is None:
        raise ValueError("base.compute needs inputs.trajectories [M, T, C, H, W]")
    traj = torch.as_tensor(inputs.trajectories)
    if traj.ndim != 5:
        raise ValueError(f"trajectories must be [M, T, C, H, W]; got shape {tuple(traj.shape)}")
    m, t, c, h, w = traj.shape
    states = traj.reshape(m * t, c, h, w)
    chunk = max(1, _COMPUTE_CHUNK_ELEMENTS // max(1, c * h * w))
    rows = [step_features(states[i : i + chunk]).cpu() for i in range(0, m * t, chunk)]
    series = torch.cat(rows).reshape(m, t, c, len(SERIES_FIELDS)).numpy()
    return {"series": series, "summary": summarize(series)}


FAMILY = FeatureFamily(
    name="base",
    version="1.0.0",
    needs=Needs.ROLLOUT,
    description=(
        "Per-channel scalar series of every state (moments, extrema, norms, gradient energy, total "
        "variation, non-finite fraction), computed inline during the rollout, and their per-channel "
        "trajectory summary (initial, final, time mean/std, log-slope, blow-up time) over realizations."
    ),
    arrays=(
        ArraySpec(
            "series",
            ("realization", "time", "channel", "feature"),
            SERIES_FIELDS,
            "Per-step F0 series; a (m, t, c) with nonfinite_frac > 0 has NaN in every other column.",
        ),
        ArraySpec(
            "summary",
            ("channel", "feature", "statistic"),
            SUMMARY_FIELDS,
            "Per-realization trajectory statistics of mean/std/energy/grad_energy/linf, then mean and "
            "population std over realizations; NaN where a realization diverged (blowup_t stays finite).",
            axis_labels={"statistic": REALIZATION_STATISTICS},
        ),
    ),
    compute=compute,
    config={
        "eps": EPS,
        "boundary": "periodic",
        "grad": "central difference / 2, unit spacing",
        "tv": "periodic forward difference",
        "std": "population, two-pass",
        "summation": "fixed pairwise tree over H*W (batch-, thread- and device-invariant)",
        "nonfinite": "per (realization, time, channel); other columns NaN when > 0",
        "slope_time": "t/(T-1)",
        "summary_series": list(SUMMARY_SERIES),
        "summary_statistics": list(SUMMARY_STATISTICS),
    },
)
