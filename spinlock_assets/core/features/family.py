"""The feature-family contract: what a family computes, from what, and how its arrays are laid out.

A family is a pure function of ONE operator's data (its trajectories, its stored base series, or its
rebuilt step map) to a dict of float32 arrays. Nothing in it may depend on other operators, so values
are identical whatever shard, batch or process the operator is computed in.

Array axes use a fixed vocabulary so shapes can be derived from a dataset spec:
``realization`` (M), ``time`` (T), ``channel`` (C), ``feature`` (len(field_names)), and any other
axis named in ``ArraySpec.axis_labels`` (its length is the number of labels).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

__all__ = ["ArraySpec", "FeatureFamily", "Needs", "OperatorInputs", "StepFunction", "EPS"]

EPS = 1e-12  # used in every ratio and log of the family definitions


class Needs(str, enum.Enum):
    """What a family must be given for one operator."""

    ROLLOUT = "rollout"  # full trajectories, obtained by replaying the operator
    BASE_SERIES = "base_series"  # the stored F0 series only; no replay
    OPERATOR = "operator"  # the rebuilt step map and the IC; no rollout


class StepFunction(Protocol):
    """One application of the rebuilt operator.

    ``x`` is ``[B, C, H, W]`` float32 on the operator's device. Noise for the whole call is drawn once
    from a fresh generator seeded with ``noise_seed`` and broadcast over the batch, so every element of
    ``x`` sees the same noise (common random numbers). With ``raw=True`` the CNN output O(x) is returned;
    otherwise the policy update F(x) = policy(x, O(x)).
    """

    def __call__(self, x: Any, *, noise_seed: int, raw: bool = False) -> Any: ...


@dataclass(frozen=True)
class OperatorInputs:
    """Everything a family may read about one operator (fields not needed by the family may be None).

    initial_condition: ``[C, H, W]`` float32 numpy array.
    base_series: ``[M, T, C, 10]`` float32 numpy array (F0 series, columns in ``base.SERIES_FIELDS`` order).
    trajectories: ``[M, T, C, H, W]`` float32 torch tensor (state 0 is the IC), only for ``Needs.ROLLOUT``.
    step: the rebuilt operator, only for ``Needs.OPERATOR``.
    probe_seed: seed for any randomness a family needs (probe directions, CRN noise seeds).
    """

    initial_condition: np.ndarray
    base_series: np.ndarray | None = None
    trajectories: Any | None = None
    step: StepFunction | None = None
    probe_seed: int = 0


@dataclass(frozen=True)
class ArraySpec:
    """One stored array of a family, per operator (the operator axis is added by storage)."""

    name: str
    axes: tuple[str, ...]
    field_names: tuple[str, ...]
    description: str = ""
    axis_labels: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def shape(self, *, realizations: int, steps: int, channels: int) -> tuple[int, ...]:
        """Per-operator shape of this array for a dataset with M, T and C as given."""
        sizes = {
            "realization": realizations,
            "time": steps,
            "channel": channels,
            "feature": len(self.field_names),
        }
        return tuple(sizes[axis] if axis in sizes else len(self.axis_labels[axis]) for axis in self.axes)


@dataclass(frozen=True)
class FeatureFamily:
    """A named, versioned feature family. Bump ``version`` on any change of definition."""

    name: str
    version: str
    needs: Needs
    description: str
    arrays: tuple[ArraySpec, ...]
    compute: Callable[[OperatorInputs], dict[str, np.ndarray]]
    config: Mapping[str, Any] = field(default_factory=dict)
    min_channels: int = 1  # e.g. cross_channel needs C > 1

    def array(self, name: str) -> ArraySpec:
        for spec in self.arrays:
            if spec.name == name:
                return spec
        raise KeyError(f"family {self.name!r} has no array {name!r}; arrays: {[a.name for a in self.arrays]}")
