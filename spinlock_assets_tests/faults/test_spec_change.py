"""A data root holding shards of one spec, used with a changed spec (T or grid): every run is refused
before any step writes, naming both spec hashes and asking for a new data root."""

from __future__ import annotations

import re

import dagster as dg
import pytest

from spinlock_assets.storage import SpecMismatchError
from spinlock_assets_tests.conftest import tiny_spec
from spinlock_assets_tests.defs.helpers import GENERATION, SHARDS, materialize, tiny_definitions
from spinlock_assets_tests.faults.helpers import error_text, tree_sha256

CHANGES = {"steps": {"steps": 7}, "grid": {"grid": (20, 20)}}


def _refusal(result) -> str:
    assert not result.success
    events = [e.event_type_value for e in result.all_events]
    assert "STEP_START" not in events and "ASSET_MATERIALIZATION" not in events, events
    return error_text(result)


@pytest.mark.parametrize("change", CHANGES)
def test_generation_with_a_changed_spec_is_refused_before_any_write(data_root, instance, change):
    old, new = tiny_spec(), tiny_spec(**CHANGES[change])
    assert old.spec_hash != new.spec_hash
    before = tree_sha256(data_root)
    defs = tiny_definitions(new, data_root)

    job = defs.resolve_job_def("generate_shards")
    text = _refusal(job.execute_in_process(partition_key=SHARDS[0], instance=instance, raise_on_error=False))
    assert "SpecMismatchError" in text
    assert old.spec_hash in text and new.spec_hash in text and "new dataset root" in text
    # the error a caller of dg.materialize sees, with its cause
    with pytest.raises(dg.DagsterError) as raised:
        materialize(defs, GENERATION, instance, SHARDS[2])
    cause = raised.value.__cause__
    assert isinstance(cause, SpecMismatchError)
    assert re.search(f"{old.spec_hash}.*{new.spec_hash}", str(cause))

    assert tree_sha256(data_root) == before  # not one byte changed, no file added
    with dg.instance_for_test() as fresh:  # a new data root works with the changed spec
        assert materialize(
            tiny_definitions(new, data_root.parent / "new_root"), GENERATION, fresh, SHARDS[0]
        ).success


def test_rebuilding_dataset_h5_with_a_changed_spec_is_refused_before_any_write(data_root, instance):
    before = tree_sha256(data_root)
    result = materialize(
        tiny_definitions(tiny_spec(steps=7), data_root), ["dataset"], instance, raise_on_error=False
    )
    assert "SpecMismatchError" in _refusal(result)
    assert tree_sha256(data_root) == before


def test_a_foreign_folder_in_the_data_root_does_not_block_runs(data_root, instance):
    (data_root / "lost+found").mkdir()
    result = materialize(
        tiny_definitions(tiny_spec(), data_root), ["operator_parameters"], instance, SHARDS[0]
    )
    assert result.success
