"""CUDA: replay bit-exact across processes, GPU throughput, batching bits. Needs a GPU; nothing else does.

    python benchmarks/bench_cuda.py                 # on a machine with CUDA (about 3-5 minutes)
    python benchmarks/bench_cuda.py --device cpu --quick   # smoke run of the same code on the CPU

Setting: 64x64 grid, C=3, M=5 realizations, the 16 sampled operators and the 4 smallest architectures
of ``_common`` (the same operators as ``bench_rollout.py``), fp32, ``configure_determinism('cuda')``
(deterministic algorithms, no TF32, no cuDNN autotuning).

1. **Bits across processes**: two fresh processes (different ``PYTHONHASHSEED``, started together so
   they share the GPU) roll out every operator for ``--steps`` states and write their digests and F0
   series; the parent requires every digest to be equal. A third process does the same on the CPU, and
   each operator is classified the way verification classifies a replay under another fingerprint
   (``within_tolerance`` / ``diverged``): CUDA is a different fingerprint, never ``exact`` by promise.
2. **Throughput** (this process, medians of ``--repeats``): per operator, (a) the bare rollout, (b) the
   generation rollout (inline F0 + digests), (c) the conv-only bound (the operator's convolutions, batch
   1 per realization, M per step: the engine's structure), with ``torch.cuda.synchronize()`` before the
   clock stops. On CUDA also the rollout with its CUDA graphs switched off (every step eager), whether
   both give the same digests, and the bound with one step's convolutions replayed as a CUDA graph (the
   bound a graphed rollout is held to). Then ``--processes`` processes rolling out the sample at once
   on the one GPU: aggregate operators per second (a Dagster multiprocess executor on a GPU machine
   works this way).
3. **Batching** bits on this backend (``bench_batching.batching_report``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a script: _common is a sibling

import numpy as np  # noqa: E402
import torch  # noqa: E402
from _common import Case, conv_bound, median, rollout_measures, sampled_cases, smallest_cases  # noqa: E402
from bench_batching import batching_report  # noqa: E402

from spinlock_assets.core import rollout  # noqa: E402
from spinlock_assets.core.fingerprint import (  # noqa: E402
    configure_determinism,
    execution_fingerprint,
    fingerprint_id,
)
from spinlock_assets.core.operator import StochasticCNN  # noqa: E402
from spinlock_assets.core.rollout import run_rollout  # noqa: E402
from spinlock_assets.core.verification import ATOL, RTOL  # noqa: E402

GRID, CHANNELS, REALIZATIONS = 64, 3, 5


def cases_on(device: str, quick: bool) -> list[Case]:
    """The benchmark's operators with their weights on ``device`` (drawn on the CPU, then moved: exactly
    what ``build_operator(..., device=device)`` does)."""
    cases = sampled_cases(4 if quick else 16, channels=CHANNELS, grid=GRID, realizations=REALIZATIONS)
    cases += smallest_cases(channels=CHANNELS, grid=GRID, realizations=REALIZATIONS)
    for case in cases:
        op = case.operator
        case.operator = StochasticCNN(
            op.hyperparameters, [w.to(device) for w in op.weights], op.output_bias.to(device)
        )
    return cases


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _timed(fn, device: str) -> float:
    _sync(device)
    started = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - started


# ----------------------------------------------------------------------------------------------------
# Children


def digests_child(device: str, steps: int, quick: bool, out: str) -> None:
    """Roll out every operator on ``device``; save digests and F0 series to ``out`` (.npz)."""
    configure_determinism(device)
    arrays: dict[str, np.ndarray] = {}
    for case in cases_on(device, quick):
        ic = torch.as_tensor(case.initial_condition)
        record = run_rollout(case.operator, ic, steps=steps, noise_seeds=case.noise_seeds)
        arrays[f"{case.label}/digests"] = np.array(record.digests)
        arrays[f"{case.label}/series"] = record.base_series
    arrays["fingerprint"] = np.array(fingerprint_id(execution_fingerprint(device)))
    np.savez(out, **arrays)


def throughput_child(device: str, steps: int, quick: bool, repeats: int) -> None:
    """Generation rollouts of the sample, ``repeats`` times; prints JSON with the wall times."""
    configure_determinism(device)
    cases = cases_on(device, quick)
    started = time.perf_counter()
    for _ in range(repeats):
        for case in cases:
            run_rollout(
                case.operator,
                torch.as_tensor(case.initial_condition),
                steps=steps,
                noise_seeds=case.noise_seeds,
            )
    _sync(device)
    print(json.dumps({"seconds": time.perf_counter() - started, "rollouts": repeats * len(cases)}))


def without_cuda_graphs(fn: Callable[[], object]) -> Callable[[], object]:
    """``fn`` run with the rollout's CUDA graphs switched off (every step eager)."""

    def eager() -> object:
        saved, rollout.CUDA_GRAPH_MIN_STEPS = rollout.CUDA_GRAPH_MIN_STEPS, sys.maxsize
        try:
            return fn()
        finally:
            rollout.CUDA_GRAPH_MIN_STEPS = saved

    return eager


def graphed_conv_bound(case: Case, steps: int, device: str) -> Callable[[], None]:
    """The conv-only bound with one step's convolutions captured as a CUDA graph, replayed ``steps - 1``
    times: the fair bound for a graphed rollout (the eager bound is itself launch-bound at batch 1)."""
    one_step = conv_bound(case, 2, engine_convs=True, device=device)
    one_step()  # warm-up outside the capture
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        one_step()

    def replay() -> None:
        for _ in range(steps - 1):
            graph.replay()

    replay.captured = one_step  # the graph reads one_step's input tensors: keep them alive
    return replay


def _child_command(args: argparse.Namespace, role: str, device: str, *extra: str) -> list[str]:
    command = [sys.executable, __file__, "--role", role, "--device", device, "--steps", str(args.steps)]
    return command + (["--quick"] if args.quick else []) + list(extra)


# ----------------------------------------------------------------------------------------------------
# Sections


def bits_across_processes(args: argparse.Namespace) -> None:
    print(
        f"\n== 1. Bits across processes: {args.steps} states, M={REALIZATIONS}, {GRID}x{GRID}, C={CHANNELS}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        runs = {name: str(Path(tmp) / f"{name}.npz") for name in ("first", "second", "cpu")}
        children = []
        for hash_seed, name in enumerate(("first", "second"), start=1):
            env = dict(os.environ, PYTHONHASHSEED=str(hash_seed))
            command = _child_command(args, "digests", args.device, "--out", runs[name])
            children.append(subprocess.Popen(command, env=env))
        cpu_child = subprocess.Popen(_child_command(args, "digests", "cpu", "--out", runs["cpu"]))
        for child in [*children, cpu_child]:
            if child.wait() != 0:
                raise SystemExit(f"a child process failed: {child.args}")
        first, second, cpu = (np.load(runs[name]) for name in ("first", "second", "cpu"))
        labels = sorted({key.split("/")[0] for key in first.files if "/" in key})
        same = [
            label for label in labels if np.array_equal(first[f"{label}/digests"], second[f"{label}/digests"])
        ]
        print(f"fingerprint {first['fingerprint']} (second process: {second['fingerprint']})")
        print(
            f"{args.device} process 1 vs process 2: {len(same)}/{len(labels)} operators bit-identical "
            f"({len(same) * REALIZATIONS}/{len(labels) * REALIZATIONS} realization digests)"
        )
        if len(same) != len(labels):
            print(f"  NOT bit-exact: {sorted(set(labels) - set(same))}")
        statuses: dict[str, list[str]] = {"exact": [], "within_tolerance": [], "diverged": []}
        for label in labels:
            a, b = cpu[f"{label}/series"].astype(np.float64), first[f"{label}/series"].astype(np.float64)
            if np.array_equal(cpu[f"{label}/digests"], first[f"{label}/digests"]):
                statuses["exact"].append(label)
                continue
            finite = ~np.isnan(a)
            same_nans = np.array_equal(np.isnan(a), np.isnan(b))
            error = (
                np.max(np.abs(a[finite] - b[finite]) / (ATOL + RTOL * np.abs(a[finite])))
                if same_nans
                else np.inf
            )
            statuses["within_tolerance" if error <= 1.0 else "diverged"].append(f"{label}({error:.2g})")
        print(
            f"{args.device} vs cpu (classified as verification does for another fingerprint; "
            "error in tolerance units):"
        )
        for status, members in statuses.items():
            print(f"  {status}: {len(members)}  {' '.join(members)}")


def throughput(args: argparse.Namespace) -> None:
    device, steps = args.device, args.timing_steps
    print(
        f"\n== 2. Throughput: T={steps}, M={REALIZATIONS}, {GRID}x{GRID}, C={CHANNELS}, "
        f"medians of {args.repeats}"
    )
    configure_determinism(device)
    cases = cases_on(device, args.quick)
    graphs = device.startswith("cuda")
    rows, same_bits = [], 0
    for case in cases:
        bare, generation = rollout_measures(case, steps)
        measures = {
            "bare": bare,
            "generation": generation,
            "bound": conv_bound(case, steps, engine_convs=True, device=device),
            "batched": conv_bound(case, steps, batched=True, engine_convs=True, device=device),
        }
        if graphs:
            measures["eager"] = without_cuda_graphs(bare)
            measures["graph bound"] = graphed_conv_bound(case, steps, device)
            graphed, eager = generation(), without_cuda_graphs(generation)()
            same_bits += graphed.digests == eager.digests
        generation()  # warm-up: kernels, cuDNN handles
        samples = {name: [_timed(fn, device) for _ in range(args.repeats)] for name, fn in measures.items()}
        rows.append((case, {name: median(values) for name, values in samples.items()}))
    if graphs:
        print(f"CUDA graph rollouts vs eager: {same_bits}/{len(cases)} operators with identical digests")
    # the lower bound the rollout is held to: the graphed convolutions where graphs are used
    tight = "graph bound" if graphs else "bound"

    print(
        f"{'operator':<10} {'architecture':<26} {'bare ms':>8} {'eager ms':>8} {'gen ms':>8} {'bound ms':>9} "
        f"{'graph bnd':>9} {'batch-M':>8} {'bare/bound':>10} {'gen/bare':>8}"
    )
    for case, t in rows:
        print(
            f"{case.label:<10} {case.architecture:<26} {t['bare'] * 1e3:8.1f} "
            f"{t.get('eager', float('nan')) * 1e3:8.1f} {t['generation'] * 1e3:8.1f} "
            f"{t['bound'] * 1e3:9.1f} {t.get('graph bound', float('nan')) * 1e3:9.1f} "
            f"{t['batched'] * 1e3:8.1f} {t['bare'] / t[tight]:10.2f} {t['generation'] / t['bare']:8.2f}"
        )
    for title, group in (
        ("sampled", [r for r in rows if r[0].label.startswith("op")]),
        ("smallest", [r for r in rows if r[0].label.startswith("small")]),
    ):
        total = {name: sum(t[name] for _, t in group) for name in group[0][1]}
        graph_figures = (
            f"eager (no CUDA graphs) {total['eager']:.3f} s = {total['eager'] / total['bare']:.2f}x bare, "
            f"graphed bound {total['graph bound']:.3f} s; "
            if graphs
            else ""
        )
        print(
            f"total {title} ({len(group)}): bare {total['bare']:.3f} s, "
            f"generation {total['generation']:.3f} s, "
            f"bound {total['bound']:.3f} s, batch-M bound {total['batched']:.3f} s; {graph_figures}"
            f"bare/{tight} {total['bare'] / total[tight]:.2f}, "
            f"generation/bare {total['generation'] / total['bare']:.3f}; "
            f"{len(group) / total['generation']:.1f} generation rollouts/s"
        )

    print(
        f"\n{args.processes} processes at once on one {device}, {args.repeats} passes over the sample each:"
    )
    extra = ("--timing-steps", str(steps), "--repeats", str(args.repeats))
    command = _child_command(args, "throughput", device, *extra)
    command[command.index("--steps") + 1] = str(steps)
    started = time.perf_counter()
    children = [subprocess.Popen(command, stdout=subprocess.PIPE, text=True) for _ in range(args.processes)]
    results = [json.loads(child.communicate()[0].strip().splitlines()[-1]) for child in children]
    wall = time.perf_counter() - started
    rollouts = sum(r["rollouts"] for r in results)
    slowest = max(r["seconds"] for r in results)
    print(
        f"  {rollouts} rollouts of T={steps}: {rollouts / slowest:.1f} rollouts/s aggregate over the "
        f"slowest process's rollout time ({slowest:.1f} s; {wall:.1f} s wall with process start-up)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--steps", type=int, default=64, help="states per rollout for the bits check")
    parser.add_argument("--timing-steps", type=int, default=32, help="states per rollout for throughput")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--quick", action="store_true", help="4 sampled operators instead of 16")
    parser.add_argument("--section", choices=("all", "bits", "throughput", "batching"), default="all")
    parser.add_argument("--role", choices=("main", "digests", "throughput"), default="main")
    parser.add_argument("--out")
    args = parser.parse_args()
    if args.role == "digests":
        return digests_child(args.device, args.steps, args.quick, args.out)
    if args.role == "throughput":
        return throughput_child(args.device, args.timing_steps, args.quick, args.repeats)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("bench_cuda.py: no CUDA device here (torch.cuda.is_available() is False)")
    print(f"torch {torch.__version__}, {json.dumps(execution_fingerprint(args.device))}")
    if args.section in ("all", "bits"):
        bits_across_processes(args)
    if args.section in ("all", "throughput"):
        throughput(args)
    if args.section in ("all", "batching"):
        print("\n== 3. Batching")
        batching_report(args.device)


if __name__ == "__main__":
    main()
