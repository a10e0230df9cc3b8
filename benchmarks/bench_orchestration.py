"""Orchestration overhead, scaling with N, and peak memory per shard. Prints its figures.

    python benchmarks/bench_orchestration.py overhead [--repeats 3] [--daemon]
    python benchmarks/bench_orchestration.py scaling
    python benchmarks/bench_orchestration.py memory

overhead: the default dataset's generation (parameters, ICs, rollouts with inline base features, the
replay check of 2 operators per shard, HDF5 writes) done (a) directly with ``core`` + ``storage`` in one
process and (b) through Dagster, one in-process run per shard as ``scripts/demo.sh`` does, and
optionally (c) as an asset backfill launched through GraphQL on a real ``dagster dev`` (daemon-planned
runs). Ratios are measured in the same invocation; medians over ``--repeats``.
scaling: wall time of (b) for N in {64, 256, 1024} at shard size 64 on a small grid and short T (after
a warm-up run; medians of ``--repeats``).
memory: peak RSS of a process materializing one shard, for N = 256 and N = 4096 (T = 4).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import dagster as dg

from spinlock_assets.core.spec import DEFAULT_SPEC_PATH, DatasetSpec, ParameterSpace, load_spec
from spinlock_assets.defs.main_job import consecutive, console_config, partition_args
from spinlock_assets.defs.ranges import RUN_SECONDS, shards_per_run

warnings.filterwarnings("ignore", category=dg.BetaWarning)  # Output(data_version=...), once per shard
warnings.filterwarnings("ignore", category=dg.PreviewWarning)

REPO = Path(__file__).resolve().parents[1]


def direct(spec: DatasetSpec, root: Path) -> float:
    """The same work as the generation job, without Dagster."""
    from spinlock_assets.core.features.base import FAMILY as BASE
    from spinlock_assets.core.fingerprint import execution_fingerprint
    from spinlock_assets.core.generation import (
        generate_initial_conditions,
        operator_parameters,
        operator_records,
        roll_out,
    )
    from spinlock_assets.core.shards import shard_ranges
    from spinlock_assets.core.verification import rotating_sample, verify
    from spinlock_assets.storage import ShardStore
    from spinlock_assets.storage.operator_arrays import (
        base_feature_arrays,
        initial_condition_arrays,
        parameter_arrays,
    )

    store = ShardStore(root)
    started = time.perf_counter()
    fingerprint = execution_fingerprint()
    for shard in shard_ranges(spec.n_operators, spec.shard_size):
        attrs = {
            "spec_hash": spec.spec_hash,
            "spec_json": spec.to_json(),
            "code_version": "bench",
            "fingerprint_json": json.dumps(fingerprint),
            "package_version": "bench",
        }
        table = operator_parameters(spec, shard.start, shard.stop)
        store.write("operator_parameters", shard.key, parameter_arrays(table, spec), attrs, overwrite=True)
        fields = generate_initial_conditions(spec, table)
        store.write(
            "initial_conditions",
            shard.key,
            initial_condition_arrays(fields, spec.parameter_space.ic_families),
            attrs,
            overwrite=True,
        )
        records = operator_records(spec, table, fields)
        rollouts = list(roll_out(records))
        store.write(
            "base_features",
            shard.key,
            base_feature_arrays(rollouts, BASE, store_trajectories=False),
            attrs,
            overwrite=True,
        )
        sample = set(rotating_sample(shard.start, shard.stop, 2, 0))
        for record, rollout in zip(records, rollouts, strict=True):
            if record.index in sample:
                stored = dataclasses.replace(
                    record, digests=tuple(rollout.digests), base_series=rollout.base_series
                )
                assert verify(stored).status == "exact"
    return time.perf_counter() - started


def through_dagster(spec: DatasetSpec, root: Path, run_seconds: float = RUN_SECONDS) -> tuple[float, int]:
    """In-process runs of the generation job as the main job launches them (consecutive shards in runs
    of ``run_seconds`` of estimated work; 0: one run per shard), on a temporary persistent instance;
    seconds and runs."""
    from spinlock_assets.definitions import build_definitions

    defs = build_definitions(spec, root, run_seconds=run_seconds)
    job = defs.resolve_job_def("generate_shards")
    keys = job.partitions_def.get_partition_keys()
    runs = consecutive(keys, keys, shards_per_run(spec, run_seconds))
    with dg.instance_for_test() as instance:
        started = time.perf_counter()
        for shards in runs:
            assert job.execute_in_process(
                instance=instance, run_config=console_config("WARNING"), **partition_args(shards)
            ).success
        return time.perf_counter() - started, len(runs)


def through_daemon(spec: DatasetSpec, directory: Path) -> tuple[float, float, float]:
    """An asset backfill of the generation assets over all partitions on a real dagster dev: seconds until
    the last run ended, until the backfill reads COMPLETED_SUCCESS (the backfill daemon notices finished
    runs on its next tick, up to 30 s later), and from the first run's creation to the last run's end
    (the runs without the wait for the daemon's first tick, 0-30 s after the launch)."""
    sys.path.insert(0, str(REPO))
    from spinlock_assets_tests.e2e.dagster_dev import dagster_dev

    with dagster_dev(directory, spec) as dev:
        launched = time.time()
        backfill = dev.launch_backfill(["operator_parameters", "initial_conditions", "base_features"])
        assert dev.wait_backfill(backfill, timeout=3600) == "COMPLETED_SUCCESS"
        completed = time.time() - launched
        with dg.DagsterInstance.from_config(str(dev.dagster_home)) as instance:
            records = instance.get_run_records()
            last_run_end = max(record.end_time for record in records)
            first_run_created = min(record.create_timestamp.timestamp() for record in records)
        return last_run_end - launched, completed, last_run_end - first_run_created


def overhead(repeats: int, daemon: bool) -> None:
    spec = load_spec(DEFAULT_SPEC_PATH)
    rows = {
        "direct": [],
        "dagster in-process": [],
        "daemon backfill, last run ended": [],
        "daemon backfill, status complete": [],
        "daemon backfill, first run to last": [],
    }
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as tmp:
            rows["direct"].append(direct(spec, Path(tmp) / "direct"))
            rows["dagster in-process"].append(through_dagster(spec, Path(tmp) / "dagster")[0])
            if daemon:
                runs_done, completed, runs_only = through_daemon(spec, Path(tmp) / "daemon")
                rows["daemon backfill, last run ended"].append(runs_done)
                rows["daemon backfill, status complete"].append(completed)
                rows["daemon backfill, first run to last"].append(runs_only)
    base = statistics.median(rows["direct"])
    print(
        f"default dataset: {spec.n_operators} operators, {spec.n_operators // spec.shard_size} shards, "
        f"grid {spec.grid}, T={spec.steps}, M={spec.realizations}; medians of {repeats}; 'paired': the "
        "median of each repetition's ratio to the direct run just before it (drifts in load cancel)"
    )
    for name, times in rows.items():
        if times:
            median = statistics.median(times)
            paired = statistics.median(t / d for t, d in zip(times, rows["direct"], strict=True))
            runs = [round(t, 1) for t in times]
            print(
                f"  {name:35s} {median:8.1f} s   ratio {median / base:5.3f}   paired {paired:5.3f}   "
                f"runs {runs}"
            )


def scaling(repeats: int) -> None:
    small = ParameterSpace(widths=(16,), kernel_sizes=(3,), n_layers=(2, 3))

    def spec_of(n: int) -> DatasetSpec:
        return DatasetSpec(
            root_seed=1,
            n_operators=n,
            shard_size=64,
            grid=(16, 16),
            channels=3,
            steps=8,
            realizations=3,
            parameter_space=small,
        )

    def timed_run(n: int) -> float:
        with tempfile.TemporaryDirectory() as tmp:
            return through_dagster(spec_of(n), Path(tmp))[0]

    timed_run(64)  # warm-up: imports, torch's first kernels, the worker pool
    print(
        f"N      shards  wall s (median of {repeats})   s/operator   runs   "
        "(grid 16x16, T=8, M=3, shard size 64, in-process runs)"
    )
    for n in (64, 256, 1024):
        runs = [timed_run(n) for _ in range(repeats)]
        seconds = statistics.median(runs)
        print(f"{n:<6d} {n // 64:<7d} {seconds:7.1f}   {seconds / n:20.4f}   {[round(r, 1) for r in runs]}")


_CHILD = """
import json, resource, sys, dagster as dg
from spinlock_assets.core.spec import DatasetSpec
from spinlock_assets.definitions import build_definitions
spec = DatasetSpec.from_json(sys.argv[1])
defs = build_definitions(spec, sys.argv[2])
job = defs.resolve_job_def("generate_shards")
with dg.instance_for_test() as instance:
    assert job.execute_in_process(partition_key=sys.argv[3], instance=instance).success
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def memory() -> None:
    print("peak RSS materializing one shard of 64 operators (grid 64x64, C=3, T=4, M=5), own process:")
    for n in (256, 4096):
        spec = DatasetSpec(
            root_seed=1,
            n_operators=n,
            shard_size=64,
            grid=(64, 64),
            channels=3,
            steps=4,
            realizations=5,
            parameter_space=ParameterSpace(widths=(16, 32), kernel_sizes=(3, 5)),
        )
        with tempfile.TemporaryDirectory() as tmp:
            out = subprocess.run(
                [sys.executable, "-c", _CHILD, spec.to_json(), tmp, "ops-000064-000127"],
                capture_output=True,
                text=True,
            )
            if out.returncode:
                raise SystemExit(out.stderr[-3000:])
        print(f"  N={n:5d}: {int(out.stdout.split()[-1]) / 1024:7.1f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["overhead", "scaling", "memory"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--daemon", action="store_true", help="also time a backfill on a real dagster dev")
    args = parser.parse_args()
    {
        "overhead": lambda: overhead(args.repeats, args.daemon),
        "scaling": lambda: scaling(args.repeats),
        "memory": memory,
    }[args.what]()


if __name__ == "__main__":
    main()
