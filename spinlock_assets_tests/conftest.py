"""Shared fixtures: a tiny CPU-friendly spec for fast tests."""

from __future__ import annotations

import pytest

from spinlock_assets.core.spec import DatasetSpec, ParameterSpace


def tiny_spec(**overrides) -> DatasetSpec:
    """16x16 grid, C=2, T=6, M=3 and small widths: a whole operator rolls out in milliseconds."""
    values = dict(
        root_seed=7,
        n_operators=12,
        shard_size=4,
        grid=(16, 16),
        channels=2,
        steps=6,
        realizations=3,
        parameter_space=ParameterSpace(widths=(4, 8), kernel_sizes=(3, 5), n_layers=(2, 3)),
        name="tiny",
    )
    values.update(overrides)
    return DatasetSpec(**values)


@pytest.fixture
def spec() -> DatasetSpec:
    return tiny_spec()
