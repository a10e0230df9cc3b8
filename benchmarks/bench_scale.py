"""Scale figures at N = 1K and 10K operators (100K with ``--full``). Prints one table row per figure.

    python benchmarks/bench_scale.py [--full] [--dagster-at 1000] [--daemon-at 0] [--only N]

Tiny spec (8x8 grid, C=1, T=4, M=1, 2 layers, width 16, kernel 3, shards of 32), as in issue #13. For each
N: the generation done directly (``core`` + ``storage``, replay check included) in ms/operator, and
through Dagster in-process for N <= ``--dagster-at``, in runs sized by work (as the main job and backfills
run) and one run per shard (runs launched, ratio to direct), and as an asset backfill on a real ``dagster
dev`` daemon for N <= ``--daemon-at``; a verification tick against an instance holding N/32 materialized
shards (runs requested, ms); ``dataset.h5`` full rebuild (manifests, no previous file) and update after
one shard is rewritten; ``open_dataset(...).operator(i)`` (median of 50 random i). Once: definitions load
at N = 1M, peak RSS, load average. Ratios are measured in the same invocation; the machine is shared, so
absolute times vary with the load printed at the end.
"""

from __future__ import annotations

import argparse
import datetime
import os
import resource
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import dagster as dg
import numpy as np

from spinlock_assets.core.spec import DatasetSpec, ParameterSpace

warnings.filterwarnings("ignore", category=dg.BetaWarning)
warnings.filterwarnings("ignore", category=dg.PreviewWarning)

sys.path.insert(0, str(Path(__file__).parent))
from bench_orchestration import direct, through_daemon, through_dagster  # noqa: E402

from spinlock_assets.defs.ranges import RUN_SECONDS  # noqa: E402

SHARD_SIZE = 32
PER_SHARD_RUNS_UP_TO = 1_000  # one run per shard costs ~3 s a run here: the comparison only up to this N
TINY_SPACE = ParameterSpace(widths=(16,), kernel_sizes=(3,), n_layers=(2, 2))


def tiny_spec(n_operators: int) -> DatasetSpec:
    return DatasetSpec(
        name="scale",
        root_seed=13,
        n_operators=n_operators,
        shard_size=SHARD_SIZE,
        grid=(8, 8),
        channels=1,
        steps=4,
        realizations=1,
        parameter_space=TINY_SPACE,
    )


def row(what: str, n: int, figure: str) -> None:
    print(f"| {what} | {n:,} | {figure} |", flush=True)


def generation(spec: DatasetSpec, root: Path, with_dagster: bool, daemon: bool) -> None:
    seconds = direct(spec, root / "direct")
    row(
        "generation, direct",
        spec.n_operators,
        f"{seconds:.1f} s, {1000 * seconds / spec.n_operators:.2f} ms/op",
    )
    if with_dagster:
        sizes = [("runs sized by work", RUN_SECONDS)]
        if spec.n_operators <= PER_SHARD_RUNS_UP_TO:
            sizes.append(("one run per shard", 0))
        for what, run_seconds in sizes:
            through, runs = through_dagster(spec, root / f"dagster-{run_seconds}", run_seconds)
            row(
                f"generation, Dagster in-process ({what})",
                spec.n_operators,
                f"{through:.1f} s, {1000 * through / spec.n_operators:.2f} ms/op, {runs} runs, "
                f"ratio {through / seconds:.2f}",
            )
    if daemon:
        last_run_end, completed, _ = through_daemon(spec, root / "daemon")
        row(
            "generation, daemon backfill on dagster dev (runs sized by work)",
            spec.n_operators,
            f"last run ended after {last_run_end:.1f} s (ratio {last_run_end / seconds:.2f}), backfill "
            f"COMPLETED after {completed:.1f} s (ratio {completed / seconds:.2f})",
        )


def verification_tick(spec: DatasetSpec, root: Path) -> None:
    from spinlock_assets.definitions import build_definitions

    defs = build_definitions(spec, root / "tick")
    keys = defs.resolve_job_def("generate_shards").partitions_def.get_partition_keys()
    schedule = defs.resolve_schedule_def("verify_replay_sample")
    with dg.instance_for_test() as instance:
        for key in keys:
            instance.report_runless_asset_event(dg.AssetMaterialization("base_features", partition=key))
        context = dg.build_schedule_context(
            instance=instance,
            scheduled_execution_time=datetime.datetime(2026, 12, 3, 3, tzinfo=datetime.timezone.utc),
            repository_def=defs.get_repository_def(),
        )
        started = time.perf_counter()
        requests = schedule.evaluate_tick(context).run_requests
        seconds = time.perf_counter() - started
    row(
        "verification tick",
        spec.n_operators,
        f"{len(requests)} run(s), {1000 * seconds:.0f} ms ({len(keys)} shards)",
    )


def consolidation(spec: DatasetSpec, root: Path) -> None:
    from spinlock_assets.storage import (
        FIXED_SOURCES,
        ShardStore,
        build_consolidated_dataset,
        file_sha256,
        open_dataset,
        update_consolidated_dataset,
    )

    data = root / "direct"
    store = ShardStore(data)
    keys = [
        f"ops-{start:06d}-{start + SHARD_SIZE - 1:06d}" for start in range(0, spec.n_operators, SHARD_SIZE)
    ]
    arguments = dict(
        n_operators=spec.n_operators,
        shard_keys=keys,
        sources=FIXED_SOURCES,
        root_attrs={"spec_hash": spec.spec_hash, "spec_json": spec.to_json()},
    )
    started = time.perf_counter()
    path = build_consolidated_dataset(store, data / "dataset.h5", overwrite=True, **arguments)
    full = time.perf_counter() - started
    recorded = file_sha256(path)  # what the dataset materialization records
    contents = store.read("base_features", keys[len(keys) // 2])  # rewrite one shard, as a re-materialization
    key = contents.attrs["shard_key"]
    info = store.write("base_features", key, contents.arrays, contents.attrs, overwrite=True)
    started = time.perf_counter()
    update = update_consolidated_dataset(
        store,
        path,
        previous_sha256=recorded,
        # the re-materialization's record vouches for the rewritten file
        recorded_sha256=lambda asset, shard_keys: {key: info.sha256} if key in shard_keys else {},
        **arguments,
    )
    one = time.perf_counter() - started
    files = 3 * len(keys)
    row("dataset.h5 full rebuild", spec.n_operators, f"{full:.2f} s ({files:,} shard files)")
    row(
        "dataset.h5 update, one shard rewritten",
        spec.n_operators,
        f"{one:.2f} s ({update.shards_read} file read)",
    )
    rng = np.random.default_rng(0)
    with open_dataset(data) as reader:
        reader.operator(0)
        latencies = []
        for index in rng.integers(0, spec.n_operators, 50):
            started = time.perf_counter()
            reader.operator(int(index))
            latencies.append(time.perf_counter() - started)
    row(
        "open_dataset(...).operator(i), median of 50",
        spec.n_operators,
        f"{1000 * statistics.median(latencies):.1f} ms",
    )


def synthetic_files(n_files: int, root: Path) -> DatasetSpec:
    """A data root of ``n_files`` shard files: one real shard generated, its arrays written under every
    key of a dataset of ``n_files / 3`` shards (operator_index and seeds set per shard, so reads find
    their rows and the reader's identity check passes).
    Consolidation and lookups read files and manifests, never judge the values, so this measures them
    at a file count whose real generation would take tens of minutes here."""
    import dataclasses

    from spinlock_assets.core.seeds import operator_seeds
    from spinlock_assets.storage import ShardStore

    spec = tiny_spec(SHARD_SIZE * (n_files // 3))
    direct(tiny_spec(SHARD_SIZE), root / "one")
    source, store = ShardStore(root / "one"), ShardStore(root / "direct")
    first = f"ops-000000-{SHARD_SIZE - 1:06d}"
    contents = {
        asset: source.read(asset, first)
        for asset in ("operator_parameters", "initial_conditions", "base_features")
    }
    for start in range(0, spec.n_operators, SHARD_SIZE):
        key = f"ops-{start:06d}-{start + SHARD_SIZE - 1:06d}"
        for asset, shard in contents.items():
            arrays = dict(shard.arrays)
            if "operator_index" in arrays:
                index = np.arange(start, start + SHARD_SIZE, dtype=np.int64)
                seeds = [operator_seeds(spec.root_seed, i, spec.realizations) for i in index.tolist()]
                values = {"operator_index": index}
                values |= {
                    name: np.array([getattr(s, name) for s in seeds], dtype=np.int64)
                    for name in ("weight_seed", "ic_seed", "probe_seed", "noise_seeds")
                }
                arrays |= {n: dataclasses.replace(arrays[n], data=data) for n, data in values.items()}
            located = {
                k: v
                for k, v in shard.attrs.items()
                if k not in ("asset", "shard_key", "operator_start", "operator_stop")
            }
            store.write(asset, key, arrays, located, overwrite=True)
    return spec


def definitions_load(n_operators: int) -> None:
    from spinlock_assets.definitions import build_definitions

    with dg.instance_for_test():  # resolving a job reads the instance's definitions state
        started = time.perf_counter()
        defs = build_definitions(tiny_spec(n_operators), tempfile.mkdtemp())
        defs.resolve_job_def("generate_shards")
        seconds = time.perf_counter() - started
    row("definitions load (build + resolve a job)", n_operators, f"{seconds:.2f} s")


def main() -> None:
    global SHARD_SIZE
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="also N = 100K (tens of minutes)")
    parser.add_argument("--dagster-at", type=int, default=1_000, help="largest N run through Dagster too")
    parser.add_argument(
        "--daemon-at", type=int, default=0, help="largest N also backfilled through a real dagster dev"
    )
    parser.add_argument("--only", type=int, help="only this N (rounded down to whole shards)")
    parser.add_argument("--shard-size", type=int, default=SHARD_SIZE, help=f"default {SHARD_SIZE}")
    parser.add_argument(
        "--files", type=int, help="only dataset.h5 and operator(i) over this many synthetic files"
    )
    parser.add_argument("--definitions-only", action="store_true", help="only the definitions load at N = 1M")
    args = parser.parse_args()
    SHARD_SIZE = args.shard_size
    if args.definitions_only:
        definitions_load(1_000_000)
        return
    if args.files:
        with tempfile.TemporaryDirectory() as directory:
            started = time.perf_counter()
            spec = synthetic_files(args.files, Path(directory))
            print(f"(wrote {args.files:,} synthetic shard files in {time.perf_counter() - started:.0f} s)")
            print("| figure | N | value |\n|---|---|---|")
            consolidation(spec, Path(directory))
        return
    print(f"tiny spec, shards of {SHARD_SIZE} operators, {RUN_SECONDS:.0f} s of estimated work per run")
    print("| figure | N | value |\n|---|---|---|")
    for n in (args.only,) if args.only else (1_000, 10_000, *((100_000,) if args.full else ())):
        n -= n % SHARD_SIZE  # whole shards: 992, 9,984, 99,968
        spec = tiny_spec(n)
        with tempfile.TemporaryDirectory() as directory:
            root = Path(directory)
            generation(spec, root, with_dagster=n <= args.dagster_at, daemon=n <= args.daemon_at)
            verification_tick(spec, root)
            consolidation(spec, root)
    definitions_load(1_000_000 - 1_000_000 % SHARD_SIZE)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    row("peak RSS of this process", 0, f"{peak:.0f} MiB; load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
