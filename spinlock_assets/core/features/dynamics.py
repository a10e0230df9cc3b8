"""F2 ``dynamics``: 18 temporal features per (realization, channel), pure post-processing of F0 series.

No replay: the input is the stored F0 series ``[M, T, C, 10]``. Per (m, c), with s(t) the ``mean`` column,
E(t) the ``energy`` column, σ(t) the ``std`` column, τ = t/(T−1) (the same time axis as F0's slopes),
Δ the forward difference over steps and eps = EPS. "std"/"var" over time are population (÷T).

 1 energy_growth_rate     OLS slope of log(E+eps) against τ.
 2 energy_log_curvature   mean |Δ² log(E+eps)| (plain second difference over steps; NaN if T < 3).
 3 variance_growth_rate   OLS slope of log(σ²+eps) against τ.
 4 energy_dom_freq        integer k ≥ 1 maximizing |rfft(E−Ē)[k]|²/T, i.e. cycles per record of T
                          samples (ties → smallest k); NaN if E is exactly constant or T < 2.
 5 energy_peak_to_peak    (max E − min E)/(mean E + eps).
 6 autocorr_decay         first lag ℓ ∈ 1..L, L = T//4, where the ACF of s drops below 1/e, in lags.
                          ACF(ℓ) = Σ_t (s_t−s̄)(s_{t+ℓ}−s̄)/Σ_t (s_t−s̄)² (biased, standard). If it never
                          drops below 1/e within L the value is L+1 (censored: "slower than L"). NaN if s
                          is exactly constant or L < 1 (T < 4).
 7 log_step_size          mean log(|Δs|+eps).
 8 roughness              mean |Δ²s| / (std_t s + eps) (NaN if T < 3).
 9 sign_change_rate       flips of sign(Δs) between consecutive non-zero signs (zeros are skipped, not
                          counted), divided by T−2 (NaN if T < 3).
10 final_initial_ratio_E  E(T−1)/(E(0)+eps).
11 trend_r2               explained variance of the OLS line of s on τ over (var_t s + eps). This is R²
                          with the module's eps convention: 1 for a line, 0 (not NaN) for a constant s,
                          which has no variance to explain. trend_r2 + detrended_var = var/(var+eps).
12 detrended_var          var_t(residual of that line) / (var_t s + eps).
13 spike_count            number of t ≥ 1 with s_{t−1} ≤ θ < s_t, θ = s̄ + 2 std_t s (a series that starts
                          above θ does not count as a crossing at t = 0).
14 zero_crossings         number of t ≥ 1 with (s_{t−1}−s̄)·(s_t−s̄) < 0, by sign (a step landing exactly
                          on s̄ breaks the pair: strict changes only).
15 time_to_half_E         (first t with E(t) < 0.5·E(0))/T, or 1 if never.
16 time_to_double_E       (first t with E(t) > 2·E(0))/T, or 1 if never.
17 rolling_std_w10        mean over all sliding windows (stride 1) of width w = max(2, ⌊0.1 T⌋) of the
                          window's std of s (NaN if T < w).
18 rolling_mean_var_w10   std over the same windows of the window means of s (a std, despite the name,
                          as in the spec; NaN if T < w).

NaN policy: a feature is NaN for (m, c) when a series it reads (s, E or σ) has any non-finite value there
(a divergent rollout), even where a count or a first-crossing time could be read off the finite prefix:
those would silently mix diverged and healthy realizations. Never zeroed; no warnings are emitted.
``compute`` adds the mean and population std over realizations (NaN propagates, like F0's summary).
"""

from __future__ import annotations

import numpy as np

from .base import REALIZATION_STATISTICS, SERIES_FIELDS
from .family import EPS, ArraySpec, FeatureFamily, Needs, OperatorInputs
from .trajectory import ols_slope

__all__ = ["FAMILY", "FEATURE_NAMES", "compute", "dynamics_per_trajectory"]

FEATURE_NAMES: tuple[str, ...] = (
    "energy_growth_rate",
    "energy_log_curvature",
    "variance_growth_rate",
    "energy_dom_freq",
    "energy_peak_to_peak",
    "autocorr_decay",
    "log_step_size",
    "roughness",
    "sign_change_rate",
    "final_initial_ratio_E",
    "trend_r2",
    "detrended_var",
    "spike_count",
    "zero_crossings",
    "time_to_half_E",
    "time_to_double_E",
    "rolling_std_w10",
    "rolling_mean_var_w10",
)
# Which input series each feature reads, for the NaN policy.
_READS_E = ("energy_growth_rate", "energy_log_curvature", "energy_dom_freq", "energy_peak_to_peak")
_READS_E += ("final_initial_ratio_E", "time_to_half_E", "time_to_double_E")
_READS_STD = ("variance_growth_rate",)
_ACF_THRESHOLD = float(np.exp(-1.0))
_COL = {name: i for i, name in enumerate(SERIES_FIELDS)}


def _first_index(mask: np.ndarray, default: float) -> np.ndarray:
    """Index of the first True along the last axis, ``default`` where there is none."""
    return np.where(mask.any(axis=-1), mask.argmax(axis=-1), default)


def _autocorr_decay(s: np.ndarray) -> np.ndarray:
    steps = s.shape[-1]
    max_lag = steps // 4
    if max_lag < 1:
        return np.full(s.shape[:-1], np.nan)
    d = s - s.mean(axis=-1, keepdims=True)
    # lagged[..., t, l-1] = d[t + l] (0 past the end), so one matmul gives every lag's sum of products.
    padded = np.concatenate([d, np.zeros(d.shape[:-1] + (max_lag,))], axis=-1)
    lagged = np.lib.stride_tricks.sliding_window_view(padded, max_lag + 1, axis=-1)[..., :steps, 1:]
    acf = (d[..., None, :] @ lagged)[..., 0, :]
    acf /= (d * d).sum(axis=-1, keepdims=True)
    lag = _first_index(acf < _ACF_THRESHOLD, max_lag) + 1.0  # never below → L + 1
    return np.where(np.ptp(s, axis=-1) == 0, np.nan, lag)  # exact test: a mean's rounding is not variance


def _sign_change_rate(s: np.ndarray) -> np.ndarray:
    steps = s.shape[-1]
    if steps < 3:
        return np.full(s.shape[:-1], np.nan)
    sign = np.sign(np.diff(s, axis=-1))
    # Sign of the latest non-zero step strictly before each position (0 if none): forward fill.
    index = np.where(sign != 0, np.arange(sign.shape[-1]), -1)
    last = np.maximum.accumulate(index, axis=-1)
    previous = np.concatenate([np.full(last.shape[:-1] + (1,), -1), last[..., :-1]], axis=-1)
    previous_sign = np.where(previous >= 0, np.take_along_axis(sign, np.maximum(previous, 0), axis=-1), 0)
    flips = (sign != 0) & (previous_sign != 0) & (sign != previous_sign)
    return flips.sum(axis=-1) / (steps - 2)


def _dom_freq(energy: np.ndarray) -> np.ndarray:
    if energy.shape[-1] < 2:
        return np.full(energy.shape[:-1], np.nan)
    power = np.abs(np.fft.rfft(energy - energy.mean(axis=-1, keepdims=True), axis=-1)[..., 1:]) ** 2
    k = power.argmax(axis=-1) + 1.0  # the /T of the definition does not move the argmax
    return np.where(np.ptp(energy, axis=-1) == 0, np.nan, k)


def _rolling(s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    steps = s.shape[-1]
    width = max(2, steps // 10)  # ⌊0.1 T⌋ in exact integer arithmetic
    if steps < width:
        nan = np.full(s.shape[:-1], np.nan)
        return nan, nan
    windows = np.lib.stride_tricks.sliding_window_view(s, width, axis=-1)  # [..., T−w+1, w]
    return windows.std(axis=-1).mean(axis=-1), windows.mean(axis=-1).std(axis=-1)


def dynamics_per_trajectory(series: np.ndarray) -> np.ndarray:
    """F2 features of an F0 series: ``[M, T, C, 10]`` → ``[M, C, 18]`` float32 (``FEATURE_NAMES`` order).

    Computed in float64; see the module docstring for the definitions and the NaN policy.
    """
    a = np.asarray(series, dtype=np.float64)
    if a.ndim != 4 or a.shape[-1] != len(SERIES_FIELDS) or a.shape[1] < 1:
        raise ValueError(f"series must be [M, T, C, {len(SERIES_FIELDS)}] with T >= 1; got shape {a.shape}")
    steps = a.shape[1]
    # [M, C, T] each, contiguous in time: every reduction below runs along t.
    s, energy, sigma = (
        np.ascontiguousarray(np.moveaxis(a[..., _COL[name]], 1, -1)) for name in ("mean", "energy", "std")
    )
    nan = np.full(s.shape[:-1], np.nan)
    f: dict[str, np.ndarray] = {}
    with np.errstate(all="ignore"):
        log_e = np.log(energy + EPS)
        f["energy_growth_rate"] = ols_slope(log_e)
        f["energy_log_curvature"] = np.abs(np.diff(log_e, 2, axis=-1)).mean(axis=-1) if steps >= 3 else nan
        f["variance_growth_rate"] = ols_slope(np.log(sigma**2 + EPS))
        f["energy_dom_freq"] = _dom_freq(energy)
        f["energy_peak_to_peak"] = np.ptp(energy, axis=-1) / (energy.mean(axis=-1) + EPS)
        f["autocorr_decay"] = _autocorr_decay(s)
        f["log_step_size"] = np.log(np.abs(np.diff(s, axis=-1)) + EPS).mean(axis=-1) if steps >= 2 else nan
        s_std = s.std(axis=-1)
        f["roughness"] = np.abs(np.diff(s, 2, axis=-1)).mean(axis=-1) / (s_std + EPS) if steps >= 3 else nan
        f["sign_change_rate"] = _sign_change_rate(s)
        f["final_initial_ratio_E"] = energy[..., -1] / (energy[..., 0] + EPS)

        centred = s - s.mean(axis=-1, keepdims=True)
        var_s = (centred**2).mean(axis=-1)
        if steps >= 2:
            tau = np.arange(steps) / (steps - 1)
            tau -= tau.mean()
            slope = centred @ tau / float(tau @ tau)
            explained = slope**2 * float(tau @ tau) / steps  # variance of the fitted line, never negative
            residual_var = ((centred - slope[..., None] * tau) ** 2).mean(axis=-1)
            f["trend_r2"] = explained / (var_s + EPS)
            f["detrended_var"] = residual_var / (var_s + EPS)
        else:
            f["trend_r2"] = f["detrended_var"] = nan

        threshold = s.mean(axis=-1, keepdims=True) + 2.0 * s_std[..., None]
        f["spike_count"] = ((s[..., :-1] <= threshold) & (s[..., 1:] > threshold)).sum(axis=-1).astype(float)
        side = np.sign(centred)
        f["zero_crossings"] = (side[..., :-1] * side[..., 1:] < 0).sum(axis=-1).astype(float)
        f["time_to_half_E"] = _first_index(energy < 0.5 * energy[..., :1], steps) / steps
        f["time_to_double_E"] = _first_index(energy > 2.0 * energy[..., :1], steps) / steps
        f["rolling_std_w10"], f["rolling_mean_var_w10"] = _rolling(s)

    finite = {name: np.isfinite(x).all(axis=-1) for name, x in (("s", s), ("E", energy), ("std", sigma))}
    out = np.empty(s.shape[:-1] + (len(FEATURE_NAMES),), dtype=np.float32)
    for i, name in enumerate(FEATURE_NAMES):
        reads = "E" if name in _READS_E else "std" if name in _READS_STD else "s"
        out[..., i] = np.where(finite[reads], f[name], np.nan)
    return out


def compute(inputs: OperatorInputs) -> dict[str, np.ndarray]:
    """F2 of one operator from its stored F0 series ``inputs.base_series [M, T, C, 10]``.

    Returns ``{"per_trajectory": [M, C, 18], "summary": [C, 18, 2]}`` float32; the summary's last axis is
    (mean over realizations, population std over realizations), NaN where any realization is NaN.
    """
    if inputs.base_series is None:
        raise ValueError("dynamics.compute needs inputs.base_series [M, T, C, 10]")
    per_trajectory = dynamics_per_trajectory(inputs.base_series)
    values = per_trajectory.astype(np.float64)
    summary = np.stack((values.mean(axis=0), values.std(axis=0)), axis=-1).astype(np.float32)
    return {"per_trajectory": per_trajectory, "summary": summary}


FAMILY = FeatureFamily(
    name="dynamics",
    version="1.1.0",
    needs=Needs.BASE_SERIES,
    description=(
        "Temporal dynamics of each channel's mean s(t) and energy E(t) from the stored F0 series: growth "
        "rates, curvature, dominant energy frequency, autocorrelation decay, roughness, trend fit, spikes, "
        "crossings, half/double-energy times and rolling statistics; no replay needed."
    ),
    arrays=(
        ArraySpec(
            "per_trajectory",
            ("realization", "channel", "feature"),
            FEATURE_NAMES,
            "Per (realization, channel) dynamics; NaN where the series read are non-finite (divergence).",
        ),
        ArraySpec(
            "summary",
            ("channel", "feature", "statistic"),
            FEATURE_NAMES,
            "Mean and population std over realizations of per_trajectory (NaN propagates).",
            axis_labels={"statistic": REALIZATION_STATISTICS},
        ),
    ),
    compute=compute,
    config={
        "eps": EPS,
        "slope_time": "t/(T-1)",
        "acf_threshold": "1/e",
        "acf_max_lag": "T//4, value L+1 if never below",
        "rolling_window": "max(2, floor(0.1*T)), stride 1",
        "spike_threshold_sigmas": 2.0,
        "dom_freq": "rfft index k>=1 over T samples",
        "std": "population",
    },
)
