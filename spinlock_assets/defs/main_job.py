"""The main job on the embedded default: generate the default dataset through Dagster, verify a sample.

Runs every missing shard of the generation job in-process against a persistent local Dagster instance
(``./dagster_home``), so the runs, materializations and lineage are there when the UI is opened;
replays every feature family already materialized on the shards that lack it; updates
``data/dataset.h5``; replays a sample of operators from that file alone and checks their digests bit
for bit. Re-running it skips shards that are already materialized.

Growing a dataset is this one command: ``--grow-to N`` raises the spec's ``n_operators`` (written back to
``$SPINLOCK_SPEC``, or to ``./spinlock_spec.json`` for the embedded default), and the same pass then
generates the new shards, backfills the materialized families on them and updates dataset.h5. Existing
shard files are not touched (the spec hash excludes ``n_operators``).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

__all__ = ["main"]

# The runs' full event logs are in the instance (and the UI); the terminal gets one line per shard.
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def _prepare_instance(home: Path) -> None:
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        config.write_text("telemetry:\n  enabled: false\n")
    os.environ["DAGSTER_HOME"] = str(home.absolute())


def _grow_spec(n_operators: int) -> None:
    """Write the spec with ``n_operators`` where the code location reads it (``$SPINLOCK_SPEC``); the embedded
    default is copied to ``./spinlock_spec.json`` first, and ``$SPINLOCK_SPEC`` pointed at the copy."""
    from spinlock_assets.core.spec import DEFAULT_SPEC_PATH, load_spec
    from spinlock_assets.defs.constants import SPEC_ENV_VAR

    path = Path(os.environ.get(SPEC_ENV_VAR) or DEFAULT_SPEC_PATH)
    spec = load_spec(path)
    if n_operators < spec.n_operators:
        raise SystemExit(f"--grow-to {n_operators}: the dataset already has {spec.n_operators} operators")
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
    args = parser.parse_args(argv)
    _prepare_instance(Path(args.dagster_home))
    if args.grow_to is not None:
        _grow_spec(args.grow_to)

    import dagster as dg
    import numpy as np

    # Data versions and partitioned checks are Dagster beta/preview features this project relies on.
    warnings.filterwarnings("ignore", category=dg.BetaWarning)
    warnings.filterwarnings("ignore", category=dg.PreviewWarning)

    from spinlock_assets.core.spec import DEFAULT_SPEC_PATH, load_spec
    from spinlock_assets.definitions import build_definitions
    from spinlock_assets.defs.constants import (
        DATA_ROOT_ENV_VAR,
        DEFAULT_DATA_ROOT,
        FEATURES_GROUP,
        SPEC_ENV_VAR,
    )
    from spinlock_assets.defs.jobs import DATASET_JOB, FEATURES_JOB, GENERATION_JOB
    from spinlock_assets.defs.resources import DatasetResource
    from spinlock_assets.storage.layout import BASE_FEATURES_ASSET, DATASET_FILE

    # Built here from the environment as it is now (--grow-to may have just changed the spec), not taken
    # from the module-level definitions, which an earlier import may have built from another spec.
    spec = load_spec(os.environ.get(SPEC_ENV_VAR) or DEFAULT_SPEC_PATH)
    defs = build_definitions(spec, os.environ.get(DATA_ROOT_ENV_VAR) or DEFAULT_DATA_ROOT)
    dataset: DatasetResource = defs.resources["dataset"]
    started = time.perf_counter()
    with dg.DagsterInstance.get() as instance:
        generation = defs.resolve_job_def(GENERATION_JOB)
        keys = generation.partitions_def.get_partition_keys()
        done = instance.get_materialized_partitions(dg.AssetKey(BASE_FEATURES_ASSET))
        print(
            f"dataset '{spec.name}': {spec.n_operators} operators in {len(keys)} shards "
            f"({len(done & set(keys))} already materialized); spec hash {spec.spec_hash}"
        )
        runs = [(generation, key) for key in keys if key not in done]
        # Families materialized on some shard are replayed on the shards that lack them (after --grow-to),
        # all of a shard's missing families in one run: one replay of each operator feeds them all.
        features = defs.resolve_job_def(FEATURES_JOB)
        families = dg.AssetSelection.groups(FEATURES_GROUP).resolve(defs.resolve_asset_graph())
        materialized = {family: instance.get_materialized_partitions(family) for family in families}
        materialized = {family: shards for family, shards in materialized.items() if shards}
        for key in keys:
            missing = {family for family, shards in materialized.items() if key not in shards}
            if missing:
                runs.append((features.get_subset(asset_selection=missing), key))
        for number, (job, key) in enumerate(runs, start=1):
            result = job.execute_in_process(
                partition_key=key, instance=instance, raise_on_error=False, run_config=QUIET
            )
            status = "ok" if result.success else "FAILED"
            elapsed = time.perf_counter() - started
            print(f"  [{number}/{len(runs)}] {job.name} {key}: {status} ({elapsed:.0f} s)")
            if not result.success:
                return 1
        if (
            not defs.resolve_job_def(DATASET_JOB)
            .execute_in_process(instance=instance, run_config=QUIET)
            .success
        ):
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
