"""The parameter space: scrambled Sobol points of the unit cube and their one mapping to hyperparameters.

Coordinates (column order of ``params``): see ``PARAMETER_NAMES``. Every coordinate changes the
operator or its rollout: ``update_rate`` is the residual policy's dt or the convex policy's alpha
(the autoregressive policy has neither), ``ic_scale`` is the length or wavenumber scale of whichever
initial-condition family is drawn. Choice coordinates split [0, 1) into equal cells, so each value has
the same probability (the original system rounded, which gave the end values half).
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from dataclasses import dataclass

import numpy as np

from .seeds import STREAMS, derive_seed
from .spec import ParameterSpace

__all__ = [
    "HYPERPARAMETER_FIELDS",
    "PARAMETER_NAMES",
    "OperatorHyperparameters",
    "map_parameters",
    "hyperparameter_table",
    "sobol_points",
]

PARAMETER_NAMES = (
    "n_layers",
    "width",
    "kernel_size",
    "activation",
    "noise_sigma",
    "weight_gain",
    "policy",
    "update_rate",
    "ic_family",
    "ic_scale",
)


def sobol_points(root_seed: int, start: int, stop: int) -> np.ndarray:
    """Points ``start..stop-1`` of the dataset's scrambled Sobol sequence, ``[stop-start, P]`` float64.

    The scramble is seeded from the root seed, and point i is the same whatever range it is drawn in,
    so growing a dataset appends points and changes none of the earlier ones.
    """
    from scipy.stats import qmc

    if not 0 <= start <= stop:
        raise ValueError(f"operator range must satisfy 0 <= start <= stop; got start={start}, stop={stop}")
    scramble_rng = np.random.default_rng(derive_seed(root_seed, STREAMS["sobol"]))
    sampler = qmc.Sobol(d=len(PARAMETER_NAMES), scramble=True, rng=scramble_rng)
    if start:  # scipy's fast_forward(0) overflows
        sampler.fast_forward(start)
    with warnings.catch_warnings():
        # scipy warns that prefixes which are not powers of two lose balance; a dataset of any N is wanted.
        warnings.simplefilter("ignore", UserWarning)
        return sampler.random(stop - start)


def _choice(u: float, values: tuple):
    return values[min(int(u * len(values)), len(values) - 1)]


def _log_uniform(u: float, bounds: tuple[float, float]) -> float:
    low, high = bounds
    return float(math.exp(math.log(low) + u * (math.log(high) - math.log(low))))


@dataclass(frozen=True)
class OperatorHyperparameters:
    """The operator one parameter point describes. ``dt`` is set for the residual policy only, ``alpha``
    for the convex policy only."""

    n_layers: int
    width: int
    kernel_size: int
    activation: str
    noise_sigma: float
    weight_gain: float
    policy: str
    dt: float | None
    alpha: float | None
    ic_family: str
    ic_scale: float


def map_parameters(point: np.ndarray, space: ParameterSpace) -> OperatorHyperparameters:
    """Map one unit-cube point ``[P]`` to hyperparameters. This is the only mapping in the project."""
    point = np.asarray(point, dtype=np.float64)
    if point.shape != (len(PARAMETER_NAMES),) or not np.all((point >= 0) & (point <= 1)):
        raise ValueError(
            f"parameter point must have shape ({len(PARAMETER_NAMES)},) with values in [0, 1]; "
            f"got shape {point.shape} and values {point.tolist()}"
        )
    u = dict(zip(PARAMETER_NAMES, (float(x) for x in point), strict=True))
    low, high = space.n_layers
    policy = _choice(u["policy"], space.policies)
    alpha_low, alpha_high = space.alpha
    return OperatorHyperparameters(
        n_layers=_choice(u["n_layers"], tuple(range(low, high + 1))),
        width=_choice(u["width"], space.widths),
        kernel_size=_choice(u["kernel_size"], space.kernel_sizes),
        activation=_choice(u["activation"], space.activations),
        noise_sigma=_log_uniform(u["noise_sigma"], space.noise_sigma),
        weight_gain=_log_uniform(u["weight_gain"], space.weight_gain),
        policy=policy,
        dt=_log_uniform(u["update_rate"], space.dt) if policy == "residual" else None,
        alpha=alpha_low + u["update_rate"] * (alpha_high - alpha_low) if policy == "convex" else None,
        ic_family=_choice(u["ic_family"], space.ic_families),
        ic_scale=u["ic_scale"],
    )


# Numeric table stored next to ``params``; categorical columns hold the index into ``categories``.
HYPERPARAMETER_FIELDS = tuple(field.name for field in dataclasses.fields(OperatorHyperparameters))


def hyperparameter_table(
    rows: list[OperatorHyperparameters], space: ParameterSpace
) -> tuple[np.ndarray, dict]:
    """``[n, len(HYPERPARAMETER_FIELDS)]`` float64 (NaN where a policy has no dt/alpha) and the categories."""
    categories = {
        "activation": list(space.activations),
        "policy": list(space.policies),
        "ic_family": list(space.ic_families),
    }
    table = np.full((len(rows), len(HYPERPARAMETER_FIELDS)), np.nan)
    for i, row in enumerate(rows):
        for j, name in enumerate(HYPERPARAMETER_FIELDS):
            value = getattr(row, name)
            if name in categories:
                value = categories[name].index(value)
            table[i, j] = np.nan if value is None else value
    return table, categories
