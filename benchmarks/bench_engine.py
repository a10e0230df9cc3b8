"""The batched engine (the CPU default) against the per-realization engine it replaced, and its conv
throughput against a GEMM.

    python benchmarks/bench_engine.py            # 16 sampled + 4 smallest (T=32); 4 architectures (T=64)
    python benchmarks/bench_engine.py --quick    # smoke run: 8 sampled operators, T=16 and T=32

At a 64x64 grid, C=3, M=5, in one process, every measure interleaved within each repetition (so load drifts
hit them alike), medians of ``--repeats`` (3). W = ``torch.get_num_threads()`` (2 here).

1. Generation throughput of a group of operators, ``run_rollout`` (inline F0 + digests) for each:
   - *per-realization, one operator after another*: the engine before the batched default, each
     operator's realizations spread over the W single-threaded lanes (what ``roll_out`` ran);
   - *batched, W operators at once*: what ``roll_out`` runs now (each operator's rollout on one
     single-threaded worker, ``lanes.map_on_workers``);
   - *per-realization, W operators at once*: the same scheduling without batching (what the gain is from);
   over (i) operators 0..15 of the default space and (ii) its 4 smallest architectures; ratio = time of
   the first / time of the second (targets 1.5 and 2). Ceilings, the same ratio if each operator's work
   were only (a) its convolutions at the canonical batch (inputs pre-padded), (b) those plus its noise
   draws, (c) those plus the F0 rows and digests of its states, run W operators at once like the engine:
   a missed target names the first ceiling below it as the bound it hits.
2. Conv efficiency: for (layers, width, kernel) = (2,16,3), (3,32,3), (2,64,5), (5,16,7), T=64, W
   operators of that architecture rolled out at once as generation runs them: the convolution FLOPs (M
   realizations, useful slots only) per second, divided by a same-process reference: a 2048^3 GEMM run as
   a 1x1 oneDNN convolution on W threads. Next to it the per-realization engine (one operator, its lanes)
   and the ceilings (a) and (b) of section 1, W at once.

The load average and an available-parallelism probe (2 threads vs 1 on the same work; 2.0 means both cores
were ours) are printed: figures taken under load are not the engine's.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a script: _common is a sibling

# Before torch: the package sets torch's OpenMP wait policy, which is read once, when torch loads.
import spinlock_assets.core  # noqa: E402, F401, I001
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from _common import (  # noqa: E402
    Case,
    architecture_cases,
    available_parallelism,
    load_average,
    median,
    sampled_cases,
    smallest_cases,
    timed,
)

from spinlock_assets.core.batching import BatchedSteps, formulation, one_intra_op_thread  # noqa: E402
from spinlock_assets.core.features.base import step_features  # noqa: E402
from spinlock_assets.core.fingerprint import execution_fingerprint  # noqa: E402
from spinlock_assets.core.lanes import map_on_workers  # noqa: E402
from spinlock_assets.core.rollout import FEATURE_CHUNK_ELEMENTS, operators_at_once, run_rollout  # noqa: E402

GRID, CHANNELS, REALIZATIONS = 64, 3, 5
ARCHITECTURES = [(2, 16, 3), (3, 32, 3), (2, 64, 5), (5, 16, 7)]
CONV_TARGETS = {(2, 16, 3): 0.16, (3, 32, 3): 0.53, (2, 64, 5): 0.75, (5, 16, 7): 1.15}
GEMM_SIZE = 2048


def generation(steps: int, formulation: str) -> Callable[[Case], object]:
    """``run_rollout`` of a case in ``formulation``."""
    return lambda case: run_rollout(
        case.operator,
        torch.as_tensor(case.initial_condition),
        steps=steps,
        noise_seeds=case.noise_seeds,
        formulation=formulation,
    )


def one_after_another(fn: Callable[[Case], object], cases: list[Case]) -> Callable[[], None]:
    return lambda: [fn(case) for case in cases]


def at_once(fn: Callable[[Case], object], cases: list[Case]) -> Callable[[], None]:
    """``fn`` of every case, ``operators_at_once()`` cases at a time on single-threaded workers (as
    ``roll_out`` schedules operators)."""
    return lambda: list(map_on_workers(fn, cases, workers=operators_at_once()))


def gemm_reference_gflops(repeats: int) -> float:
    """GFLOP/s of a 2048^3 GEMM computed as a 1x1 oneDNN conv (batch 1, 2048 channels, 32x64 pixels)."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(1, GEMM_SIZE, 32, GEMM_SIZE // 32, generator=generator)
    w = torch.randn(GEMM_SIZE, GEMM_SIZE, 1, 1, generator=generator)
    F.conv2d(x, w)
    return 2.0 * GEMM_SIZE**3 / median([timed(lambda: F.conv2d(x, w)) for _ in range(repeats)]) / 1e9


CEILINGS = ("convs", "convs + noise", "convs + noise + F0 + digests")


class CeilingInputs:
    """What a case's ceiling work needs, made once, outside the timed work: its batched engine (noise
    generators and buffers), pre-padded random inputs of every layer and a random state."""

    def __init__(self, case: Case) -> None:
        c, h, w = case.initial_condition.shape
        self.engine = BatchedSteps(case.operator, case.noise_seeds, h, w)
        generator = torch.Generator().manual_seed(0)
        pad = case.hp.kernel_size - 1
        self.inputs = [
            torch.randn(self.engine.slots, wt.shape[1], h + pad, w + pad, generator=generator)
            for wt in case.operator.weights
        ]
        self.state = torch.randn(len(case.noise_seeds), c, h, w, generator=generator)


def ceiling_work(cases: list[Case], steps: int, parts: str) -> Callable[[Case], None]:
    """A case's rollout reduced to ``parts`` (one of ``CEILINGS``): its convolutions as the batched engine
    runs them (canonical batch, inputs pre-padded, T-1 steps), optionally its noise draws, optionally the
    F0 rows and digests of T states (as ``run_rollout`` computes them: F0 in chunks of
    ``FEATURE_CHUNK_ELEMENTS``), on the calling thread's single intra-op thread."""
    prepared = {id(case): CeilingInputs(case) for case in cases}

    def work(case: Case) -> None:
        inputs = prepared[id(case)]
        state = inputs.state
        hashes = [hashlib.sha256() for _ in case.noise_seeds]
        chunk = max(1, -(-FEATURE_CHUNK_ELEMENTS // state.numel()))
        with one_intra_op_thread():
            for t in range(steps):
                if t:
                    if parts != CEILINGS[0]:
                        inputs.engine.draw_noise()
                    for layer, x in enumerate(inputs.inputs):
                        inputs.engine._convolve(layer, x)
                if parts == CEILINGS[2]:
                    for m, digest in enumerate(hashes):
                        digest.update(state[m].numpy().data)
                    if (t + 1) % chunk == 0 or t == steps - 1:
                        step_features(torch.cat([state] * chunk))

    return work


def timed_medians(fns: dict[str, dict[str, Callable]], repeats: int) -> dict[str, dict[str, float]]:
    """Median wall time of every callable, all of them interleaved within each repetition."""
    for measures in fns.values():
        for fn in measures.values():
            fn()  # warm-up (and the engine's start-up checks)
    times: dict[str, dict[str, list[float]]] = {label: defaultdict(list) for label in fns}
    for _ in range(repeats):
        for label, measures in fns.items():
            for name, fn in measures.items():
                times[label][name].append(timed(fn))
    return {label: {name: median(v) for name, v in m.items()} for label, m in times.items()}


def throughput(sample: list[Case], small: list[Case], steps: int, repeats: int) -> None:
    groups = {f"(i) {len(sample)} sampled": (sample, 1.5), f"(ii) {len(small)} smallest": (small, 2.0)}
    fns = {}
    for name, (cases, _) in groups.items():
        if not cases:
            continue
        fns[name] = {
            "per-realization, one after another": one_after_another(
                generation(steps, "per_realization"), cases
            ),
            "batched, at once": at_once(generation(steps, "batched"), cases),
            "per-realization, at once": at_once(generation(steps, "per_realization"), cases),
            **{parts: at_once(ceiling_work(cases, steps, parts), cases) for parts in CEILINGS},
        }
    medians = timed_medians(fns, repeats)
    for name, (cases, target) in groups.items():
        if not cases:
            continue
        m = medians[name]
        before = m["per-realization, one after another"]
        print(f"{name} ({len(cases)} operators; seconds, and ratio = {before:.3f} s / seconds)")
        for measure, seconds in m.items():
            print(f"  {measure:36} {seconds:8.3f} s  {before / seconds:5.2f}")
        ratio = before / m["batched, at once"]
        line = f"  throughput ratio {ratio:.2f} (target {target})"
        if ratio < target:
            bound = next((p for p in CEILINGS if before / m[p] < target), None)
            line += (
                f": missed; bound: {bound} (ceiling {before / m[bound]:.2f})"
                if bound
                else (": missed; bound: the rest of the step (pads, norm, activation, update)")
            )
        print(line)


def conv_efficiency(steps: int, repeats: int) -> None:
    cases = architecture_cases(ARCHITECTURES, channels=CHANNELS, grid=GRID, realizations=REALIZATIONS)
    copies = operators_at_once()
    fns = {}
    for case in cases:
        group = [dataclasses.replace(case) for _ in range(copies)]  # one ceiling setup per copy
        fns[case.label] = {
            "batched": at_once(generation(steps, "batched"), group),
            "per_realization": one_after_another(generation(steps, "per_realization"), [case]),
            "convs": at_once(ceiling_work(group, steps, CEILINGS[0]), group),
            "convs + noise": at_once(ceiling_work(group, steps, CEILINGS[1]), group),
        }
    reference = [gemm_reference_gflops(repeats)]
    medians = timed_medians(fns, repeats)
    reference.append(gemm_reference_gflops(repeats))
    gemm = median(reference)
    print(
        f"GEMM reference ({GEMM_SIZE}^3 as a 1x1 oneDNN conv): {gemm:.1f} GFLOP/s (before/after: {reference})"
    )
    print(
        f"{'architecture':13} {'target':>6} {'batched':>8} {'batch-1':>8} {'convs':>6} {'+noise':>7}  "
        f"(conv GFLOP/s / GEMM reference; batched and ceilings: {copies} operators at once)"
    )
    for case, shape in zip(cases, ARCHITECTURES, strict=True):
        flops = case.conv_flops_per_step() * (steps - 1)
        m = medians[case.label]
        ratio = {
            name: flops * (1 if name == "per_realization" else copies) / seconds / 1e9 / gemm
            for name, seconds in m.items()
        }
        target = CONV_TARGETS[shape]
        line = (
            f"{case.label:13} {target:6.2f} {ratio['batched']:8.3f} {ratio['per_realization']:8.3f} "
            f"{ratio['convs']:6.3f} {ratio['convs + noise']:7.3f}"
        )
        if ratio["batched"] < target:
            if ratio["convs"] < target:
                bound = "the convolutions themselves at the canonical batch"
            elif ratio["convs + noise"] < target:
                bound = "the noise draws (normal_, single-threaded per generator)"
            else:
                bound = "the rest of the step (pads, norm, activation, update, F0, digests)"
            line += f"  missed; bound: {bound}"
        print(line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="8 sampled operators, T=16 and T=32")
    parser.add_argument("--steps", type=int, default=32, help="T of section 1")
    parser.add_argument("--conv-steps", type=int, default=64, help="T of section 2")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--operators", type=int, default=16)
    parser.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: default)")
    parser.add_argument("--section", choices=("all", "throughput", "conv"), default="all")
    args = parser.parse_args()
    if args.quick:
        args.operators, args.steps, args.conv_steps = 8, 16, 32
    if args.threads:
        torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, fingerprint {execution_fingerprint()}"
    )
    print(f"load average at start: {load_average()}; available parallelism {available_parallelism():.2f}")
    started = time.perf_counter()
    setting = f"{GRID}x{GRID}, C={CHANNELS}, M={REALIZATIONS}"
    if args.section in ("all", "throughput"):
        print(f"\n== 1. Generation throughput, batched vs per-realization ({setting}, T={args.steps})")
        sample = sampled_cases(args.operators, channels=CHANNELS, grid=GRID, realizations=REALIZATIONS)
        small = smallest_cases(channels=CHANNELS, grid=GRID, realizations=REALIZATIONS)
        throughput(sample, small, args.steps, args.repeats)
    if args.section in ("all", "conv"):
        print(f"\n== 2. Conv throughput / GEMM ({setting}, T={args.conv_steps})")
        conv_efficiency(args.conv_steps, args.repeats)
    print(f"\nload average at the end: {load_average()}; available parallelism {available_parallelism():.2f}")
    print(f"batched formulation at the end: {formulation()}; {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
