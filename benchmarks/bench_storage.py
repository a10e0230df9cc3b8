"""Bytes per operator of the feature-only dataset at the original system's configuration.

    python benchmarks/bench_storage.py [--operators 16]

64x64 grid, C=3, T=256, M=5 (the original's typical config; it quoted 644 MB for 4K operators, about
161 KB per operator). The architecture is the smallest (width 16, 3x3, 2 layers) so the run is quick:
the stored arrays' shapes do not depend on it, only how well the series compress does.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from spinlock_assets.core.spec import DatasetSpec, ParameterSpace

ORIGINAL_BYTES_PER_OPERATOR = 644e6 / 4000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--operators", type=int, default=16)
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_orchestration import direct  # the same shard writes as the generation job, without Dagster

    spec = DatasetSpec(
        root_seed=3,
        n_operators=args.operators,
        shard_size=args.operators,
        grid=(64, 64),
        channels=3,
        steps=256,
        realizations=5,
        parameter_space=ParameterSpace(widths=(16,), kernel_sizes=(3,), n_layers=(2, 2)),
    )
    with tempfile.TemporaryDirectory() as tmp:
        direct(spec, Path(tmp))
        sizes = {
            folder.name: sum(f.stat().st_size for f in folder.glob("*.h5")) for folder in Path(tmp).iterdir()
        }
    per_operator = sum(sizes.values()) / args.operators
    print(f"{args.operators} operators, grid 64x64, C=3, T=256, M=5:")
    for asset, size in sorted(sizes.items()):
        print(f"  {asset:22s} {size / args.operators / 1024:8.1f} KB per operator")
    ratio = per_operator / ORIGINAL_BYTES_PER_OPERATOR
    print(
        f"  {'total':22s} {per_operator / 1024:8.1f} KB per operator (original: 157.2 KB; ratio {ratio:.2f})"
    )


if __name__ == "__main__":
    main()
