"""Operator shards as Dagster partitions (one partition = one shard of consecutive operators)."""

from __future__ import annotations

import dagster as dg

from spinlock_assets.core.shards import parse_shard_key, shard_ranges
from spinlock_assets.core.spec import DatasetSpec

__all__ = ["shard_partitions", "operator_range"]


def shard_partitions(spec: DatasetSpec) -> dg.StaticPartitionsDefinition:
    """Static partitions ``ops-000000-000015, ...`` for every shard of the spec; growing N appends keys."""
    return dg.StaticPartitionsDefinition(
        [shard.key for shard in shard_ranges(spec.n_operators, spec.shard_size)]
    )


def operator_range(partition_key: str) -> range:
    """The global operator indices of a partition."""
    shard = parse_shard_key(partition_key)
    return range(shard.start, shard.stop)
