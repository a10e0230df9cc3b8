"""Helpers shared by the benchmarks: the operator sample, the conv-only lower bound, timing.

Nothing here is imported by the package; benchmarks import the package, never the other way round.
"""

from __future__ import annotations

import functools
import itertools
import os
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from spinlock_assets.core.batching import one_intra_op_thread
from spinlock_assets.core.initial_conditions import initial_condition
from spinlock_assets.core.operator import StochasticCNN, build_operator
from spinlock_assets.core.parameters import OperatorHyperparameters, map_parameters, sobol_points
from spinlock_assets.core.rollout import iterate_rollout, run_rollout
from spinlock_assets.core.seeds import operator_seeds
from spinlock_assets.core.spec import ParameterSpace

ROOT_SEED = 0  # the benchmark's own dataset root seed: fixed so every run times the same operators


@dataclass
class Case:
    """One operator to time, with everything a rollout needs."""

    label: str
    operator: StochasticCNN
    initial_condition: np.ndarray  # [C, H, W] float32
    noise_seeds: tuple[int, ...]

    @property
    def hp(self) -> OperatorHyperparameters:
        return self.operator.hyperparameters

    @property
    def architecture(self) -> str:
        hp = self.hp
        return f"L{hp.n_layers} w{hp.width} k{hp.kernel_size} {hp.activation[:4]} {hp.policy[:4]}"

    def conv_flops_per_step(self) -> float:
        """FLOPs (2 per multiply-add) of one step of every realization's convolutions."""
        c, h, w = self.initial_condition.shape
        return len(self.noise_seeds) * sum(2.0 * wt.numel() * h * w for wt in self.operator.weights)


def _case(
    label: str, hp: OperatorHyperparameters, index: int, *, channels: int, grid: int, realizations: int
) -> Case:
    seeds = operator_seeds(ROOT_SEED, index, realizations)
    operator = build_operator(hp, channels=channels, weight_seed=seeds.weight_seed)
    ic = initial_condition(
        hp.ic_family, scale=hp.ic_scale, channels=channels, height=grid, width=grid, seed=seeds.ic_seed
    )
    return Case(label, operator, ic, seeds.noise_seeds)


def sampled_cases(n: int, *, channels: int, grid: int, realizations: int) -> list[Case]:
    """Operators 0..n-1 of the default parameter space (scrambled Sobol points, root seed ``ROOT_SEED``)."""
    space = ParameterSpace()
    points = sobol_points(ROOT_SEED, 0, n)
    return [
        _case(
            f"op{i:02d}", map_parameters(p, space), i, channels=channels, grid=grid, realizations=realizations
        )
        for i, p in enumerate(points)
    ]


def smallest_cases(*, channels: int, grid: int, realizations: int) -> list[Case]:
    """The smallest architectures of the default space (width 16, kernel 3, 2 or 3 layers), one per
    activation and a mix of policies: the overhead-bound end of the dataset."""
    rows = [
        (2, "gelu", "residual", 0.1, None),
        (2, "tanh", "autoregressive", None, None),
        (3, "silu", "convex", None, 0.5),
        (3, "relu", "residual", 0.1, None),
    ]
    cases = []
    for j, (layers, activation, policy, dt, alpha) in enumerate(rows):
        hp = OperatorHyperparameters(layers, 16, 3, activation, 0.01, 1.0, policy, dt, alpha, "blobs", 0.5)
        cases.append(
            _case(f"small{j}", hp, 1000 + j, channels=channels, grid=grid, realizations=realizations)
        )
    return cases


def architecture_cases(
    shapes: list[tuple[int, int, int]], *, channels: int, grid: int, realizations: int
) -> list[Case]:
    """One operator per (layers, width, kernel) in ``shapes`` (gelu, residual, small noise, blobs IC)."""
    cases = []
    for j, (layers, width, kernel) in enumerate(shapes):
        hp = OperatorHyperparameters(
            layers, width, kernel, "gelu", 0.01, 1.0, "residual", 0.1, None, "blobs", 0.5
        )
        label = f"L{layers} w{width} k{kernel}"
        cases.append(_case(label, hp, 2000 + j, channels=channels, grid=grid, realizations=realizations))
    return cases


def rollout_measures(
    case: Case, steps: int, formulation: str = "per_realization"
) -> tuple[Callable[[], None], Callable[[], object]]:
    """(a) the bare rollout (``iterate_rollout`` consumed) and (b) the generation rollout (``run_rollout``:
    inline F0 + digests) of ``case`` in ``formulation``, as callables. The default is the per-realization
    engine (CUDA's engine, and the CPU's before ENGINE_VERSION 3.0.0), the one whose batch-1 structure
    ``conv_bound`` mirrors; the CPU's batched default is measured by ``bench_engine.py``."""
    ic = torch.as_tensor(case.initial_condition)
    seeds = case.noise_seeds

    def bare() -> None:
        for _ in iterate_rollout(case.operator, ic, steps=steps, noise_seeds=seeds, formulation=formulation):
            pass

    def generation() -> object:
        return run_rollout(case.operator, ic, steps=steps, noise_seeds=seeds, formulation=formulation)

    return bare, generation


def conv_bound(
    case: Case,
    steps: int,
    *,
    batched: bool = False,
    workers: int = 1,
    engine_convs: bool = True,
    device: str = "cpu",
    with_noise: bool = False,
) -> Callable[[], None]:
    """A callable running only the operator's convolutions for ``steps - 1`` steps: the same layer shapes,
    inputs pre-padded (so no pad, norm, noise or update), nothing else.

    ``batched=False``: one batch-1 conv per realization and layer, M per step (the structure the engine
    must use, see ``iterate_rollout``). ``batched=True``: one batch-M conv per layer (reference only: its
    bits may differ from batch 1). ``workers=n`` runs the batch-1 convs of the realizations on n threads
    with one intra-op thread each, each realization-step going to whichever thread is free (the engine's
    own structure when it parallelises realizations).
    ``engine_convs``: the convolutions as the engine computes them (``StochasticCNN.convolve``, which runs
    narrow layers as a matrix product and shifted adds); False, or an engine without ``convolve``:
    ``F.conv2d`` for every layer. ``device``: where the inputs live (the operator must live there too).
    ``with_noise`` (batch 1 only): also each realization's noise draws, one ``[1, width, H, W]``
    ``normal_`` per hidden layer per step, as the operator defines them: the part of a step no engine can
    skip without changing the operator.
    """
    if with_noise and batched:
        raise ValueError("with_noise is defined for the batch-1 bound only")
    c, h, w = case.initial_condition.shape
    m = len(case.noise_seeds)
    pad = case.hp.kernel_size // 2
    operator = case.operator
    weights = operator.weights
    biases = [None] * (len(weights) - 1) + [operator.output_bias]
    generator = torch.Generator().manual_seed(0)
    batch = m if batched else 1
    inputs = [
        torch.randn(batch, wt.shape[1], h + 2 * pad, w + 2 * pad, generator=generator).to(device)
        for wt in weights
    ]
    if engine_convs and hasattr(operator, "convolve"):
        layers = [functools.partial(operator.convolve, layer, x) for layer, x in enumerate(inputs)]
    else:
        layers = [
            functools.partial(F.conv2d, x, wt, b) for x, wt, b in zip(inputs, weights, biases, strict=True)
        ]

    noise_shapes = [(1, wt.shape[0], h, w) for wt in weights[:-1]] if with_noise else []

    def run_layers(units: Callable[[], bool]) -> None:
        """Run one realization-step (every layer's conv, and its noise draws) while ``units()`` grants one."""
        generator = torch.Generator(device=device).manual_seed(0)  # one per thread, as per realization
        noise = [torch.empty(shape, device=device) for shape in noise_shapes]
        while units():
            for layer in layers:
                layer()
            for buffer in noise:
                buffer.normal_(generator=generator)

    def countdown(n: int) -> Callable[[], bool]:
        granted = itertools.count()
        return lambda: next(granted) < n  # atomic under the GIL: each unit is granted once

    if batched:
        return lambda: run_layers(countdown(steps - 1))
    if workers == 1:
        return lambda: run_layers(countdown(m * (steps - 1)))

    def parallel() -> None:
        # Realization-steps are handed out one at a time to whichever thread is free, as the engine's
        # lanes are (a static split of M=5 over 2 threads would idle one thread a sixth of the time).
        units = countdown(m * (steps - 1))

        def body() -> None:
            with one_intra_op_thread():
                run_layers(units)

        threads = [threading.Thread(target=body) for _ in range(min(workers, m))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    return parallel


def available_parallelism(threads: int = 2, seconds: float = 0.2) -> float:
    """Speed-up of ``threads`` threads over one on the same single-threaded work (512x512 matmuls, one
    intra-op thread each): about ``threads`` on an idle machine, less when other processes load it."""
    a = torch.randn(512, 512, generator=torch.Generator().manual_seed(0))

    def work(n: int) -> None:
        with one_intra_op_thread():
            for _ in range(n):
                a @ a

    n = 1
    while timed(functools.partial(work, n)) < seconds / 4:
        n *= 2
    n *= 4
    one = timed(functools.partial(work, n))

    def split() -> None:
        pool = [threading.Thread(target=work, args=(n // threads,)) for _ in range(threads)]
        for t in pool:
            t.start()
        for t in pool:
            t.join()

    return one / timed(split)


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def wall_and_cpu(fn: Callable[[], object]) -> tuple[float, float]:
    """Wall time and process CPU time (all threads) of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def median(values: list[float]) -> float:
    return statistics.median(values)


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f} (1/5/15 min, {os.cpu_count()} CPUs)"
