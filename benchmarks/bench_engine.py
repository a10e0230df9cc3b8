"""The batched engine (selectable) against the batch-1 (per-realization) default engine, and its conv
throughput against a GEMM.

    python benchmarks/bench_engine.py            # 16 sampled + 4 smallest (T=32); 4 architectures (T=64)
    python benchmarks/bench_engine.py --quick    # smoke run: 8 sampled operators, T=16 and T=32

At a 64x64 grid, C=3, M=5, in one process, every measure of an operator interleaved within each repetition
(so load drifts hit them alike), medians of ``--repeats`` (3):

1. Generation throughput: ``run_rollout`` (inline F0 + digests, what generation and replay run) with
   ``formulation="batched"`` and ``"per_realization"`` (the default batch-1 engine on its
   worker lanes), over (i) operators 0..15 of the default space and (ii) its 4 smallest architectures;
   ratio = total per-realization time / total batched time (targets 1.5 and 2).
2. Conv efficiency: for (layers, width, kernel) = (2,16,3), (3,32,3), (2,64,5), (5,16,7), T=64, the
   convolution FLOPs of the generation rollout (M realizations, useful slots only) per second of it, divided
   by a same-process reference: a 2048^3 GEMM run as a 1x1 oneDNN convolution. Next to it, the ceilings
   the same ratio would reach if the step were only (a) its convolutions at the canonical batch (inputs
   pre-padded) or (b) those plus the noise draws as the engine makes them; a missed target names the
   first ceiling below it as the bound it hits (else "the rest of the step": pads, norm, activation,
   update, F0 and digests).

The load average and an available-parallelism probe (2 threads vs 1 on the same work; 2.0 means both cores
were ours) are printed: OpenMP intra-op threads collapse when other processes hold the cores, so figures
taken under load are not the engine's.
"""

from __future__ import annotations

import argparse
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

from spinlock_assets.core.batching import BatchedSteps, formulation  # noqa: E402
from spinlock_assets.core.fingerprint import execution_fingerprint  # noqa: E402
from spinlock_assets.core.rollout import run_rollout  # noqa: E402

GRID, CHANNELS, REALIZATIONS = 64, 3, 5
ARCHITECTURES = [(2, 16, 3), (3, 32, 3), (2, 64, 5), (5, 16, 7)]
CONV_TARGETS = {(2, 16, 3): 0.16, (3, 32, 3): 0.53, (2, 64, 5): 0.75, (5, 16, 7): 1.15}
GEMM_SIZE = 2048


def generation(case: Case, steps: int, formulation: str) -> Callable:
    """``run_rollout`` of ``case`` in ``formulation``."""
    ic = torch.as_tensor(case.initial_condition)
    return lambda: run_rollout(
        case.operator, ic, steps=steps, noise_seeds=case.noise_seeds, formulation=formulation
    )


def gemm_reference_gflops(repeats: int) -> float:
    """GFLOP/s of a 2048^3 GEMM computed as a 1x1 oneDNN conv (batch 1, 2048 channels, 32x64 pixels)."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(1, GEMM_SIZE, 32, GEMM_SIZE // 32, generator=generator)
    w = torch.randn(GEMM_SIZE, GEMM_SIZE, 1, 1, generator=generator)
    F.conv2d(x, w)
    return 2.0 * GEMM_SIZE**3 / median([timed(lambda: F.conv2d(x, w)) for _ in range(repeats)]) / 1e9


def ceilings(case: Case, steps: int) -> tuple[Callable, Callable]:
    """(a) the operator's convolutions alone, as the batched engine runs them (canonical batch, inputs
    pre-padded, T-1 steps); (b) the same plus the engine's noise draws."""
    c, h, w = case.initial_condition.shape
    engine = BatchedSteps(case.operator, case.noise_seeds, h, w)
    generator = torch.Generator().manual_seed(0)
    pad = case.hp.kernel_size - 1
    inputs = [
        torch.randn(engine.slots, wt.shape[1], h + pad, w + pad, generator=generator)
        for wt in case.operator.weights
    ]

    def convs() -> None:
        for _ in range(steps - 1):
            for layer, x in enumerate(inputs):
                engine._convolve(layer, x)

    def convs_and_noise() -> None:
        for _ in range(steps - 1):
            engine.draw_noise()
            for layer, x in enumerate(inputs):
                engine._convolve(layer, x)

    return convs, convs_and_noise


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
    fns = {}
    for case in sample + small:
        fns[case.label] = {f: generation(case, steps, f) for f in ("batched", "per_realization")}
    medians = timed_medians(fns, repeats)
    print(f"{'operator':9} {'architecture':26} {'batched s':>10} {'batch-1 s':>10} {'ratio':>6}")
    for case in sample + small:
        m = medians[case.label]
        ratio = m["per_realization"] / m["batched"]
        seconds = f"{m['batched']:10.3f} {m['per_realization']:10.3f}"
        print(f"{case.label:9} {case.architecture:26} {seconds} {ratio:6.2f}")
    for name, group, target in (("(i) 16 sampled", sample, 1.5), ("(ii) 4 smallest", small, 2.0)):
        if not group:
            continue
        batched = sum(medians[c.label]["batched"] for c in group)
        single = sum(medians[c.label]["per_realization"] for c in group)
        print(
            f"{name}: batched {batched:.3f} s, batch-1 {single:.3f} s, "
            f"throughput ratio {single / batched:.2f} (target {target})"
        )


def conv_efficiency(steps: int, repeats: int) -> None:
    cases = architecture_cases(ARCHITECTURES, channels=CHANNELS, grid=GRID, realizations=REALIZATIONS)
    fns = {}
    for case in cases:
        convs, convs_and_noise = ceilings(case, steps)
        fns[case.label] = {
            "batched": generation(case, steps, "batched"),
            "per_realization": generation(case, steps, "per_realization"),
            "convs": convs,
            "convs + noise": convs_and_noise,
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
        "(conv GFLOP/s of the rollout / GEMM reference; ceilings: convs alone, convs + noise)"
    )
    for case, shape in zip(cases, ARCHITECTURES, strict=True):
        flops = case.conv_flops_per_step() * (steps - 1)
        m = medians[case.label]
        ratio = {name: flops / seconds / 1e9 / gemm for name, seconds in m.items()}
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
        print(f"\n== 1. Generation throughput, batched vs batch-1 ({setting}, T={args.steps})")
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
