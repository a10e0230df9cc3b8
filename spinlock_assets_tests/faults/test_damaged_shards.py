"""Damaged shard files (bytes flipped inside a data chunk, truncated, deleted, swapped for another shard's
file) are refused wherever they are read, with an error naming the file, and never read as data."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from spinlock_assets.core.verification import verify
from spinlock_assets.storage import (
    ShardCorruptError,
    ShardMissingError,
    ShardStore,
    read_shard_file,
    validate_shard_file,
)
from spinlock_assets.storage.reader import open_dataset
from spinlock_assets_tests.conftest import tiny_spec
from spinlock_assets_tests.defs.helpers import SHARDS, materialize, tiny_definitions
from spinlock_assets_tests.faults.helpers import (
    error_text,
    flip_bytes_in_chunk,
    integrity_key,
    run_checks,
    shard_file,
    tree_sha256,
    without,
)

SHARD = SHARDS[1]  # operators 4..7
OPERATOR = 5  # row 1 of SHARD
CHECKSUMMED_ARRAY = {
    "operator_parameters": "params",
    "initial_conditions": "fields",
    "base_features": "series",
}


def _flip(path: Path) -> None:
    flip_bytes_in_chunk(path, CHECKSUMMED_ARRAY[path.parent.name], row=OPERATOR - 4)


def _truncate(path: Path) -> None:
    os.truncate(path, path.stat().st_size // 2)


def _swap(path: Path) -> None:  # another shard's (valid) file under this shard's name
    shutil.copyfile(path.with_name(f"{SHARDS[2]}.h5"), path)


DAMAGES = {"flipped-bytes": _flip, "truncated": _truncate, "deleted": Path.unlink, "swapped": _swap}
ERRORS = {"deleted": ShardMissingError}


@pytest.mark.parametrize("damage", DAMAGES)
def test_damaged_shard_is_refused_by_the_reader_the_io_manager_and_the_integrity_check(
    data_root, instance, damage
):
    damaged = data_root / shard_file("initial_conditions", SHARD)
    DAMAGES[damage](damaged)
    error = ERRORS.get(damage, ShardCorruptError)
    before = tree_sha256(data_root)

    with pytest.raises(error, match=re.escape(str(damaged))):
        ShardStore(data_root).read("initial_conditions", SHARD)
    if damage != "swapped":  # a swapped file is a whole shard, only misplaced: the store's location check
        with pytest.raises(error, match=re.escape(str(damaged))):
            read_shard_file(damaged)

    # base_features of the shard loads initial_conditions through the IO manager: the step fails on it.
    defs = tiny_definitions(tiny_spec(), data_root)
    result = materialize(defs, ["base_features"], instance, SHARD, raise_on_error=False)
    assert not result.success
    assert error.__name__ in error_text(result) and str(damaged) in error_text(result)

    evaluation = run_checks(defs, instance, SHARD, [integrity_key("initial_conditions")])
    evaluation = evaluation[("initial_conditions", "shard_file_intact")]
    assert not evaluation.passed
    assert str(damaged) in str(evaluation.metadata["problems"].value)
    assert tree_sha256(data_root) == before  # detection wrote nothing, the old base_features shard included


@pytest.mark.parametrize("asset", CHECKSUMMED_ARRAY)
@pytest.mark.parametrize("damage", DAMAGES)
def test_damaged_shard_is_never_read_as_data_through_dataset_h5(data_root, asset, damage):
    damaged = data_root / shard_file(asset, SHARD)
    DAMAGES[damage](damaged)
    with open_dataset(data_root) as reader:
        with pytest.raises(ERRORS.get(damage, ShardCorruptError), match=re.escape(str(damaged))):
            reader.operator(OPERATOR)
        record = reader.operator(0)  # the other shards stay readable and replay exactly
    assert verify(record).status == "exact"


@pytest.mark.parametrize("damage", ["truncated", "flipped-bytes"])
def test_validator_names_the_damaged_file_and_passes_every_other_one(data_root, damage):
    damaged = data_root / shard_file("base_features", SHARD)
    DAMAGES[damage](damaged)
    problems = {path: validate_shard_file(data_root / path) for path in tree_sha256(data_root) if "/" in path}
    assert [path for path, found in problems.items() if found] == [shard_file("base_features", SHARD)]
    assert all(str(damaged) in str(problem) for problem in problems[shard_file("base_features", SHARD)])


def test_a_truncated_first_shard_can_be_rematerialized(data_root, instance):
    damaged = data_root / shard_file("initial_conditions", SHARDS[0])
    _truncate(damaged)
    before = tree_sha256(data_root)
    result = materialize(
        tiny_definitions(tiny_spec(), data_root), ["initial_conditions"], instance, SHARDS[0]
    )
    assert result.success, error_text(result)
    assert validate_shard_file(damaged) == []
    assert without(tree_sha256(data_root), shard_file("initial_conditions", SHARDS[0])) == without(
        before, shard_file("initial_conditions", SHARDS[0])
    )
