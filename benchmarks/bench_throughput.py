"""Generation throughput on this machine's cores: operators rolled out one at a time vs at once.

    python benchmarks/bench_throughput.py                  # 32 operators of the default space, ~1-3 min
    python benchmarks/bench_throughput.py --threads 16     # torch (and so the engine) on 16 threads

A rollout keeps at most M (realizations) cores busy, so on a CPU with more threads than M,
``core.generation.roll_out`` runs ``torch.get_num_threads() // M`` operators at once on one shared worker
pool (``rollout.concurrent_rollouts``). This times ``roll_out`` over the same records (default parameter
space, 64x64, C=3, M=5, T=32, root seed 0) with ``concurrency=1`` and with the default, interleaved over
``--repeats`` (medians), and requires identical digests and F0 series from both.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from spinlock_assets.core.generation import (
    generate_initial_conditions,
    operator_parameters,
    operator_records,
    roll_out,
)
from spinlock_assets.core.rollout import concurrent_rollouts
from spinlock_assets.core.spec import DatasetSpec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--operators", type=int, default=32)
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: one per core)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    spec = DatasetSpec(root_seed=0, n_operators=args.operators, shard_size=args.operators, steps=args.steps)
    table = operator_parameters(spec, 0, spec.n_operators)
    records = operator_records(spec, table, generate_initial_conditions(spec, table))
    at_once = concurrent_rollouts(spec.realizations)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, M={spec.realizations}: "
        f"{at_once} operators at once by default; {spec.n_operators} operators, "
        f"{spec.grid[0]}x{spec.grid[1]}, C={spec.channels}, T={spec.steps}, medians of {args.repeats}"
    )

    results, times = {}, {1: [], at_once: []}
    list(roll_out(records[:2], concurrency=at_once))  # warm-up: worker pools, first kernels
    for _ in range(args.repeats):
        for concurrency in times:
            started = time.perf_counter()
            results[concurrency] = list(roll_out(records, concurrency=concurrency))
            times[concurrency].append(time.perf_counter() - started)
    one, many = results[1], results[at_once]
    same = all(
        a.digests == b.digests and np.array_equal(a.base_series, b.base_series, equal_nan=True)
        for a, b in zip(one, many, strict=True)
    )
    print(f"digests and F0 series identical one at a time and {at_once} at once: {same}")
    for concurrency, runs in times.items():
        seconds = statistics.median(runs)
        print(
            f"  {concurrency:2d} at once: {seconds:6.2f} s, {spec.n_operators / seconds:6.2f} operators/s "
            f"(runs {[round(r, 2) for r in runs]})"
        )
    speedup = statistics.median(times[1]) / statistics.median(times[at_once])
    print(f"speed-up from rolling out operators at once: {speedup:.2f}x")
    if not same:
        raise SystemExit("bench_throughput.py: results differ between one at a time and at once")


if __name__ == "__main__":
    main()
