"""Bytes per operator of the feature-only dataset at the original system's configuration, in the default
and the compact storage mode.

    python benchmarks/bench_storage.py [--operators 16]

64x64 grid, C=3, T=256, M=5 (the original's typical config; it quoted 644 MB for 4K operators, 161 kB =
157.2 KiB per operator). The architecture is the smallest (width 16, 3x3, 2 layers) so the run is quick:
the stored arrays' shapes do not depend on it, only how well the series compress does.

Compact mode (``store_initial_conditions=False``) differs only in the initial_conditions shards, so those
are rewritten in the compact form from the default run's fields (with the compact spec's attributes); the
other assets hold the same arrays. Also timed: getting one operator's IC fields through
``initial_condition_fields``, stored (one shard read) versus regenerated and checked against ic_digest.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
import time
from pathlib import Path

from spinlock_assets.core.spec import DatasetSpec, ParameterSpace

ORIGINAL_BYTES_PER_OPERATOR = 644e6 / 4000
IC_ASSET = "initial_conditions"


def asset_bytes(root: Path) -> dict[str, int]:
    """Bytes of the shard files of each asset folder under ``root``."""
    return {folder.name: sum(f.stat().st_size for f in folder.glob("*.h5")) for folder in root.iterdir()}


def write_compact_ics(compact: DatasetSpec, default_root: Path, compact_root: Path) -> tuple[float, float]:
    """Rewrite the default run's initial_conditions shards in the compact form under ``compact_root``; return
    the median seconds per operator to get the fields stored (default) and regenerated (compact)."""
    from spinlock_assets.storage import ShardStore
    from spinlock_assets.storage.operator_arrays import initial_condition_arrays, initial_condition_fields

    default, target = ShardStore(default_root), ShardStore(compact_root)
    stored_s, regenerated_s = [], []
    for key in default.shard_keys(IC_ASSET):
        parameters = {name: a.data for name, a in default.read("operator_parameters", key).arrays.items()}
        started = time.perf_counter()
        ics = default.read(IC_ASSET, key)
        fields = initial_condition_fields(compact, parameters, {n: a.data for n, a in ics.arrays.items()})
        stored_s.append((time.perf_counter() - started) / len(fields))
        arrays = initial_condition_arrays(fields, compact.parameter_space.ic_families, store_fields=False)
        attrs = {
            **{k: ics.attrs[k] for k in ("code_version", "fingerprint_json", "package_version")},
            "spec_hash": compact.spec_hash,
            "spec_json": compact.to_json(),
        }
        target.write(IC_ASSET, key, arrays, attrs)
        started = time.perf_counter()
        compact_ics = {n: a.data for n, a in target.read(IC_ASSET, key).arrays.items()}
        regenerated = initial_condition_fields(compact, parameters, compact_ics)
        regenerated_s.append((time.perf_counter() - started) / len(fields))
        assert regenerated.tobytes() == fields.tobytes()
    return statistics.median(stored_s), statistics.median(regenerated_s)


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
    compact = dataclasses.replace(spec, store_initial_conditions=False)
    with tempfile.TemporaryDirectory() as tmp:
        direct(spec, Path(tmp) / "default")
        sizes = {"default": asset_bytes(Path(tmp) / "default")}
        stored_s, regenerated_s = write_compact_ics(compact, Path(tmp) / "default", Path(tmp) / "compact")
        sizes["compact"] = sizes["default"] | asset_bytes(Path(tmp) / "compact")

    def kib(n_bytes: float) -> str:
        return f"{n_bytes / args.operators / 1024:9.1f}"

    print(f"{args.operators} operators, grid 64x64, C=3, T=256, M=5; KiB per operator:")
    print(f"  {'asset':22s} {'default':>9s} {'compact':>9s}")
    for asset in sorted(sizes["default"]):
        print(f"  {asset:22s} {kib(sizes['default'][asset])} {kib(sizes['compact'][asset])}")
    totals = {mode: sum(sizes[mode].values()) for mode in sizes}
    print(f"  {'total':22s} {kib(totals['default'])} {kib(totals['compact'])}")
    original = ORIGINAL_BYTES_PER_OPERATOR * args.operators
    print(
        f"  ratio to the original's 161 kB (157.2 KiB) per operator: {totals['default'] / original:.3f} "
        f"default, {totals['compact'] / original:.3f} compact"
    )
    ic_share = sizes["default"][IC_ASSET] / totals["default"]
    print(f"  initial conditions: {ic_share:.0%} of the default form's bytes")
    print(
        f"  one operator's IC fields: {stored_s * 1e3:.2f} ms read (default), "
        f"{regenerated_s * 1e3:.2f} ms regenerated and checked (compact)"
    )


if __name__ == "__main__":
    main()
