"""The main job on the embedded default: generate the default dataset through Dagster, verify a sample.

Runs every missing shard of the generation job in-process against a persistent local Dagster instance
(``./dagster_home``), so the runs, materializations and lineage are there when the UI is opened;
rebuilds ``data/dataset.h5``; replays a sample of operators from that file alone and checks their
digests bit for bit. Re-running it skips shards that are already materialized.

The instance is created (and migrated) once, under a file lock (``defs/instance.py``), and the whole job
holds a lock on the data root, so two main jobs at once serialize instead of racing. A refusal (an
invalid spec, a spec too large for this machine, a data root of another spec, a failed run) is one line
on stderr; ``--debug`` adds the traceback and Dagster's own error logs (all are in the instance too).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

__all__ = ["main"]

PROG = "main job"
DATA_ROOT_LOCK = ".main_job.lock"


def _console(level: str) -> dict:
    # The runs' full event logs are in the instance (and the UI); the terminal gets one line per shard.
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m spinlock_assets.defs.main_job", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--dagster-home", default=os.environ.get("DAGSTER_HOME", "dagster_home"))
    parser.add_argument(
        "--verify-sample", type=int, default=8, help="operators to replay and check (default 8)"
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

    from .instance import LOCK_FILE, exclusive, prepare_instance

    home = Path(args.dagster_home)
    with exclusive(home / LOCK_FILE, what=PROG):  # creation and migration, once
        prepare_instance(home)

    import dagster as dg

    # Data versions and partitioned checks are Dagster beta/preview features this project relies on.
    warnings.filterwarnings("ignore", category=dg.BetaWarning)
    warnings.filterwarnings("ignore", category=dg.PreviewWarning)

    from spinlock_assets.definitions import defs  # the spec is read and checked here
    from spinlock_assets.defs.resources import DatasetResource

    dataset: DatasetResource = defs.resources["dataset"]
    with exclusive(Path(dataset.data_root) / DATA_ROOT_LOCK, what=PROG):
        dataset.check_root_matches_spec()  # refused here in one line, not in every run's logs
        check_disk(dataset.spec, dataset.data_root)
        return _generate_and_verify(defs, dataset, args)


def _generate_and_verify(defs: Any, dataset: Any, args: argparse.Namespace) -> int:
    import dagster as dg
    import numpy as np

    from spinlock_assets.defs.jobs import DATASET_JOB, GENERATION_JOB
    from spinlock_assets.storage.layout import BASE_FEATURES_ASSET, DATASET_FILE, GENERATION_ASSETS

    quiet = _console("ERROR" if args.debug else "CRITICAL")
    spec = dataset.spec
    # Temporary files of writers killed in an earlier run (never those of a live writer: see ShardStore).
    stale = [path for asset in GENERATION_ASSETS for path in dataset.store.remove_stale_temp_files(asset)]
    if stale:
        print(f"removed {len(stale)} temporary files left by killed writers")
    started = time.perf_counter()
    with dg.DagsterInstance.get() as instance:
        done = instance.get_materialized_partitions(dg.AssetKey(BASE_FEATURES_ASSET))
        job = defs.resolve_job_def(GENERATION_JOB)
        keys = job.partitions_def.get_partition_keys()
        todo = [key for key in keys if key not in done]
        print(
            f"dataset '{spec.name}': {spec.n_operators} operators in {len(keys)} shards "
            f"({len(keys) - len(todo)} already materialized); spec hash {spec.spec_hash}"
        )
        for number, key in enumerate(todo, start=1):
            result = job.execute_in_process(
                partition_key=key, instance=instance, raise_on_error=False, run_config=quiet
            )
            status = "ok" if result.success else f"FAILED: {_run_error(result)}"
            print(f"  [{number}/{len(todo)}] {key}: {status} ({time.perf_counter() - started:.0f} s)")
            if not result.success:
                return 1
        result = defs.resolve_job_def(DATASET_JOB).execute_in_process(
            instance=instance, run_config=quiet, raise_on_error=False
        )
        if not result.success:
            print(f"{PROG}: dataset.h5: FAILED: {_run_error(result)}", file=sys.stderr)
            return 1

    from spinlock_assets.core.verification import verify
    from spinlock_assets.storage.reader import open_dataset

    path = Path(dataset.data_root) / DATASET_FILE
    with open_dataset(path) as reader:
        sample = np.random.default_rng(0).choice(
            spec.n_operators, size=min(args.verify_sample, spec.n_operators), replace=False
        )
        statuses = {int(i): verify(reader.operator(int(i))).status for i in sorted(sample)}
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
