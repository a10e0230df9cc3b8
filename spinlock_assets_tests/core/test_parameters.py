from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from spinlock_assets.core.generation import operator_parameters
from spinlock_assets.core.parameters import PARAMETER_NAMES, map_parameters, sobol_points
from spinlock_assets.core.seeds import derive_seed, operator_seeds
from spinlock_assets.core.spec import ParameterSpace


def test_sobol_points_are_prefix_stable():
    """Operators 0..N-1 are identical whatever N is, and whatever range they are drawn in."""
    small = sobol_points(root_seed=3, start=0, stop=40)
    large = sobol_points(root_seed=3, start=0, stop=1000)
    middle = sobol_points(root_seed=3, start=17, stop=40)
    assert np.array_equal(small, large[:40])
    assert np.array_equal(middle, small[17:40])


def test_sobol_points_depend_on_the_root_seed():
    assert not np.array_equal(sobol_points(3, 0, 8), sobol_points(4, 0, 8))


def test_seeds_do_not_depend_on_range_or_realization_count():
    assert operator_seeds(5, 42, 2).noise_seeds == operator_seeds(5, 42, 5).noise_seeds[:2]
    assert operator_seeds(5, 42, 3) == operator_seeds(5, 42, 3)
    seeds = operator_seeds(5, 42, 3)
    all_values = [seeds.weight_seed, seeds.ic_seed, seeds.probe_seed, *seeds.noise_seeds]
    assert len(set(all_values)) == len(all_values)
    assert derive_seed(5, 42, 0) != derive_seed(5, 43, 0) != derive_seed(6, 42, 0)


def test_seeds_are_fixed_values():
    """Seeds are part of the data format: a change of derivation would orphan every dataset."""
    assert derive_seed(0, 0, 0) == derive_seed(0, 0, 0)
    assert 0 <= derive_seed(2**40, 10**9, 2, 7) < 2**63


@pytest.mark.parametrize(
    ("name", "values"),
    [
        ("n_layers", (2, 3, 4, 5)),
        ("width", (16, 32, 48, 64)),
        ("kernel_size", (3, 5, 7)),
        ("activation", ("relu", "gelu", "tanh", "silu")),
        ("policy", ("autoregressive", "residual", "convex")),
        ("ic_family", ("gaussian_random_field", "multiscale", "blobs", "structured")),
    ],
)
def test_choice_coordinates_give_every_value_equal_probability(name, values):
    """4096 Sobol points: each value's share within 1% of 1/k (upstream rounding gave end values half)."""
    space = ParameterSpace()
    points = sobol_points(11, 0, 4096)
    drawn = [getattr(map_parameters(p, space), name) for p in points]
    shares = np.array([drawn.count(v) for v in values]) / len(drawn)
    assert set(drawn) == set(values)
    np.testing.assert_allclose(shares, 1 / len(values), atol=0.01)


def test_log_uniform_coordinates_cover_their_range_uniformly_in_log():
    space = ParameterSpace()
    points = sobol_points(11, 0, 4096)
    sigmas = np.array([map_parameters(p, space).noise_sigma for p in points])
    low, high = space.noise_sigma
    assert low <= sigmas.min() and sigmas.max() <= high
    fractions = (np.log(sigmas) - np.log(low)) / (np.log(high) - np.log(low))
    counts, _ = np.histogram(fractions, bins=8, range=(0, 1))
    np.testing.assert_allclose(counts / len(sigmas), 1 / 8, atol=0.01)


def test_every_coordinate_changes_the_hyperparameters():
    """Moving any one coordinate (where it is active) changes the operator the point describes."""
    space = ParameterSpace()
    base = np.full(len(PARAMETER_NAMES), 0.1)
    base[PARAMETER_NAMES.index("policy")] = 0.5  # residual: update_rate is dt
    reference = map_parameters(base, space)
    for j, name in enumerate(PARAMETER_NAMES):
        moved = base.copy()
        moved[j] = 0.9
        assert map_parameters(moved, space) != reference, f"coordinate {name} has no effect"


def test_update_rate_is_alpha_for_convex_policy():
    space = ParameterSpace()
    point = np.full(len(PARAMETER_NAMES), 0.2)
    point[PARAMETER_NAMES.index("policy")] = 0.95
    low, high = map_parameters(point, space), None
    point[PARAMETER_NAMES.index("update_rate")] = 0.8
    high = map_parameters(point, space)
    assert low.policy == "convex" and low.dt is None and low.alpha < high.alpha


def test_out_of_range_point_is_refused():
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        map_parameters(np.full(len(PARAMETER_NAMES), 1.5), ParameterSpace())


def test_operator_parameters_independent_of_range(spec):
    whole = operator_parameters(spec, 0, 12)
    part = operator_parameters(dataclasses.replace(spec, shard_size=6), 5, 10)
    assert np.array_equal(whole.params[5:10], part.params)
    assert whole.seeds[5:10] == part.seeds
    assert whole.hyperparameters[5:10] == part.hyperparameters


def test_operator_range_outside_dataset_is_refused(spec):
    with pytest.raises(ValueError, match="outside"):
        operator_parameters(spec, 10, 13)
