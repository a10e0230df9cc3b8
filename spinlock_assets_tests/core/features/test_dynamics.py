"""F2 ``dynamics``: known answers on hand-built F0 series, NaN policy, shapes and the family declaration."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
import torch

from spinlock_assets.core.features import base
from spinlock_assets.core.features.base import SERIES_FIELDS
from spinlock_assets.core.features.dynamics import FAMILY, FEATURE_NAMES, compute, dynamics_per_trajectory
from spinlock_assets.core.features.family import Needs, OperatorInputs

COL = {name: i for i, name in enumerate(SERIES_FIELDS)}


def _series(s=None, energy=None, std=None, *, steps: int | None = None) -> np.ndarray:
    """A one-realization, one-channel F0 series ``[1, T, 1, 10]`` with the given mean/energy/std columns."""
    given = [x for x in (s, energy, std) if x is not None]
    steps = len(given[0]) if given else steps
    series = np.ones((1, steps, 1, 10))
    series[..., COL["nonfinite_frac"]] = 0.0
    for name, values in (("mean", s), ("energy", energy), ("std", std)):
        if values is not None:
            series[0, :, 0, COL[name]] = values
    return series


def _features(series: np.ndarray) -> dict[str, float]:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning spam, whatever the input
        row = dynamics_per_trajectory(series)[0, 0]
    return {name: float(row[i]) for i, name in enumerate(FEATURE_NAMES)}


def test_feature_names_and_count():
    assert len(FEATURE_NAMES) == 18 and len(set(FEATURE_NAMES)) == 18
    assert FEATURE_NAMES[0] == "energy_growth_rate" and FEATURE_NAMES[-1] == "rolling_mean_var_w10"


def test_exponential_energy_growth_rate_curvature_ratio_and_doubling_time():
    lam, steps = 2.5, 41
    tau = np.arange(steps) / (steps - 1)
    f = _features(_series(energy=0.3 * np.exp(lam * tau)))
    assert f["energy_growth_rate"] == pytest.approx(lam, rel=1e-6)
    assert f["energy_log_curvature"] == pytest.approx(0.0, abs=1e-6)
    assert f["final_initial_ratio_E"] == pytest.approx(math.exp(lam), rel=1e-6)
    # E > 2 E(0) first when λτ > ln 2, i.e. t > 40·ln2/λ = 11.09.
    assert f["time_to_double_E"] == pytest.approx(12 / steps) and f["time_to_half_E"] == 1.0


def test_log_quadratic_energy_has_constant_curvature():
    f = _features(_series(energy=np.exp(0.01 * np.arange(41.0) ** 2)))  # Δ² of 0.01·t² is 0.02
    assert f["energy_log_curvature"] == pytest.approx(0.02, rel=1e-6)


def test_decaying_energy_half_time():
    steps = 50
    tau = np.arange(steps) / (steps - 1)
    f = _features(_series(energy=np.exp(-3.0 * tau)))
    # E < E(0)/2 first when 3τ > ln 2, i.e. t > 49·ln2/3 = 11.32.
    assert f["time_to_half_E"] == pytest.approx(12 / steps) and f["time_to_double_E"] == 1.0
    assert f["energy_growth_rate"] == pytest.approx(-3.0, rel=1e-6)


def test_variance_growth_rate_is_twice_the_std_log_slope():
    tau = np.arange(30) / 29
    assert _features(_series(std=np.exp(0.8 * tau)))["variance_growth_rate"] == pytest.approx(1.6, rel=1e-6)


@pytest.mark.parametrize("k", [1, 3, 7])
def test_sinusoidal_energy_dominant_frequency(k: int):
    steps = 64
    energy = 2.0 + np.sin(2 * np.pi * k * np.arange(steps) / steps + 0.3)
    f = _features(_series(energy=energy))
    assert f["energy_dom_freq"] == k
    assert f["energy_peak_to_peak"] == pytest.approx(np.ptp(energy) / energy.mean(), rel=1e-6)


def test_peak_to_peak_and_constant_energy_has_no_dominant_frequency():
    assert _features(_series(energy=[1.0, 3.0, 2.0, 2.0]))["energy_peak_to_peak"] == pytest.approx(1.0)
    f = _features(_series(energy=np.full(16, 0.7)))
    assert math.isnan(f["energy_dom_freq"]) and f["energy_peak_to_peak"] == 0.0


def test_linear_mean_is_a_perfect_trend():
    steps, w = 40, 4  # w = max(2, 40 // 10)
    s = 3.0 + 2.0 * np.arange(steps)
    f = _features(_series(s=s))
    assert f["trend_r2"] == pytest.approx(1.0, abs=1e-9)
    assert f["detrended_var"] == pytest.approx(0.0, abs=1e-12)
    assert f["log_step_size"] == pytest.approx(math.log(2.0), rel=1e-6) and f["roughness"] == 0.0
    assert f["sign_change_rate"] == 0.0 and f["zero_crossings"] == 1.0 and f["spike_count"] == 0.0
    # Windows of an arithmetic sequence with step 2: std 2·√((w²−1)/12); window means step by 2 too.
    assert f["rolling_std_w10"] == pytest.approx(2 * math.sqrt((w * w - 1) / 12), rel=1e-6)
    n_windows = steps - w + 1
    assert f["rolling_mean_var_w10"] == pytest.approx(2 * math.sqrt((n_windows**2 - 1) / 12), rel=1e-6)


def test_autocorr_decay_censored_at_max_lag_plus_one():
    # Ramp 0..6 (T = 7, L = 1): deviations −3..3, Σd² = 28, lag-1 sum 6+2+0+0+2+6 = 16: ACF 0.57 ≥ 1/e.
    assert _features(_series(s=np.arange(7.0)))["autocorr_decay"] == 2.0
    assert math.isnan(_features(_series(s=np.arange(3.0)))["autocorr_decay"])  # L = 0


def test_trend_fit_matches_polyfit():
    rng = np.random.default_rng(3)
    s = 0.5 * np.arange(30.0) + rng.standard_normal(30)
    residual = s - np.polyval(np.polyfit(np.arange(30.0), s, 1), np.arange(30.0))
    f = _features(_series(s=s))
    assert f["detrended_var"] == pytest.approx(residual.var() / s.var(), rel=1e-6)
    assert f["trend_r2"] == pytest.approx(1 - residual.var() / s.var(), rel=1e-6)


def test_alternating_mean_known_answers():
    steps = 20
    s = np.arange(steps) % 2.0  # 0, 1, 0, 1, ...
    f = _features(_series(s=s))
    assert f["autocorr_decay"] == 1.0 and f["sign_change_rate"] == 1.0
    assert f["zero_crossings"] == steps - 1 and f["spike_count"] == 0.0  # θ = 0.5 + 2·0.5 = 1.5
    assert f["log_step_size"] == pytest.approx(0.0, abs=1e-9)
    assert f["roughness"] == pytest.approx(2.0 / 0.5, rel=1e-9)  # |Δ²s| = 2, std 0.5


def test_sign_change_rate_skips_zero_steps():
    s = np.cumsum([0.0, 1, 0, -1, 0, 0, 1, 1])  # Δs signs + 0 − 0 0 + +: flips +→− and −→+
    assert _features(_series(s=s))["sign_change_rate"] == pytest.approx(2 / (len(s) - 2))


def test_spike_count_counts_upward_crossings_only():
    s = np.zeros(64)
    s[[0, 5, 20, 40, 50, 51]] = 10.0  # t=0 starts above (no crossing); 50-51 is one spike
    assert _features(_series(s=s))["spike_count"] == 4.0


def test_zero_crossings_are_strict_sign_changes():
    s = np.array([1.0, 2, -1, -2, 0, 3, -3, 0])  # mean 0; only 2→−1 and 3→−3 are strict changes
    assert _features(_series(s=s))["zero_crossings"] == 2.0


def test_autocorr_decay_matches_brute_force():
    rng = np.random.default_rng(0)
    s = np.cumsum(rng.standard_normal(80)) + 0.3 * rng.standard_normal(80)
    d = s - s.mean()
    acf = [np.dot(d[:-lag], d[lag:]) / np.dot(d, d) for lag in range(1, 21)]
    expected = next((lag for lag, r in enumerate(acf, start=1) if r < math.exp(-1)), 21)
    assert _features(_series(s=s))["autocorr_decay"] == expected


def test_constant_mean_degenerate_values():
    f = _features(_series(s=np.full(24, 0.1)))
    assert math.isnan(f["autocorr_decay"])
    assert f["trend_r2"] == 0.0 and f["zero_crossings"] == 0.0
    assert f["detrended_var"] == pytest.approx(0.0, abs=1e-15)  # only the rounding of the mean is left
    assert f["spike_count"] == 0.0 and f["sign_change_rate"] == 0.0 and f["rolling_std_w10"] == 0.0


def test_divergent_realization_gives_nan_features_without_warnings():
    rng = np.random.default_rng(1)
    series = rng.random((3, 30, 2, 10)) + 0.5
    series[..., COL["nonfinite_frac"]] = 0.0
    series[1, 10:, 0, :-1] = np.nan  # realization 1, channel 0 diverges at t = 10 (F0 layout)
    series[1, 10:, 0, -1] = 0.5
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = compute(OperatorInputs(initial_condition=None, base_series=series.astype(np.float32)))
    per = out["per_trajectory"]
    assert np.isnan(per[1, 0]).all()
    assert np.isfinite(per[[0, 2]]).all() and np.isfinite(per[:, 1]).all()
    assert np.isnan(out["summary"][0]).all() and np.isfinite(out["summary"][1]).all()


def test_overflowed_energy_only_blanks_energy_features():
    s = np.sin(np.arange(30.0))
    energy = np.ones(30)
    energy[20] = np.inf  # finite field whose squares overflowed float32
    row = dynamics_per_trajectory(_series(s=s, energy=energy))[0, 0]
    reads_energy = [i for i, name in enumerate(FEATURE_NAMES) if "energy" in name or name.endswith("_E")]
    assert np.isnan(row[reads_energy]).all()
    assert np.isfinite(np.delete(row, reads_energy)).all()


@pytest.mark.parametrize("steps", [1, 2, 3, 5])
def test_short_series_do_not_crash(steps: int):
    out = dynamics_per_trajectory(_series(steps=steps))
    assert out.shape == (1, 1, 18) and out.dtype == np.float32


def test_compute_shapes_summary_and_base_pipeline():
    rng = np.random.default_rng(2)
    traj = torch.from_numpy(rng.standard_normal((4, 25, 3, 16, 16)).cumsum(axis=1).astype(np.float32))
    series = base.compute(OperatorInputs(initial_condition=None, trajectories=traj))["series"]
    out = compute(OperatorInputs(initial_condition=None, base_series=series))
    for spec in FAMILY.arrays:
        assert out[spec.name].shape == spec.shape(realizations=4, steps=25, channels=3)
        assert out[spec.name].dtype == np.float32
    per = out["per_trajectory"].astype(np.float64)
    assert np.isfinite(per).all()
    np.testing.assert_allclose(out["summary"][..., 0], per.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(out["summary"][..., 1], per.std(axis=0), rtol=1e-5, atol=1e-7)
    assert np.array_equal(out["per_trajectory"][1:2], dynamics_per_trajectory(series[1:2]))  # per realization


def test_input_validation():
    with pytest.raises(ValueError):
        dynamics_per_trajectory(np.zeros((2, 5, 1, 9)))
    with pytest.raises(ValueError, match="base_series"):
        compute(OperatorInputs(initial_condition=None))


def test_family_declaration():
    assert (FAMILY.name, FAMILY.version, FAMILY.needs) == ("dynamics", "1.1.0", Needs.BASE_SERIES)
    per, summary = FAMILY.array("per_trajectory"), FAMILY.array("summary")
    assert per.axes == ("realization", "channel", "feature") and per.field_names == FEATURE_NAMES
    assert summary.axes == ("channel", "feature", "statistic") and summary.field_names == FEATURE_NAMES
    assert summary.axis_labels["statistic"] == ("mean_over_realizations", "std_over_realizations")
    assert summary.shape(realizations=5, steps=9, channels=2) == (2, 18, 2)
    json.dumps(dict(FAMILY.config))
