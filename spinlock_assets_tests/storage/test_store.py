"""ShardStore: exact paths, location attributes, listing, integrity, cleanup of killed writers' temp files."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from spinlock_assets.storage import Problem, ShardCorruptError, ShardStore, SpecMismatchError
from spinlock_assets_tests.storage.helpers import shard_arrays, shard_attrs


def _attrs_without_location() -> dict[str, object]:
    attrs = shard_attrs(0, 4)
    for key in ("asset", "shard_key", "operator_start", "operator_stop"):
        del attrs[key]
    return attrs


def test_path_is_root_asset_shard_key(tmp_path: Path) -> None:
    assert ShardStore(tmp_path).path("base_features", "ops-000032-000063") == (
        tmp_path / "base_features" / "ops-000032-000063.h5"
    )


@pytest.mark.parametrize(
    ("asset", "key"), [("../x", "ops-000000-000003"), ("toy", "../../etc"), ("toy", "ops-3-4")]
)
def test_names_that_are_not_assets_or_shard_keys_are_refused(tmp_path: Path, asset: str, key: str) -> None:
    with pytest.raises(ValueError):
        ShardStore(tmp_path).path(asset, key)


def test_write_fills_in_the_location_attributes(tmp_path: Path) -> None:
    store = ShardStore(tmp_path)
    info = store.write("toy", "ops-000000-000003", shard_arrays(4), _attrs_without_location())
    assert info.path == tmp_path / "toy" / "ops-000000-000003.h5"
    attrs = store.read("toy", "ops-000000-000003", names=[]).attrs
    assert (attrs["asset"], attrs["shard_key"], attrs["operator_start"], attrs["operator_stop"]) == (
        "toy",
        "ops-000000-000003",
        0,
        4,
    )


def test_write_refuses_attributes_that_contradict_the_location(tmp_path: Path) -> None:
    with pytest.raises(
        ValueError, match="file attribute 'asset': expected 'other' for this location, got 'toy'"
    ):
        ShardStore(tmp_path).write("other", "ops-000000-000003", shard_arrays(4), shard_attrs(0, 4))


def test_read_refuses_a_file_moved_to_another_shard(tmp_path: Path) -> None:
    store = ShardStore(tmp_path)
    store.write("toy", "ops-000000-000003", shard_arrays(4), shard_attrs(0, 4))
    shutil.copy(store.path("toy", "ops-000000-000003"), store.path("toy", "ops-000004-000007"))
    with pytest.raises(ShardCorruptError, match="file attributes say asset 'toy', shard 'ops-000000-000003'"):
        store.read("toy", "ops-000004-000007")


def test_shard_keys_are_in_operator_order_and_skip_temp_files(tmp_path: Path) -> None:
    store = ShardStore(tmp_path)
    assert store.shard_keys("toy") == []
    for start in (8, 0, 4):
        store.write("toy", f"ops-{start:06d}-{start + 3:06d}", shard_arrays(4), _attrs_without_location())
    (tmp_path / "toy" / ".ops-000012-000015.h5.tmp-123-abcd").write_bytes(b"")
    (tmp_path / "toy" / "notes.txt").write_text("not a shard")
    assert store.shard_keys("toy") == ["ops-000000-000003", "ops-000004-000007", "ops-000008-000011"]
    assert store.exists("toy", "ops-000004-000007") and not store.exists("toy", "ops-000012-000015")


def test_verify_integrity_reports_changed_and_missing_files(tmp_path: Path) -> None:
    store = ShardStore(tmp_path)
    info = store.write("toy", "ops-000000-000003", shard_arrays(4), shard_attrs(0, 4))
    assert store.sha256("toy", "ops-000000-000003") == info.sha256
    assert store.verify_integrity("toy", "ops-000000-000003", info.sha256) is None
    with open(info.path, "r+b") as handle:  # one flipped bit anywhere, noticed by HDF5 or not
        handle.seek(info.n_bytes - 10)
        byte = handle.read(1)
        handle.seek(info.n_bytes - 10)
        handle.write(bytes([byte[0] ^ 0x01]))
    problem = store.verify_integrity("toy", "ops-000000-000003", info.sha256)
    assert isinstance(problem, Problem) and problem.path == str(info.path) and info.sha256 in problem.message
    info.path.unlink()
    assert store.verify_integrity("toy", "ops-000000-000003", info.sha256) == Problem(
        str(info.path), "shard file does not exist"
    )


def test_stale_temp_files_of_dead_writers_are_removed_and_others_kept(tmp_path: Path) -> None:
    store = ShardStore(tmp_path)
    folder = tmp_path / "toy"
    folder.mkdir()
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    dead_pid = int(dead.stdout)  # that process has exited
    old_dead = folder / f".ops-000000-000003.h5.tmp-{dead_pid}-aa"
    old_alive = folder / f".ops-000004-000007.h5.tmp-{os.getpid()}-bb"
    young_dead = folder / f".ops-000008-000011.h5.tmp-{dead_pid}-cc"
    for path in (old_dead, old_alive, young_dead):
        path.write_bytes(b"partial")
    an_hour_ago = time.time() - 3700
    for path in (old_dead, old_alive):
        os.utime(path, (an_hour_ago, an_hour_ago))
    assert store.remove_stale_temp_files("toy") == [old_dead]
    assert sorted(folder.iterdir()) == sorted([old_alive, young_dead])


def test_the_first_claim_marks_the_root_and_later_claims_read_only_the_marker(tmp_path: Path) -> None:
    store = ShardStore(tmp_path / "root")
    store.claim_spec("a" * 16, '{"n_operators": 8}')
    assert json.loads((tmp_path / "root" / "spec.json").read_text())["spec_hash"] == "a" * 16
    store.claim_spec("a" * 16, '{"n_operators": 8}')  # same spec: fine
    with pytest.raises(SpecMismatchError, match="a{16}.*b{16}"):
        store.claim_spec("b" * 16, "{}")


def test_a_root_written_before_markers_is_scanned_once_then_marked(tmp_path: Path) -> None:
    store = ShardStore(tmp_path)
    store.write("toy", "ops-000000-000003", shard_arrays(4), shard_attrs(0, 4, asset="toy"))
    spec_hash = store.read_header("toy", "ops-000000-000003").attrs["spec_hash"]
    with pytest.raises(SpecMismatchError):
        store.claim_spec("another", "{}")
    assert not (tmp_path / "spec.json").exists()
    store.claim_spec(spec_hash, "{}")
    assert json.loads((tmp_path / "spec.json").read_text())["spec_hash"] == spec_hash
