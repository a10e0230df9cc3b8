"""Known answers and contract properties of F1 ``spectral`` (and the shared Fourier helpers)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from spinlock_assets.core.features import spectral
from spinlock_assets.core.features.family import OperatorInputs
from spinlock_assets.core.features.fourier import half_plane_weights, power_spectrum, wavenumbers
from spinlock_assets.core.features.spectral import FAMILY, FEATURE_NAMES, spectral_features
from spinlock_assets.core.features.trajectory import time_chunks

COL = {name: i for i, name in enumerate(FEATURE_NAMES)}


def _inputs(trajectories: torch.Tensor) -> OperatorInputs:
    return OperatorInputs(initial_condition=trajectories[0, 0].numpy(), trajectories=trajectories)


def _plane_wave(height: int, width: int, kx: int, ky: int) -> torch.Tensor:
    y, x = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    phase = 2 * math.pi * (kx * x.double() / width + ky * y.double() / height)
    return torch.sin(phase + 0.3).float()


@pytest.mark.parametrize(("height", "width"), [(16, 16), (12, 20), (9, 15), (8, 7)])
def test_weighted_power_satisfies_parseval(height: int, width: int) -> None:
    u = torch.randn(3, height, width, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    weighted = power_spectrum(u) * half_plane_weights(width).double()
    torch.testing.assert_close(weighted.sum((-2, -1)), u.square().sum((-2, -1)), rtol=1e-12, atol=0)


def test_wavenumbers_are_integer_cycles_with_ky_wrapped_to_half_open_interval() -> None:
    ky, kx = wavenumbers(8, 6)
    assert ky.flatten().tolist() == [0, 1, 2, 3, -4, -3, -2, -1]
    assert kx.flatten().tolist() == [0, 1, 2, 3]
    assert half_plane_weights(6).tolist() == [1, 2, 2, 1]
    assert half_plane_weights(7).tolist() == [1, 2, 2, 2]


@pytest.mark.parametrize(
    ("kx", "ky", "shell", "anisotropy"),
    [
        (1, 0, 0, 1.0),
        (2, 0, 1, 1.0),
        (6, 0, 3, 1.0),
        (0, 3, 2, -1.0),
        (0, 20, 5, -1.0),
        (3, 4, 3, -1.0),
        (12, 5, 4, 1.0),
    ],
)
def test_pure_sine_puts_all_power_at_its_wavenumber(kx: int, ky: int, shell: int, anisotropy: float) -> None:
    k = math.hypot(kx, ky)
    f = spectral_features(_plane_wave(64, 64, kx, ky))
    expected_shells = torch.zeros(8)
    expected_shells[shell] = 1.0
    torch.testing.assert_close(f[: spectral.N_SHELLS], expected_shells, atol=1e-5, rtol=0)
    assert f[COL["centroid_k"]].item() == pytest.approx(k, abs=1e-4)
    assert f[COL["dominant_k"]].item() == k
    assert f[COL["rolloff_k"]].item() == pytest.approx(k, abs=1e-5)
    assert f[COL["bandwidth_k"]].item() == pytest.approx(0.0, abs=1e-3)
    assert f[COL["anisotropy"]].item() == pytest.approx(anisotropy, abs=1e-5)
    assert f[COL["dc_fraction"]].item() == pytest.approx(0.0, abs=1e-6)
    assert f[COL["flatness"]].item() < 1e-6


def test_corner_modes_beyond_k_max_fall_in_the_outer_shell() -> None:
    f = spectral_features(_plane_wave(64, 64, 30, 30))  # k = 42.4 > k_max = 32
    assert f[COL["shell_power_7"]].item() == pytest.approx(1.0, abs=1e-5)
    assert f[COL["dominant_k"]].item() == 42  # ring round(k)
    assert f[COL["rolloff_k"]].item() == pytest.approx(math.hypot(30, 30), abs=1e-4)


def test_non_square_grid_uses_cycles_per_domain_and_k_max_of_shorter_side() -> None:
    # H=32, W=64: k_max = 16, so kx = 20 cycles per width lands in the outer shell.
    along_x = spectral_features(_plane_wave(32, 64, 20, 0))
    assert along_x[COL["shell_power_7"]].item() == pytest.approx(1.0, abs=1e-5)
    assert along_x[COL["dominant_k"]].item() == 20
    along_y = spectral_features(_plane_wave(32, 64, 0, 10))
    assert along_y[COL["shell_power_4"]].item() == pytest.approx(1.0, abs=1e-5)
    assert along_y[COL["centroid_k"]].item() == pytest.approx(10.0, abs=1e-4)
    assert along_y[COL["anisotropy"]].item() == pytest.approx(-1.0, abs=1e-5)


def test_constant_field_has_dc_fraction_one_and_zero_ac_shape() -> None:
    f = spectral_features(torch.full((32, 32), -0.7))
    assert f[COL["dc_fraction"]].item() == pytest.approx(1.0, abs=1e-6)
    for name in (
        "centroid_k",
        "bandwidth_k",
        "dominant_k",
        "dominant_power",
        "rolloff_k",
        "anisotropy",
        "slope",
    ):
        assert f[COL[name]].item() == 0.0, name
    assert f[: spectral.N_SHELLS].abs().max().item() == 0.0
    assert f[COL["flatness"]].item() == pytest.approx(1.0, abs=1e-3)


def test_shell_powers_partition_the_ac_power() -> None:
    gen = torch.Generator().manual_seed(2)
    f64 = spectral_features(torch.randn(4, 64, 64, generator=gen))
    torch.testing.assert_close(f64[:, : spectral.N_SHELLS].sum(-1), torch.ones(4), atol=1e-5, rtol=0)
    assert (f64[:, COL["shell_power_6"]] == 0).all()  # [32.5, 64.5) is clipped away at k_max = 32
    f128 = spectral_features(torch.randn(2, 128, 128, generator=gen))
    assert (f128[:, COL["shell_power_6"]] > 0.1).all()


def test_slope_recovers_power_law_index() -> None:
    alpha = 3.0
    rng = np.random.default_rng(3)
    ky, kx = np.fft.fftfreq(128, 1 / 128)[:, None], np.fft.fftfreq(128, 1 / 128)[None, :]
    k = np.hypot(kx, ky)
    amplitude = np.where(k > 0, k, 1.0) ** (-alpha / 2) * (k > 0)
    field = np.fft.ifft2(np.fft.fft2(rng.standard_normal((128, 128))) * amplitude).real
    f = spectral_features(torch.from_numpy(field).float())
    assert f[COL["slope"]].item() == pytest.approx(-alpha, abs=0.25)


def test_white_noise_flatness_is_geometric_over_arithmetic_mean_of_exponential() -> None:
    f = spectral_features(torch.randn(8, 64, 64, generator=torch.Generator().manual_seed(4)))
    assert f[:, COL["flatness"]].mean().item() == pytest.approx(math.exp(-np.euler_gamma), abs=0.02)


def test_nonfinite_state_gives_nan_for_that_step_only() -> None:
    traj = torch.randn(2, 4, 2, 16, 16, generator=torch.Generator().manual_seed(5))
    traj[1, 2, 0, 5, 5] = float("nan")
    traj[0, 3, 1, 0, 0] = float("inf")
    traj[0, 1, 0] = 1e30  # finite but its power overflows float32
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = spectral.compute(_inputs(traj))
    bad = np.zeros((2, 4, 2), bool)
    bad[1, 2, 0] = bad[0, 3, 1] = bad[0, 1, 0] = True
    assert np.isnan(out["series"][bad]).all()
    assert np.isfinite(out["series"][~bad]).all()
    assert np.isnan(out["summary"][:, :, 0]).all()  # time means see the NaN steps: never skipped


def test_realization_is_independent_of_batch_neighbours() -> None:
    traj = torch.randn(4, 6, 3, 32, 32, generator=torch.Generator().manual_seed(6))
    together = spectral.compute(_inputs(traj))["series"]
    alone = spectral.compute(_inputs(traj[2:3].clone()))["series"]
    assert together[2].tobytes() == alone[0].tobytes()


def test_time_chunking_does_not_change_values(monkeypatch: pytest.MonkeyPatch) -> None:
    traj = torch.randn(2, 7, 2, 16, 16, generator=torch.Generator().manual_seed(7))
    whole = spectral.compute(_inputs(traj))
    monkeypatch.setattr(
        spectral, "time_chunks", lambda steps, numel: time_chunks(steps, numel, budget=3 * numel)
    )
    chunked = spectral.compute(_inputs(traj))
    np.testing.assert_allclose(chunked["series"], whole["series"], rtol=1e-6, atol=1e-6)


def test_time_chunks_cover_all_steps_within_budget() -> None:
    chunks = time_chunks(10, 100, budget=350)
    assert [(c.start, c.stop) for c in chunks] == [(0, 3), (3, 6), (6, 9), (9, 10)]
    assert time_chunks(2, 10**9, budget=5) == [slice(0, 1), slice(1, 2)]


def test_shapes_dtypes_and_summary_follow_the_array_specs() -> None:
    traj = torch.randn(3, 5, 2, 16, 24, generator=torch.Generator().manual_seed(8))
    out = spectral.compute(_inputs(traj))
    assert set(out) == {spec.name for spec in FAMILY.arrays}
    for spec in FAMILY.arrays:
        assert out[spec.name].shape == spec.shape(realizations=3, steps=5, channels=2)
        assert out[spec.name].dtype == np.float32
    series = out["series"].astype(np.float64)
    mean_m = series.mean(0)
    expected = np.stack([mean_m.mean(0), mean_m.std(0), mean_m[-1], series.mean(1).std(0)], -1)
    np.testing.assert_allclose(out["summary"], expected, rtol=1e-4, atol=1e-5)
    assert FAMILY.array("summary").axis_labels["statistic"] == (
        "time_mean",
        "time_std",
        "final",
        "realization_std_of_time_mean",
    )


def test_missing_trajectories_is_an_error() -> None:
    with pytest.raises(ValueError, match="trajectories"):
        spectral.compute(OperatorInputs(initial_condition=np.zeros((1, 4, 4), np.float32)))


def test_values_do_not_depend_on_the_intra_op_thread_count() -> None:
    traj = torch.randn(2, 3, 2, 128, 128, generator=torch.Generator().manual_seed(99))
    threads = torch.get_num_threads()
    try:
        results = []
        for n in (1, 3):
            torch.set_num_threads(n)
            results.append(spectral.compute(_inputs(traj)))
    finally:
        torch.set_num_threads(threads)
    for name, array in results[0].items():
        assert array.tobytes() == results[1][name].tobytes(), name
