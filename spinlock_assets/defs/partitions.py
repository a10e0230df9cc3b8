"""Operator shards as Dagster partitions (one partition = one shard of consecutive operators)."""

from __future__ import annotations

import dagster as dg

from spinlock_assets.core.shards import shard_ranges
from spinlock_assets.core.spec import DatasetSpec

__all__ = ["shard_partitions"]


def shard_partitions(spec: DatasetSpec) -> dg.StaticPartitionsDefinition:
    """Static partitions ``ops-000000-000015, ...`` for every shard of the spec; growing N appends keys."""
    return dg.StaticPartitionsDefinition(
        [shard.key for shard in shard_ranges(spec.n_operators, spec.shard_size)]
    )
