"""The batched formulation (``core/batching.py``), the CPU default: each realization's bits do not depend on
M, on its slot or its neighbours, on the thread count, or on whether it is generated in a shard (several
operators at once), alone or replayed; and every op of a step is per-sample invariant, each proven with
bits."""

from __future__ import annotations

import dataclasses
import math
import random
import threading
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from spinlock_assets.core import batching, lanes
from spinlock_assets.core.batching import (
    CANONICAL_BATCH,
    BatchedSteps,
    NoiseAhead,
    batch_invariant,
    canonical_batch,
    one_intra_op_thread,
)
from spinlock_assets.core.fingerprint import execution_fingerprint, fingerprint_id
from spinlock_assets.core.generation import roll_out
from spinlock_assets.core.lanes import MAP_AHEAD, map_on_workers
from spinlock_assets.core.operator import (
    GeneratorNoise,
    _activation,
    _instance_norm,
    build_operator,
    conv_layer,
)
from spinlock_assets.core.parameters import OperatorHyperparameters
from spinlock_assets.core.rollout import default_formulation, operators_at_once, run_rollout
from spinlock_assets.core.spec import ACTIVATIONS, ParameterSpace
from spinlock_assets.core.verification import verify, verify_records
from spinlock_assets_tests.conftest import tiny_spec
from spinlock_assets_tests.core.test_rollout_determinism import _records

SMALL = OperatorHyperparameters(2, 16, 3, "gelu", 0.05, 1.0, "residual", 0.1, None, "blobs", 0.5)


def test_batched_is_the_cpu_default_and_cuda_stays_per_realization():
    assert default_formulation("cpu") == "batched"
    assert default_formulation("cuda") == "per_realization"
    assert execution_fingerprint()["formulation"].startswith(f"batched-{CANONICAL_BATCH}")


class _threads:
    """Context: torch runs ``n`` intra-op threads inside."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __enter__(self) -> None:
        self.previous = torch.get_num_threads()
        torch.set_num_threads(self.n)

    def __exit__(self, *exc) -> None:
        torch.set_num_threads(self.previous)


def _ic(channels: int, size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((channels, size, size)).astype(np.float32)


# ---- each op of a step, per sample -------------------------------------------------------------------


@pytest.mark.parametrize("name", [*ACTIVATIONS, "noise add", "residual", "convex"])
def test_elementwise_ops_round_alike_in_vector_body_and_scalar_tail(name):
    """ATen computes the last ``n mod 32`` elements of a run with scalar code: an op is position-invariant
    only if both paths round alike. Whole tensor (vector body) against 31-element pieces (scalar only)."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(31 * 2000, generator=generator) * 3
    y = torch.randn(31 * 2000, generator=generator)
    op = {
        "noise add": lambda a, b: a.clone().add_(b, alpha=0.0137),
        "residual": lambda a, b: torch.add(a, b, alpha=0.07),
        "convex": lambda a, b: torch.lerp(a, b, 0.3),
    }.get(name)
    if op is None:
        activation = _activation(name)

        def op(a, b):
            return activation(a.clone())

    with _threads(1):
        vector = op(x, y)
        scalar = torch.cat([op(a, b) for a, b in zip(x.split(31), y.split(31), strict=True)])
    assert torch.equal(vector, scalar)


def test_silu_is_the_silu():
    x = torch.linspace(-30, 30, 10_001)
    assert torch.allclose(_activation("silu")(x), F.silu(x), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("shape", [(16, 16, 16), (4, 9, 11), (48, 32, 32), (64, 64, 64), (3, 13, 8)])
def test_group_norm_and_pad_are_per_sample_invariant(shape):
    """Instance norm (one row per (sample, channel)) and circular padding: a sample's bits are those it has
    alone (batch 1), in every slot of the canonical batch, among random neighbours, on 1 and 2 threads."""
    generator = torch.Generator().manual_seed(1)
    probe = torch.randn(1, *shape, generator=generator) * 2 + 0.5
    for op in (_instance_norm, lambda z: F.pad(z, (2, 2, 2, 2), mode="circular")):
        alone = op(probe)[0]
        for threads in (1, 2):
            with _threads(threads):
                for slot in range(CANONICAL_BATCH):
                    batch = torch.randn(CANONICAL_BATCH, *shape, generator=generator)
                    batch[slot] = probe[0]
                    assert torch.equal(op(batch)[slot], alone)


def _layer_shapes(space: ParameterSpace, channels: int) -> list[tuple[int, int, int]]:
    """(in, out, kernel) of every layer the space allows: input, hidden and output layers."""
    shapes = set()
    for width in space.widths:
        for kernel in space.kernel_sizes:
            shapes |= {(channels, width, kernel), (width, width, kernel), (width, channels, kernel)}
    return sorted(shapes)


def _assert_conv_batch_invariant(in_channels: int, out_channels: int, kernel: int, size: int) -> None:
    """The engine's convolution at the canonical batch, as a step runs it (one intra-op thread): a probe
    alone in slot 0 among zeros gives the same bits in every slot among random neighbours, whatever the
    caller's thread count; and the start-up check agrees."""
    batch = canonical_batch(in_channels, out_channels, kernel, size, size)
    generator = torch.Generator().manual_seed(in_channels * 1000 + out_channels * 10 + kernel)
    weight = torch.randn(out_channels, in_channels, kernel, kernel, generator=generator)
    weight /= math.sqrt(in_channels * kernel * kernel)
    bias = torch.randn(out_channels, generator=generator) if out_channels < in_channels else None
    shape = (in_channels, size + kernel - 1, size + kernel - 1)
    probe = torch.randn(shape, generator=generator)
    alone = torch.zeros((batch, *shape))
    alone[0] = probe
    with one_intra_op_thread():
        expected = conv_layer(alone, weight, bias)[0]
    for threads in (1, 2):
        with _threads(threads), one_intra_op_thread():
            assert torch.equal(conv_layer(alone, weight, bias)[0], expected)
            for slot in range(batch):
                crowd = torch.randn((batch, *shape), generator=generator)
                crowd[slot] = probe
                assert torch.equal(conv_layer(crowd, weight, bias)[slot], expected), (slot, threads)
        with _threads(threads):
            assert batch_invariant(in_channels, out_channels, kernel, size, size, bias=bias is not None)


@pytest.mark.parametrize("shape", _layer_shapes(ParameterSpace(), channels=3), ids=str)
def test_every_layer_shape_of_the_default_space_is_batch_invariant_at_32x32(shape):
    _assert_conv_batch_invariant(*shape, size=32)


@pytest.mark.slow
@pytest.mark.parametrize("shape", _layer_shapes(ParameterSpace(), channels=3), ids=str)
def test_every_layer_shape_of_the_default_space_is_batch_invariant_at_64x64(shape):
    _assert_conv_batch_invariant(*shape, size=64)


def test_noise_slots_hold_each_realizations_generator_noise():
    """Realization m's noise buffers get exactly what GeneratorNoise (the operator's definition) draws from
    m's seed, per step and hidden layer; unused slots stay zero."""
    hp = dataclasses.replace(SMALL, n_layers=4)
    operator = build_operator(hp, channels=3, weight_seed=3)
    seeds = [5, 6, 7]
    engine = BatchedSteps(operator, seeds, 16, 16)
    x = engine.initial(torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(0)))
    references = [GeneratorNoise(seed, operator.device) for seed in seeds]
    for _ in range(2):
        out = torch.empty_like(x)
        engine.advance(x, out)
        for layer, buffer in enumerate(engine.noise):
            for m, reference in enumerate(references):
                assert torch.equal(buffer[m], reference(layer, buffer[m : m + 1])[0])
            assert not buffer[len(seeds) :].any()
        x = out


def test_noise_drawn_ahead_on_a_worker_is_the_noise_drawn_in_place_and_stops_at_the_last_step():
    """``NoiseAhead`` (a lone rollout on spare threads): the same numbers per step and layer as drawing in
    place, alternating buffer sets, and exactly ``steps`` draws (the generators end where they would)."""
    hp = dataclasses.replace(SMALL, n_layers=4)
    operator = build_operator(hp, channels=3, weight_seed=3)
    seeds, steps = [5, 6, 7], 4
    in_place = BatchedSteps(operator, seeds, 16, 16)
    ahead_engine = BatchedSteps(operator, seeds, 16, 16)
    pool = lanes.worker_pool(2)
    ahead = NoiseAhead(ahead_engine, steps, lambda draw: lanes.submit_for_result(pool, draw))
    taken = []
    for _ in range(steps):
        expected = [b.clone() for b in in_place.draw_noise()]
        buffers = ahead.take()
        assert all(torch.equal(a, b) for a, b in zip(buffers, expected, strict=True))
        taken.append(buffers)
    assert taken[0] is not taken[1] and taken[0] is taken[2]
    with pytest.raises(RuntimeError, match="taken"):
        ahead.take()
    for generator, reference in zip(ahead_engine.generators, in_place.generators, strict=True):
        assert torch.equal(generator.get_state(), reference.get_state())


# ---- whole rollouts ---------------------------------------------------------------------------------


def test_realization_digest_does_not_depend_on_m():
    """M = 1, 3, 5, 7, 11 with canonical batch 5 (one partial chunk, one full, two and three chunks), at
    the shape where oneDNN's algorithm depends on the batch size (3 -> 16, 3x3, 64x64), every activation."""
    assert CANONICAL_BATCH == 5
    ic = _ic(3, 64)
    seeds = list(range(100, 111))
    for activation in ACTIVATIONS:
        operator = build_operator(
            dataclasses.replace(SMALL, activation=activation), channels=3, weight_seed=1
        )
        full = run_rollout(operator, ic, steps=3, noise_seeds=seeds)
        for m in (1, 3, 5, 7):
            part = run_rollout(operator, ic, steps=3, noise_seeds=seeds[:m])
            assert part.digests == full.digests[:m], (activation, m)
            assert np.array_equal(part.base_series, full.base_series[:m])
        reordered = run_rollout(operator, ic, steps=3, noise_seeds=seeds[::-1])
        assert reordered.digests == full.digests[::-1]


def test_realization_digest_does_not_depend_on_its_neighbours_in_12_random_compositions():
    """Each realization among random other realizations, in a random slot, for operators of every
    activation and policy: its digest is the one it has in the reference composition."""
    choose = random.Random(7)
    ic = _ic(3, 32, seed=3)
    pool = list(range(500, 520))
    for case, (activation, policy) in enumerate(
        zip(ACTIVATIONS, ("residual", "convex", "autoregressive", "residual"), strict=True)
    ):
        alpha = 0.3 if policy == "convex" else None
        hp = dataclasses.replace(SMALL, n_layers=3, activation=activation, policy=policy, alpha=alpha)
        operator = build_operator(hp, channels=3, weight_seed=10 + case)
        reference = dict(zip(pool, run_rollout(operator, ic, steps=3, noise_seeds=pool).digests, strict=True))
        for _ in range(3):
            composition = choose.sample(pool, choose.randint(1, 9))
            digests = run_rollout(operator, ic, steps=3, noise_seeds=composition).digests
            assert digests == [reference[seed] for seed in composition], (activation, composition)


def _default_space_spec(n_operators: int, grid: int, steps: int, channels: int = 3):
    return tiny_spec(
        n_operators=n_operators,
        shard_size=n_operators,
        grid=(grid, grid),
        channels=channels,
        steps=steps,
        realizations=5,
        parameter_space=ParameterSpace(),
    )


def _identical_alone_in_a_shard_replayed_and_on_1_2_3_threads(spec) -> None:
    """Digests of every operator generated in one shard (several operators at once, on the workers),
    generated alone, rolled out on the calling thread (``run_rollout``) and replayed (``verify``), each on 1,
    2 and 3 intra-op threads, all equal to the shard on one thread."""
    records = _records(spec)
    with _threads(1):
        reference = [r.digests for r in roll_out(records)]
    for threads in (1, 2, 3):
        with _threads(threads):
            assert [r.digests for r in roll_out(records)] == reference, threads
            for record, digests in zip(records, reference, strict=True):
                assert next(roll_out([record])).digests == digests, (threads, record.index)
                on_the_calling_thread = run_rollout(
                    record.build_operator(),
                    record.initial_condition,
                    steps=spec.steps,
                    noise_seeds=record.seeds.noise_seeds,
                )
                assert on_the_calling_thread.digests == digests, (threads, record.index)
            stored = [
                dataclasses.replace(record, digests=tuple(digests), fingerprint=execution_fingerprint())
                for record, digests in zip(records, reference, strict=True)
            ]
            assert {v.status for v in verify_records(stored)} == {"exact"}, threads
            assert verify(stored[0]).status == "exact"


def test_56_sampled_operators_identical_alone_in_a_shard_replayed_and_on_any_thread_count():
    """56 operators of the default parameter space (every width and kernel occurs) at 16x16."""
    spec = _default_space_spec(56, grid=16, steps=4)
    hyperparameters = [r.hyperparameters for r in _records(spec)]
    assert {hp.width for hp in hyperparameters} == set(ParameterSpace().widths)
    assert {hp.kernel_size for hp in hyperparameters} == set(ParameterSpace().kernel_sizes)
    _identical_alone_in_a_shard_replayed_and_on_1_2_3_threads(spec)


def test_one_channel_operators_do_not_depend_on_the_thread_count():
    """The spec where a step on the caller's threads changed digests (10 of 40 operators between 1, 2 and 3
    threads: MKL's one-channel output GEMMs): every step now runs on one intra-op thread."""
    _identical_alone_in_a_shard_replayed_and_on_1_2_3_threads(
        _default_space_spec(40, grid=8, steps=4, channels=1)
    )


@pytest.mark.slow
def test_default_space_operators_at_32x32_identical_alone_in_a_shard_replayed_and_on_any_thread_count():
    _identical_alone_in_a_shard_replayed_and_on_1_2_3_threads(_default_space_spec(8, grid=32, steps=3))


def test_a_step_leaves_the_callers_thread_count_as_it_was():
    operator = build_operator(SMALL, channels=3, weight_seed=2)
    with _threads(2):
        run_rollout(operator, _ic(3, 16), steps=3, noise_seeds=[1, 2])
        assert torch.get_num_threads() == 2
        with one_intra_op_thread():
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2


# ---- several operators at once ------------------------------------------------------------------------


def test_operators_at_once_follows_the_thread_count_on_the_cpu():
    with _threads(3):
        assert operators_at_once("cpu") == 3
        assert operators_at_once("cpu", 2) == 2
        assert operators_at_once("cpu", 1) == 1  # a lone operator rolls out on the calling thread
    with _threads(1):
        assert operators_at_once("cpu") == 1
    assert operators_at_once("cuda") == 1


def test_map_on_workers_keeps_order_runs_items_at_once_and_bounds_what_it_runs_ahead():
    """Items of very different costs come back in order; two run at the same time on two workers; no more
    than MAP_AHEAD items per worker are started ahead of the one the consumer waits for."""
    started: list[int] = []
    running, overlap = [0], [False]
    lock = threading.Lock()

    def work(item: int) -> tuple[int, int]:
        with lock:
            started.append(item)
            running[0] += 1
            overlap[0] |= running[0] > 1
        time.sleep(0.02 if item % 3 == 0 else 0.001)
        with lock:
            running[0] -= 1
        return item, torch.get_num_threads()

    results = map_on_workers(work, range(40), workers=2)
    first = next(results)
    assert first == (0, 1)  # computed on a worker, on one intra-op thread
    assert len(started) <= MAP_AHEAD * 2 + 1
    assert [item for item, _ in results] == list(range(1, 40))
    assert overlap[0]
    assert list(map_on_workers(lambda x: x * x, range(5), workers=1)) == [0, 1, 4, 9, 16]


def test_map_on_workers_reraises_an_items_error_in_order_and_leaves_no_work_running():
    finished: list[int] = []

    def work(item: int) -> int:
        if item == 3:
            raise ValueError("item 3 failed")
        time.sleep(0.005)
        finished.append(item)
        return item

    results = map_on_workers(work, range(20), workers=2)
    assert [next(results) for _ in range(3)] == [0, 1, 2]
    with pytest.raises(ValueError, match="item 3 failed"):
        next(results)
    done = len(finished)
    time.sleep(0.05)
    assert len(finished) == done  # nothing still computing for nobody


def test_per_realization_formulation_stays_selectable_and_m_invariant():
    operator = build_operator(SMALL, channels=3, weight_seed=2)
    ic = _ic(3, 16)
    seeds = [1, 2, 3]
    full = run_rollout(operator, ic, steps=4, noise_seeds=seeds, formulation="per_realization")
    alone = run_rollout(operator, ic, steps=4, noise_seeds=seeds[1:2], formulation="per_realization")
    assert alone.digests[0] == full.digests[1]
    with pytest.raises(ValueError, match="formulation"):
        run_rollout(operator, ic, steps=4, noise_seeds=seeds, formulation="grouped")


# ---- the start-up check's fallback and the fingerprint ---------------------------------------------------


def test_a_shape_that_fails_the_check_runs_batch_1_and_is_named_in_the_fingerprint(monkeypatch):
    """Force the check to fail for the 3 -> 16, 3x3, 16x16 layer: it runs sample by sample (still
    independent of M), the fingerprint names it, and its id differs from the all-batched one."""
    before = execution_fingerprint()
    assert before["formulation"] == f"batched-{CANONICAL_BATCH}"
    monkeypatch.setattr(batching, "_checked", dict(batching._checked))
    batching._checked[(3, 16, 3, 16, 16, False, CANONICAL_BATCH, "cpu")] = False
    operator = build_operator(SMALL, channels=3, weight_seed=4)
    ic = _ic(3, 16)
    seeds = list(range(20, 27))
    engine = BatchedSteps(operator, seeds, 16, 16)
    assert engine.batched == [False, True]
    full = run_rollout(operator, ic, steps=4, noise_seeds=seeds)
    for m in (1, 6):
        assert run_rollout(operator, ic, steps=4, noise_seeds=seeds[:m]).digests == full.digests[:m]
    after = execution_fingerprint()
    assert after["formulation"] == f"batched-{CANONICAL_BATCH};batch-1 3>16 k3 16x16"
    assert fingerprint_id(after) != fingerprint_id(before)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_stays_on_the_per_realization_formulation():
    """CUDA rollouts step each realization alone (batching there needs batch-invariant kernels, not built);
    the batched formulation is refused rather than run with unproven bits."""
    operator = build_operator(SMALL, channels=3, weight_seed=1, device="cuda")
    ic = _ic(3, 16)
    assert execution_fingerprint("cuda")["formulation"] == "per_realization"
    full = run_rollout(operator, ic, steps=3, noise_seeds=[1, 2, 3])
    assert run_rollout(operator, ic, steps=3, noise_seeds=[2]).digests[0] == full.digests[1]
    with pytest.raises(ValueError, match="CPU-only"):
        run_rollout(operator, ic, steps=3, noise_seeds=[1], formulation="batched")
