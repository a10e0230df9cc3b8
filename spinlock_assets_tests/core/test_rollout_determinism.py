"""The determinism contract of the rollout engine, each property a test that fails if it breaks."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from spinlock_assets.core.generation import (
    generate_initial_conditions,
    operator_parameters,
    operator_records,
    roll_out,
)
from spinlock_assets.core.initial_conditions import initial_condition
from spinlock_assets.core.operator import build_operator
from spinlock_assets.core.parameters import PARAMETER_NAMES, OperatorHyperparameters, map_parameters
from spinlock_assets.core.rollout import run_rollout
from spinlock_assets_tests.conftest import tiny_spec


def _records(spec, start=0, stop=None):
    table = operator_parameters(spec, start, stop or spec.n_operators)
    return operator_records(spec, table, generate_initial_conditions(spec, table))


def _digests(spec, start=0, stop=None):
    return [r.digests for r in roll_out(_records(spec, start, stop))]


def test_same_operator_twice_gives_identical_digests_and_series(spec):
    record = _records(spec, 0, 1)[0]
    first, second = (next(roll_out([record])) for _ in range(2))
    assert first.digests == second.digests
    assert np.array_equal(first.base_series, second.base_series, equal_nan=True)


def test_realizations_differ_from_each_other(spec):
    record = _records(spec, 0, 1)[0]
    digests = next(roll_out([record])).digests
    assert len(set(digests)) == spec.realizations


def test_realization_is_identical_batched_or_alone(spec):
    record = _records(spec, 2, 3)[0]
    operator = record.build_operator()
    batched = run_rollout(
        operator,
        record.initial_condition,
        steps=spec.steps,
        noise_seeds=record.seeds.noise_seeds,
        keep_trajectories=True,
    )
    for m, seed in enumerate(record.seeds.noise_seeds):
        alone = run_rollout(
            operator, record.initial_condition, steps=spec.steps, noise_seeds=[seed], keep_trajectories=True
        )
        assert alone.digests[0] == batched.digests[m]
        assert np.array_equal(alone.trajectories[0], batched.trajectories[m])
        assert np.array_equal(alone.base_series[0], batched.base_series[m])


def test_digest_independent_of_thread_count(spec):
    records = _records(spec, 0, 4)
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = [r.digests for r in roll_out(records)]
        torch.set_num_threads(2)
        two = [r.digests for r in roll_out(records)]
    finally:
        torch.set_num_threads(previous)
    assert one == two


def test_digest_independent_of_thread_count_at_64x64_for_a_small_operator():
    """The shape where oneDNN changes algorithm with the batch size (3 -> 16 channels, 3x3, 64x64), at
    the engine's full M: 1 intra-op thread vs 2 (and noise drawn on 1 thread vs shared with a worker)."""
    hp = OperatorHyperparameters(2, 16, 3, "tanh", 0.05, 1.0, "autoregressive", None, None, "blobs", 0.5)
    operator = build_operator(hp, channels=3, weight_seed=2)
    ic = np.random.default_rng(1).standard_normal((3, 64, 64)).astype(np.float32)
    previous = torch.get_num_threads()
    try:
        digests = {}
        for threads in (1, 2):
            torch.set_num_threads(threads)
            digests[threads] = run_rollout(operator, ic, steps=5, noise_seeds=[21, 22, 23, 24, 25]).digests
    finally:
        torch.set_num_threads(previous)
    assert digests[1] == digests[2]


@pytest.mark.parametrize("grid", [8, 32])
def test_digest_independent_of_thread_count_for_one_channel_operators(grid):
    """One-channel operators (a narrow output layer: MKL matrix products whose bits change with the thread
    count; the batched formulation changed digests of 10 of 40 such operators at 8x8 between 1, 2 and 3
    threads): the default engine gives the same digests on 1, 2 and 3 intra-op threads."""
    spec = tiny_spec(n_operators=16, channels=1, grid=(grid, grid), steps=4, realizations=3)
    records = _records(spec)
    previous = torch.get_num_threads()
    try:
        digests = {}
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            digests[threads] = [r.digests for r in roll_out(records)]
    finally:
        torch.set_num_threads(previous)
    assert digests[1] == digests[2] == digests[3]


def test_pool_workers_compute_on_one_intra_op_thread():
    """Each realization's arithmetic must be the same single-threaded sequence whatever torch's thread count:
    a worker that inherited 2 intra-op threads would silently split its ops (an earlier engine did)."""
    from spinlock_assets.core.lanes import submit_for_result, worker_pool

    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        pool = worker_pool(2)
        counts = [submit_for_result(pool, torch.get_num_threads) for _ in range(8)]
        assert [future.result(timeout=10) for future in counts] == [1] * 8
        assert torch.get_num_threads() == 2  # the caller's own count is left as it was
    finally:
        torch.set_num_threads(previous)


def test_digest_independent_of_shard_size_and_of_operators_run_before(spec):
    whole = _digests(spec)  # operators 0..11 in one range
    resharded = dataclasses.replace(spec, shard_size=6)
    late_first = _digests(resharded, 9, 12) + _digests(resharded, 0, 5)  # other order, other ranges
    assert late_first == whole[9:12] + whole[0:5]


def test_digest_is_over_the_exact_float32_bytes(spec):
    import hashlib

    record = _records(spec, 1, 2)[0]
    result = next(roll_out([record], keep_trajectories=True))
    for m in range(spec.realizations):
        expected = hashlib.sha256(
            np.ascontiguousarray(result.trajectories[m], dtype="<f4").tobytes()
        ).hexdigest()
        assert result.digests[m] == expected


def test_state_zero_is_the_initial_condition(spec):
    record = _records(spec, 0, 1)[0]
    result = next(roll_out([record], keep_trajectories=True))
    for m in range(spec.realizations):
        assert np.array_equal(result.trajectories[m, 0], record.initial_condition)


def test_noise_changes_the_rollout_and_zero_noise_is_deterministic_map(spec):
    record = _records(spec, 0, 1)[0]
    hp = dataclasses.replace(record.hyperparameters, noise_sigma=0.0)
    operator = build_operator(hp, channels=spec.channels, weight_seed=record.seeds.weight_seed)
    quiet = run_rollout(
        operator, record.initial_condition, steps=spec.steps, noise_seeds=record.seeds.noise_seeds
    )
    assert len(set(quiet.digests)) == 1  # without noise all realizations coincide


def test_every_coordinate_changes_the_rollout(spec):
    """Changing any one unit-cube coordinate changes the digest of operator 0's rollout."""
    record = _records(spec, 0, 1)[0]
    base = np.full(len(PARAMETER_NAMES), 0.1)
    base[PARAMETER_NAMES.index("policy")] = 0.5  # residual, so update_rate is active
    base[PARAMETER_NAMES.index("noise_sigma")] = 0.9

    def digest(point):
        hp = map_parameters(point, spec.parameter_space)
        ic = initial_condition(
            hp.ic_family,
            scale=hp.ic_scale,
            channels=spec.channels,
            height=16,
            width=16,
            seed=record.seeds.ic_seed,
        )
        return next(roll_out([dataclasses.replace(record, params=point, initial_condition=ic)])).digests

    reference = digest(base)
    for j, name in enumerate(PARAMETER_NAMES):
        moved = base.copy()
        moved[j] = 0.95
        assert digest(moved) != reference, f"coordinate {name} does not change the rollout"


def test_nonfinite_rollout_is_flagged_not_raised(spec):
    record = _records(spec, 0, 1)[0]
    ic = record.initial_condition.copy()
    ic[0, 3, 3] = np.inf
    result = next(roll_out([dataclasses.replace(record, initial_condition=ic)]))
    assert result.diverged
    assert (result.first_nonfinite_step == 0).all()
    assert np.isnan(result.base_series[:, 0, 0, :-1]).all()  # every feature of the bad step is NaN
    assert result.base_series[:, 0, 0, -1].min() > 0  # and its nonfinite fraction is counted
    again = next(roll_out([dataclasses.replace(record, initial_condition=ic)]))
    assert again.digests == result.digests  # a divergent rollout still replays exactly


_CHILD = """
import json, sys
from spinlock_assets.core.spec import DatasetSpec
from spinlock_assets.core.generation import (
    generate_initial_conditions, operator_parameters, operator_records, roll_out
)
spec = DatasetSpec.from_json(sys.argv[1])
table = operator_parameters(spec, 0, spec.n_operators)
records = operator_records(spec, table, generate_initial_conditions(spec, table))
print(json.dumps([r.digests for r in roll_out(records, device=sys.argv[2])]))
"""


def digests_in_fresh_processes(spec, device: str = "cpu") -> list:
    """The spec's digests rolled out on ``device`` in fresh processes, one per PYTHONHASHSEED tried."""
    runs = []
    for hash_seed in ("1", "12345"):
        env = dict(os.environ, PYTHONHASHSEED=hash_seed)
        out = subprocess.run(
            [sys.executable, "-c", _CHILD, spec.to_json(), device],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        runs.append(json.loads(out.stdout))
    return runs


@pytest.mark.slow
def test_replay_is_bit_exact_in_a_fresh_process_with_another_hash_seed():
    spec = tiny_spec(n_operators=4)
    here = _digests(spec)
    assert digests_in_fresh_processes(spec) == [here, here]


def test_realization_is_identical_batched_or_alone_where_onednn_picks_by_batch_size():
    """64x64, 3 -> 16 channels, 3x3: the shape where a batched oneDNN conv gave other bits than batch 1."""
    hp = OperatorHyperparameters(2, 16, 3, "gelu", 0.05, 1.0, "residual", 0.1, None, "blobs", 0.5)
    operator = build_operator(hp, channels=3, weight_seed=1)
    ic = np.random.default_rng(0).standard_normal((3, 64, 64)).astype(np.float32)
    seeds = [11, 12, 13, 14, 15]
    batched = run_rollout(operator, ic, steps=4, noise_seeds=seeds)
    for m, seed in enumerate(seeds):
        assert run_rollout(operator, ic, steps=4, noise_seeds=[seed]).digests[0] == batched.digests[m]
