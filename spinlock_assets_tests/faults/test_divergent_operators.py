"""Operators whose rollout goes non-finite (an Inf in the initial condition; a finite IC so large that the
first step overflows) are counted and flagged, never hidden: base series NaN from the flagged step on,
``first_nonfinite_step`` set, the run succeeds, and the digest still replays bit-exactly."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from spinlock_assets.core.features.base import SERIES_FIELDS
from spinlock_assets.core.generation import generate_initial_conditions, operator_parameters, operator_records
from spinlock_assets.core.rollout import run_rollout
from spinlock_assets.core.verification import classify, verify
from spinlock_assets.storage import ShardStore
from spinlock_assets.storage.operator_arrays import ic_digest
from spinlock_assets_tests.conftest import tiny_spec
from spinlock_assets_tests.defs.helpers import SHARDS, tiny_definitions
from spinlock_assets_tests.faults.helpers import (
    NONFINITE_KEY,
    REPLAY_KEY,
    replay_window,
    rewrite_shard,
    shard_file,
    shard_records,
    tree_sha256,
    without,
)

SHARD, ROW = SHARDS[1], 2  # operator 6
NONFINITE = SERIES_FIELDS.index("nonfinite_frac")


def _inf_pixel(field: np.ndarray) -> np.ndarray:
    field[0, 3, 3] = np.inf
    return field


def _overflowing(field: np.ndarray) -> np.ndarray:  # finite, but instance norm's variance overflows float32
    field[0] *= np.float32(1e30)
    return field


# IC change -> first non-finite step of every realization
BLOW_UPS = {"inf-in-ic": (_inf_pixel, 0), "overflow-at-step-1": (_overflowing, 1)}


def _assert_flagged(series: np.ndarray, first: np.ndarray, expected_first: int) -> None:
    """``series`` [M, T, C, 10] of one operator: NaN from the flagged step on, none before it."""
    assert first.tolist() == [expected_first] * series.shape[0]
    for m, step in enumerate(first):
        assert not np.isnan(series[m, :step, :, :NONFINITE]).any()
        nonfinite = series[m, step:, :, NONFINITE] > 0
        assert nonfinite[0].any()
        assert np.isnan(series[m, step:, :, :NONFINITE][nonfinite]).all()


@pytest.mark.parametrize("blow_up", BLOW_UPS)
def test_rollout_flags_a_diverging_operator_and_its_digest_replays_exactly(blow_up):
    spec = tiny_spec()
    table = operator_parameters(spec, 4, 8)
    fields = generate_initial_conditions(spec, table)
    change, expected_first = BLOW_UPS[blow_up]
    fields[ROW] = change(fields[ROW])
    record = operator_records(spec, table, fields)[ROW]

    def roll():
        return run_rollout(
            record.build_operator(),
            record.initial_condition,
            steps=spec.steps,
            noise_seeds=record.seeds.noise_seeds,
        )

    first = roll()
    assert first.diverged
    _assert_flagged(first.base_series, first.first_nonfinite_step, expected_first)
    stored = dataclasses.replace(record, digests=tuple(first.digests), base_series=first.base_series)
    assert classify(stored, roll(), same_fingerprint=True).status == "exact"  # NaN/Inf states hash the same


@pytest.mark.parametrize("blow_up", BLOW_UPS)
def test_materialization_counts_diverged_operators_and_its_checks_pass(data_root, instance, blow_up):
    change, expected_first = BLOW_UPS[blow_up]

    fields = ShardStore(data_root).read("initial_conditions", SHARD).arrays["fields"].data.copy()
    fields[ROW] = change(fields[ROW])
    digests = np.array([ic_digest(field) for field in fields])
    rewrite_shard(
        data_root,
        "initial_conditions",
        SHARD,
        arrays={"fields": lambda _: fields, "ic_digest": lambda _: digests},
    )
    before = tree_sha256(data_root)

    defs = tiny_definitions(tiny_spec(), data_root)
    job = defs.resolve_job_def("verify_shards")  # base_features and its (blocking) checks
    result = job.execute_in_process(partition_key=SHARD, instance=instance, run_config=replay_window(4))
    assert result.success
    (event,) = result.get_asset_materialization_events()
    assert event.materialization.metadata["diverged_operators"].value == 1
    assert event.materialization.metadata["diverged_indices"].value == [4 + ROW]
    checks = {e.asset_check_key: e for e in result.get_asset_check_evaluations()}
    assert checks[NONFINITE_KEY].passed and checks[NONFINITE_KEY].metadata["diverged_operators"].value == 1
    assert checks[REPLAY_KEY].passed and checks[REPLAY_KEY].metadata["exact"].value == 4

    arrays = ShardStore(data_root).read("base_features", SHARD).arrays
    series, first = arrays["series"].data, arrays["first_nonfinite_step"].data
    _assert_flagged(series[ROW], first[ROW], expected_first)
    others = [row for row in range(4) if row != ROW]
    assert (first[others] == -1).all() and np.isfinite(series[others]).all()
    assert [verify(r).status for r in shard_records(data_root, tiny_spec(), SHARD)] == ["exact"] * 4
    changed = shard_file("base_features", SHARD)
    assert without(tree_sha256(data_root), changed) == without(before, changed)
