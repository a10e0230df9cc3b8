"""F0 ``base``: known answers, NaN handling, bit-exact batch/thread invariance, compute and summary."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
import torch

from spinlock_assets.core.features import base
from spinlock_assets.core.features.base import (
    FAMILY,
    SERIES_FIELDS,
    SUMMARY_FIELDS,
    compute,
    step_features,
    summarize,
)
from spinlock_assets.core.features.family import Needs, OperatorInputs

COL = {name: i for i, name in enumerate(SERIES_FIELDS)}


def _random_states(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """Random fields whose per-sample scale varies over many decades (so sums are far from trivial)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape) * 10.0 ** rng.integers(-3, 4, size=(shape[0], 1, 1, 1)) + rng.normal()
    return torch.from_numpy(x.astype(np.float32))


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bit-identical, NaN included (torch.equal treats NaN as unequal to itself)."""
    return a.shape == b.shape and a.dtype == b.dtype and a.numpy().tobytes() == b.numpy().tobytes()


def _reference(x: torch.Tensor) -> np.ndarray:
    """The definitions written out in float64 numpy with np.roll (periodic)."""
    u = x.double().numpy()
    ax = (-2, -1)
    cx = (np.roll(u, -1, -1) - np.roll(u, 1, -1)) / 2
    cy = (np.roll(u, -1, -2) - np.roll(u, 1, -2)) / 2
    tv = np.abs(np.roll(u, -1, -1) - u) + np.abs(np.roll(u, -1, -2) - u)
    cols = [u.mean(ax), u.std(ax), u.min(ax), u.max(ax), (u**2).mean(ax), np.abs(u).mean(ax)]
    cols += [np.abs(u).max(ax), (cx**2 + cy**2).mean(ax), tv.mean(ax), np.zeros(u.shape[:2])]
    return np.stack(cols, axis=-1)


def test_output_shape_dtype_and_field_order():
    rows = step_features(torch.zeros(4, 3, 8, 8))
    assert rows.shape == (4, 3, 10) and rows.dtype == torch.float32 and rows.device.type == "cpu"
    expected = ("mean", "std", "min", "max", "energy", "l1", "linf", "grad_energy", "tv", "nonfinite_frac")
    assert expected == SERIES_FIELDS
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        step_features(torch.zeros(3, 8, 8))


def test_constant_field_known_answers():
    c = -1.5
    row = step_features(torch.full((1, 1, 16, 16), c))[0, 0]
    expected = torch.tensor([c, 0.0, c, c, c * c, 1.5, 1.5, 0.0, 0.0, 0.0])
    assert torch.equal(row, expected)  # exact: a power-of-two pixel count sums identical values exactly


@pytest.mark.parametrize("axis", ["x", "y"])
def test_sine_known_answers(axis: str):
    a, k, size = 1.5, 2, 32  # size divisible by 4k: the peaks and troughs are grid points
    wave = a * np.sin(2 * np.pi * k * np.arange(size) / size)
    field = np.tile(wave, (size, 1)) if axis == "x" else np.tile(wave[:, None], (1, size))
    row = step_features(torch.from_numpy(field.astype(np.float32))[None, None])[0, 0].double().numpy()
    assert abs(row[COL["mean"]]) < 1e-6
    assert row[COL["energy"]] == pytest.approx(a * a / 2, rel=1e-6)
    assert row[COL["std"]] == pytest.approx(a / math.sqrt(2), rel=1e-6)
    assert row[COL["linf"]] == pytest.approx(a, rel=1e-7)
    assert row[COL["min"]] == pytest.approx(-a, rel=1e-7) and row[COL["max"]] == pytest.approx(a, rel=1e-7)
    assert row[COL["l1"]] == pytest.approx(np.abs(wave).mean(), rel=1e-6)
    # Central difference of a·sin(ωx): a·cos(ωx)·sin(ω) with ω = 2πk/W, so ⟨(∂u)²⟩ = a²·sin²(ω)/2.
    omega = 2 * math.pi * k / size
    assert row[COL["grad_energy"]] == pytest.approx(a * a * math.sin(omega) ** 2 / 2, rel=1e-6)
    # Sampled peak to trough and back is monotone, so each of the k periods contributes 4a of variation.
    assert row[COL["tv"]] == pytest.approx(4 * a * k / size, rel=1e-6)
    assert row[COL["nonfinite_frac"]] == 0.0


def test_checkerboard_known_answers():
    a = 0.75
    i, j = np.indices((8, 10))
    field = torch.from_numpy((a * (-1.0) ** (i + j)).astype(np.float32))[None, None]
    row = step_features(field)[0, 0]
    # Every forward difference is ±2a in both directions (tv = 4a); u(x+1) = u(x−1), so no central gradient.
    expected = torch.tensor([0.0, a, -a, a, a * a, a, a, 0.0, 4 * a, 0.0])
    assert torch.equal(row, expected)


def test_matches_float64_reference_on_odd_grid():
    x = _random_states((5, 2, 17, 23), seed=3)  # odd sizes exercise the tree's leftover element
    got = step_features(x).double().numpy()
    ref = _reference(x)
    scale = np.abs(ref).max(axis=-1, keepdims=True) + 1e-30
    assert np.all(np.abs(got - ref) <= 2e-6 * scale)


def test_nonfinite_pixels_set_fraction_per_channel_and_nan_columns():
    x = _random_states((2, 3, 8, 8), seed=4)
    x[0, 0, 1, 2] = float("nan")
    x[0, 1, 0, 0] = float("inf")
    x[0, 1, 3, 3] = float("-inf")
    rows = step_features(x)
    assert rows[0, 0, -1] == 1 / 64 and rows[0, 1, -1] == 2 / 64
    assert torch.isnan(rows[0, :2, :-1]).all()
    # The finite channel of the same sample, and the other sample, are untouched.
    assert _same(rows[0, 2], step_features(x[0:1, 2:3])[0, 0])
    assert torch.isfinite(rows[1]).all() and (rows[1, :, -1] == 0).all()


def test_batch_and_position_invariance_is_bit_exact():
    x = _random_states((37, 2, 24, 20), seed=5)
    x[9, 1, 4, 4] = float("nan")  # a divergent neighbour must not change anyone else
    full = step_features(x)
    for p in (0, 1, 9, 18, 36):
        assert _same(step_features(x[p : p + 1])[0], full[p]), p
    assert _same(step_features(x[3:11]), full[3:11])
    assert _same(step_features(torch.cat([x[20:21], x[0:1]])), full[[20, 0]])


def test_batch_invariance_on_a_large_single_channel_grid_with_threads():
    # One 256x256 channel alone is a single-output reduction, which torch.sum splits across threads
    # (so it differs from the same sample in a batch); the fixed tree must not.
    x = _random_states((3, 1, 256, 256), seed=10)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        full = step_features(x)
        assert all(_same(step_features(x[p : p + 1])[0], full[p]) for p in range(3))
    finally:
        torch.set_num_threads(before)


def test_thread_count_invariance_is_bit_exact():
    # 256x256 with one output is the case where library sums split one reduction across threads.
    inputs = [_random_states((6, 3, 32, 32), seed=6), _random_states((1, 1, 256, 256), seed=7)]
    before = torch.get_num_threads()
    try:
        results = []
        for threads in (1, 2, 4):
            torch.set_num_threads(threads)
            results.append([step_features(x) for x in inputs])
    finally:
        torch.set_num_threads(before)
    for other in results[1:]:
        assert all(_same(r0, r) for r0, r in zip(results[0], other, strict=True))


def test_non_contiguous_input_gives_same_bytes():
    x = _random_states((3, 4, 12, 12), seed=8)
    view = x.transpose(0, 1).contiguous().transpose(0, 1)  # same values, non-contiguous layout
    assert not view.is_contiguous()
    assert _same(step_features(view), step_features(x))


def test_compute_equals_per_step_calls_bytewise(monkeypatch):
    traj = _random_states((3 * 7, 2, 16, 12), seed=9).reshape(3, 7, 2, 16, 12)
    traj[1, 4, 0, 2, 3] = float("nan")
    per_step = np.stack([step_features(traj[:, t]).numpy() for t in range(7)], axis=1)
    out = compute(OperatorInputs(initial_condition=traj[0, 0].numpy(), trajectories=traj))
    assert out["series"].dtype == np.float32 and out["series"].tobytes() == per_step.tobytes()
    monkeypatch.setattr(base, "_COMPUTE_CHUNK_ELEMENTS", 1000)  # chunks of a couple of states
    chunked = compute(OperatorInputs(initial_condition=None, trajectories=traj))["series"]
    assert chunked.tobytes() == per_step.tobytes()
    for spec in FAMILY.arrays:
        assert out[spec.name].shape == spec.shape(realizations=3, steps=7, channels=2)
        assert out[spec.name].dtype == np.float32


def _series(m: int, t: int, c: int = 1) -> np.ndarray:
    series = np.ones((m, t, c, 10))
    series[..., COL["nonfinite_frac"]] = 0.0
    return series


def test_summary_field_order_is_series_major():
    assert len(SUMMARY_FIELDS) == 30
    assert SUMMARY_FIELDS[:3] == ("mean_initial", "mean_final", "mean_time_mean")
    assert SUMMARY_FIELDS[3:6] == ("mean_time_std", "mean_slope", "mean_blowup_t")
    assert SUMMARY_FIELDS.index("energy_slope") == 2 * 6 + 4 and SUMMARY_FIELDS[-1] == "linf_blowup_t"


def test_summary_slope_of_exponential_energy_and_linear_mean():
    lam, steps = 1.7, 33
    tau = np.arange(steps) / (steps - 1)
    series = _series(2, steps)
    series[:, :, 0, COL["energy"]] = np.exp(lam * tau)
    series[:, :, 0, COL["mean"]] = 2.0 - 3.0 * tau
    summary = summarize(series)
    f = {name: summary[0, i] for i, name in enumerate(SUMMARY_FIELDS)}
    assert f["energy_slope"][0] == pytest.approx(lam, rel=1e-6) and f["energy_slope"][1] == 0.0
    assert f["mean_slope"][0] == pytest.approx(-3.0, rel=1e-6)
    assert f["energy_initial"][0] == pytest.approx(1.0)
    assert f["energy_final"][0] == pytest.approx(math.exp(lam))
    assert f["energy_time_mean"][0] == pytest.approx(np.exp(lam * tau).mean(), rel=1e-6)
    assert f["energy_time_std"][0] == pytest.approx(np.exp(lam * tau).std(), rel=1e-6)
    assert f["std_slope"][0] == pytest.approx(0.0, abs=1e-9) and f["energy_blowup_t"][0] == 1.0


def test_summary_keeps_nan_for_a_divergent_realization_and_finite_blowup():
    steps = 20
    series = _series(3, steps)
    series[1, 7:, 0, :-1] = np.nan
    series[1, 7:, 0, -1] = 0.25
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        summary = summarize(series)
    f = {name: summary[0, i] for i, name in enumerate(SUMMARY_FIELDS)}
    blowups = np.array([1.0, 7 / steps, 1.0])
    for x in base.SUMMARY_SERIES:
        assert f[f"{x}_blowup_t"][0] == pytest.approx(blowups.mean())
        assert f[f"{x}_blowup_t"][1] == pytest.approx(blowups.std())
        assert np.isnan(f[f"{x}_time_mean"]).all() and np.isnan(f[f"{x}_final"]).all()
        assert f[f"{x}_initial"][0] == 1.0  # step 0 was finite


def test_summary_rejects_wrong_shape_and_handles_single_step():
    with pytest.raises(ValueError):
        summarize(np.zeros((2, 5, 1, 9)))
    summary = summarize(_series(2, 1))
    slope_cols = [i for i, name in enumerate(SUMMARY_FIELDS) if name.endswith("_slope")]
    assert np.isnan(summary[0, slope_cols]).all() and summary.shape == (1, 30, 2)


def test_family_declaration():
    assert (FAMILY.name, FAMILY.version, FAMILY.needs) == ("base", "1.0.0", Needs.ROLLOUT)
    assert FAMILY.array("series").field_names == SERIES_FIELDS
    assert FAMILY.array("series").axes == ("realization", "time", "channel", "feature")
    summary = FAMILY.array("summary")
    assert summary.field_names == SUMMARY_FIELDS and summary.axes == ("channel", "feature", "statistic")
    assert summary.axis_labels["statistic"] == ("mean_over_realizations", "std_over_realizations")
    assert summary.shape(realizations=5, steps=9, channels=3) == (3, 30, 2)
    json.dumps(dict(FAMILY.config))
