"""A real full disk (a small tmpfs): writing a shard or dataset.h5 fails with one clear error naming the
file, leaves no partial or temporary file, keeps the old file's bytes, and nothing else happens: no page
of h5py "Exception ignored" and no crash at interpreter exit (HDF5 files are built in memory and reach
the disk as one plain write, ``storage.atomic.publish_hdf5``). Needs root for ``mount``; skipped without."""

from __future__ import annotations

import errno
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from spinlock_assets_tests.conftest import tiny_spec
from spinlock_assets_tests.defs.helpers import SHARDS
from spinlock_assets_tests.faults.helpers import (
    REPO_ROOT,
    child_env,
    copy_root,
    shard_file,
    temp_files,
    tree_sha256,
    write_spec_file,
)

SHARD = SHARDS[1]


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount_point)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def fill(disk: Path) -> None:
    """Fill the disk to the last byte."""
    with open(disk / "filler", "wb") as out:
        try:
            while True:
                out.write(b"\0" * 65536)
                out.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC


def run_python(code: str, env: dict[str, str] | None = None, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def assert_clean_failure(process: subprocess.CompletedProcess, *expected: str) -> None:
    output = process.stdout + process.stderr
    assert process.returncode in (0, 1), output  # not 139 (SIGSEGV) nor any other signal
    assert "Exception ignored" not in output and "Segmentation fault" not in output, output
    for text in expected:
        assert text in output, output


WRITE_BIG_SHARD = """
import sys
import numpy as np
from spinlock_assets.storage import ShardStore, StoredArray
data = np.random.default_rng(0).standard_normal((4, 400_000)).astype("f4")  # 6.4 MB: more than the disk
arrays = {"big": StoredArray(data, ("operator", "x"), "1", "generated")}
attrs = dict(spec_hash="x", spec_json="{}", code_version="1", fingerprint_json="{}", package_version="0")
try:
    ShardStore(sys.argv[1]).write("base_features", "ops-000000-000003", arrays, attrs)
except OSError as exc:
    print(f"refused: {exc}")
"""


def test_a_shard_larger_than_the_disk_fails_cleanly(small_disk: Path) -> None:
    process = run_python(WRITE_BIG_SHARD, None, str(small_disk / "data"))
    assert_clean_failure(process, "No space left on device", "ops-000000-000003.h5: writing the file failed")
    assert process.stdout.count("\n") == 1
    assert (
        temp_files(small_disk) == [] and not (small_disk / "data/base_features/ops-000000-000003.h5").exists()
    )


@pytest.mark.parametrize("asset", ["base_features", "dataset"])
def test_a_full_disk_fails_the_dagster_step_and_nothing_else(
    generated_root: Path, small_disk: Path, tmp_path: Path, asset: str
) -> None:
    root = copy_root(generated_root, small_disk / "data")
    target = "dataset.h5" if asset == "dataset" else shard_file(asset, SHARD)
    fill(small_disk)
    before = tree_sha256(root)
    env = child_env(write_spec_file(tiny_spec(), tmp_path / "spec.json"), root)
    args = [] if asset == "dataset" else ["--partition", SHARD]
    process = run_python(MATERIALIZE, env, asset, *args)
    assert_clean_failure(process, "No space left on device", str(root / target))
    assert process.returncode == 1
    assert temp_files(small_disk) == []
    assert tree_sha256(root) == before  # the old file keeps its bytes, nothing else was touched


MATERIALIZE = """
import sys
import dagster as dg
from spinlock_assets.definitions import defs
partition = sys.argv[3] if len(sys.argv) > 3 else None
result = dg.materialize(
    list(defs.assets), selection=[sys.argv[1]], partition_key=partition, resources=defs.resources,
    raise_on_error=False,
)
failures = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
for event in failures:
    print(event.event_specific_data.error.message.strip())
sys.exit(0 if result.success else 1)
"""
