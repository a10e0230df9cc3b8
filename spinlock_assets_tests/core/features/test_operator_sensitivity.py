"""F4 operator_sensitivity against closed forms of small fake step maps."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from spinlock_assets.core.features.family import Needs, OperatorInputs
from spinlock_assets.core.features.operator_sensitivity import (
    FAMILY,
    FEATURE_NAMES,
    GAINS,
    N_PROBE_DIRECTIONS,
    probe_seeds,
)

COL = {name: i for i, name in enumerate(FEATURE_NAMES)}


def _ic(scale: float = 1.0, shape: tuple[int, int, int] = (3, 16, 16)) -> np.ndarray:
    return (np.random.Generator(np.random.PCG64(0)).standard_normal(shape) * scale).astype(np.float32)


def _noise(seed: int, shape: tuple[int, ...]) -> torch.Tensor:
    """The fake operators' noise: one [C, H, W] draw per call, broadcast over the batch (the contract)."""
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


class FakeStep:
    """F(x) = a x (1 + m n) + s n and O(x) = a_raw x, with n drawn once per call from ``noise_seed``."""

    def __init__(
        self, a: float = 0.7, a_raw: float = 2.0, additive: float = 0.0, multiplicative: float = 0.0
    ):
        self.a, self.a_raw, self.additive, self.multiplicative = a, a_raw, additive, multiplicative
        self.calls: list[tuple[int, bool]] = []

    def __call__(self, x: torch.Tensor, *, noise_seed: int, raw: bool = False) -> torch.Tensor:
        self.calls.append((x.shape[0], raw))
        if raw:
            return self.a_raw * x
        n = _noise(noise_seed, tuple(x.shape[1:]))
        return self.a * x * (1 + self.multiplicative * n) + self.additive * n


def _run(step, ic: np.ndarray | None = None, probe_seed: int = 5) -> dict[str, np.ndarray]:
    return FAMILY.compute(
        OperatorInputs(initial_condition=_ic() if ic is None else ic, step=step, probe_seed=probe_seed)
    )


def test_noise_free_linear_map_gives_the_closed_form() -> None:
    out = _run(FakeStep(a=0.7, a_raw=2.0))
    for name, a in (("step_map", 0.7), ("raw_operator", 2.0)):
        row = out[name][0].astype(np.float64)
        for eps in ("1e-4", "1e-3", "1e-2"):  # float32 rounding of a*(x+d) - a*x, relative to |a d|
            assert row[COL[f"lipschitz_rel_{eps}"]] == pytest.approx(a, rel=1e-4)
        for alpha in GAINS:
            assert row[COL[f"gain_{alpha}"]] == pytest.approx(alpha, rel=1e-6)
        assert row[COL["linearity_r2"]] == pytest.approx(1.0, abs=1e-6)
        assert row[COL["saturation"]] == pytest.approx(0.0, abs=1e-6)
        assert row[COL["compression_ratio"]] == pytest.approx(1.0, rel=1e-6)
        assert row[COL["noise_sensitivity"]] == 0.0
        assert row[COL["amplification"]] == pytest.approx(a, rel=1e-6)


def test_common_random_numbers_cancel_additive_noise() -> None:
    # F(x) = a x + s n: the noise is as large as the signal, yet the perturbed and baseline passes share n,
    # so lipschitz is exactly a; the gains match the closed form with the very n of seed s_probe.
    a, s = 0.7, 1.0
    ic = _ic()
    row = _run(FakeStep(a=a, additive=s), ic)["step_map"][0].astype(np.float64)
    s_probe, b_seeds = probe_seeds(5)
    x = torch.from_numpy(ic).double()
    base = a * x + s * _noise(s_probe, ic.shape).double()
    for eps in ("1e-4", "1e-3", "1e-2"):
        assert row[COL[f"lipschitz_rel_{eps}"]] == pytest.approx(a, rel=1e-3)
    for alpha in GAINS:
        expected = torch.linalg.norm(a * alpha * x + s * _noise(s_probe, ic.shape)) / torch.linalg.norm(base)
        assert row[COL[f"gain_{alpha}"]] == pytest.approx(float(expected), rel=1e-5)
    expected_noise = np.mean(
        [float(torch.linalg.norm(s * (_noise(s_probe, ic.shape) - _noise(b, ic.shape)))) for b in b_seeds]
    ) / float(torch.linalg.norm(base))
    assert row[COL["noise_sensitivity"]] == pytest.approx(expected_noise, rel=1e-5)
    assert row[COL["noise_sensitivity"]] > 0.5


def test_multiplicative_noise_leaves_the_gains_exact() -> None:
    row = _run(FakeStep(a=0.7, multiplicative=0.5))["step_map"][0]
    for alpha in GAINS:
        assert row[COL[f"gain_{alpha}"]] == pytest.approx(alpha, rel=1e-6)
    assert row[COL["noise_sensitivity"]] > 0.1


def test_saturating_map_has_gain_below_alpha() -> None:
    def tanh_step(x: torch.Tensor, *, noise_seed: int, raw: bool = False) -> torch.Tensor:
        return torch.tanh(x)

    row = _run(tanh_step, _ic(scale=5.0))["step_map"][0]
    assert row[COL["gain_1.5"]] < 1.5
    assert row[COL["saturation"]] > 0.1
    assert row[COL["compression_ratio"]] > 1.0
    assert row[COL["linearity_r2"]] < 1.0
    assert row[COL["lipschitz_rel_1e-3"]] < 1.0  # tanh' <= 1, and most pixels are deep in saturation


def test_batches_all_passes_into_few_step_calls() -> None:
    step = FakeStep()
    _run(step)
    per_map = [(17, False), (1, False)] + [(1, False)] * N_PROBE_DIRECTIONS
    assert step.calls == per_map + [(b, True) for b, _ in per_map]


def test_same_probe_seed_gives_identical_bytes_and_seed_matters() -> None:
    def step(x: torch.Tensor, *, noise_seed: int, raw: bool = False) -> torch.Tensor:
        return torch.tanh(x) + 0.1 * _noise(noise_seed, tuple(x.shape[1:]))

    first, again, other = _run(step, probe_seed=3), _run(step, probe_seed=3), _run(step, probe_seed=4)
    for name in ("step_map", "raw_operator"):
        assert first[name].tobytes() == again[name].tobytes()
    assert not np.array_equal(first["step_map"], other["step_map"])


def test_non_finite_outputs_become_nan_only_where_read() -> None:
    ic = _ic()
    limit = 1.4 * float(np.abs(ic).max())  # the alpha = 1.5 input exceeds it, nothing else does

    def blows_up(x: torch.Tensor, *, noise_seed: int, raw: bool = False) -> torch.Tensor:
        big = x.flatten(1).abs().amax(dim=1) > limit
        return torch.where(big.view(-1, 1, 1, 1), torch.full_like(x, math.inf), x)

    row = _run(blows_up, ic)["step_map"][0]
    for name in ("gain_1.5", "saturation", "compression_ratio", "linearity_r2"):
        assert np.isnan(row[COL[name]]), name
    for name in ("lipschitz_rel_1e-2", "gain_1.25", "noise_sensitivity", "amplification"):
        assert np.isfinite(row[COL[name]]), name

    def all_nan(x: torch.Tensor, *, noise_seed: int, raw: bool = False) -> torch.Tensor:
        return x * math.nan

    out = _run(all_nan, ic)
    assert np.all(np.isnan(out["step_map"])) and np.all(np.isnan(out["raw_operator"]))


def test_arrays_match_their_specs() -> None:
    out = _run(FakeStep())
    assert FAMILY.needs is Needs.OPERATOR and len(FEATURE_NAMES) == len(set(FEATURE_NAMES)) == 12
    assert sorted(out) == sorted(spec.name for spec in FAMILY.arrays)
    for spec in FAMILY.arrays:
        assert spec.field_names == FEATURE_NAMES
        assert out[spec.name].dtype == np.float32
        assert out[spec.name].shape == spec.shape(realizations=5, steps=10, channels=3) == (1, 12)
    json.dumps(dict(FAMILY.config))


def test_no_global_rng_is_touched() -> None:
    torch_before, numpy_before = torch.get_rng_state(), np.random.get_state()[1].copy()
    _run(FakeStep(additive=0.1))
    assert torch.equal(torch.get_rng_state(), torch_before)
    assert np.array_equal(np.random.get_state()[1], numpy_before)


@pytest.mark.parametrize(
    ("inputs", "needle"),
    [
        (OperatorInputs(initial_condition=_ic(), step=None), "step"),
        (OperatorInputs(initial_condition=_ic()[0], step=FakeStep()), "[C, H, W]"),
        (OperatorInputs(initial_condition=_ic(), step=FakeStep(), probe_seed=-1), "probe_seed"),
    ],
)
def test_bad_inputs_raise_value_error(inputs: OperatorInputs, needle: str) -> None:
    with pytest.raises(ValueError, match=needle.replace("[", r"\[")):
        FAMILY.compute(inputs)


def test_noise_drawn_per_batch_element_would_swamp_lipschitz() -> None:
    # Why the StepFunction contract broadcasts one noise draw over the batch: without common random
    # numbers the difference F(x + d) - F(x) measures the noise, not the map (here ~1e4 instead of 0.7).
    def per_element_noise(x: torch.Tensor, *, noise_seed: int, raw: bool = False) -> torch.Tensor:
        return 0.7 * x + torch.randn(x.shape, generator=torch.Generator().manual_seed(noise_seed))

    assert _run(per_element_noise)["step_map"][0, COL["lipschitz_rel_1e-4"]] > 100


def test_scale_invariant_map_has_linearity_zero() -> None:
    # Like the instance-normalised CNN: F(a x) = F(x), so every gain is 1 and gain = a explains nothing.
    def normalised(x: torch.Tensor, *, noise_seed: int, raw: bool = False) -> torch.Tensor:
        return x / x.flatten(1).norm(dim=1).view(-1, 1, 1, 1)

    row = _run(normalised)["step_map"][0]
    assert row[COL["linearity_r2"]] == pytest.approx(0.0, abs=1e-5)
    assert row[COL["saturation"]] == pytest.approx(0.5, abs=1e-6)
    assert row[COL["compression_ratio"]] == pytest.approx(3.0, rel=1e-6)
