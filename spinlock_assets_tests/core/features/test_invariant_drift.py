"""Known answers and contract properties of F3 ``invariant_drift``."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from spinlock_assets.core.features import invariant_drift
from spinlock_assets.core.features.family import OperatorInputs
from spinlock_assets.core.features.fourier import gaussian_lowpass
from spinlock_assets.core.features.invariant_drift import (
    FAMILY,
    FEATURE_NAMES,
    METRICS,
    NORMS,
    SCALES,
    SIGMA_PX,
    drift_metrics,
    invariant_norms,
)

COL = {name: i for i, name in enumerate(FEATURE_NAMES)}
NORM = {name: i for i, name in enumerate(NORMS)}


def _inputs(trajectories: torch.Tensor) -> OperatorInputs:
    return OperatorInputs(initial_condition=trajectories[0, 0].numpy(), trajectories=trajectories)


def _plane_wave(height: int, width: int, kx: int, ky: int) -> torch.Tensor:
    y, x = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    return torch.sin(2 * math.pi * (kx * x.double() / width + ky * y.double() / height)).float()


def _gain(k: int, length: int) -> float:
    return math.exp(-2 * math.pi**2 * SIGMA_PX**2 * k**2 / length**2)


@pytest.mark.parametrize(("kx", "ky"), [(3, 0), (0, 5), (2, 3)])
def test_gaussian_lowpass_scales_a_sine_by_the_gaussian_transfer_function(kx: int, ky: int) -> None:
    height, width = 32, 48  # non-square: x wavenumbers are divided by W, y wavenumbers by H
    u = _plane_wave(height, width, kx, ky)
    gain = _gain(kx, width) * _gain(ky, height)
    torch.testing.assert_close(gaussian_lowpass(u, SIGMA_PX), gain * u, atol=2e-6, rtol=0)


def test_low_and_high_scale_log_ratios_follow_the_gaussian_gain() -> None:
    traj = torch.stack([_plane_wave(64, 64, 1, 0), _plane_wave(64, 64, 8, 0)])[
        None, :, None
    ]  # [1, 2, 1, 64, 64]
    out = invariant_drift.compute(_inputs(traj))["per_trajectory"][0, 0]
    g1, g8 = _gain(1, 64), _gain(8, 64)
    assert out[COL["L2_log_ratio_raw"]] == pytest.approx(0.0, abs=1e-5)
    assert out[COL["L2_log_ratio_low"]] == pytest.approx(math.log(g8 / g1), abs=1e-4)
    assert out[COL["L2_log_ratio_high"]] == pytest.approx(math.log((1 - g8) / (1 - g1)), abs=1e-3)


def test_norms_of_a_constant_field() -> None:
    norms = invariant_norms(torch.full((2, 32, 32), -1.5))  # [2, 5, 3]
    for scale, value in (("raw", 1.5), ("low", 1.5), ("high", 0.0)):
        s = SCALES.index(scale)
        for name in ("L1", "L2", "Linf"):
            assert norms[:, NORM[name], s].tolist() == pytest.approx([value, value], abs=1e-6), (name, scale)
    assert (norms[:, NORM["entropy"]] == 0).all()
    assert (norms[:, NORM["TV"]].abs() <= 1e-6).all()


def test_entropy_counts_32_bins_over_the_field_range_in_nats() -> None:
    uniform = torch.linspace(0.0, 1.0, 32 * 32).reshape(32, 32)  # 32 equally filled bins
    two_level = torch.zeros(16, 16)
    two_level[:8] = 3.0
    entropy = invariant_norms(torch.stack([uniform[:16, :], two_level.repeat(1, 2)]))[:, NORM["entropy"], 0]
    assert entropy.tolist() == pytest.approx([math.log(32), math.log(2)], abs=1e-5)


def test_total_variation_uses_periodic_forward_differences() -> None:
    checkerboard = (torch.arange(8)[:, None] + torch.arange(8)[None, :]) % 2 * 2.0 - 1.0
    ramp = torch.arange(8.0)[None, :].expand(8, 8)  # jumps by 7 across the periodic seam
    tv = invariant_norms(torch.stack([checkerboard, ramp]))[:, NORM["TV"], 0]
    assert tv.tolist() == pytest.approx([4.0, (7 * 1 + 7) / 8], abs=1e-6)


def test_drift_metrics_on_a_hand_computed_series() -> None:
    metrics = drift_metrics(torch.tensor([2.0, 3.0, 5.0, 4.0]))  # D = [1, 2, -1]
    expected = [(2 / 3) / 2, float(np.std([1, 2, -1])) / 2, math.log(2.0), 1 / 3]
    assert metrics.tolist() == pytest.approx(expected, rel=1e-6)


def test_strictly_growing_norm_has_monotonicity_one() -> None:
    base = torch.randn(16, 16, generator=torch.Generator().manual_seed(1))
    traj = torch.stack([base * 2.0**t for t in range(5)])[None, :, None]  # exact float32 scaling
    out = invariant_drift.compute(_inputs(traj))["per_trajectory"][0, 0]
    for norm in ("L1", "L2", "Linf", "TV"):
        for scale in SCALES:
            assert out[COL[f"{norm}_monotonicity_{scale}"]] == 1.0
            assert out[COL[f"{norm}_log_ratio_{scale}"]] == pytest.approx(4 * math.log(2), abs=1e-5)
            assert out[COL[f"{norm}_mean_drift_{scale}"]] == pytest.approx(15 / 4, rel=1e-5)
    for scale in SCALES:  # entropy is scale-invariant: no drift at all
        assert out[COL[f"entropy_monotonicity_{scale}"]] == 0.0
        assert out[COL[f"entropy_log_ratio_{scale}"]] == 0.0


def test_columns_are_ordered_norm_then_metric_then_scale() -> None:
    assert len(FEATURE_NAMES) == 60
    assert FEATURE_NAMES[:4] == (
        "L1_mean_drift_raw",
        "L1_mean_drift_low",
        "L1_mean_drift_high",
        "L1_drift_std_raw",
    )
    assert FEATURE_NAMES[12] == "L2_mean_drift_raw"
    traj = torch.randn(2, 6, 2, 16, 16, generator=torch.Generator().manual_seed(2))
    out = invariant_drift.compute(_inputs(traj))["per_trajectory"]
    metrics = drift_metrics(invariant_norms(traj[1]))  # [C, 5, 3, 4]
    for n, norm in enumerate(NORMS):
        for k, metric in enumerate(METRICS):
            for s, scale in enumerate(SCALES):
                assert out[1, :, COL[f"{norm}_{metric}_{scale}"]].tolist() == metrics[:, n, s, k].tolist()


def test_nonfinite_state_makes_only_its_channel_trajectory_nan() -> None:
    traj = torch.randn(2, 5, 2, 16, 16, generator=torch.Generator().manual_seed(3))
    clean = invariant_drift.compute(_inputs(traj))["per_trajectory"]
    traj[1, 2, 0, 3, 3] = float("nan")
    traj[0, 4, 1, 0, 0] = float("-inf")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = invariant_drift.compute(_inputs(traj))
    assert np.isnan(out["per_trajectory"][1, 0]).all() and np.isnan(out["per_trajectory"][0, 1]).all()
    for m, c in ((0, 0), (1, 1)):
        assert out["per_trajectory"][m, c].tobytes() == clean[m, c].tobytes()
    assert np.isnan(out["summary"]).all()  # both channels have a NaN realization: never skipped
    norms = invariant_norms(traj[1, :, 0])
    assert torch.isnan(norms[2]).all() and torch.isfinite(norms[[0, 1, 3, 4]]).all()


def test_single_step_has_no_drift() -> None:
    out = invariant_drift.compute(_inputs(torch.ones(1, 1, 1, 8, 8)))["per_trajectory"][0, 0]
    assert np.isnan(out[COL["L1_mean_drift_raw"]]) and out[COL["L1_log_ratio_raw"]] == 0.0


def test_realization_is_independent_of_batch_neighbours() -> None:
    traj = torch.randn(4, 6, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    together = invariant_drift.compute(_inputs(traj))["per_trajectory"]
    alone = invariant_drift.compute(_inputs(traj[2:3].clone()))["per_trajectory"]
    assert together[2].tobytes() == alone[0].tobytes()


def test_shapes_dtypes_and_summary_follow_the_array_specs() -> None:
    traj = torch.randn(3, 4, 2, 16, 24, generator=torch.Generator().manual_seed(5))
    out = invariant_drift.compute(_inputs(traj))
    assert set(out) == {spec.name for spec in FAMILY.arrays}
    for spec in FAMILY.arrays:
        assert out[spec.name].shape == spec.shape(realizations=3, steps=4, channels=2)
        assert out[spec.name].dtype == np.float32
    per = out["per_trajectory"].astype(np.float64)
    np.testing.assert_allclose(out["summary"], np.stack([per.mean(0), per.std(0)], -1), rtol=1e-5, atol=1e-6)


def test_values_do_not_depend_on_the_intra_op_thread_count() -> None:
    traj = torch.randn(2, 6, 3, 32, 32, generator=torch.Generator().manual_seed(99))
    threads = torch.get_num_threads()
    try:
        results = []
        for n in (1, 3):
            torch.set_num_threads(n)
            results.append(invariant_drift.compute(_inputs(traj)))
    finally:
        torch.set_num_threads(threads)
    for name, array in results[0].items():
        assert array.tobytes() == results[1][name].tobytes(), name
