"""The dataset spec: a typed, validated description of one dataset.

A spec is validated completely when it is built, so a bad value is refused with an error naming the
field, the allowed values and the actual value before any work starts.

``spec_hash`` identifies the *data* a spec produces per operator. It deliberately excludes
``n_operators`` and ``shard_size``: operator i's parameters, initial condition and rollout do not
depend on how many operators exist or how they are sharded (tests prove it), so growing a dataset or
re-sharding it keeps every stored shard valid.

The two storage flags are part of the hash, because they change what the shard files hold:
``store_trajectories`` adds a ``trajectories`` array, ``store_initial_conditions=False`` (the compact
mode) leaves out the IC ``fields``. Shards of the two forms are never mixed in one data root. The IC
flag entered the hash when it was introduced; it is hashed only when it is ``False`` so that every spec
written before then (which stored its ICs) keeps its hash and its data root.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .shards import MAX_OPERATORS

__all__ = [
    "ACTIVATIONS",
    "IC_FAMILY_NAMES",
    "POLICIES",
    "DatasetSpec",
    "ParameterSpace",
    "SpecError",
    "load_spec",
    "DEFAULT_SPEC_PATH",
]

POLICIES = ("autoregressive", "residual", "convex")
ACTIVATIONS = ("relu", "gelu", "tanh", "silu")
# Kept here (not imported from initial_conditions) so the spec stays a leaf module; a test checks
# that the two agree.
IC_FAMILY_NAMES = ("gaussian_random_field", "multiscale", "blobs", "structured")
MIN_GRID = 8
# The embedded default: a small CPU-friendly dataset (what the main job builds).
DEFAULT_SPEC_PATH = Path(__file__).parent.parent / "specs" / "default.json"


class SpecError(ValueError):
    """A dataset spec field has a value outside what is allowed."""

    def __init__(self, field_name: str, allowed: str, actual: Any) -> None:
        super().__init__(f"invalid dataset spec: {field_name} must be {allowed}; got {actual!r}")
        self.field_name = field_name


def _is_int(value: Any) -> bool:
    """An integer, and not a boolean (``True`` is an ``int`` to Python, never to a spec)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    """A finite real number (JSON admits ``Infinity`` and ``NaN``; a spec never does), not a boolean."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_range(
    name: str, bounds: tuple[float, float], *, positive: bool = False, upper: float | None = None
) -> None:
    if len(bounds) != 2 or not all(_is_number(b) for b in bounds):
        raise SpecError(name, "two finite numbers (low, high)", bounds)
    low, high = bounds
    if not low <= high:
        raise SpecError(name, "an increasing pair (low, high)", bounds)
    if positive and low <= 0:
        raise SpecError(name, "positive bounds", bounds)
    if upper is not None and high > upper:
        raise SpecError(name, f"bounds within (0, {upper}]", bounds)


def _check_list(name: str, value: Any) -> tuple:
    """A JSON list (of anything yet): ``null``, a number or a string in its place is refused here, by name,
    rather than by whatever TypeError iterating it would give."""
    if not isinstance(value, (list, tuple)):
        raise SpecError(name, "a list", value)
    return tuple(value)


def _check_choices(name: str, values: tuple, allowed: tuple) -> None:
    if not values:
        raise SpecError(name, f"a non-empty subset of {list(allowed)}", values)
    unknown = [v for v in values if not isinstance(v, str) or v not in allowed]
    if unknown or len(set(values)) != len(values):
        raise SpecError(name, f"distinct values from {list(allowed)}", values)


def _refuse_unknown_keys(cls: type, data: Any, where: str) -> None:
    if not isinstance(data, Mapping):
        raise SpecError(where, "a JSON object", data)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise SpecError(where, f"keys from {sorted(known)}", unknown)


@dataclass(frozen=True)
class ParameterSpace:
    """Ranges of the operator hyperparameters; every unit-cube coordinate maps into one of them."""

    n_layers: tuple[int, int] = (2, 5)
    widths: tuple[int, ...] = (16, 32, 48, 64)
    kernel_sizes: tuple[int, ...] = (3, 5, 7)
    activations: tuple[str, ...] = ACTIVATIONS
    noise_sigma: tuple[float, float] = (1e-4, 1e-1)
    weight_gain: tuple[float, float] = (0.5, 2.0)
    policies: tuple[str, ...] = POLICIES
    dt: tuple[float, float] = (0.01, 0.5)
    alpha: tuple[float, float] = (0.1, 0.9)
    ic_families: tuple[str, ...] = IC_FAMILY_NAMES

    def __post_init__(self) -> None:
        layers = self.n_layers
        if len(layers) != 2 or not all(map(_is_int, layers)) or not 2 <= layers[0] <= layers[1]:
            raise SpecError(
                "parameter_space.n_layers", "integers (low, high) with 2 <= low <= high", self.n_layers
            )
        if not self.widths or any(not _is_int(w) or w < 1 for w in self.widths):
            raise SpecError("parameter_space.widths", "a non-empty list of positive integers", self.widths)
        if not self.kernel_sizes or any(not _is_int(k) or k < 1 or k % 2 == 0 for k in self.kernel_sizes):
            raise SpecError(
                "parameter_space.kernel_sizes", "a non-empty list of odd positive integers", self.kernel_sizes
            )
        _check_choices("parameter_space.activations", self.activations, ACTIVATIONS)
        _check_choices("parameter_space.policies", self.policies, POLICIES)
        _check_choices("parameter_space.ic_families", self.ic_families, IC_FAMILY_NAMES)
        _check_range("parameter_space.noise_sigma", self.noise_sigma, positive=True)
        _check_range("parameter_space.weight_gain", self.weight_gain, positive=True)
        _check_range("parameter_space.dt", self.dt, positive=True, upper=1.0)
        _check_range("parameter_space.alpha", self.alpha, positive=True, upper=1.0)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ParameterSpace:
        _refuse_unknown_keys(cls, data, "parameter_space")
        return cls(**{k: _check_list(f"parameter_space.{k}", v) for k, v in data.items()})


@dataclass(frozen=True)
class DatasetSpec:
    """Everything that defines a dataset. Shapes: grid ``(H, W)``, ``channels`` C, ``steps`` T (state 0 is
    the initial condition, so T-1 operator applications), ``realizations`` M."""

    root_seed: int
    n_operators: int
    shard_size: int
    grid: tuple[int, int] = (64, 64)
    channels: int = 3
    steps: int = 256
    realizations: int = 5
    parameter_space: ParameterSpace = field(default_factory=ParameterSpace)
    store_trajectories: bool = False
    # False is the compact mode: initial_conditions shards keep ic_digest only and readers regenerate each
    # IC from its ic_seed, checked against that digest (docs/hdf5-layout.md, docs/design-decisions.md).
    store_initial_conditions: bool = True
    name: str = "dataset"

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise SpecError("name", "a non-empty string", self.name)
        if not isinstance(self.parameter_space, ParameterSpace):
            raise SpecError("parameter_space", "a JSON object", self.parameter_space)
        if not _is_int(self.root_seed) or self.root_seed < 0:
            raise SpecError("root_seed", "a non-negative integer", self.root_seed)
        for name, minimum in (
            ("n_operators", 1),
            ("shard_size", 1),
            ("channels", 1),
            ("steps", 2),
            ("realizations", 1),
        ):
            value = getattr(self, name)
            if not _is_int(value) or value < minimum:
                raise SpecError(name, f"an integer >= {minimum}", value)
        for name in ("store_trajectories", "store_initial_conditions"):
            # A JSON string such as "false" would otherwise be truthy.
            if not isinstance(getattr(self, name), bool):
                raise SpecError(name, "true or false", getattr(self, name))
        if self.n_operators % self.shard_size:
            raise SpecError(
                "n_operators",
                f"a multiple of shard_size={self.shard_size} (so growing appends whole shards)",
                self.n_operators,
            )
        if self.n_operators > MAX_OPERATORS:
            raise SpecError(
                "n_operators", f"at most {MAX_OPERATORS:,} (shard keys have six digits)", self.n_operators
            )
        if not isinstance(self.grid, tuple) or len(self.grid) != 2 or not all(map(_is_int, self.grid)):
            raise SpecError("grid", "two integers (height, width)", self.grid)
        smallest = max(MIN_GRID, max(self.parameter_space.kernel_sizes))
        if min(self.grid) < smallest:
            raise SpecError(
                "grid",
                f"at least {smallest} x {smallest} (the largest kernel and the feature minimum)",
                self.grid,
            )

    @property
    def height(self) -> int:
        return self.grid[0]

    @property
    def width(self) -> int:
        return self.grid[1]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DatasetSpec:
        _refuse_unknown_keys(cls, data, "spec")
        values = dict(data)
        if "grid" in values:
            values["grid"] = _check_list("grid", values["grid"])
        if "parameter_space" in values and not isinstance(values["parameter_space"], ParameterSpace):
            values["parameter_space"] = ParameterSpace.from_dict(values["parameter_space"])
        return cls(**values)

    @classmethod
    def from_json(cls, text: str) -> DatasetSpec:
        try:
            data = json.loads(text)
        except (TypeError, ValueError) as error:
            raise SpecError("spec", f"a JSON object ({error})", text) from None
        return cls.from_dict(data)

    @property
    def spec_hash(self) -> str:
        """Hash of what determines each operator's data (see the module docstring for what is excluded)."""
        content = self.to_dict()
        for excluded in ("n_operators", "shard_size", "name"):
            content.pop(excluded)
        if self.store_initial_conditions:  # the default: keeps the hash specs had before the flag existed
            content.pop("store_initial_conditions")
        return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:16]

    def with_operators(self, n_operators: int) -> DatasetSpec:
        return dataclasses.replace(self, n_operators=n_operators)


def load_spec(path: str | Path) -> DatasetSpec:
    """Read a spec from a JSON file; errors name the file."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as error:
        raise SpecError("spec file", "a readable JSON file", str(path)) from error
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise SpecError("spec file", f"valid JSON ({error})", str(path)) from error
    return DatasetSpec.from_dict(data)
