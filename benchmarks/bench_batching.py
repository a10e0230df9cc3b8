"""Batching across operators: can several operators of one architecture share a convolution call?

    python benchmarks/bench_batching.py [--device cuda]

For each layer shape of the default parameter space (64x64, batch 1 per realization), G operators'
weights are stacked into one grouped convolution (``groups=G``, input channels concatenated) and the
result is compared bit for bit with G separate convolutions, and timed (median of 5). Batching is used
only if every shape is bit-identical on this backend; the script prints the verdict. The same table
says whether batching realizations (one batch-G convolution of one operator) is bit-identical to G
batch-1 convolutions, the other way a rollout could batch.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

GRID = 64
GROUPS = 4


def _time(fn: Callable[[], object], device: str, repeats: int = 5) -> float:
    fn()
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def _separate(inputs: list[torch.Tensor], weights: list[torch.Tensor]) -> list[torch.Tensor]:
    return [F.conv2d(x, w) for x, w in zip(inputs, weights, strict=True)]


def batching_report(device: str = "cpu") -> bool:
    """Print the table and verdict for ``device``; True if grouped convolutions are bit-identical for
    every shape."""
    generator = torch.Generator().manual_seed(0)
    shapes = [
        (c_in, c_out, k)
        for k in (3, 5, 7)
        for c_in, c_out in ((3, 16), (16, 16), (32, 32), (64, 64), (64, 3))
    ]
    all_identical = True
    print(
        f"grid {GRID}x{GRID}, {GROUPS} operators per grouped call "
        f"(or {GROUPS} realizations per batch), {device}"
    )
    print(
        f"{'in':>4} {'out':>4} {'k':>2}  grouped identical  grouped/separate time  batch-{GROUPS} identical"
    )
    for c_in, c_out, k in shapes:
        x = [
            torch.randn(1, c_in, GRID + k - 1, GRID + k - 1, generator=generator).to(device)
            for _ in range(GROUPS)
        ]
        w = [torch.randn(c_out, c_in, k, k, generator=generator).to(device) for _ in range(GROUPS)]
        stacked_x, stacked_w = torch.cat(x, dim=1), torch.cat(w, dim=0)

        separate = functools.partial(_separate, x, w)
        grouped = functools.partial(F.conv2d, stacked_x, stacked_w, groups=GROUPS)
        identical = torch.equal(torch.cat(separate(), dim=1), grouped())
        all_identical &= identical
        ratio = _time(grouped, device) / _time(separate, device)
        one_weight = [w[0]] * GROUPS
        batch_identical = torch.equal(torch.cat(_separate(x, one_weight)), F.conv2d(torch.cat(x), w[0]))
        print(f"{c_in:>4} {c_out:>4} {k:>2}  {str(identical):>17}  {ratio:21.2f}  {str(batch_identical):>18}")
    if device.startswith("cuda"):
        backend = f"{torch.cuda.get_device_name()}, cuDNN {torch.backends.cudnn.version()}"
    else:
        backend = str(torch.backends.cpu.get_cpu_capability())
    verdict = "bit-identical for every shape" if all_identical else "NOT bit-identical for some shapes"
    print(f"\ngrouped convolution ({backend}, torch {torch.__version__}): {verdict}.")
    if not all_identical:
        print("Batching across operators stays off on this backend.")
    return all_identical


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    if args.device.startswith("cuda"):
        from spinlock_assets.core.fingerprint import configure_determinism

        configure_determinism(args.device)
    batching_report(args.device)


if __name__ == "__main__":
    main()
