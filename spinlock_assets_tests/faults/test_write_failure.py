"""A shard write failing mid-way (disk full) during a Dagster materialization: the step fails with the
OS error, nothing is published under the real name, no temporary file is left, the previously stored
shard keeps its bytes and every other file is untouched."""

from __future__ import annotations

import errno

import pytest

from spinlock_assets.storage import atomic
from spinlock_assets.storage import shard_file as shard_file_module
from spinlock_assets_tests.conftest import tiny_spec
from spinlock_assets_tests.defs.helpers import SHARDS, materialize, tiny_definitions
from spinlock_assets_tests.faults.helpers import error_text, shard_file, temp_files, tree_sha256, without

SHARD = SHARDS[1]
TARGET = shard_file("base_features", SHARD)


def _disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def _fail_after_first_array(monkeypatch) -> None:
    write_array, calls = shard_file_module.write_array, []

    def write_array_until_full(group, name, array):
        calls.append(name)
        if len(calls) > 1:
            _disk_full()
        write_array(group, name, array)

    monkeypatch.setattr(shard_file_module, "write_array", write_array_until_full)


def _fail_at_publication(monkeypatch) -> None:  # the data is written and fsynced; the rename fails
    monkeypatch.setattr(atomic, "_publish", _disk_full)


FAULTS = {"after-first-array": _fail_after_first_array, "at-publication": _fail_at_publication}


@pytest.mark.parametrize("old_file", [True, False], ids=["overwriting", "first-write"])
@pytest.mark.parametrize("fault", FAULTS)
def test_disk_full_during_a_shard_write_fails_the_step_and_loses_nothing(
    data_root, instance, monkeypatch, fault, old_file
):
    if not old_file:
        (data_root / TARGET).unlink()
    before = tree_sha256(data_root)
    defs = tiny_definitions(tiny_spec(), data_root)
    FAULTS[fault](monkeypatch)

    result = materialize(defs, ["base_features"], instance, SHARD, raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert failure.step_key == "base_features"
    text = error_text(result)
    assert "No space left on device" in text and str(data_root / TARGET) in text  # what failed, and where
    assert not result.get_asset_materialization_events()  # no materialization recorded for a lost write

    assert temp_files(data_root) == []
    assert tree_sha256(data_root) == before  # old shard (or no shard) under the real name, the rest untouched
    monkeypatch.undo()
    assert materialize(defs, ["base_features"], instance, SHARD).success  # once space is back
    assert without(tree_sha256(data_root), TARGET) == without(before, TARGET)
