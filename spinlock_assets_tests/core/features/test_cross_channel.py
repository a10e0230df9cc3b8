"""Known answers and contract properties of F5 ``cross_channel``."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from spinlock_assets.core.features import cross_channel
from spinlock_assets.core.features.cross_channel import FAMILY, FEATURE_NAMES, correlation_features, coupling
from spinlock_assets.core.features.family import OperatorInputs

COL = {name: i for i, name in enumerate(FEATURE_NAMES)}


def _inputs(trajectories: torch.Tensor) -> OperatorInputs:
    return OperatorInputs(initial_condition=trajectories[0, 0].numpy(), trajectories=trajectories)


def _noise(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_identical_or_opposite_channels_have_one_mode(sign: float) -> None:
    a = _noise(3, 1, 32, 32, seed=1)
    f = correlation_features(torch.cat([a, sign * a], 1))  # [T, 7]
    assert f[:, COL["eig_0"]].tolist() == pytest.approx([2.0] * 3, abs=1e-5)
    assert f[:, COL["eig_1"]].tolist() == pytest.approx([0.0] * 3, abs=1e-5)
    assert torch.isnan(f[:, COL["eig_2"]]).all()  # C = 2 < 3: padded
    assert f[:, COL["participation_ratio"]].tolist() == pytest.approx([1.0] * 3, abs=1e-5)
    for name in ("corr_mean", "corr_max", "corr_min"):
        assert f[:, COL[name]].tolist() == pytest.approx([sign] * 3, abs=1e-6)


def test_independent_white_noise_channels_are_uncorrelated() -> None:
    f = correlation_features(_noise(4, 4, 64, 64, seed=2))
    assert f[:, COL["corr_max"]].max().item() < 0.06 and f[:, COL["corr_min"]].min().item() > -0.06
    assert f[:, COL["participation_ratio"]].tolist() == pytest.approx([4.0] * 4, abs=0.05)
    assert f[:, COL["eig_0"]].max().item() < 1.15


def test_eigenvalues_are_descending_and_consistent_with_participation_ratio() -> None:
    base = _noise(5, 1, 32, 32, seed=3)
    u = torch.cat([base + 0.5 * _noise(5, 1, 32, 32, seed=s) for s in (4, 5, 6)], 1)  # correlated C = 3
    f = correlation_features(u)
    eig = f[:, :3]
    assert (eig[:, :-1] >= eig[:, 1:]).all()
    torch.testing.assert_close(eig.sum(-1), torch.full((5,), 3.0), atol=1e-5, rtol=0)
    torch.testing.assert_close(
        f[:, COL["participation_ratio"]], 9.0 / eig.square().sum(-1), atol=1e-4, rtol=0
    )


def test_constant_or_nonfinite_channel_gives_nan_for_that_step_only() -> None:
    traj = _noise(2, 5, 3, 16, 16, seed=7)
    traj[0, 1, 2] = 4.0  # constant channel: correlation undefined
    traj[1, 3, 0, 2, 2] = float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = cross_channel.compute(_inputs(traj))
    bad = np.zeros((2, 5), bool)
    bad[0, 1] = bad[1, 3] = True
    assert np.isnan(out["series"][bad]).all()
    assert np.isfinite(out["series"][~bad]).all()
    assert np.isfinite(out["coupling"][0, 0]) and np.isnan(out["coupling"][1, 0])
    assert np.isnan(out["summary"][:, 0]).all()  # time means see the NaN steps: never skipped


def _lagged_trajectory(lag: int, steps: int = 40) -> torch.Tensor:
    """C = 2 fields whose pixel means follow s_1(t) = s_0(t - lag) on top of fixed spatial patterns."""
    drive = _noise(steps + lag, seed=8)
    means = torch.stack([drive[lag:], drive[:steps]], 1)  # [T, 2]
    patterns = _noise(2, 16, 16, seed=9)
    return means[:, :, None, None] + patterns


def test_coupling_detects_a_channel_that_follows_another() -> None:
    assert coupling(_lagged_trajectory(1)).item() > 0.8
    assert coupling(_lagged_trajectory(3)).item() > 0.8


def test_coupling_is_zero_without_a_leader() -> None:
    u = _lagged_trajectory(0)
    assert coupling(torch.cat([u[:, :1], u[:, :1]], 1)).item() == 0.0


def test_coupling_matches_the_definition_on_random_data() -> None:
    u = _noise(12, 3, 8, 8, seed=10)
    s = u.double().mean((-2, -1)).numpy()  # [T, C]
    best = 0.0
    for tau in (1, 2, 3):
        for i in range(3):
            for j in range(i + 1, 3):
                forward = np.corrcoef(s[:-tau, i], s[tau:, j])[0, 1]
                backward = np.corrcoef(s[:-tau, j], s[tau:, i])[0, 1]
                best = max(best, abs(forward - backward))
    assert coupling(u).item() == pytest.approx(best, abs=1e-4)


def test_coupling_needs_at_least_three_steps() -> None:
    assert torch.isnan(coupling(_noise(2, 2, 8, 8, seed=11))).all()


def test_realization_is_independent_of_batch_neighbours() -> None:
    traj = _noise(4, 6, 3, 32, 32, seed=12)
    together = cross_channel.compute(_inputs(traj))
    alone = cross_channel.compute(_inputs(traj[2:3].clone()))
    assert together["series"][2].tobytes() == alone["series"][0].tobytes()
    assert together["coupling"][2].tobytes() == alone["coupling"][0].tobytes()


def test_shapes_dtypes_and_summary_follow_the_array_specs() -> None:
    traj = _noise(3, 5, 4, 16, 24, seed=13)
    out = cross_channel.compute(_inputs(traj))
    assert set(out) == {spec.name for spec in FAMILY.arrays}
    for spec in FAMILY.arrays:
        assert out[spec.name].shape == spec.shape(realizations=3, steps=5, channels=4)
        assert out[spec.name].dtype == np.float32
    series = out["series"].astype(np.float64)
    mean_m = series.mean(0)
    expected = np.stack([mean_m.mean(0), mean_m.std(0), mean_m[-1], series.mean(1).std(0)], -1)
    np.testing.assert_allclose(out["summary"], expected, rtol=1e-4, atol=1e-5)
    assert FAMILY.min_channels == 2


def test_single_channel_is_rejected() -> None:
    with pytest.raises(ValueError, match="at least 2 channels"):
        cross_channel.compute(_inputs(_noise(1, 3, 1, 8, 8, seed=14)))


def test_values_do_not_depend_on_the_intra_op_thread_count() -> None:
    traj = torch.randn(2, 6, 3, 64, 64, generator=torch.Generator().manual_seed(99))
    threads = torch.get_num_threads()
    try:
        results = []
        for n in (1, 3):
            torch.set_num_threads(n)
            results.append(cross_channel.compute(_inputs(traj)))
    finally:
        torch.set_num_threads(threads)
    for name, array in results[0].items():
        assert array.tobytes() == results[1][name].tobytes(), name
