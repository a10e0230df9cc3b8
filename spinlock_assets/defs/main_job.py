"""The main job on the embedded default: generate the default dataset through Dagster, verify a sample.

Runs every missing shard of the generation job in-process against a persistent local Dagster instance
(``./dagster_home``), consecutive shards together in runs sized by work (``defs/ranges.py``), so the runs,
materializations and lineage are there when the UI is opened; replays every feature family already
materialized on the shards that lack it; updates ``data/dataset.h5``; replays a sample of operators from
that file alone and checks their digests bit for bit. Re-running it skips shards that are already
materialized.

Growing a dataset is this one command: ``--grow-to N`` raises the spec's ``n_operators`` (written back to
``$SPINLOCK_SPEC``, or to ``./spinlock_spec.json`` for the embedded default), and the same pass then
generates the new shards, backfills the materialized families on them and updates dataset.h5. Existing
shard files are not touched (the spec hash excludes ``n_operators``).

The instance is created (and migrated) once, under a file lock (``defs/instance.py``), and the whole job
holds a lock on the data root, so two main jobs at once serialize instead of racing. A refusal (an
invalid spec, a spec too large for this machine, a data root of another spec, a failed run) is one line
on stderr; ``--debug`` adds the traceback and Dagster's own error logs (all are in the instance too).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

__all__ = ["console_config", "consecutive", "main", "partition_args", "small_shard_hint"]

PROG = "main job"
DATA_ROOT_LOCK = ".main_job.lock"


def console_config(level: str) -> dict:
    """Run config for the console logger at ``level``: the runs' full event logs are in the instance (and
    the UI); the terminal gets one line per shard."""
    return {"loggers": {"console": {"config": {"log_level": level}}}}


def _run_error(result) -> str:
    """The first error message of a failed run, on one line (its traceback stays in the instance)."""
    for event in result.all_events:
        error = getattr(event.event_specific_data, "error", None)
        while error is not None and error.cause is not None and not error.message.strip():
            error = error.cause
        if error is not None:
            cause = error.cause or error
            return " ".join(f"{cause.cls_name}: {cause.message}".split())
    return "the run failed (see its logs in the UI)"


def consecutive(shards: list[str], all_keys: list[str], per_run: int) -> list[list[str]]:
    """``shards`` (in partition order) cut into runs of at most ``per_run`` shards that are consecutive in
    ``all_keys``: a ranged run covers a contiguous range of partitions."""
    position = {key: i for i, key in enumerate(all_keys)}
    runs: list[list[str]] = []
    for key in shards:
        last = runs[-1][-1] if runs else None
        if last is not None and position[key] == position[last] + 1 and len(runs[-1]) < per_run:
            runs[-1].append(key)
        else:
            runs.append([key])
    return runs


# Dagster records ~11 events per shard however runs group shards (~0.1-0.2 s on a local SQLite instance).
SMALL_SHARD_SECONDS = 2.0


def small_shard_hint(spec: Any) -> str | None:
    """A note when the spec's shards are so cheap that Dagster's per-shard records would take about as
    long as their work; None otherwise."""
    from spinlock_assets.core.budget import estimated_operator_seconds

    shard_seconds = estimated_operator_seconds(spec) * spec.shard_size
    if shard_seconds >= SMALL_SHARD_SECONDS:
        return None
    suggested = spec.shard_size * 2 ** math.ceil(math.log2(SMALL_SHARD_SECONDS / shard_seconds))
    return (
        f"note: a shard of {spec.shard_size} operators is ~{shard_seconds:.2f} s of work, about what "
        f"Dagster's records of a shard cost; shards of {suggested} or more operators keep them small "
        "(shard_size is outside the spec hash: no operator's data depends on it)"
    )


def partition_args(shards: list[str]) -> dict[str, Any]:
    """``execute_in_process`` arguments of a run over ``shards``: a partition key, or a range's tags."""
    from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

    if len(shards) == 1:
        return {"partition_key": shards[0]}
    return {"tags": {ASSET_PARTITION_RANGE_START_TAG: shards[0], ASSET_PARTITION_RANGE_END_TAG: shards[-1]}}


def _grow_spec(n_operators: int) -> None:
    """Write the spec with ``n_operators`` where the code location reads it (``$SPINLOCK_SPEC``); the embedded
    default is copied to ``./spinlock_spec.json`` first, and ``$SPINLOCK_SPEC`` pointed at the copy."""
    from spinlock_assets.core.spec import DEFAULT_SPEC_PATH, load_spec
    from spinlock_assets.defs.constants import SPEC_ENV_VAR

    path = Path(os.environ.get(SPEC_ENV_VAR) or DEFAULT_SPEC_PATH)
    spec = load_spec(path)
    if n_operators < spec.n_operators:
        raise ValueError(f"--grow-to {n_operators}: the dataset already has {spec.n_operators} operators")
    if path.resolve() == DEFAULT_SPEC_PATH.resolve():
        path = Path("spinlock_spec.json").absolute()
        print(
            f"growing the embedded default: spec written to {path} (export {SPEC_ENV_VAR}={path} for the UI)"
        )
    path.write_text(spec.with_operators(n_operators).to_json())  # validated: a multiple of the shard size
    os.environ[SPEC_ENV_VAR] = str(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m spinlock_assets.defs.main_job", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--dagster-home", default=os.environ.get("DAGSTER_HOME", "dagster_home"))
    parser.add_argument(
        "--verify-sample", type=int, default=8, help="operators to replay and check (default 8)"
    )
    parser.add_argument(
        "--grow-to",
        type=int,
        metavar="N",
        help="grow the dataset to N operators (a multiple of the shard size)",
    )
    parser.add_argument("--debug", action="store_true", help="tracebacks and Dagster's error logs")
    args = parser.parse_args(argv)
    from spinlock_assets.core.spec import SpecError
    from spinlock_assets.storage import StorageError

    try:
        return _main(args)
    except (SpecError, StorageError, OSError, ValueError, MemoryError) as exc:
        if args.debug:
            raise
        print(f"{PROG}: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2


def _main(args: argparse.Namespace) -> int:
    from spinlock_assets.core.budget import check_disk
    from spinlock_assets.defs.constants import DATA_ROOT_ENV_VAR, DEFAULT_DATA_ROOT

    from .instance import LOCK_FILE, exclusive, prepare_instance

    home = Path(args.dagster_home)
    with exclusive(home / LOCK_FILE, what=PROG):  # creation and migration, once
        for run_id in prepare_instance(home):
            print(f"run {run_id}: its worker process is gone (killed?); marked failed", file=sys.stderr)

    import dagster as dg

    # Data versions and partitioned checks are Dagster beta/preview features this project relies on.
    warnings.filterwarnings("ignore", category=dg.BetaWarning)
    warnings.filterwarnings("ignore", category=dg.PreviewWarning)

    # The data root's lock is taken before the spec is grown and read: two main jobs on one root serialize.
    root = Path(os.environ.get(DATA_ROOT_ENV_VAR) or DEFAULT_DATA_ROOT).absolute()
    with exclusive(root / DATA_ROOT_LOCK, what=PROG):
        if args.grow_to is not None:
            _grow_spec(args.grow_to)
        from spinlock_assets.definitions import definitions_from_environment
        from spinlock_assets.defs.resources import DatasetResource

        # Built from the environment as it is now (--grow-to may have just changed the spec), not taken
        # from the module-level definitions, which an earlier import may have built from another spec.
        defs = definitions_from_environment()  # the spec is read and checked here
        dataset: DatasetResource = defs.resources["dataset"]
        dataset.check_root_matches_spec()  # refused here in one line, not in every run's logs
        check_disk(dataset.spec, dataset.data_root)
        return _generate_and_verify(defs, dataset, args)


def _generate_and_verify(defs: Any, dataset: Any, args: argparse.Namespace) -> int:
    import dagster as dg
    import numpy as np

    from spinlock_assets.defs.constants import FEATURES_GROUP
    from spinlock_assets.defs.jobs import DATASET_JOB, FEATURES_JOB, GENERATION_JOB
    from spinlock_assets.storage.layout import BASE_FEATURES_ASSET, DATASET_FILE, GENERATION_ASSETS

    quiet = console_config("ERROR" if args.debug else "CRITICAL")
    spec = dataset.spec
    # Temporary files of writers killed in an earlier run (never those of a live writer: see ShardStore).
    stale = [path for asset in GENERATION_ASSETS for path in dataset.store.remove_stale_temp_files(asset)]
    if stale:
        print(f"removed {len(stale)} temporary files left by killed writers")
    started = time.perf_counter()
    with dg.DagsterInstance.get() as instance:
        generation = defs.resolve_job_def(GENERATION_JOB)
        keys = generation.partitions_def.get_partition_keys()
        done = instance.get_materialized_partitions(dg.AssetKey(BASE_FEATURES_ASSET))
        print(
            f"dataset '{spec.name}': {spec.n_operators} operators in {len(keys)} shards "
            f"({len(done & set(keys))} already materialized); spec hash {spec.spec_hash}"
        )
        hint = small_shard_hint(spec)
        if hint:
            print(hint)
        # Runs sized by work: consecutive shards in ranges of the backfill policy's size (defs/ranges.py).
        per_run = defs.resolve_asset_graph().get(dg.AssetKey(BASE_FEATURES_ASSET)).backfill_policy
        per_run = per_run.max_partitions_per_run or len(keys)
        runs = [
            (generation, shards) for shards in consecutive([k for k in keys if k not in done], keys, per_run)
        ]
        # Families materialized on some shard are replayed on the shards that lack them (after --grow-to),
        # all of a shard's missing families in one run: one replay of each operator feeds them all.
        features = defs.resolve_job_def(FEATURES_JOB)
        families = dg.AssetSelection.groups(FEATURES_GROUP).resolve(defs.resolve_asset_graph())
        materialized = {family: instance.get_materialized_partitions(family) for family in families}
        materialized = {family: shards for family, shards in materialized.items() if shards}
        by_missing: dict[frozenset, list[str]] = {}
        for key in keys:
            missing = frozenset(family for family, shards in materialized.items() if key not in shards)
            if missing:
                by_missing.setdefault(missing, []).append(key)
        for missing, lacking in by_missing.items():
            subset = features.get_subset(asset_selection=set(missing))
            runs += [(subset, shards) for shards in consecutive(lacking, keys, per_run)]
        for number, (job, shards) in enumerate(runs, start=1):
            result = job.execute_in_process(
                instance=instance, raise_on_error=False, run_config=quiet, **partition_args(shards)
            )
            status = "ok" if result.success else f"FAILED: {_run_error(result)}"
            elapsed = time.perf_counter() - started
            what = shards[0] if len(shards) == 1 else f"{shards[0]} .. {shards[-1]} ({len(shards)} shards)"
            print(f"  [{number}/{len(runs)}] {job.name} {what}: {status} ({elapsed:.0f} s)")
            if not result.success:
                return 1
        result = defs.resolve_job_def(DATASET_JOB).execute_in_process(
            instance=instance, run_config=quiet, raise_on_error=False
        )
        if not result.success:
            print(f"{PROG}: dataset.h5: FAILED: {_run_error(result)}", file=sys.stderr)
            return 1

    from spinlock_assets.core.verification import verify_records
    from spinlock_assets.storage.reader import open_dataset

    path = Path(dataset.data_root) / DATASET_FILE
    with open_dataset(path) as reader:
        sample = np.random.default_rng(0).choice(
            spec.n_operators, size=min(args.verify_sample, spec.n_operators), replace=False
        )
        records = [reader.operator(int(i)) for i in sorted(sample)]
        statuses = {v.operator_index: v.status for v in verify_records(records)}
    exact = sum(status == "exact" for status in statuses.values())
    print(f"replayed {len(statuses)} operators from dataset.h5 alone: {exact} bit-exact {statuses}")
    print(f"\ndone in {time.perf_counter() - started:.0f} s")
    print(f"  shard files: {dataset.data_root}/<asset>/<shard>.h5")
    print(f"  dataset:     {path}  (h5py.File(...)['/parameters/params'], '/features/base/series', ...)")
    print(f"  instance:    {os.environ['DAGSTER_HOME']}")
    print("  open the UI: bash scripts/ui.sh   ->  http://127.0.0.1:3000")
    return 0 if exact == len(statuses) else 1


if __name__ == "__main__":
    sys.exit(main())
