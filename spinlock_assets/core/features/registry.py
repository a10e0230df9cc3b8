"""The registry of feature families. Adding a family: write its module, add one line to ``_BUILT_IN``
(or call :func:`register_family` from your own code before the Dagster definitions are built)."""

from __future__ import annotations

import re

from . import base, cross_channel, dynamics, invariant_drift, operator_sensitivity, spectral
from .family import FeatureFamily, Needs

__all__ = ["FAMILIES", "check_family", "derived_families", "get_family", "register_family"]

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_AXES = ("realization", "time", "channel", "feature")

_BUILT_IN = (
    base.FAMILY,
    spectral.FAMILY,
    dynamics.FAMILY,
    invariant_drift.FAMILY,
    operator_sensitivity.FAMILY,
    cross_channel.FAMILY,
)

FAMILIES: dict[str, FeatureFamily] = {family.name: family for family in _BUILT_IN}


def register_family(family: FeatureFamily) -> FeatureFamily:
    """Add a family; its name must be new (re-registering the identical object is a no-op). Names become
    HDF5 paths (``/features/<family>/<array>``) and an asset name, so they are checked here, at registration,
    not when the first shard is written after a whole replay."""
    check_family(family)
    existing = FAMILIES.get(family.name)
    if existing is not None and existing is not family:
        raise ValueError(f"a feature family named {family.name!r} is already registered")
    FAMILIES[family.name] = family
    return family


def check_family(family: FeatureFamily) -> None:
    """Raise ``ValueError`` naming the family and field unless ``family`` is well formed: identifier names
    (family and arrays, distinct), a non-empty version, known ``needs``, axes from the vocabulary or
    labelled, and a callable ``compute``."""
    where = f"feature family {family.name!r}"
    if not isinstance(family.name, str) or not _NAME.fullmatch(family.name):
        raise ValueError(f"{where}: name must be an identifier (it becomes an HDF5 group and an asset name)")
    if not isinstance(family.version, str) or not family.version:
        raise ValueError(f"{where}: version must be a non-empty string, got {family.version!r}")
    if not isinstance(family.needs, Needs):
        raise ValueError(f"{where}: needs must be one of {[n.value for n in Needs]}, got {family.needs!r}")
    if not callable(family.compute):
        raise ValueError(f"{where}: compute must be callable")
    names = [array.name for array in family.arrays]
    if not names or len(set(names)) != len(names):
        raise ValueError(f"{where}: arrays must be non-empty with distinct names, got {names}")
    for array in family.arrays:
        if not isinstance(array.name, str) or not _NAME.fullmatch(array.name) or array.name == "present":
            raise ValueError(
                f"{where}: array name {array.name!r} must be an identifier other than 'present' "
                "(it becomes /features/<family>/<array>)"
            )
        unknown = [axis for axis in array.axes if axis not in _AXES and axis not in array.axis_labels]
        if unknown:
            raise ValueError(f"{where}: array {array.name!r} has axes {unknown} neither known nor labelled")


def get_family(name: str) -> FeatureFamily:
    """The family called ``name``; an unknown name lists the known ones."""
    try:
        return FAMILIES[name]
    except KeyError:
        raise ValueError(f"unknown feature family {name!r}; known families: {sorted(FAMILIES)}") from None


def derived_families(channels: int) -> list[FeatureFamily]:
    """Every registered family except ``base`` that applies to fields with ``channels`` channels."""
    return [f for f in FAMILIES.values() if f.name != "base" and channels >= f.min_channels]
