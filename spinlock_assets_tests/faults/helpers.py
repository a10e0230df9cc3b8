"""Shared helpers of the fault-injection tests: byte snapshots of a data root, child processes, check runs."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import dagster as dg
import numpy as np

from spinlock_assets.core.shards import parse_shard_key
from spinlock_assets.core.spec import DatasetSpec
from spinlock_assets.defs.constants import DATA_ROOT_ENV_VAR, SPEC_ENV_VAR
from spinlock_assets.defs.verification.checks import REPLAY_CHECK
from spinlock_assets.storage import ShardStore
from spinlock_assets.storage.atomic import parse_temp_name
from spinlock_assets.storage.manifest import read_manifest

REPO_ROOT = Path(__file__).resolve().parents[2]
REPLAY_KEY = dg.AssetCheckKey(dg.AssetKey("base_features"), REPLAY_CHECK)
NONFINITE_KEY = dg.AssetCheckKey(dg.AssetKey("base_features"), "nonfinite_only_where_flagged")


# -- bytes on disk -------------------------------------------------------------------------------------


def tree_sha256(root: Path) -> dict[str, str]:
    """SHA-256 of every file under ``root`` (hidden temp files included), by path relative to ``root``."""
    return {
        path.relative_to(root).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def without(snapshot: Mapping[str, str], *relative_paths: str) -> dict[str, str]:
    """A snapshot minus the given files and their manifests (``<shard>.json``, rewritten with the shard):
    what must stay byte-identical while those are being worked on."""
    manifests = {path.removesuffix(".h5") + ".json" for path in relative_paths if path.endswith(".h5")}
    return {path: sha for path, sha in snapshot.items() if path not in {*relative_paths, *manifests}}


def shard_file(asset: str, shard_key: str) -> str:
    """The path of a shard file relative to its data root, as in :func:`tree_sha256`."""
    return f"{asset}/{shard_key}.h5"


def temp_files(root: Path) -> list[Path]:
    """Leftover temporary files of the atomic writer (``.<name>.tmp-<pid>-<hex>``) anywhere under ``root``."""
    return sorted(path for path in root.rglob(".*") if path.is_file() and parse_temp_name(path.name))


def copy_root(source: Path, destination: Path) -> Path:
    shutil.copytree(source, destination)
    return destination


def flip_bytes_in_chunk(path: Path, array: str, row: int = 0, n_bytes: int = 4) -> int:
    """Invert ``n_bytes`` in the middle of the stored chunk holding operator row ``row`` of ``array`` (a
    bit-rot or bad-sector fault); returns the file offset flipped."""
    import h5py

    with h5py.File(path, "r") as handle:
        dataset = handle[array]
        first_row = row // dataset.chunks[0] * dataset.chunks[0]
        info = dataset.id.get_chunk_info_by_coord((first_row,) + (0,) * (dataset.ndim - 1))
    offset = info.byte_offset + info.size // 2
    with open(path, "r+b") as raw:
        raw.seek(offset)
        original = raw.read(n_bytes)
        raw.seek(offset)
        raw.write(bytes(b ^ 0xFF for b in original))
    return offset


def rewrite_shard(
    root: Path,
    asset: str,
    shard_key: str,
    *,
    arrays: Mapping[str, Callable[[np.ndarray], np.ndarray]] = {},  # noqa: B006 (read only)
    attrs: Mapping[str, object] = {},  # noqa: B006 (read only)
) -> None:
    """Rewrite a shard through the store (so it stays a valid, checksummed shard file) with some arrays
    transformed and some file attributes replaced: a stand-in for data written elsewhere or earlier."""
    store = ShardStore(root)
    contents = store.read(asset, shard_key)
    new_arrays = {
        name: dataclasses.replace(array, data=arrays[name](array.data.copy())) if name in arrays else array
        for name, array in contents.arrays.items()
    }
    store.write(asset, shard_key, new_arrays, {**contents.attrs, **attrs}, overwrite=True)


# -- Dagster runs ----------------------------------------------------------------------------------------


def error_text(result) -> str:
    """Every error message (with causes and a Failure's metadata) of a run's failure events, as one string."""
    texts = []

    def collect(info) -> None:
        while info is not None:
            texts.append(f"{info.cls_name}: {info.message}")
            collect(info.context)
            info = info.cause

    for event in result.all_events:
        collect(getattr(event.event_specific_data, "error", None))
        failure = getattr(event.event_specific_data, "user_failure_data", None)
        if failure is not None:  # a dg.Failure keeps the storage error it wraps in its metadata
            texts.extend(f"{key}: {value.value}" for key, value in failure.metadata.items())
    return "\n".join(texts)


def run_checks(defs: dg.Definitions, instance, partition_key: str) -> dict:
    """Every check of one shard, every operator replayed, through the ``verify_now`` job (what a user
    launches from the UI); return the recorded evaluations by ``(asset, check name)``. The shard's
    generation files are first recorded as materialized in ``instance``, with the sha256 their manifests
    kept from when they were written (verify_now checks only what was materialized)."""
    store = ShardStore(defs.resources["dataset"].data_root)
    for asset in ("operator_parameters", "initial_conditions", "base_features"):
        path = store.path(asset, partition_key)
        recorded = read_manifest(path)
        metadata = {"sha256": recorded.sha256, "path": dg.MetadataValue.path(str(path))} if recorded else {}
        instance.report_runless_asset_event(
            dg.AssetMaterialization(asset, partition=partition_key, metadata=metadata)
        )
    shard = parse_shard_key(partition_key)
    config = {"shards": [partition_key], "operator_budget": len(shard)}
    result = defs.resolve_job_def("verify_now").execute_in_process(
        instance=instance, run_config={"ops": {"verify_sample": {"config": config}}}, raise_on_error=False
    )
    return {(e.asset_key.path[-1], e.asset_check_key.name): e for e in result.get_asset_check_evaluations()}


def shard_records(root: Path, spec: DatasetSpec, shard_key: str) -> list:
    """Replayable records of one stored shard, with its stored digests, series and fingerprint."""
    from spinlock_assets.defs.generation.assets import load_records
    from spinlock_assets.defs.resources import DatasetResource

    store = ShardStore(root)
    contents = (
        store.read(asset, shard_key)
        for asset in ("operator_parameters", "initial_conditions", "base_features")
    )
    return load_records(DatasetResource(spec_json=spec.to_json(), data_root=str(root)), *contents)


# -- child processes -----------------------------------------------------------------------------------


def write_spec_file(spec: DatasetSpec, path: Path) -> Path:
    path.write_text(spec.to_json())
    return path


def child_env(spec_path: Path, data_root: Path, **extra: str) -> dict[str, str]:
    """Environment of a child that loads ``spinlock_assets.definitions`` for this spec and data root."""
    env = dict(os.environ)
    env.update({SPEC_ENV_VAR: str(spec_path), DATA_ROOT_ENV_VAR: str(data_root)})
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env.update(extra)
    return env


def start_child(args: list[str], env: Mapping[str, str], log: Path) -> subprocess.Popen:
    """Start ``python <args>`` in the repository root, stdout and stderr to ``log``."""
    with open(log, "wb") as out:
        return subprocess.Popen(
            [sys.executable, *args], cwd=REPO_ROOT, env=dict(env), stdout=out, stderr=subprocess.STDOUT
        )


def wait_for_file(path: Path, process: subprocess.Popen, log: Path, timeout_s: float = 120.0) -> None:
    """Wait until ``path`` exists; fail with the child's output if it exits first or time runs out."""
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        if process.poll() is not None:
            raise AssertionError(
                f"child exited ({process.returncode}) before {path} appeared:\n{log.read_text()}"
            )
        if time.monotonic() > deadline:
            kill(process)
            raise AssertionError(f"{path} did not appear within {timeout_s} s:\n{log.read_text()}")
        time.sleep(0.05)


def kill(process: subprocess.Popen) -> int:
    """SIGKILL the child (no cleanup handler can run) and reap it; returns its exit status."""
    process.send_signal(signal.SIGKILL)
    return process.wait(timeout=30)


def arrays_equal(a: np.ndarray, b: np.ndarray) -> bool:
    """Same shape and values, NaN equal to NaN for floating arrays."""
    return np.array_equal(a, b, equal_nan=a.dtype.kind == "f" and b.dtype.kind == "f")
