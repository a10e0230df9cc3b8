"""SIGKILL while a shard file is being written: the real name keeps the old file (or none), every other
file keeps its bytes, the leftover temporary file is invisible to readers and cleaned up, and
re-materializing the shard replays bit-exactly."""

from __future__ import annotations

import os
import signal

import pytest

from spinlock_assets.core.verification import verify
from spinlock_assets.storage import ShardMissingError, ShardStore, file_sha256, read_shard_file
from spinlock_assets.storage.atomic import parse_temp_name
from spinlock_assets_tests.conftest import tiny_spec
from spinlock_assets_tests.defs.helpers import SHARDS, materialize, tiny_definitions
from spinlock_assets_tests.faults.child_materialize import HANG_MARKER_ENV
from spinlock_assets_tests.faults.helpers import (
    arrays_equal,
    child_env,
    kill,
    shard_file,
    shard_records,
    start_child,
    temp_files,
    tree_sha256,
    wait_for_file,
    without,
    write_spec_file,
)

SHARD = SHARDS[1]
TARGET = shard_file("base_features", SHARD)


@pytest.mark.slow
@pytest.mark.parametrize("old_file", [True, False], ids=["overwriting", "first-write"])
def test_sigkill_while_writing_a_shard_loses_nothing_and_rematerializing_replays_exactly(
    generated_root, data_root, tmp_path, instance, old_file
):
    if not old_file:
        (data_root / TARGET).unlink()
    before = tree_sha256(data_root)
    marker = tmp_path / "writing"
    env = child_env(
        write_spec_file(tiny_spec(), tmp_path / "spec.json"), data_root, **{HANG_MARKER_ENV: str(marker)}
    )
    log = tmp_path / "child.log"
    child = start_child(
        ["-m", "spinlock_assets_tests.faults.child_materialize", SHARD, "base_features"], env, log
    )
    wait_for_file(marker, child, log)
    store = ShardStore(data_root)
    try:  # while the writer is alive and mid-file: readers see the old shard (or none), cleanup spares it
        if old_file:
            assert file_sha256(data_root / TARGET) == before[TARGET]
            store.read("base_features", SHARD)
        else:
            with pytest.raises(ShardMissingError):
                store.read("base_features", SHARD)
        assert store.remove_stale_temp_files("base_features", min_age_s=0) == []
        assert len(temp_files(data_root)) == 1
    finally:
        assert kill(child) == -signal.SIGKILL

    # The writer died inside the HDF5 file: its temp sibling holds a partial file, named after the dead pid.
    leftovers = temp_files(data_root)
    assert [p.name for p in leftovers] == [os.path.basename(marker.read_text())]
    assert parse_temp_name(leftovers[0].name) == (f"{SHARD}.h5", child.pid)
    after = tree_sha256(data_root)
    assert without(after, leftovers[0].relative_to(data_root).as_posix()) == before  # nothing else touched
    if old_file:
        assert after[TARGET] == before[TARGET]
        read_shard_file(data_root / TARGET)  # still a whole, readable shard
    else:
        assert not (data_root / TARGET).exists()
    assert store.shard_keys("base_features") == (SHARDS if old_file else [SHARDS[0], SHARDS[2]])

    assert store.remove_stale_temp_files("base_features", min_age_s=0) == leftovers  # its writer is dead
    assert temp_files(data_root) == []

    defs = tiny_definitions(tiny_spec(), data_root)
    result = materialize(defs, ["base_features"], instance, SHARD)
    assert result.success
    assert without(tree_sha256(data_root), TARGET) == without(before, TARGET)
    stored, expected = (read_shard_file(root / TARGET).arrays for root in (data_root, generated_root))
    for name in ("digests", "series", "first_nonfinite_step"):  # the data the killed run was writing
        assert arrays_equal(stored[name].data, expected[name].data)
    assert [verify(record).status for record in shard_records(data_root, tiny_spec(), SHARD)] == ["exact"] * 4
