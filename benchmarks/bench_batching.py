"""Batching across operators: can several operators of one architecture share a convolution call?

    python benchmarks/bench_batching.py

For each layer shape of the default parameter space (64x64, batch 1 per realization), G operators'
weights are stacked into one grouped convolution (``groups=G``, input channels concatenated) and the
result is compared bit for bit with G separate convolutions, and timed (median of 5). Batching is used
only if every shape is bit-identical on this backend; the script prints the verdict.
"""

from __future__ import annotations

import functools
import statistics
import time

import torch
import torch.nn.functional as F

GRID = 64
GROUPS = 4


def _time(fn, repeats: int = 5) -> float:
    fn()
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def _separate(inputs: list[torch.Tensor], weights: list[torch.Tensor]) -> list[torch.Tensor]:
    return [F.conv2d(x, w) for x, w in zip(inputs, weights, strict=True)]


def main() -> None:
    generator = torch.Generator().manual_seed(0)
    shapes = [
        (c_in, c_out, k)
        for k in (3, 5, 7)
        for c_in, c_out in ((3, 16), (16, 16), (32, 32), (64, 64), (64, 3))
    ]
    all_identical = True
    print(f"grid {GRID}x{GRID}, {GROUPS} operators per grouped call, batch 1")
    print(f"{'in':>4} {'out':>4} {'k':>2}  identical  grouped/separate time")
    for c_in, c_out, k in shapes:
        x = [torch.randn(1, c_in, GRID + k - 1, GRID + k - 1, generator=generator) for _ in range(GROUPS)]
        w = [torch.randn(c_out, c_in, k, k, generator=generator) for _ in range(GROUPS)]
        stacked_x, stacked_w = torch.cat(x, dim=1), torch.cat(w, dim=0)

        separate = functools.partial(_separate, x, w)
        grouped = functools.partial(F.conv2d, stacked_x, stacked_w, groups=GROUPS)
        identical = torch.equal(torch.cat(separate(), dim=1), grouped())
        all_identical &= identical
        ratio = _time(grouped) / _time(separate)
        print(f"{c_in:>4} {c_out:>4} {k:>2}  {str(identical):>9}  {ratio:6.2f}")
    verdict = "bit-identical for every shape" if all_identical else "NOT bit-identical for some shapes"
    backend = f"{torch.backends.cpu.get_cpu_capability()}, torch {torch.__version__}"
    print(f"\ngrouped convolution ({backend}): {verdict}.")
    print("Batching across operators stays off on this backend." if not all_identical else "")


if __name__ == "__main__":
    main()
