"""End-to-end: a real ``dagster dev`` on the tiny spec, driven only through GraphQL.

One server is shared by the module (starting one costs ~20 s on two cores); each test makes sure of
the upstream data it needs, so any test can also run alone.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import h5py
import pytest

from spinlock_assets.defs.generation.assets import BASE_CODE_VERSION
from spinlock_assets.defs.jobs import DATASET_JOB
from spinlock_assets_tests.conftest import tiny_spec

from .dagster_dev import DagsterDev, DagsterDevError, dagster_dev

pytestmark = pytest.mark.slow

GENERATION_ASSETS = ["operator_parameters", "initial_conditions", "base_features"]
# Pinned literally: the shard file names are part of the on-disk contract.
SHARD_KEYS = ["ops-000000-000003", "ops-000004-000007", "ops-000008-000011"]
# Two families that both need a replayed rollout: computed separately they would replay 8 times.
REPLAY_FAMILIES = ["spectral_features", "cross_channel_features"]
BACKFILL_TIMEOUT_S = 300
RUN_TIMEOUT_S = 300
REPLAY_TIMEOUT_S = 180


class _Servers:
    """The module's server, started on first use and again if a test stopped it."""

    def __init__(self, directory: Path, stack: contextlib.ExitStack) -> None:
        self.directory = directory
        self.stack = stack
        self.started = 0
        self.current: DagsterDev | None = None

    def get(self) -> DagsterDev:
        if self.current is not None and not self.current.stopped and not self.current.running:
            raise DagsterDevError(f"dagster dev died during the module's tests\n{self.current.log_tail()}")
        if self.current is None or self.current.stopped:
            directory = self.directory / f"server{self.started}"
            self.current = self.stack.enter_context(dagster_dev(directory, tiny_spec()))
            self.started += 1
        return self.current


@pytest.fixture(scope="module")
def _servers(tmp_path_factory) -> Iterator[_Servers]:
    with contextlib.ExitStack() as stack:  # stops (and checks) every server started, even after a failure
        yield _Servers(tmp_path_factory.mktemp("dagster_dev"), stack)


@pytest.fixture
def server(_servers: _Servers) -> DagsterDev:
    return _servers.get()


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def backfill_to_success(server: DagsterDev, assets: list[str], partitions: list[str] | None = None) -> str:
    backfill_id = server.launch_backfill(assets, partitions, title=f"e2e {' '.join(assets)}")
    status = server.wait_backfill(backfill_id, timeout=BACKFILL_TIMEOUT_S)
    assert status == "COMPLETED_SUCCESS", server.describe_backfill(backfill_id)
    return backfill_id


def generate(server: DagsterDev, partitions: list[str] | None = None) -> None:
    """Backfill the generation assets over ``partitions`` (all when None) unless already done."""
    wanted = SHARD_KEYS if partitions is None else partitions
    done = {m.partition for m in server.asset_materializations("base_features", limit=50)}
    if not set(wanted) <= done:
        backfill_to_success(server, GENERATION_ASSETS, partitions)


def test_backfill_generates_every_shard_and_a_dataset_that_replays_exactly(server: DagsterDev) -> None:
    # 1. one asset backfill of the generation assets over all partitions, through GraphQL
    backfill_id = backfill_to_success(server, GENERATION_ASSETS)
    runs = server.backfill(backfill_id)["runs"]
    assert runs and all(run["status"] == "SUCCESS" for run in runs), server.describe_backfill(backfill_id)

    # 2. exactly one published file per (asset, shard), at <data>/<asset>/<shard>.h5, with its manifest
    # <shard>.json, no temp files
    for asset in GENERATION_ASSETS:
        files = sorted(path.name for path in (server.data_root / asset).iterdir())
        assert files == sorted(f"{key}{suffix}" for key in SHARD_KEYS for suffix in (".h5", ".json")), asset

    # 3. the unpartitioned dataset asset, launched as a run of its job, gives a plain-h5py dataset.h5
    run_id = server.launch_run(DATASET_JOB, ["dataset"])
    assert server.wait_run(run_id, timeout=RUN_TIMEOUT_S) == "SUCCESS", server.describe_run(run_id)
    dataset_path = server.data_root / "dataset.h5"
    with h5py.File(dataset_path, "r") as dataset:
        assert dataset["/parameters/params"].shape == (12, 10)
        assert dataset["/verification/digests"].shape == (12, 3)
    # the rebuild_dataset sensor may rebuild it as well after the backfill: find this run's event
    dataset_event = next(e for e in server.asset_materializations("dataset") if e.run_id == run_id)
    assert dataset_event.metadata["path"] == str(dataset_path)

    # 4. the recorded metadata of every base_features partition describes the file on disk now
    spec = tiny_spec()
    latest = {}
    for event in server.asset_materializations("base_features", limit=50):
        latest.setdefault(event.partition, event)
    assert sorted(latest) == SHARD_KEYS
    for key, event in latest.items():
        path = server.data_root / "base_features" / f"{key}.h5"
        metadata = event.metadata
        assert metadata["path"] == str(path)
        assert metadata["sha256"] == sha256_of(path), key
        assert metadata["spec_hash"] == spec.spec_hash
        assert metadata["code_version"] == BASE_CODE_VERSION
        start, stop = (int(part) for part in key.split("-")[1:])
        assert metadata["operators"] == stop - start + 1
        assert metadata["operator_range"] == f"{start}..{stop}"
        with h5py.File(path, "r") as shard:
            assert metadata["fingerprint"] == json.loads(shard.attrs["fingerprint_json"])
        assert metadata["fingerprint"], "an empty execution fingerprint cannot support replay"

    # 5. dataset.h5 alone replays bit-exactly in a fresh process (no spec, no data root, no Dagster)
    script = textwrap.dedent(
        """
        import json, sys
        from spinlock_assets.core.verification import verify
        from spinlock_assets.storage.reader import open_dataset

        with open_dataset(sys.argv[1]) as dataset:
            print(json.dumps({i: verify(dataset.operator(i)).status for i in (1, 10)}))
        """
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SPINLOCK_", "DAGSTER_"))}
    replay = subprocess.run(
        [sys.executable, "-c", script, str(dataset_path)],
        cwd=server.directory,
        env=env,
        capture_output=True,
        text=True,
        timeout=REPLAY_TIMEOUT_S,
    )
    assert replay.returncode == 0, replay.stderr
    assert json.loads(replay.stdout.strip().splitlines()[-1]) == {"1": "exact", "10": "exact"}


def test_one_backfill_of_two_replay_families_replays_each_operator_once(server: DagsterDev) -> None:
    shard = SHARD_KEYS[1]
    generate(server, [shard])

    backfill_id = backfill_to_success(server, REPLAY_FAMILIES, [shard])

    runs = server.backfill(backfill_id)["runs"]
    assert len(runs) == 1, server.describe_backfill(backfill_id)
    [run] = runs
    for asset in REPLAY_FAMILIES:
        [event] = server.asset_materializations(asset, limit=1, partitions=[shard])
        assert event.run_id == run["runId"], asset
        assert event.metadata["operators"] == 4
        assert event.metadata["operator_range"] == "4..7"
        assert event.metadata["rollouts_replayed"] == 4, f"{asset}: each of the 4 operators replayed once"
        assert event.metadata["replay_exact"] == 4
        assert (server.data_root / asset / f"{shard}.h5").is_file()


def test_stopping_dagster_dev_leaves_no_process_behind(server: DagsterDev) -> None:
    assert server.leftover_processes(), "a running dagster dev has processes in its group"
    server.stop()
    assert server.process.returncode == 0, server.log_tail()  # a graceful exit, not a kill
    assert server.leftover_processes() == []
