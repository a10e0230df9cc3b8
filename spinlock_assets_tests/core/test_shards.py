from __future__ import annotations

import pytest

from spinlock_assets.core.shards import ShardRange, parse_shard_key, shard_ranges
from spinlock_assets.core.spec import SpecError
from spinlock_assets_tests.conftest import tiny_spec


def test_shards_of_a_small_dataset_are_listed_by_hand():
    # 48 operators in shards of 16: ops-000000-000015, ops-000016-000031, ops-000032-000047
    assert [s.key for s in shard_ranges(48, 16)] == [
        "ops-000000-000015",
        "ops-000016-000031",
        "ops-000032-000047",
    ]


def test_growing_the_dataset_appends_shards_and_renames_none():
    before = [s.key for s in shard_ranges(32, 16)]
    after = [s.key for s in shard_ranges(64, 16)]
    assert after[: len(before)] == before and len(after) == 4


def test_lexical_order_is_numeric_order():
    keys = [s.key for s in shard_ranges(200_000, 1000)]
    assert keys == sorted(keys)


def test_shard_key_round_trips():
    shard = ShardRange(32, 48)
    assert parse_shard_key(shard.key) == shard and len(shard) == 16 and list(shard)[0] == 32


@pytest.mark.parametrize("key", ["ops-1-2", "ops-000010-000003", "shard-000000-000015", ""])
def test_malformed_shard_key_is_refused_with_the_expected_form(key):
    with pytest.raises(ValueError, match="ops-000000-000015"):
        parse_shard_key(key)


def test_dataset_size_must_be_whole_shards():
    with pytest.raises(SpecError, match="multiple of shard_size"):
        tiny_spec(n_operators=10, shard_size=4)
