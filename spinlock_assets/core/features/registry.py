"""The registry of feature families. Adding a family: write its module, add one line to ``_BUILT_IN``
(or call :func:`register_family` from your own code before the Dagster definitions are built)."""

from __future__ import annotations

from . import base, cross_channel, dynamics, invariant_drift, operator_sensitivity, spectral
from .family import FeatureFamily

__all__ = ["FAMILIES", "derived_families", "get_family", "register_family"]

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
    """Add a family; its name must be new (re-registering the identical object is a no-op)."""
    existing = FAMILIES.get(family.name)
    if existing is not None and existing is not family:
        raise ValueError(f"a feature family named {family.name!r} is already registered")
    FAMILIES[family.name] = family
    return family


def get_family(name: str) -> FeatureFamily:
    """The family called ``name``; an unknown name lists the known ones."""
    try:
        return FAMILIES[name]
    except KeyError:
        raise ValueError(f"unknown feature family {name!r}; known families: {sorted(FAMILIES)}") from None


def derived_families(channels: int) -> list[FeatureFamily]:
    """Every registered family except ``base`` that applies to fields with ``channels`` channels."""
    return [f for f in FAMILIES.values() if f.name != "base" and channels >= f.min_channels]
